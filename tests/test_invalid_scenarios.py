"""Golden-file tests for what users see when a scenario is invalid.

Each ``tests/data/invalid/<case>.yaml`` sits beside ``<case>.expected``: the exact problem
lines, one per line, with ``{file}`` standing for the path the test passed in and ``{dir}``
for its directory. A message that changes must be re-read by a person and re-blessed here,
because these lines are the whole user interface of ``drproof validate``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from drills.cli import main
from drills.loader import load_scenario
from engine.errors import ValidationFailed

ROOT = Path(__file__).resolve().parent.parent
INVALID = Path(__file__).resolve().parent / "data" / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


def _expected(case: str) -> list[str]:
    path = INVALID / f"{case}.yaml"
    text = (INVALID / f"{case}.expected").read_text(encoding="utf-8")
    return [line.replace("{file}", str(path)).replace("{dir}", str(path.parent)) for line in text.splitlines()]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``main`` installs a SIGTERM handler and prints through Rich: keep both from leaking or varying."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_every_case_has_a_golden_file() -> None:
    assert len(CASES) >= 14
    goldens = sorted(p.stem for p in INVALID.glob("*.expected"))
    assert goldens == CASES


@pytest.mark.parametrize("case", CASES)
def test_problems_match_golden(case: str) -> None:
    path = INVALID / f"{case}.yaml"
    with pytest.raises(ValidationFailed) as caught:
        load_scenario(path)
    problems = caught.value.problems
    assert [str(p) for p in problems] == _expected(case)
    assert all(p.file == str(path) for p in problems)
    locations = [(p.line or 0, p.column or 0) for p in problems]
    assert locations == sorted(locations), "problems must be reported in file order"


def test_several_problems_are_all_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_scenario(INVALID / "several_problems.yaml")
    paths = [p.path for p in caught.value.problems]
    assert paths == [
        "name",
        "objectives.rto",
        "stack.components.db.seed.customers",
        "steps[1].disaster.fault",
        "steps[2].disaster.target",
        "steps[3].restore.from",
        "assertions[1].uptime",
    ]


@pytest.mark.parametrize("case", ["several_problems", "unknown_fault"])
def test_cli_validate_prints_problems(
    case: str, cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A wide console: this test is about what is printed, not about line wrapping
    # (see test_cli_validate_does_not_wrap_problem_lines).
    monkeypatch.setenv("COLUMNS", "1000")
    path = INVALID / f"{case}.yaml"
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == _expected(case)
    assert captured.out == ""


def test_cli_validate_does_not_wrap_problem_lines(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    path = INVALID / "unknown_fault.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == _expected("unknown_fault")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_validate(path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "ok" in captured.out


def test_shipped_scenarios_exist() -> None:
    assert len(SHIPPED) >= 1
