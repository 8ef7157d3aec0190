"""A user's check never passes on a restore test's sandbox that no restore filled.

Found by review: with the restore failed (a damaged RDB), ``EXISTS banned:1`` expecting
``= 0`` and ``TTL session:1`` expecting ``< 0`` passed on the empty sandbox: green test
cases in junit.xml and the report for data that were never there. They are now
``not_compared`` (never a pass, never a detection) and the run fails on its failed restore
(exit 1, as before); results.json stays readable. Quiet control: the same checks on the
healthy RDB read the restored keys and pass. Debian's redis-server 7.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from reports.writers import load_results
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

CHECKS = [
    {"redis": {"target": "cache", "name": "no-banned", "command": ["EXISTS", "banned:1"], "expect": "= 0"}},
    {"redis": {"target": "cache", "name": "sessions", "command": ["EXISTS", "session:1"], "expect": "= 1"}},
]


@pytest.fixture(scope="module")
def rdb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("rdb")
    password = secrets.token_urlsafe(12)
    out = tmp / "dump.rdb"
    with redis_server(require_debian_redis(), tmp / "src", password) as port:
        r = redis.Redis(host="127.0.0.1", port=port, password=password)
        for i in range(300):
            r.set(f"session:{i}", os.urandom(40))
        env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}
        subprocess.run(["redis-cli", "-p", str(port), "--rdb", str(out)], env=env, check=True, capture_output=True)
    return out.read_bytes()


def _run(tmp_path: Path, data: bytes, checks: list[Any]) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    scenario = tmp_path / "test.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "unrestored-sandbox",
                "objectives": {"rto": "10m"},
                "source": {"backups": {"cache": {"format": "rdb", "path": str(path)}}},
                "assertions": checks,
            }
        )
    )
    code = run_cli(["run", str(scenario), "--report-dir", str(tmp_path / "report"), "-q"])
    load_results(tmp_path / "report" / "results.json")  # no contradiction between verdict and checks
    return code, read_results(tmp_path / "report")


def test_checks_on_a_sandbox_whose_restore_failed_are_not_compared(tmp_path: Path, rdb: bytes) -> None:
    middle = len(rdb) // 2
    damaged = rdb[:middle] + bytes(b ^ 0x5A for b in rdb[middle : middle + 64]) + rdb[middle + 64 :]
    code, results = _run(tmp_path, damaged, [*CHECKS, {"redis": {**CHECKS[0]["redis"], "name": "control", "outcome": "fail"}}])
    statuses = {a["id"]: a["status"] for a in results["assertions"]}
    assert statuses == {
        "timeline": "fail",
        "redis[no-banned]": "not_compared",
        "redis[sessions]": "not_compared",
        "redis[control]": "not_compared",
    }
    assert (code, results["verdict"]) == (1, "fail")
    summary = next(a["summary"] for a in results["assertions"] if a["id"] == "redis[no-banned]")
    assert "sandbox and its restore failed" in summary and "damaged" in summary


def test_the_same_checks_pass_on_the_restored_sandbox(tmp_path: Path, rdb: bytes) -> None:
    code, results = _run(tmp_path, rdb, CHECKS)
    assert {a["id"]: a["status"] for a in results["assertions"]} == {
        "timeline": "pass",
        "redis[no-banned]": "pass",
        "redis[sessions]": "pass",
    }
    assert code == 0
