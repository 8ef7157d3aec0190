"""Fleets: ``drproof run DIR|FILES... --parallel N`` (issue 20).

The drills here have one configuration component (no server to start), so a fleet of
three takes a few seconds. Each drill of a fleet is a child ``drproof run``; what is
tested is what the fleet makes of them: the scorecard's order, the exit code, the
combined JUnit, the summary page, and that nothing of an earlier run is read as this one's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drills import fleet, scorecard
from drills.cli import main
from drills.history import parse_threshold
from engine.errors import ConfigError
from tests.test_pytest_plugin import INVALID, NOT_A_SCENARIO, PASSING, SABOTAGED

REPO = Path(__file__).resolve().parent.parent

# Long enough to be interrupted in the middle of the drill, between backup and disaster.
SLOW = PASSING.replace("name: config-roundtrip", "name: config-slow").replace(
    "  - disaster:", "  - wait: 30s\n  - disaster:"
)


def _write(root: Path, relpath: str, text: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _fleet_dir(root: Path) -> Path:
    """A directory with a passing, a failing and an invalid drill, and YAML that is no drill."""
    _write(root, "drills/roundtrip.yaml", PASSING)
    _write(root, "drills/sabotaged.yaml", SABOTAGED)
    _write(root, "drills/invalid.yaml", INVALID)
    _write(root, "drills/backup-config.yaml", NOT_A_SCENARIO)
    _write(root, "drills/nested/not-run.yaml", PASSING)  # subdirectories are not walked
    return root / "drills"


def test_a_directory_runs_every_scenario_in_it_worst_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = _fleet_dir(tmp_path)
    out = tmp_path / "out"
    code = main(["run", str(source), "--parallel", "3", "--report-dir", str(out)])
    printed = capsys.readouterr()
    assert code == 2, printed.err  # the worst drill: the invalid one
    card = printed.out.strip().splitlines()
    assert [line.split()[:2] for line in card] == [["ERROR", "invalid"], ["FAIL", "sabotaged"], ["PASS", "roundtrip"]]
    assert "unknown fault 'no_such_fault'" in card[0] and str(out / "invalid.log") in card[0]
    assert str(out / "sabotaged" / "report.html") in card[1] and "fidelity[app-config]" in card[1]
    assert "RTO" in card[2] and str(out / "roundtrip" / "report.html") in card[2]
    assert "3 drills: 1 passed, 1 failed, 1 error" in printed.err
    assert not (out / "not-run").exists() and not (out / "backup-config").exists()

    # One JUnit document, a testsuite per drill, totals that add up.
    root = ET.parse(out / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["invalid", "config-sabotaged", "config-roundtrip"]
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key, "-1")) == sum(int(s.get(key, "0")) for s in suites)
    assert suites[0].find("testcase/error") is not None  # the invalid drill is an error, never absent
    assert suites[1].find("testcase/failure") is not None
    assert suites[2].find(".//failure") is None and suites[2].find(".//error") is None

    # The summary page lists the two that ran and names the one that could not.
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "3 drills: 1 passed, 1 failed, 1 errors" in page
    assert "config-roundtrip" in page and "config-sabotaged" in page
    assert "Could not run" in page and "no_such_fault" in page


def test_json_scorecard_and_exit_code_of_a_failing_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok = _write(tmp_path, "a/roundtrip.yaml", PASSING)
    same_stem = _write(tmp_path, "b/roundtrip.yaml", PASSING)
    bad = _write(tmp_path, "sabotaged.yaml", SABOTAGED)
    code = main(["run", str(ok), str(same_stem), str(bad), "--parallel", "2", "--report-dir", "out", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1  # a failure, no error
    assert [(r["drill"], r["status"]) for r in rows] == [
        ("sabotaged", "fail"),
        ("roundtrip", "pass"),
        ("roundtrip-2", "pass"),  # same file name in another directory: its own report directory
    ]
    assert all((tmp_path / "out" / r["drill"] / "results.json").is_file() for r in rows)


def test_an_all_passing_fleet_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok = _write(tmp_path, "roundtrip.yaml", PASSING)
    assert main(["run", str(ok), "--parallel", "1", "--report-dir", "out", "--quiet"]) == 0
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert root.get("errors") == "0" and root.get("failures") == "0" and len(root.findall("testsuite")) == 1


def test_one_file_without_parallel_is_still_a_plain_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok = _write(tmp_path, "roundtrip.yaml", PASSING)
    assert main(["run", str(ok), "--report-dir", "out", "--quiet"]) == 0
    assert (tmp_path / "out" / "results.json").is_file()  # its reports directly, no subdirectory
    assert not (tmp_path / "out" / "roundtrip").exists()


def test_an_earlier_run_s_reports_are_refused_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A results.json left in a drill's directory would pass for this run's if the drill wrote none."""
    monkeypatch.chdir(tmp_path)
    ok = _write(tmp_path, "roundtrip.yaml", PASSING)
    _write(tmp_path, "out/roundtrip/results.json", "{}")
    with pytest.raises(ConfigError, match="already holds a drill's reports"):
        fleet.plan([ok], tmp_path / "out")
    assert main(["run", str(ok), "--parallel", "2", "--report-dir", "out"]) == 2
    assert not (tmp_path / "out" / "junit.xml").exists()


