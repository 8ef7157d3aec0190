"""A SIGKILLed PostgreSQL's System V segment is removed when its run closes; a live server's never is.

Found: killed servers (every drill's ``kill_primary``, crashed runs) each left one
segment; at 4096 (``kernel.shmmni``) every new PostgreSQL on the host failed in initdb.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.runtime import sysv
from engine.runtime.local import LocalPostgres, LocalRuntime

pytestmark = [pytest.mark.integration]


def _segments_of(pid: int) -> list[sysv.Segment]:
    return [s for s in sysv.segments() if s.creator == pid]


def _uid(server: LocalPostgres) -> int:
    owner = server.server_file_owner()
    return owner[0] if owner is not None else os.geteuid()


def test_a_killed_servers_segment_goes_with_its_run_and_a_live_ones_stays(tmp_path: Path) -> None:
    with LocalRuntime(tmp_path / "live") as other:
        live = other.postgres("live")
        assert live.proc is not None
        live_segments = _segments_of(live.proc.pid)
        assert live_segments and all(s.attached > 0 for s in live_segments)
        with LocalRuntime(tmp_path / "killed") as rt:
            killed = rt.postgres("db")
            assert killed.proc is not None
            pid = killed.proc.pid
            assert _segments_of(pid), "the server made no System V segment: the test proves nothing"
            killed.kill()
            left = _segments_of(pid)
            assert left and [s.shmid for s in sysv.orphans(_uid(killed))] != [], "SIGKILL left no orphan"
        assert _segments_of(pid) == [], "the closed run left its killed server's segment"
        assert [s.shmid for s in _segments_of(live.proc.pid)] == [s.shmid for s in live_segments]
        assert live.is_running()
