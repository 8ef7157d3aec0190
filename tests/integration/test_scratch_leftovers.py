"""A backup killed while ``pg_dump -j`` writes its directory leaves no copy of the database in /tmp for ever.

Found by review: the parallel dump's temporary directory (a full, uncompressed copy of
the database) outlived a SIGKILLed backup, and nothing ever removed it. The next dump now
removes the directories of processes that are gone; a live one's is never touched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components import pgdir_stream
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from engine.scratch import scratch_dir
from tests.integration.helpers import see_parents_servers

pytestmark = [pytest.mark.integration]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[PostgresComponent]:
    with LocalRuntime(tmp_path / "rt") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=200, jobs=2), rt)
        comp.provision()
        comp.seed()
        yield comp


def _dumps(where: Path) -> list[Path]:
    return sorted(p for p in where.glob("drproof-pgdump-*") if any(p.rglob("*.dat")))


def test_the_next_backup_removes_the_dump_a_killed_backup_left(
    db: PostgresComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    repo = LocalRepository(tmp_path / "repo")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: dies (no cleanup) once pg_dump has written its directory
        try:

            def follow(directory: Path, proc: Any, *args: Any, **kwargs: Any) -> Any:
                proc.wait()
                os._exit(137)

            pgdir_stream.follow = follow  # type: ignore[assignment]
            see_parents_servers()
            engine_backup.backup(repo, [db])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    assert len(_dumps(scratch)) == 1, "the killed backup left no dump to find: the test proves nothing"

    with scratch_dir("drproof-pgdump-") as live:  # a running backup's: never taken for a leftover
        (Path(live) / "x.dat").write_bytes(b"live")
        engine_backup.backup(repo, [db])
        assert _dumps(scratch) == [Path(live)]
    assert _dumps(scratch) == []