@pytest.mark.parametrize("flag", ["--metrics-textfile", "--event-file"])
def test_options_naming_one_file_are_refused_before_any_drill(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = _write(tmp_path, "roundtrip.yaml", PASSING)
    code = main(["run", str(ok), "--parallel", "2", "--report-dir", str(tmp_path / "out"), flag, str(tmp_path / "f")])
    assert code == 2
    assert f"{flag} names one file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_two_scenarios_of_one_name_are_refused_with_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """History matches runs by name: two files named alike would judge each other's RTOs (found by review)."""
    one = _write(tmp_path, "a/roundtrip.yaml", PASSING)
    two = _write(tmp_path, "b/roundtrip.yaml", PASSING)
    history = tmp_path / "history.sqlite"
    out = tmp_path / "out"
    code = main(["run", str(one), str(two), "--parallel", "2", "--report-dir", str(out), "--history", str(history)])
    assert code == 2
    assert "are both named 'config-roundtrip'" in capsys.readouterr().err
    assert not out.exists()  # refused before any drill
    # The quiet control: distinct names run, and so does the same pair without --history.
    renamed = _write(tmp_path, "b/roundtrip.yaml", PASSING.replace("name: config-roundtrip", "name: config-other"))
    args = ["run", str(one), str(renamed), "--parallel", "2", "--quiet", "--history", str(history)]
    assert main([*args, "--report-dir", str(tmp_path / "out2")]) == 0


def test_a_missing_path_or_a_directory_without_drills_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such scenario file or directory"):
        fleet.scenario_files([tmp_path / "nope.yaml"])
    _write(tmp_path, "empty/backup-config.yaml", NOT_A_SCENARIO)
    with pytest.raises(ConfigError, match="no scenario files in this directory"):
        fleet.scenario_files([tmp_path / "empty"])


def test_parallel_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "x.yaml", "--parallel", "0"])
    assert "expected a whole number of 1 or more" in capsys.readouterr().err


def test_options_reach_every_drill_and_survive_the_round_trip() -> None:
    from drills.cli import _parser

    args = _parser().parse_args(
        ["run", "a.yaml", "b.yaml", "--runtime", "local", "--history", "h.sqlite", "--fail-on-regression", "12.5%",
         "--regression-floor", "250ms", "--pdf", "--keep-workdir", "--webhook-url-env", "HOOK", "--webhook-on", "failure"]
    )  # fmt: skip
    options = fleet.child_options(args)
    child = _parser().parse_args(["run", "a.yaml", *options])
    assert child.runtime == "local" and child.history == Path("h.sqlite") and child.pdf and child.keep_workdir
    assert child.fail_on_regression == parse_threshold("12.5%") and child.regression_floor == 0.25
    assert child.webhook_url_env == "HOOK" and child.webhook_on == "failure"


def _outcome(code: int, verdict: str | None, problem: str | None = None) -> fleet.Outcome:
    from engine.journal import Results

    drill = fleet.Drill(Path("x.yaml"), "x", Path("out/x"), Path("out/x.log"))
    results = None
    if verdict is not None:
        results = Results.model_construct(verdict=verdict, exit_code={"pass": 0, "fail": 1}.get(verdict, 2))
    return fleet.Outcome(drill, code, 1.0, results, problem)


