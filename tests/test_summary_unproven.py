"""A signed results.json rewritten after signing is not counted as its verdict (found by review).

A failing drill's signed results.json, rewritten consistently to say "pass" (verdict, exit
code and checks), was listed by ``drproof summary --public-key`` as a green PASS and
counted in "N passed" beside a red "NOT intact", and ``drproof report --public-key``
headed the page with a green PASS. The signature shows the record was altered, so the
verdict it states is unproven: an error in the totals, never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drills.cli import main
from engine.evidence import init_keys
from tests.test_pytest_plugin import PASSING, SABOTAGED


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "drill.key", tmp_path / "drill.pub"
    init_keys(private, public)
    return private, public


def _signed_run(tmp_path: Path, name: str, text: str, key: Path) -> Path:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text, encoding="utf-8")
    out = tmp_path / "runs" / name
    main(["run", str(scenario), "--report-dir", str(out), "--quiet", "--sign-key", str(key)])
    return out


def _forge_a_pass(directory: Path) -> None:
    path = directory / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    assert results["verdict"] == "fail"
    results["verdict"], results["exit_code"] = "pass", 0
    for check in results["assertions"]:
        check["status"], check["findings"] = "pass", []
    path.write_text(json.dumps(results), encoding="utf-8")


def test_a_rewritten_results_json_is_unproven_not_a_pass(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    forged = _signed_run(tmp_path, "sabotaged", SABOTAGED + "controls: [NIST CP-9]\n", keys[0])
    _forge_a_pass(forged)
    _signed_run(tmp_path, "roundtrip", PASSING, keys[0])  # the quiet control, beside it
    page = tmp_path / "index.html"
    assert main(["summary", str(tmp_path / "runs"), "--out", str(page), "--public-key", str(keys[1])]) == 0
    text = page.read_text(encoding="utf-8")
    assert "2 drills: 1 passed, 0 failed, 1 errors" in text
    assert "UNPROVEN" in text and "records PASS, but results.json is not the file that was signed" in text
    assert text.count('<span class="badge pass">PASS</span>') == 1
    coverage = text.split("Control coverage")[1]
    assert '<span class="badge neutral">unproven</span>' in coverage and "evidenced" not in coverage

    out = tmp_path / "rerendered"
    argv = ["report", str(forged / "results.json"), "--out", str(out), "--public-key", str(keys[1])]
    assert main(argv) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="verdict verdict-error"' in html and "UNPROVEN" in html
    assert "It records PASS, but that is unproven" in html


def test_a_forged_review_alone_leaves_the_verdict_standing(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Not over-reaching: the drill's own record is intact, only a review is not."""
    run = _signed_run(tmp_path, "roundtrip", PASSING, keys[0])
    argv = ["evidence", "sign-off", str(run), "--reviewer", "alice", "--decision", "accepted"]
    assert main([*argv, "--sign-key", str(keys[0]), "--public-key", str(keys[1])]) == 0
    (review,) = (run / "reviews").glob("*.json")
    review.write_text(review.read_text().replace('"alice"', '"mallory"'))
    page = tmp_path / "index.html"
    assert main(["summary", str(tmp_path / "runs"), "--out", str(page), "--public-key", str(keys[1])]) == 0
    text = page.read_text(encoding="utf-8")
    assert "1 drills: 1 passed" in text and "UNPROVEN" not in text and "NOT intact" in text
    out = tmp_path / "rerendered"
    assert main(["report", str(run / "results.json"), "--out", str(out), "--public-key", str(keys[1])]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="verdict verdict-pass"' in html and "UNPROVEN" not in html
