"""A logical restore killed in the middle of its swap leaves the live database under its name.

Found by review: the swap renamed the live database aside and the proven side database
in with two statements, each committed on its own. A restore killed between them (a
forked child dies here, without any cleanup, right after the first) left no database
under the live name, its data under a random ``drproof_replaced_`` name that nothing ever
mentioned again. Both renames are now one transaction, which the server rolls back when
its client dies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components import postgres_restore
from engine.components.postgres import PostgresComponent
from engine.errors import ComponentError
from engine.repository import LocalRepository
from tests.integration.helpers import pg_sql, see_parents_servers

pytestmark = [pytest.mark.integration]


@pytest.fixture
def db(seeded_postgres: PostgresComponent) -> PostgresComponent:
    return seeded_postgres


def _killed_restore(db: PostgresComponent, repo: LocalRepository, manifest: Any, after: str) -> None:
    """Restore in a child that dies, without any cleanup, right after a statement containing ``after``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        real = postgres_restore._execute

        def execute(conn: Any, sql: str) -> None:
            real(conn, sql)
            if after in sql:
                os._exit(137)

        try:
            see_parents_servers()
            postgres_restore._execute = execute  # type: ignore[assignment]
            engine_backup.restore(repo, manifest, db)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, "the restore was not killed where asked"


def _databases(db: PostgresComponent) -> set[str]:
    return {row[0] for row in pg_sql(db, "SELECT datname FROM pg_database", db="postgres")}


def test_a_restore_killed_between_the_renames_of_its_swap_leaves_the_live_database(
    db: PostgresComponent, tmp_path: Path
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [db])
    pg_sql(db, "CREATE TABLE after_backup (x int)", "INSERT INTO after_backup VALUES (42)")
    _killed_restore(db, repo, manifest, 'RENAME TO "drproof_replaced_')
    names = _databases(db)
    assert db.db in names, f"no database {db.db!r} any more: {sorted(names)}"
    assert not [n for n in names if n.startswith(postgres_restore.REPLACED_PREFIX)]
    # The window before the swap (connections refused) is still the next restore's to end.
    pg_sql(db, f'ALTER DATABASE "{db.db}" WITH ALLOW_CONNECTIONS true', db="postgres")
    assert [tuple(r) for r in pg_sql(db, "SELECT x FROM after_backup")] == [(42,)]


def test_a_restore_killed_before_its_swap_leaves_the_live_database_and_the_next_restore_finishes(
    db: PostgresComponent, tmp_path: Path
) -> None:
    """Quiet control (held before the fix too): killed before the renames, nothing moved; the next restore proves."""
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [db])
    pg_sql(db, "CREATE TABLE after_backup (x int)")
    _killed_restore(db, repo, manifest, "ALLOW_CONNECTIONS false")
    assert db.db in _databases(db)
    pg_sql(db, f'ALTER DATABASE "{db.db}" WITH ALLOW_CONNECTIONS true', db="postgres")
    assert "after_backup" in {r[0] for r in pg_sql(db, "SELECT tablename FROM pg_tables")}
    engine_backup.restore(repo, manifest, db)  # raises unless proven
    assert "after_backup" not in {r[0] for r in pg_sql(db, "SELECT tablename FROM pg_tables")}
    assert db.health().ok


def test_a_backup_after_a_restore_killed_before_its_swap_says_why_the_database_refuses_connections(
    db: PostgresComponent, tmp_path: Path
) -> None:
    """It said the server "stopped or became unreachable": it answers, and the fix is one ALTER DATABASE."""
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [db])
    _killed_restore(db, repo, manifest, "ALLOW_CONNECTIONS false")
    with pytest.raises(ComponentError) as caught:
        engine_backup.backup(repo, [db])
    message = str(caught.value)
    assert "refuses new connections" in message and "WITH ALLOW_CONNECTIONS true" in message, message
    assert "stopped or became unreachable" not in message, message
