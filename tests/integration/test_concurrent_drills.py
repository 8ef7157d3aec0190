"""Ten drills at once on one machine, as a CI runner with parallel jobs runs them (issue 18).

Each is a separate ``drproof run`` process picking its own ports, work directory and
passwords; none may take another's port, files or servers. Under this load the
"Address already in use" race failed a shipped scenario once: every one must pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import read_results, servers_under

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TEN = [
    "postgres-drop-table",
    "postgres-delete-data-dir",
    "redis-flushall",
    "redis-kill",
    "redis-rdb-flushall",
    "volumes-delete-files",
    "configuration-modify",
    "vectorstore-delete-index",
    "corrupt-backup",
    "application-restart",
]


def test_ten_shipped_scenarios_at_once_all_pass(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SCENARIOS.parent)}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drills.cli",
                "run",
                str(SCENARIOS / f"{name}.yaml"),
                "--quiet",
                "--report-dir",
                str(tmp_path / name),
                "--work-dir",
                str(tmp_path / "work" / name),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for name in TEN
    }
    outcomes = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        outcomes[name] = (proc.returncode, out.decode(errors="replace")[-2000:])
    failed = {n: o for n, o in outcomes.items() if o[0] != 0}
    assert not failed, failed
    for name in TEN:
        assert read_results(tmp_path / name)["verdict"] == "pass"
    assert servers_under(tmp_path / "work") == []
