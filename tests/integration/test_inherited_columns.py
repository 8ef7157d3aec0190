"""Inheritance children whose column order a dump and restore does not keep (found by review).

pg_dump writes a child as ``CREATE TABLE child (its own columns) INHERITS (parent)``, so
after a logical restore the parent's columns come first: a column added to the parent
after the child existed moves from last to before the child's own. Read in the table's
column order, every row and the child's definition then differed, and drproof refused
the restore of a healthy dump. Children are now read in an order the restore keeps.

- quiet control: a logical backup and restore on PostgreSQL 15 and 18 of children of
  several shapes (a parent column added later, two levels, several parents, a child
  whose columns existed before it joined the parent) passes its proof and fidelity,
  while the restored column order really differs;
- negative controls: a changed value, values swapped between an inherited and an own
  column of one type, a column's type changed: each named.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import pg_sql
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]

SCHEMA = """
CREATE TABLE parent (id int, label text);
CREATE TABLE child (own int, note text) INHERITS (parent);
ALTER TABLE parent ADD COLUMN added int;
CREATE TABLE grandchild (extra bool) INHERITS (child);
CREATE TABLE other_parent (tag varchar(10));
CREATE TABLE both_parents (mine date) INHERITS (parent, other_parent);
CREATE TABLE joined (mine int, id int, label text, added int);
ALTER TABLE joined INHERIT parent;
CREATE TABLE measures (at date, value int) PARTITION BY RANGE (at);
CREATE TABLE measures_2026 (value int, at date);
ALTER TABLE measures ATTACH PARTITION measures_2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO parent VALUES (1, 'parent row', 10);
INSERT INTO child (id, label, added, own, note) SELECT g, 'child ' || g, g * 2, g * 3, 'note ' || g FROM generate_series(1, 50) g;
INSERT INTO grandchild (id, label, added, own, note, extra) VALUES (7, 'grand', 70, 700, 'g', true);
INSERT INTO both_parents (id, label, added, tag, mine) VALUES (8, 'two parents', 80, 'x', '2026-12-06');
INSERT INTO joined VALUES (5, 9, 'joined', 90);
INSERT INTO measures VALUES ('2026-05-01', 3);
"""
CHILDREN = ("child", "grandchild", "both_parents", "joined")


@pytest.fixture(params=["18", "15"], scope="module")
def restored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PostgresComponent, Fingerprint, dict[str, list[str]]]]:
    """The database after a logical backup and a restore: the component, the backup's fingerprint, the order before."""
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    root = tmp_path_factory.mktemp(f"inherit{request.param}")
    schema = root / "schema.sql"
    schema.write_text(SCHEMA)
    with LocalRuntime(root / "rt", images) as rt:
        comp = PostgresComponent("db", PostgresParams(database="db", generate=False, sql_file=schema), rt)
        comp.provision()
        comp.seed()
        before = _orders(comp)
        taken = comp.fingerprint()
        repo = LocalRepository(root / "repo")
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": taken})
        engine_backup.restore(repo, manifest, comp)  # proven on a side database first: refused before the fix
        yield comp, taken, before




def _orders(comp: PostgresComponent) -> dict[str, list[str]]:
    rows = pg_sql(
        comp,
        "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "GROUP BY 1" % ("ARRAY['" + "','".join((*CHILDREN, "measures_2026")) + "']"),
    )
    return {name: list(columns) for name, columns in rows}


def _named(taken: Fingerprint, comp: PostgresComponent) -> set[str]:
    return {d.part for d in compare(taken, comp.fingerprint())}


def test_a_healthy_round_trip_is_quiet_although_the_column_order_changed(
    restored: tuple[PostgresComponent, Fingerprint, dict[str, list[str]]],
) -> None:
    comp, taken, before = restored
    after = _orders(comp)
    assert before["child"] != after["child"], "the restore kept the order: the test would prove nothing"
    assert before["child"][-1] == "added" and after["child"].index("added") < after["child"].index("own")
    assert before["measures_2026"] == after["measures_2026"] == ["value", "at"]  # a partition keeps its order
    assert compare(taken, comp.fingerprint()) == []
    assert {f"table public.{name}" for name in CHILDREN} <= set(taken.parts)


CHANGES = {
    "a changed value in an own column": ("child", "UPDATE ONLY child SET note = 'changed' WHERE id = 3"),
    "a changed value in an inherited column": ("grandchild", "UPDATE grandchild SET added = 71"),
    "values swapped between an inherited and an own column": ("child", "UPDATE ONLY child SET added = own, own = added"),
    "a row of the second parent's column changed": ("both_parents", "UPDATE both_parents SET tag = 'y'"),
    "a joined child's value changed": ("joined", "UPDATE joined SET mine = 6"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_in_a_child_is_named(
    restored: tuple[PostgresComponent, Fingerprint, dict[str, list[str]]], change: str
) -> None:
    comp, taken, _ = restored
    table, statement = CHANGES[change]
    pg_sql(comp, f"CREATE TABLE saved AS TABLE ONLY {table}")
    try:
        pg_sql(comp, statement)
        assert f"table public.{table}" in _named(taken, comp)
    finally:
        pg_sql(comp, f"DELETE FROM ONLY {table}", f"INSERT INTO {table} SELECT * FROM saved", "DROP TABLE saved")
    assert compare(taken, comp.fingerprint()) == []


def test_a_column_type_changed_in_a_child_is_named(
    restored: tuple[PostgresComponent, Fingerprint, dict[str, list[str]]],
) -> None:
    comp, taken, _ = restored
    pg_sql(comp, "ALTER TABLE child ALTER COLUMN own TYPE bigint")
    try:
        named = _named(taken, comp)
        # The type reaches the grandchild too; a bigint is read by its text, not its hash.
        assert {"table definition public.child", "table public.child", "table definition public.grandchild"} <= named
    finally:
        pg_sql(comp, "ALTER TABLE child ALTER COLUMN own TYPE int")
    assert compare(taken, comp.fingerprint()) == []
