"""A port taken between being picked and being bound: the server starts on another one.

The local runtime picks a free port and the server binds it a moment later; under load
another process took it in between and a CI run failed ("Address already in use"). Here
the port each server first gets is held by the test, as that other process would.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from engine.runtime.local_redis_ha import LocalSentinelRedis
from engine.runtime.topology import SentinelSpec

pytestmark = [pytest.mark.integration]


@pytest.fixture
def first_port_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The first port handed out is bound by someone else; later ones are really free."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    real = processes.free_port
    handed: list[int] = []

    def free_port() -> int:
        port = taken if not handed else real()
        handed.append(port)
        return port

    monkeypatch.setattr(processes, "free_port", free_port)
    try:
        yield handed
    finally:
        holder.close()


def test_redis_starts_on_another_port_when_its_port_was_taken(tmp_path: Path, first_port_taken: list[int]) -> None:
    with LocalRuntime(tmp_path) as rt:
        svc = rt.redis("cache")
        assert svc.port != first_port_taken[0] and svc.client().ping()
        assert "Address already in use" in svc.log.read_text()


def test_postgres_starts_on_another_port_when_its_port_was_taken(tmp_path: Path, first_port_taken: list[int]) -> None:
    with LocalRuntime(tmp_path) as rt:
        svc = rt.postgres("db")
        assert svc.port != first_port_taken[0] and svc.is_running()
        assert "Address already in use" in svc.log.read_text()


def test_a_sentinel_starts_on_another_port_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Sentinel's port is taken as it is picked; it starts on another and the topology forms."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    real_free_port, real_spawn = processes.free_port, LocalSentinelRedis._spawn_sentinel
    armed: list[bool] = []

    def free_port() -> int:
        return taken if armed and armed.pop() else real_free_port()

    def spawn(self: LocalSentinelRedis, name: str, base: Path, master_port: int) -> tuple[int, subprocess.Popen[bytes]]:
        if name == "sentinel0" and not (base / "sentinel.log").exists():
            armed.append(True)  # its first start only
        return real_spawn(self, name, base, master_port)

    monkeypatch.setattr(processes, "free_port", free_port)
    monkeypatch.setattr(LocalSentinelRedis, "_spawn_sentinel", spawn)
    try:
        with LocalRuntime(tmp_path) as rt:
            topology = rt.server("redis-sentinel", "cache", SentinelSpec(replicas=1, sentinels=3))
            addresses = topology.sentinel_addresses()
            assert len(addresses) == 3 and f"127.0.0.1:{taken}" not in addresses
            assert topology.primary() == "node0" and topology.client().ping()
            log = (tmp_path / "runtime" / "redis-cache-sentinel0" / "sentinel.log").read_text()
            assert "Address already in use" in log
    finally:
        holder.close()
