"""A results.json whose verdict its own checks contradict is refused (review of verdicts, finding 3).

A real drill writes a passing results.json; edited copies (a check in error or failed
under ``"verdict": "pass"``, a verdict with another verdict's exit code, no check at all)
rendered a green report, counted as a pass on the summary page and in a fleet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drills import fleet
from drills.cli import main
from engine.errors import ConfigError
from reports import load_results
from reports.summary import collect
from tests.test_pytest_plugin import PASSING

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("drill")
    scenario = root / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    assert main(["run", str(scenario), "--report-dir", str(root / "report"), "--quiet"]) == 0
    data: dict[str, Any] = json.loads((root / "report" / "results.json").read_text(encoding="utf-8"))
    assert data["verdict"] == "pass" and len(data["assertions"]) >= 2
    return data


def _last_check(status: str) -> Edit:
    return lambda d: d["assertions"][-1].update(status=status)


CONTRADICTIONS: dict[str, Edit] = {
    "a check in error under pass": _last_check("error"),
    "a failed check under pass": _last_check("fail"),
    "a check not run under pass": _last_check("not_run"),
    "fail with exit code 0": lambda d: d.update(verdict="fail"),
    "pass with exit code 2": lambda d: d.update(exit_code=2),
    "pass with no check": lambda d: d.update(assertions=[]),
    "pass with a drill error": lambda d: d.update(error="the restore did not finish"),
    "fail with no failed check": lambda d: d.update(verdict="fail", exit_code=1),
    "pass with every declared check not compared": lambda d: [
        a.update(status="not_compared") for a in d["assertions"] if a["id"] != "timeline"
    ],
    "a negative RTO": lambda d: d["measured"].update(rto_seconds=-5.0),
    "an RTO of NaN": lambda d: d["measured"].update(rto_seconds=float("nan")),
    "a component's infinite RTO": lambda d: d["measured"]["components"].update(c=float("inf")),
}


def _write(data: dict[str, Any], edit: Edit, directory: Path) -> Path:
    copy = json.loads(json.dumps(data))
    edit(copy)
    path = directory / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(copy, indent=2), encoding="utf-8")
    return path


@pytest.mark.parametrize("edit", CONTRADICTIONS.values(), ids=CONTRADICTIONS.keys())
def test_a_verdict_its_checks_contradict_is_refused_everywhere(
    passing: dict[str, Any], edit: Edit, tmp_path: Path
) -> None:
    path = _write(passing, edit, tmp_path / "x")
    with pytest.raises(ConfigError, match=f"{path}: not a results file drproof wrote"):
        load_results(path)
    assert main(["report", str(path), "--out", str(tmp_path / "html")]) == 2
    page = collect([tmp_path / "x"], tmp_path / "index.html")
    assert page.entries == [] and len(page.unreadable) == 1
    drill = fleet.Drill(Path("x.yaml"), "x", tmp_path / "x", tmp_path / "x.log")
    assert fleet._outcome(drill, 0, 1.0).status == "error"


CONSISTENT: dict[str, Edit] = {
    "as written": lambda d: None,
    "a check not compared beside one that passed": lambda d: d["assertions"].append(
        {**d["assertions"][-1], "id": "drift", "name": "drift", "status": "not_compared", "summary": "not compared"}
    ),
    "fail": lambda d: (_last_check("fail")(d), d.update(verdict="fail", exit_code=1)),
    "error": lambda d: (_last_check("error")(d), d.update(verdict="error", exit_code=2)),
    "interrupted": lambda d: (_last_check("not_run")(d), d.update(verdict="error", exit_code=130, error="interrupted")),
    # A restore test whose restore failed: its checks of the empty sandbox are not compared,
    # and the failed timeline is the finding (tests/integration/test_checks_on_unrestored_sandbox.py).
    "fail on a failed timeline, every declared check not compared": lambda d: (
        [a.update(status="not_compared" if a["id"] != "timeline" else "fail") for a in d["assertions"]],
        d.update(verdict="fail", exit_code=1),
    ),
}


@pytest.mark.parametrize("edit", CONSISTENT.values(), ids=CONSISTENT.keys())
def test_what_the_runner_writes_is_read(passing: dict[str, Any], edit: Edit, tmp_path: Path) -> None:
    path = _write(passing, edit, tmp_path / "x")
    results = load_results(path)
    assert main(["report", str(path), "--out", str(tmp_path / "html")]) == 0
    assert len(collect([tmp_path / "x"], tmp_path / "index.html").entries) == 1
    drill = fleet.Drill(Path("x.yaml"), "x", tmp_path / "x", tmp_path / "x.log")
    assert fleet._outcome(drill, results.exit_code, 1.0).status == results.verdict


def test_a_results_file_that_cannot_be_read_is_counted_as_an_error(passing: dict[str, Any], tmp_path: Path) -> None:
    # Review of verdicts, finding 7: a truncated results.json was left out of the page's count.
    from reports.summary import write_summary

    _write(passing, lambda d: None, tmp_path / "good")
    cut = tmp_path / "cut" / "results.json"
    cut.parent.mkdir()
    cut.write_bytes(json.dumps(passing, indent=2).encode()[:500])
    write_summary([tmp_path], tmp_path / "index.html")
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "2 drills: 1 passed, 0 failed, 1 errors" in text and "Could not be read" in text and str(cut) in text


def test_a_page_of_readable_runs_counts_only_them(passing: dict[str, Any], tmp_path: Path) -> None:
    from reports.summary import write_summary

    _write(passing, lambda d: None, tmp_path / "good")
    write_summary([tmp_path], tmp_path / "index.html")
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "1 drills: 1 passed, 0 failed, 0 errors" in text and "Could not be read" not in text


def test_a_value_of_the_wrong_type_is_named_by_file_and_line(passing: dict[str, Any], tmp_path: Path) -> None:
    # Review of verdicts: pydantic's path alone ("assertions.1.status") made the reader count list items.
    def edit(d: dict[str, Any]) -> None:
        d["assertions"][1]["status"] = 5
        d["measured"]["rto_seconds"] = "fast"
        del d["scenario"]["name"]

    path = tmp_path / "results.json"
    copy = json.loads(json.dumps(passing))
    edit(copy)
    text = json.dumps(copy, indent=2, sort_keys=True)
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    status = next(i for i, line in enumerate(lines, 1) if '"status": 5' in line)
    rto = next(i for i, line in enumerate(lines, 1) if '"rto_seconds": "fast"' in line)
    scenario = next(i for i, line in enumerate(lines, 1) if line == '  "scenario": {')
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid drproof results file, 3 problems")
    assert f"line {status}: assertions.1.status:" in message
    assert f"line {rto}: measured.rto_seconds:" in message
    assert f"line {scenario}: scenario.name: Field required" in message
