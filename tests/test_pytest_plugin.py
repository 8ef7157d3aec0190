"""The pytest plugin: scenario files become test items, and only scenario files do.

Each test runs pytest in a subprocess with ``pytester`` (an in-process run would import
numpy a second time, which numpy refuses) on small scenarios of one configuration
component (no server to start), so each test takes a few seconds. The
collection tests matter as much as the verdict tests: the project's own ``pytest`` run must
never pick up the deliberately invalid scenarios kept under ``tests/data``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.servers import require

pytest_plugins = ["pytester"]

PASSING = """\
name: config-roundtrip
stack:
  components:
    app-config: {kind: configuration}
steps:
  - backup: {name: release}
  - disaster: {target: app-config, fault: delete}
  - restore: {from: release}
assertions:
  - fidelity
"""

# The restore works, then a file is edited before the fidelity check: the drill fails.
SABOTAGED = """\
name: config-sabotaged
stack:
  components:
    app-config: {kind: configuration}
steps:
  - backup: {name: release}
  - disaster: {target: app-config, fault: delete}
  - restore: {from: release}
  - disaster: {target: app-config, fault: modify, file: database.ini, name: sabotage}
assertions:
  - fidelity
"""

INVALID = """\
name: config-invalid
stack:
  components:
    app-config: {kind: configuration}
steps:
  - backup: {name: release}
  - disaster: {target: app-config, fault: no_such_fault}
  - restore: {from: release}
assertions:
  - fidelity
"""

NOT_A_SCENARIO = """\
# A backup configuration: YAML, but no stack/steps, so never a drill.
repository:
  path: /var/backups/drproof
components:
  app-config: {kind: configuration}
