"""A fleet's summary page counts a drill as the scorecard does (review of verdicts, finding 6).

A drill whose results.json says pass but whose ``drproof run`` exited 2 (it crashed after
writing them: signing, telemetry, a PDF) is an error on the scorecard and in the exit
code; the summary page re-read the results.json and showed its PASS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drills import fleet, scorecard
from drills.cli import main
from tests.test_pytest_plugin import PASSING


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drill")
    scenario = root / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    assert main(["run", str(scenario), "--report-dir", str(root / "report"), "--quiet"]) == 0
    return root / "report" / "results.json"


def _page(passing: Path, root: Path, code: int) -> tuple[str, str]:
    drill = fleet.Drill(Path("a.yaml"), "a", root / "a", root / "a.log")
    drill.report_dir.mkdir(parents=True)
    shutil.copy(passing, drill.report_dir / "results.json")
    drill.log.write_text("RuntimeError: the signing agent went away\n", encoding="utf-8")
    outcome = fleet._outcome(drill, code, 1.0)
    page = scorecard.write_outputs([outcome], root)["summary"].read_text(encoding="utf-8")
    return outcome.status, page


def test_a_drill_whose_exit_code_contradicts_its_results_is_an_error_on_the_page(passing: Path, tmp_path: Path) -> None:
    status, page = _page(passing, tmp_path, 2)
    assert status == "error"
    assert "1 drills: 0 passed, 0 failed, 1 errors" in page and ">PASS<" not in page
    assert "verdict pass but drproof exited 2" in page and "signing agent went away" in page


def test_a_drill_that_passed_is_a_pass_on_the_page(passing: Path, tmp_path: Path) -> None:
    status, page = _page(passing, tmp_path, 0)
    assert status == "pass"
    assert "1 drills: 1 passed, 0 failed, 0 errors" in page and ">PASS<" in page and "Could not run" not in page
