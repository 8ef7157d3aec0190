"""Orphaned System V segments: only those nothing is attached to, whose creator is gone, and (for a normal user) ours.

Found: 4096 segments left by SIGKILLed PostgreSQL servers filled ``kernel.shmmni`` and
every new server failed in initdb ("could not create shared memory segment").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime import sysv

HEADER = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime\n"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[tuple[int, int, int, int]]) -> None:
    """Rows of (shmid, creator pid, attached, uid)."""
    lines = [
        f"   1 {shmid} 600 56 {cpid} {cpid} {attached} {uid} {uid} {uid} {uid} 0\n"
        for shmid, cpid, attached, uid in rows
    ]
    table = tmp_path / "shm"
    table.write_text(HEADER + "".join(lines))
    monkeypatch.setattr(sysv, "_TABLE", table)


def test_only_unattached_segments_of_a_gone_creator_and_that_uid_are_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, alive = _dead_pid(), subprocess.Popen(["sleep", "30"])
    try:
        _table(
            tmp_path, monkeypatch, [(1, dead, 0, 999), (2, dead, 1, 999), (3, alive.pid, 0, 999), (4, dead, 0, 1000)]
        )
        assert [s.shmid for s in sysv.orphans(999)] == [1]
    finally:
        alive.kill()
        alive.wait()


def test_a_normal_users_run_takes_only_the_segments_of_servers_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = _dead_pid(), _dead_pid()
    monkeypatch.setattr(sysv, "_creators", {ours})
    _table(tmp_path, monkeypatch, [(1, ours, 0, 1000), (2, theirs, 0, 1000)])
    assert [s.shmid for s in sysv.orphans(1000, only_ours=True)] == [1]
    assert [s.shmid for s in sysv.orphans(1000)] == [1, 2]


def test_an_unreadable_table_is_no_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysv, "_TABLE", tmp_path / "missing")
    assert sysv.segments() == []