@pytest.mark.parametrize(
    ("code", "verdict", "problem", "status"),
    [
        (0, "pass", None, "pass"),
        (1, "fail", None, "fail"),
        (2, "error", None, "error"),
        (0, None, "no results (exit code 0): ...", "error"),  # no record: never a pass
        (2, "pass", "verdict pass but drproof exited 2: signing failed", "error"),
        (-9, None, "killed", "error"),
    ],
)
def test_a_drill_that_cannot_say_how_it_ended_is_an_error(
    code: int, verdict: str | None, problem: str | None, status: str
) -> None:
    outcome = _outcome(code, verdict, problem)
    assert outcome.status == status
    assert fleet.exit_code([_outcome(0, "pass"), outcome]) == fleet.RANK[status]


def test_the_scorecard_orders_errors_then_failures_then_passes() -> None:
    outcomes = [_outcome(0, "pass"), _outcome(2, None, "crashed"), _outcome(1, "fail")]
    assert [o.status for o in scorecard.ordered(outcomes)] == ["error", "fail", "pass"]
    assert fleet.exit_code([]) == 0


def test_sigterm_stops_the_running_drills_once_and_keeps_their_partial_results(tmp_path: Path) -> None:
    """As a Kubernetes pod is stopped: the fleet interrupts each running drill, which tears down and
    writes what it has, starts none after, and still writes its scorecard and JUnit with every drill."""
    _write(tmp_path, "drills/slow-a.yaml", SLOW.replace("config-slow", "config-slow-a"))
    _write(tmp_path, "drills/slow-b.yaml", SLOW.replace("config-slow", "config-slow-b"))
    _write(tmp_path, "drills/slow-c.yaml", SLOW.replace("config-slow", "config-slow-c"))  # waits its turn
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drills.cli",
            "run",
            str(tmp_path / "drills"),
            "--parallel",
            "2",
            "--report-dir",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    logs = [out / "slow-a.log", out / "slow-b.log"]
    deadline = time.monotonic() + 60
    # Both drills are in their 30 s wait once their logs show the backup phase ended.
    while not all(p.is_file() and "wait" in p.read_text(errors="replace") for p in logs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc_out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    for name in ("slow-a", "slow-b"):
        results = json.loads((out / name / "results.json").read_text())
        assert results["exit_code"] == 130, name  # each drill was interrupted, tore down and said so
    card = proc_out.decode().splitlines()
    assert [line.split()[:2] for line in card] == [["ERROR", "slow-a"], ["ERROR", "slow-b"], ["ERROR", "slow-c"]]
    assert "not run: the fleet was interrupted" in card[2]
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    assert len(suites) == 3 and all(s.get("errors") != "0" for s in suites)  # all three drills, none green


def test_a_scenario_with_a_misspelt_top_level_key_is_an_error_not_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the directory sniff wanted both ``stack:`` and ``steps:``, so a drill
    whose ``steps:`` was typed ``step:`` was silently left out: "1 drills: 1 passed", exit 0,
    a green combined JUnit and index page. A misspelt key makes an invalid drill, never no drill.
    """
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "drills/roundtrip.yaml", PASSING)
    renamed = PASSING.replace("name: config-roundtrip", "name: typo")
    _write(tmp_path, "drills/typo-steps.yaml", renamed.replace("steps:", "step:"))
    _write(tmp_path, "drills/typo-stack.yaml", renamed.replace("stack:", "stak:"))
    # Not drills, and still not collected: a backup configuration, CI files (one with top-level steps:).
    _write(tmp_path, "drills/backup-config.yaml", NOT_A_SCENARIO)
    _write(tmp_path, "drills/cloudbuild.yaml", "steps:\n  - name: gcr.io/cloud-builders/docker\n    args: [build, .]\n")
    out = tmp_path / "out"
    code = main(["run", str(tmp_path / "drills"), "--parallel", "2", "--report-dir", str(out)])
    printed = capsys.readouterr()
    assert code == 2, printed.err
    card = printed.out.strip().splitlines()
    assert sorted(line.split()[:2] for line in card) == [
        ["ERROR", "typo-stack"],
        ["ERROR", "typo-steps"],
        ["PASS", "roundtrip"],
    ]
    assert "3 drills: 1 passed, 0 failed, 2 errors" in printed.err
    root = ET.parse(out / "junit.xml").getroot()
    assert sorted(s.get("name") for s in root.findall("testsuite")) == ["config-roundtrip", "typo-stack", "typo-steps"]
    assert root.get("errors") == "2"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "3 drills: 1 passed, 0 failed, 2 errors" in page and "typo-steps" in page and "typo-stack" in page
    assert not (out / "backup-config").exists() and not (out / "cloudbuild.log").exists()
