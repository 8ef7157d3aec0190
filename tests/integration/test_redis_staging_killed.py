"""A Redis restore killed while staging: its partial copy is never taken for live data.

Found by review: a restore in place stages the backup in a spare logical database and
swaps it in with SWAPDB. Killed while staging (a forked child dies here, without any
cleanup, once some keys are staged), it left the partial copy in the spare database; the
next backup took it for live data, and the restore after that put it back and said
"match". Each spare now carries a marker key while it is staged; a backup refuses a
database that holds one, and names it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.backup import backup, restore
from engine.components import redis_stage
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.errors import ComponentError
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "staging-killed"
KINDS = [RedisComponent, RedisRdbComponent]


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD) as live:
        yield live


def _client(port: int, db: int = 0) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, db=db)


def _killed_while_staging(comp: RedisComponent, repo: LocalRepository, manifest: Any) -> None:
    """Restore in a child that dies, without any cleanup, when the count of the staged keys begins."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:

            def check_counts(*_args: Any) -> None:
                os._exit(137)

            redis_stage.Stage.check_counts = check_counts  # type: ignore[method-assign]
            redis_stage.Stage.unmark = lambda self: None  # type: ignore[method-assign]  # killed before it too
            restore(repo, manifest, comp)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, "the restore was not killed where asked"


@pytest.mark.parametrize("kind", KINDS, ids=["redis", "redis-rdb"])
def test_a_backup_refuses_a_copy_a_killed_restore_staged(port: int, tmp_path: Path, kind: type[RedisComponent]) -> None:
    live = _client(port)
    live.mset({f"k{i}": f"v{i}" for i in range(500)})
    comp = external_redis(tmp_path, port, PASSWORD, kind, "kv")
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [comp])
    live.set("after-backup", "1")
    _killed_while_staging(comp, repo, manifest)
    staged = [db for db in range(1, 16) if _client(port, db).dbsize()]
    assert staged and _client(port).get("after-backup") == b"1", "the kill left live data changed, or nothing staged"

    with pytest.raises(ComponentError, match=rf"database {staged[0]} holds a partial copy a killed drproof restore"):
        backup(repo, [comp])
    assert len(repo.list()) == 1

    restore(repo, manifest, comp)  # the next restore empties it and swaps in the backup
    assert [db for db in range(1, 16) if _client(port, db).dbsize()] == []
    assert _client(port).dbsize() == 500
    backup(repo, [comp])  # quiet control: nothing left over, the backup goes through
    assert len(repo.list()) == 2
