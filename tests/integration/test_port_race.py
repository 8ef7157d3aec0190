"""A port taken between being picked and being bound: the server starts on another one.

The local runtime picks a free port and the server binds it a moment later; under load
another process took it in between and a CI run failed ("Address already in use"). Here
the port each server first gets is held by the test, as that other process would.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runtime import processes
from engine.runtime.local import LocalRuntime

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
