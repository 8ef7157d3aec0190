"""Scheme ``postgres/7``: only the drill workload's own table is left out of the fingerprint.

Schemes 2 to 6 left out every object named like the workload's (``drproof_workload``,
``drproof_workload_*``) in every schema, even in a backup no workload ever wrote to
(found by review; the negative controls are in ``test_postgres_other_server``). Scheme 7
leaves out the table the workload marked with ``WORKLOAD_COMMENT`` when it created it,
and what belongs to it. Quiet controls: the workload writing before, between and after
a backup and its restore changes nothing compared; a scheme 6 backup still compares in
its own scheme, its note saying what it could not see. On PostgreSQL 18 and 15.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drills.workload.postgres import PostgresWriter
from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import pg_sql
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]

LOOKALIKES = (
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.drproof_workload_archive (id serial PRIMARY KEY, note text)",
    "INSERT INTO shop.drproof_workload_archive (note) VALUES ('kept')",
    "CREATE TABLE public.drproof_workload_old (id int)",
)


@pytest.fixture(params=["18", "15"])
def comp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostgresComponent]:
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    with LocalRuntime(tmp_path / "rt", images) as rt:
        db = PostgresComponent("db", PostgresParams(customers=20), rt)
        db.provision()
        db.seed()
        pg_sql(db, *LOOKALIKES)
        yield db


def _write(comp: PostgresComponent, seqs: range) -> None:
    writer = PostgresWriter(comp)
    writer.open()
    try:
        for seq in seqs:
            writer.write(seq)
    finally:
        writer.close()


def test_the_workload_writing_around_a_backup_and_restore_is_quiet(comp: PostgresComponent, tmp_path: Path) -> None:
    _write(comp, range(1, 4))
    taken = comp.fingerprint()
    assert taken.scheme == "postgres/7"
    workload = {p for p in taken.parts if "public.drproof_workload" in p and "drproof_workload_old" not in p}
    assert workload == set(), workload  # the table, its rows, its primary key and constraint
    assert {"table definition shop.drproof_workload_archive", "table definition public.drproof_workload_old"} <= set(
        taken.parts
    )
    _write(comp, range(4, 8))  # after the fingerprint, before the dump: as a drill's workload does
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp], fingerprints={"db": taken})
    _write(comp, range(8, 12))
    engine_backup.restore(repo, manifest, comp)
    _write(comp, range(12, 16))  # the workload goes on writing into the restored database
    assert compare(taken, comp.fingerprint()) == []


def test_the_workload_table_without_its_comment_is_compared(comp: PostgresComponent) -> None:
    """The comment is the recorded fact: a table of that name without it is the database's own."""
    _write(comp, range(1, 3))
    taken = comp.fingerprint()
    pg_sql(comp, "COMMENT ON TABLE public.drproof_workload IS NULL")
    named = {d.part for d in compare(taken, comp.fingerprint())}
    assert {"table public.drproof_workload", "table definition public.drproof_workload"} <= named, named


def test_a_scheme_6_backup_compares_in_its_own_scheme_and_says_what_it_left_out(comp: PostgresComponent) -> None:
    _write(comp, range(1, 3))
    old = comp.legacy_fingerprint("postgres/6")
    assert old is not None and old.scheme == "postgres/6"
    assert "table definition shop.drproof_workload_archive" not in old.parts  # scheme 6's rule, by name
    pg_sql(comp, "DELETE FROM drproof_workload")
    assert compare(old, comp.fingerprint_like(old)) == []  # its rule: the workload's table, by name
    assert "drproof_workload" in (comp.blind_spot("postgres/6") or "")
    assert "drproof_workload" in (comp.blind_spot("postgres/2") or "")
    assert "drproof_workload" in (comp.blind_spot("1") or "")  # scheme 1: any name holding it
    assert comp.blind_spot("postgres/7") is None
