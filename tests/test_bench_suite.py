"""The suite runner's bookkeeping: what it writes into docs/performance.md, and what it keeps.

Not a benchmark (no timing is asserted anywhere in tests/): these pin the parts of
``bench/run_all.py`` that could silently lose or misplace numbers an auditor reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run_all


def _result(name: str, tables: str = "| a |", code: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "title": f"{name} title",
        "command": f"cmd {name}",
        "exit_code": code,
        "seconds": 1.0,
        "tables": tables,
    }


FACTS = {
    "packages": {"drproof": "0.1.0"},
    "tools": {"zstd": "1.5"},
    "git_commit": "abcdef0123456789",
    "cpus_usable": 2,
    "cpu_count": 2,
    "cpu_model": "cpu",
    "cpu_flags": ["sha_ni"],
    "memory_total_mb": 1000,
    "load_average_at_start": (0.5, 0.4, 0.3),
    "kernel": "6",
    "python": "3.11",
    "child_rss_method": "GNU time",
}


def test_the_generated_section_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text(f"# Title\n\nprose before\n\n{run_all.BEGIN}\nold numbers\n{run_all.END}\n\nprose after\n")

    run_all.write_docs(page, run_all.render([_result("postgres", "| new |")], FACTS, "2026-11-25 01:00"))

    text = page.read_text()
    assert "old numbers" not in text and "| new |" in text
    assert text.startswith("# Title\n\nprose before\n\n") and text.endswith("\n\nprose after\n")
    assert text.count(run_all.BEGIN) == 1 and text.count(run_all.END) == 1
    assert "commit `abcdef0123`" in text and "cmd postgres" in text and "latest run" in text


def test_a_failed_benchmark_is_said_to_have_failed(tmp_path: Path) -> None:
    section = run_all.render([_result("postgres", "partial", code=1)], FACTS, "2026-11-25 01:00")
    assert "This benchmark failed (exit 1)" in section


def test_rerunning_some_benchmarks_keeps_the_others_and_dates_them(tmp_path: Path) -> None:
    earlier = tmp_path / "suite.json"
    earlier.write_text(
        json.dumps(
            {
                "started": "2026-11-24 10:00",
                "results": [_result("volume-2g", "| old volume |"), _result("postgres", "| old pg |")],
            }
        )
    )

    merged = run_all._with_earlier([_result("postgres", "| new pg |")], earlier)

    assert [r["name"] for r in merged] == ["volume-2g", "postgres"]  # suite order, not run order
    assert merged[1]["tables"] == "| new pg |"
    assert merged[0]["tables"] == "| old volume |" and merged[0]["run_at"] == "2026-11-24 10:00"
    assert "Run 2026-11-24 10:00 UTC." in run_all.render(merged, FACTS, "2026-11-25 01:00")


def test_an_unknown_benchmark_name_is_refused() -> None:
    with pytest.raises(SystemExit):
        run_all.parse_args(["--only", "postgress"])
