"""A logical restore whose swap fails leaves nothing behind, and one that could never swap is refused first.

Found by review: with a prepared transaction on the live database the restore refused
every new connection to it for two minutes, then failed and left the proven side
database (a full copy) and a role it had created; SIGTERM during the swap leaked them the
same way. The live data were intact; the leftovers were not.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from engine import backup as engine_backup
from engine.components import postgres_restore
from engine.components.postgres import PostgresComponent
from engine.errors import DrproofError
from engine.repository import LocalRepository
from tests.integration.helpers import pg_sql

pytestmark = [pytest.mark.integration]


@pytest.fixture
def db(seeded_postgres: PostgresComponent) -> PostgresComponent:
    return seeded_postgres


def _databases(comp: PostgresComponent) -> set[str]:
    return {row[0] for row in pg_sql(comp, "SELECT datname FROM pg_database", db="postgres")}


def test_a_swap_that_fails_drops_the_side_database_and_its_roles(
    db: PostgresComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    pg_sql(db, "DROP ROLE IF EXISTS restored_only", "CREATE ROLE restored_only", db="postgres")
    manifest = engine_backup.backup(repo, [db])
    pg_sql(db, "DROP ROLE restored_only", db="postgres")  # the restore creates it again
    before = _databases(db)

    def refused(*_args: object) -> None:
        raise psycopg2.OperationalError("database is being accessed by other users")

    monkeypatch.setattr(postgres_restore, "_swap_names", refused)
    with pytest.raises(DrproofError, match="being accessed"):
        engine_backup.restore(repo, manifest, db)
    assert _databases(db) == before, "the side database was left behind"
    left = pg_sql(db, "SELECT count(*) FROM pg_roles WHERE rolname = 'restored_only'", db="postgres")
    assert [tuple(r) for r in left] == [(0,)], "a role the restore created was left behind"
    assert db.health().ok


def test_a_side_database_an_interrupted_restore_left_is_named(
    db: PostgresComponent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: one killed while loading stayed for ever and nothing mentioned it."""
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [db])
    pg_sql(db, "CREATE DATABASE drproof_restore_0123456789ab", db="postgres")
    with caplog.at_level("WARNING"):
        engine_backup.restore(repo, manifest, db)
    assert "drproof_restore_0123456789ab" in caplog.text and "left by interrupted restores" in caplog.text
    assert "drproof_restore_0123456789ab" in _databases(db), "not dropped: another restore may be using it"
