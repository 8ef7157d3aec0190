"""A teardown that fails after the checks ran keeps what the checks found (found by review).

The checks are judged before teardown. When stopping the servers then failed, every
result was replaced by ``not_run`` ("not checked: the drill stopped before the end"): a
fidelity failure that had found lost data vanished from results.json, report.html and
junit.xml, and the report said checks were never made that had been. The verdict stays
``error`` (exit 2): the run did not end cleanly; but what was checked is said as it was.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drills.cli import main
from engine.errors import RuntimeStartError
from engine.runtime.local import LocalRuntime
from tests.test_pytest_plugin import PASSING, SABOTAGED


def _run(tmp_path: Path, name: str, text: str) -> tuple[int, dict, ET.Element, str]:  # type: ignore[type-arg]
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text, encoding="utf-8")
    out = tmp_path / name
    code = main(["run", str(scenario), "--report-dir", str(out), "--quiet"])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    junit = ET.parse(out / "junit.xml").getroot()
    return code, results, junit, (out / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def failing_teardown(monkeypatch: pytest.MonkeyPatch) -> None:
    original = LocalRuntime.close

    def close(self: LocalRuntime) -> None:
        original(self)
        raise RuntimeStartError("some servers could not be stopped cleanly: redis: still running")

    monkeypatch.setattr(LocalRuntime, "close", close)


def test_a_failed_teardown_keeps_the_check_that_found_lost_data(tmp_path: Path, failing_teardown: None) -> None:
    code, results, junit, html = _run(tmp_path, "sabotaged", SABOTAGED)
    assert code == 2 and (results["verdict"], results["exit_code"]) == ("error", 2)
    assert "could not be stopped cleanly" in results["error"]
    status = {a["id"]: a["status"] for a in results["assertions"]}
    assert status["fidelity[app-config]"] == "fail", status
    assert "not_run" not in status.values()
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert cases["fidelity[app-config]"].find("failure") is not None
    assert cases["drill"].find("error") is not None and junit.get("errors") == "1"
    assert "not checked: the drill stopped before the end" not in html
    assert "could not be stopped cleanly" in html


def test_a_failed_teardown_after_passing_checks_is_still_an_error(tmp_path: Path, failing_teardown: None) -> None:
    code, results, junit, html = _run(tmp_path, "roundtrip", PASSING)
    assert code == 2 and results["verdict"] == "error"
    assert {a["status"] for a in results["assertions"]} == {"pass"}
    assert junit.get("errors") == "1" and "<title>ERROR:" in html and 'class="verdict verdict-error"' in html


def test_the_quiet_control_a_clean_teardown_stays_green(tmp_path: Path) -> None:
    code, results, junit, html = _run(tmp_path, "roundtrip", PASSING)
    assert code == 0 and results["verdict"] == "pass" and results["error"] is None
    assert (junit.get("errors"), junit.get("failures"), junit.get("skipped")) == ("0", "0", "0")
    assert "<title>PASS:" in html and 'class="verdict verdict-pass"' in html
