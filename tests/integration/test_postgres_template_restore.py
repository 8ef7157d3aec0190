"""A logical restore of a template database (``IS_TEMPLATE true``) leaves no copy of it behind.

Found by review: the restore succeeded and compared equal, but the database it replaced
could not be dropped ("cannot drop a template database") and stayed as a full copy under
``drproof_replaced_*``. The side database of a refused restore had the same flag once its
properties were applied, and was left the same way, silently. Both are now un-templated
just before they are dropped; the restored database keeps the recorded flag, and a swap
that fails leaves the live database exactly as it was (flag, connections, rows).

On PostgreSQL 18 (embedded) and 15 (Debian).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from engine import backup as engine_backup
from engine.components import postgres_restore
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import DrproofError, RestoreMismatch
from engine.fingerprint import compare
from engine.repository import LocalRepository
from tests.integration.helpers import empty_postgres, lossy_side_load, pg_sql

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["18", "15"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    with empty_postgres(tmp_path_factory.mktemp(f"pg{request.param}"), request.param) as comp:
        yield comp


_made = iter(range(10000))


def _shop(server: PostgresComponent, template: bool) -> PostgresComponent:
    """A fresh database with a table of three rows, marked a template if asked."""
    name = f"tpl_{next(_made)}"
    pg_sql(server, f"CREATE DATABASE {name}", db="postgres")
    comp = PostgresComponent("db", PostgresParams(database=name, generate=False), server.runtime)
    comp.provision()
    pg_sql(comp, "CREATE TABLE t(a int)", "INSERT INTO t VALUES (1), (2), (3)")
    if template:
        pg_sql(server, f"ALTER DATABASE {name} IS_TEMPLATE true", db="postgres")
    return comp


def _state(comp: PostgresComponent) -> tuple[object, ...]:
    """What the live database is: its flags and its rows."""
    flags = pg_sql(
        comp, f"SELECT datistemplate, datallowconn FROM pg_database WHERE datname = '{comp.db}'", db="postgres"
    )
    rows = pg_sql(comp, "SELECT a FROM t ORDER BY a")
    return (tuple(flags[0]), [r[0] for r in rows])


def _leftovers(comp: PostgresComponent) -> set[str]:
    """drproof's side and replaced databases on the server (those of earlier tests too: compare a difference)."""
    rows = pg_sql(
        comp,
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'drproof_replaced_') "
        "OR starts_with(datname, 'drproof_restore_') ORDER BY 1",
        db="postgres",
    )
    return {r[0] for r in rows}


def _unmark(server: PostgresComponent, comp: PostgresComponent) -> None:
    pg_sql(server, f"ALTER DATABASE {comp.db} IS_TEMPLATE false ALLOW_CONNECTIONS true", db="postgres")


@pytest.mark.parametrize("template", [True, False], ids=["template", "control"])
def test_a_restored_template_database_leaves_no_copy_and_keeps_its_flag(
    server: PostgresComponent, tmp_path: Path, caplog: pytest.LogCaptureFixture, template: bool
) -> None:
    comp = _shop(server, template)
    try:
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        earlier = _leftovers(comp)
        recorded = manifest.components[0].fingerprint
        assert recorded is not None
        pg_sql(comp, "DELETE FROM t WHERE a = 3")
        with caplog.at_level("WARNING"):
            engine_backup.restore(repo, manifest, comp)
        assert "could not be dropped" not in caplog.text
        assert _leftovers(comp) - earlier == set(), "the replaced database was kept"
        assert _state(comp) == ((template, True), [1, 2, 3])
        assert compare(recorded, comp.fingerprint()) == []
    finally:
        _unmark(server, comp)


def test_a_refused_restore_of_a_template_database_drops_its_side_copy(
    server: PostgresComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof fails on a lossy load: the side copy (template by then) is dropped, the live one untouched."""
    comp = _shop(server, template=True)
    try:
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        earlier = _leftovers(comp)
        pg_sql(comp, "INSERT INTO t VALUES (4)")
        before = _state(comp)
        lossy_side_load(monkeypatch, "DELETE FROM t WHERE a = 1")
        with pytest.raises(RestoreMismatch):
            engine_backup.restore(repo, manifest, comp)
        assert _leftovers(comp) - earlier == set(), "the refused side copy was kept"
        assert _state(comp) == before
    finally:
        _unmark(server, comp)


def test_a_failed_swap_of_a_template_database_leaves_it_exactly_as_it_was(
    server: PostgresComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = _shop(server, template=True)
    try:
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        earlier = _leftovers(comp)
        pg_sql(comp, "INSERT INTO t VALUES (4)")
        before = _state(comp)

        def refused(*_args: object) -> None:
            raise psycopg2.OperationalError("database is being accessed by other users")

        monkeypatch.setattr(postgres_restore, "_swap_names", refused)
        with pytest.raises(DrproofError, match="being accessed"):
            engine_backup.restore(repo, manifest, comp)
        assert _leftovers(comp) - earlier == set(), "the proven side copy was kept"
        assert _state(comp) == before
    finally:
        _unmark(server, comp)


def test_a_live_template_that_takes_no_connections_is_replaced_and_no_copy_kept(
    server: PostgresComponent, tmp_path: Path
) -> None:
    """The replaced copy takes no connections (the swap closes it, or the operator had): that blocks neither step."""
    comp = _shop(server, template=True)
    try:
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        earlier = _leftovers(comp)
        pg_sql(comp, "DELETE FROM t WHERE a = 3")
        pg_sql(server, f"ALTER DATABASE {comp.db} ALLOW_CONNECTIONS false", db="postgres")
        engine_backup.restore(repo, manifest, comp)
        assert _leftovers(comp) - earlier == set(), "the replaced database was kept"
        assert _state(comp) == ((True, True), [1, 2, 3])
    finally:
        _unmark(server, comp)