"""


def _write(pytester: pytest.Pytester, relpath: str, text: str) -> Path:
    path = pytester.path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_passing_scenario_is_one_passed_test(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    result = pytester.runpytest_subprocess("scenarios", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*scenarios/roundtrip.yaml::roundtrip PASSED*"])


def test_failed_drill_names_the_assertion_and_where_it_was_declared(pytester: pytest.Pytester) -> None:
    path = _write(pytester, "scenarios/sabotaged.yaml", SABOTAGED)
    result = pytester.runpytest_subprocess("scenarios")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "verdict FAIL" in out
    assert "FAIL fidelity[app-config]:" in out
    assert "database.ini" in out  # the finding, not only the summary
    # `fidelity` is the 11th line of the file, indented by two.
    assert f"declared at {path.resolve()}:11:5" in out
    assert "Traceback" not in out


def test_invalid_scenario_fails_with_located_problems_not_a_traceback(pytester: pytest.Pytester) -> None:
    path = _write(pytester, "scenarios/invalid.yaml", INVALID)
    result = pytester.runpytest_subprocess("scenarios")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert f"invalid scenario {path}" in out
    assert f"{path}:7:" in out  # the line of the unknown fault
    assert "no_such_fault" in out
    assert "Traceback" not in out


def test_yaml_without_stack_and_steps_is_not_collected(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/backup-config.yaml", NOT_A_SCENARIO)
    _write(pytester, "scenarios/.gitlab-ci.yml", "stages: [test]\n")
    result = pytester.runpytest_subprocess("scenarios", "--drproof")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_scenario_with_a_misspelt_key_is_collected_and_fails(pytester: pytest.Pytester) -> None:
    """Found by review: ``step:`` for ``steps:`` made the file no scenario at all, so
    pytest ran nothing and a CI job gating on it stayed green."""
    _write(pytester, "scenarios/typo.yaml", PASSING.replace("steps:", "step:"))
    _write(pytester, "scenarios/cloudbuild.yaml", "steps:\n  - name: gcr.io/cloud-builders/docker\n")
    result = pytester.runpytest_subprocess("scenarios")
    result.assert_outcomes(failed=1)
    assert "invalid scenario" in result.stdout.str() and "Traceback" not in result.stdout.str()


def test_scenarios_outside_a_scenarios_directory_need_the_option(pytester: pytest.Pytester) -> None:
    # Mirrors this repository: invalid scenarios kept as test data under tests/data.
    _write(pytester, "tests/data/invalid/bad.yaml", INVALID)
    _write(pytester, "tests/test_nothing.py", "def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("tests")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("tests", "--drproof")
    result.assert_outcomes(passed=1, failed=1)


def test_a_scenario_named_on_the_command_line_is_collected(pytester: pytest.Pytester) -> None:
    _write(pytester, "drills/roundtrip.yaml", PASSING)
    pytester.runpytest_subprocess("drills").assert_outcomes()
    pytester.runpytest_subprocess("drills/roundtrip.yaml").assert_outcomes(passed=1)


def test_report_dir_option_and_marker(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    _write(pytester, "scenarios/sabotaged.yaml", SABOTAGED)
    report_dir = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        "scenarios", "-m", "drproof", "-k", "roundtrip", "--drproof-report-dir", str(report_dir)
    )
    result.assert_outcomes(passed=1, deselected=1)
    results = json.loads((report_dir / "roundtrip" / "results.json").read_text(encoding="utf-8"))
    assert results["verdict"] == "pass"
    assert (report_dir / "roundtrip" / "report.html").is_file()


def test_unknown_runtime_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    result = pytester.runpytest_subprocess("scenarios", "--drproof-runtime", "no-such-runtime")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--drproof-runtime 'no-such-runtime' is not available*"])


def test_history_and_the_regression_gate_through_pytest(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    history = pytester.path / "history.sqlite"
    for _ in range(4):
        pytester.runpytest_subprocess(
            "scenarios",
            "--drproof-history",
            str(history),
            "--drproof-fail-on-regression",
            "20%",
            "--drproof-report-dir",
            str(pytester.path / "out"),
        ).assert_outcomes(passed=1)
    results = json.loads((pytester.path / "out" / "roundtrip" / "results.json").read_text(encoding="utf-8"))
    gate = next(a for a in results["assertions"] if a["id"] == "regression[rto]")
    # Three passing runs were recorded before the fourth: the gate compares, and unchanged code passes.
    assert gate["status"] == "pass" and results["history"]["baseline_runs"] == 3
    import sqlite3

    with sqlite3.connect(history) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (4,)


def test_the_gate_without_a_history_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    result = pytester.runpytest_subprocess("scenarios", "--drproof-fail-on-regression", "20%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_restore_test_is_collected_by_its_source(pytester: pytest.Pytester) -> None:
    from drills.pytest_plugin import is_scenario_file

    path = _write(pytester, "scenarios/rt.yaml", "name: rt\nsource:\n  config: cfg.yaml\nassertions: [rto]\n")
    assert is_scenario_file(path)


def _require_xdist() -> None:
    """pytest-xdist is in the test extras: missing under CI=true is a broken set-up, not a skip."""
    import importlib.util

    require("pytest-xdist", importlib.util.find_spec("xdist") is not None, "pip install -e '.[test]'")


def test_drills_run_on_pytest_xdist_workers_each_in_its_own_directory(pytester: pytest.Pytester) -> None:
    """``pytest -n 2``: drills are independent items, so any worker runs any of them, and two
    scenario files of the same name never share a report directory."""
    _require_xdist()
    _write(pytester, "scenarios/roundtrip.yaml", PASSING)
    _write(pytester, "scenarios/sabotaged.yaml", SABOTAGED)
    _write(pytester, "scenarios/invalid.yaml", INVALID)
    _write(pytester, "team-b/scenarios/roundtrip.yaml", PASSING.replace("config-roundtrip", "team-b-roundtrip"))
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess("-n", "2", "-v", "scenarios", "team-b", "--drproof-report-dir", str(out))
    result.assert_outcomes(passed=2, failed=2)
    workers = {line.split("]")[0].lstrip("[") for line in result.stdout.lines if line.startswith("[gw")}
    assert workers == {"gw0", "gw1"}, result.stdout.lines  # both workers ran drills
    names = {
        json.loads((out / d / "results.json").read_text(encoding="utf-8"))["scenario"]["name"]
        for d in ("roundtrip", "roundtrip-2", "sabotaged")
    }
    assert names == {"config-roundtrip", "team-b-roundtrip", "config-sabotaged"}
    assert not (out / "invalid").exists()  # an invalid scenario runs nothing, as without xdist
