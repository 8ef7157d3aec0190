"""Scheme ``postgres/3``: tables of plainly typed columns are digested by their values' hashes.

Turning every row into text was most of a PostgreSQL fingerprint's cost. A table whose
columns are all of types whose hash tells every two different values apart is now
digested by PostgreSQL's own per-type hashes instead. These tests hold that the change
sees no less than the text did:

- negative controls: a changed value in each typed column, and one column's values
  swapped between two rows (which PostgreSQL's linear row hash alone would not see once
  summed: the test shows that it would not, and that drproof's digest does);
- negative controls for the types left on text because their hash is coarser than their
  text: ``numeric`` 1.0 / 1.00, float ``-0``, interval ``1 day`` / ``24:00:00``, array
  bounds, text under a non-deterministic collation, ``bpchar`` without a length;
- quiet controls: the same rows in another physical order, and a backup fingerprinted in
  scheme ``postgres/2`` by an earlier drproof, compared in its own scheme with nothing
  to report as unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components import postgres_rows
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import NotComparable, RestoreMismatch
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import lossy_side_load, pg_sql
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]

SCHEMA = """
CREATE TABLE people (id int PRIMARY KEY, name text, email varchar(80), born date, code char(4), token uuid,
                     active bool, blob bytea, small smallint, flag "char", ref oid);
INSERT INTO people
  SELECT g, 'name ' || g, 'p' || g || '@example.org', date '2000-01-01' + g, lpad(g::text, 4, '0'),
         md5(g::text)::uuid, g % 2 = 0, decode(md5(g::text), 'hex'), g % 300, chr(65 + g % 26), g
  FROM generate_series(1, 500) g;
-- One typed column: the row's hash is the column's, and the digest must keep all 64 bits of it.
CREATE TABLE emails (email text);
INSERT INTO emails VALUES ('user23037@example.com'), ('other@example.com');
-- A column named t, in a typed and in a text table: a bare alias t would be that column.
CREATE TABLE labels (id int, t text);
INSERT INTO labels VALUES (1, 'x'), (2, 'y');
CREATE TABLE notes (t int, body numeric);
INSERT INTO notes VALUES (1, 2.5), (2, 3);
CREATE TABLE bigints (id int, n bigint);
INSERT INTO bigints VALUES (1, 4294967295), (2, 3000000000);
CREATE TABLE stamps (id int, seen timestamptz, stamp timestamp);
INSERT INTO stamps VALUES (1, '2026-03-01 12:00:00+00', '2026-03-01 12:00:00');
CREATE TABLE times (id int, at time);
INSERT INTO times VALUES (1, '00:00:00.000001');
CREATE TABLE prices (id int, amount numeric);
INSERT INTO prices VALUES (1, 1.0), (2, 2.50);
CREATE TABLE floats (id int, x float8);
INSERT INTO floats VALUES (1, 0), (2, 1.5);
CREATE TABLE spans (id int, span interval);
INSERT INTO spans VALUES (1, '1 day'), (2, '2 hours');
CREATE TABLE arrays (id int, a int[]);
INSERT INTO arrays VALUES (1, '{1,2}'), (2, '{3}');
CREATE TABLE loose (id int, c bpchar);
INSERT INTO loose VALUES (1, 'a'), (2, 'b');
"""
# Non-deterministic collations need ICU, which the embedded PostgreSQL 18 is built without.
ICU_SCHEMA = """
CREATE COLLATION folded (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE tags (id int, label text COLLATE folded);
INSERT INTO tags VALUES (1, 'a'), (2, 'b');
"""

TEXT_TABLES = ("prices", "floats", "spans", "arrays", "loose", "bigints", "stamps", "times", "notes", "tags")
TYPED_TABLES = ("people", "emails", "labels")

# Per typed column of ``people``: a change of one value a faulty restore could make.
TYPED_CHANGES = {
    "name": "name = 'name 7 '",
    "email": "email = 'P7@example.org'",
    "born": "born = born + 1",
    "code": "code = 'x007'",
    "token": "token = md5('other')::uuid",
    "active": "active = NOT active",
    "blob": "blob = blob || '\\x00'::bytea",
    "small": "small = -small",
    "flag": "flag = 'z'",
    "ref": "ref = 4242",
}

# Per text-digested table: a change its type's hash would not see, the text does.
COARSE_CHANGES = {
    "prices": "UPDATE prices SET amount = 1.00 WHERE id = 1",
    "floats": "UPDATE floats SET x = '-0' WHERE id = 1",
    "spans": "UPDATE spans SET span = '24 hours' WHERE id = 1",
    "arrays": "UPDATE arrays SET a = '[0:1]={1,2}' WHERE id = 1",
    "loose": "UPDATE loose SET c = 'a  ' WHERE id = 1",
    "tags": "UPDATE tags SET label = 'A' WHERE id = 1",
    # bigint, times: values whose 64 bits fold to the same 32 (found by review)
    "bigints": "UPDATE bigints SET n = n - 4294967296",
    "stamps": "UPDATE stamps SET seen = '2026-03-01 10:48:25.032705+00', stamp = '2026-03-01 10:48:25.032705'",
    "times": "UPDATE times SET at = '01:11:34.967296'",
    # a column named t: the rest of the row counts too
    "notes": "UPDATE notes SET body = 99999",
}


@pytest.fixture(params=["18", "15"], scope="module")
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    root = tmp_path_factory.mktemp(f"typed{request.param}")
    schema = root / "schema.sql"
    schema.write_text(SCHEMA + (ICU_SCHEMA if request.param == "15" else ""))
    with LocalRuntime(root / "rt", images) as rt:
        comp = PostgresComponent("db", PostgresParams(database="db", generate=False, sql_file=schema), rt)
        comp.provision()
        comp.seed()
        yield comp




@contextmanager
def _changed(db: PostgresComponent, table: str, *statements: str) -> Iterator[None]:
    """``statements`` committed (the fingerprint reads on connections of its own), then ``table`` put back."""
    pg_sql(db, f"CREATE TABLE saved AS TABLE {table}")
    try:
        pg_sql(db, *statements)
        yield
    finally:
        pg_sql(db, f"DELETE FROM {table}", f"INSERT INTO {table} SELECT * FROM saved", "DROP TABLE saved")


def _text_tables(db: PostgresComponent) -> list[str]:
    return [t for t in TEXT_TABLES if t != "tags" or pg_sql(db, "SELECT to_regclass('public.tags')")[0][0]]


def _named(expected: Fingerprint, actual: Fingerprint) -> set[str]:
    return {d.part for d in compare(expected, actual)}


def test_the_method_follows_the_column_types(db: PostgresComponent) -> None:
    conn = db.connect()
    try:
        tables = [*TYPED_TABLES, *_text_tables(db)]
        methods = postgres_rows.typed_relations(conn, [("table", "public", t) for t in tables])
    finally:
        conn.close()
    expected = {t: t in TYPED_TABLES for t in tables}
    assert dict(zip(tables, methods, strict=True)) == expected
    assert db.fingerprint().scheme == "postgres/7"


def test_a_changed_value_in_every_typed_column_is_named(db: PostgresComponent) -> None:
    before = db.fingerprint()
    for column, change in TYPED_CHANGES.items():
        with _changed(db, "people", f"UPDATE people SET {change} WHERE id = 7"):
            named = _named(before, db.fingerprint())
        assert "table public.people" in named, column
    assert compare(before, db.fingerprint()) == [], "quiet control: every change was undone"


def test_a_column_swapped_between_two_rows_is_named(db: PostgresComponent) -> None:
    """The row's own hash combines its columns linearly; summed, a swap would vanish without the second hash."""
    before = db.fingerprint()
    # Modulo 2^64, where PostgreSQL's arithmetic on the hashes lives.
    linear = "SELECT mod(mod(sum(hash_record_extended(t, 0)), 2 ^ 64::numeric) + 2 ^ 64::numeric, 2 ^ 64::numeric) FROM people t"
    (linear_before,) = pg_sql(db, linear)
    swap = "UPDATE people p SET email = o.email FROM people o WHERE (p.id, o.id) IN ((1, 2), (2, 1))"
    with _changed(db, "people", swap):
        (linear_after,) = pg_sql(db, linear)
        named = _named(before, db.fingerprint())
    assert linear_after == linear_before, "the swap is invisible to a sum of linear row hashes"
    assert "table public.people" in named


def _coarse_change_is_named(db: PostgresComponent, table: str) -> None:
    before = db.fingerprint()
    with _changed(db, table, COARSE_CHANGES[table]):
        named = _named(before, db.fingerprint())
    assert f"table public.{table}" in named


@pytest.mark.parametrize("table", [t for t in TEXT_TABLES if t != "tags"])
def test_values_equal_to_their_type_but_not_the_same_are_named(db: PostgresComponent, table: str) -> None:
    _coarse_change_is_named(db, table)


# Non-deterministic collations need ICU: only the PostgreSQL 15 server has it.
@pytest.mark.parametrize("db", ["15"], indirect=True)
def test_text_under_a_non_deterministic_collation_stays_on_text_and_is_named(db: PostgresComponent) -> None:
    assert "tags" in _text_tables(db), "the PostgreSQL 15 database has the ICU table"
    _coarse_change_is_named(db, "tags")


def test_a_value_whose_hash_folds_to_the_same_32_bits_is_named(db: PostgresComponent) -> None:
    """Review found these two e-mails equal once the row hash was folded to 32 bits; it no longer is."""
    before = db.fingerprint()
    with _changed(db, "emails", "UPDATE emails SET email = 'user268526@example.com' WHERE email LIKE 'user%'"):
        assert "table public.emails" in _named(before, db.fingerprint())


def test_a_table_with_a_column_named_t_is_digested_whole(db: PostgresComponent) -> None:
    before = db.fingerprint()
    with _changed(db, "labels", "UPDATE labels SET id = 3 WHERE id = 2"):
        assert "table public.labels" in _named(before, db.fingerprint())


def test_the_same_rows_in_another_order_are_quiet(db: PostgresComponent) -> None:
    before = db.fingerprint()
    pg_sql(
        db,
        "CREATE TEMP TABLE reordered AS SELECT * FROM people ORDER BY id DESC",
        "DELETE FROM people",
        "INSERT INTO people SELECT * FROM reordered",
    )
    after = db.fingerprint()
    assert compare(before, after) == [] and before.digest == after.digest


def test_a_scheme_2_backup_is_still_compared_and_says_what_it_cannot_see(db: PostgresComponent) -> None:
    old = db.legacy_fingerprint("postgres/2")
    new = db.fingerprint()
    assert old is not None and old.scheme == "postgres/2"
    assert "locale provider" in (db.blind_spot("postgres/2") or ""), "scheme 2 records what scheme 3 did, not 4"
    assert compare(old, db.fingerprint_like(old)) == []
    assert old.parts["table public.people"] != new.parts["table public.people"], "people is digested by type now"
    assert old.parts["table public.prices"] == new.parts["table public.prices"], "prices is still digested as text"
    with _changed(db, "people", "UPDATE people SET small = small + 1 WHERE id = 9"):
        assert "table public.people" in _named(old, db.fingerprint_like(old))


def test_scheme_3_is_refused_on_a_server_without_the_typed_hash(db: PostgresComponent) -> None:
    """PostgreSQL 13 lacks hash_record_extended: it takes scheme 2, and cannot compare a scheme 3 backup."""
    old_server: Any = SimpleNamespace(server_version=130012)
    assert db.scheme_on(old_server) == "postgres/2"
    for scheme in ("postgres/3", "postgres/4", "postgres/5", "postgres/6", "postgres/7"):
        with pytest.raises(NotComparable, match="PostgreSQL 14"):
            db.scheme_on(old_server, scheme)
    with pytest.raises(NotComparable, match="postgres/9"):
        db.scheme_on(old_server, "postgres/9")


@pytest.mark.parametrize("scheme", ["postgres/7", "postgres/6", "postgres/5", "postgres/4", "postgres/3", "postgres/2"])
def test_a_restore_is_proven_in_its_backups_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """The side database is fingerprinted in the backup's scheme: a sound load passes, an altered e-mail is refused."""
    with LocalRuntime(tmp_path / "rt") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=300), rt)
        comp.provision()
        comp.seed()
        taken = comp.fingerprint() if scheme == "postgres/7" else comp.legacy_fingerprint(scheme)
        assert taken is not None and taken.scheme == scheme
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": taken})
        engine_backup.restore(repo, manifest, comp)
        assert compare(taken, comp.fingerprint_like(taken)) == []
        lossy_side_load(monkeypatch, "UPDATE customers SET email = 'someone@else.test' WHERE id = 3")
        with pytest.raises(RestoreMismatch, match=r"public\.customers"):
            engine_backup.restore(repo, manifest, comp)
        assert compare(taken, comp.fingerprint_like(taken)) == [], "a refused restore changed the live database"


def test_scheme_2_digests_are_those_an_earlier_drproof_wrote(db: PostgresComponent) -> None:
    """The text is now read as ROW(t.*)::text, the same text as t::text wherever no column is named t."""
    old = db.legacy_fingerprint("postgres/2")
    assert old is not None
    for table in ("people", "prices", "stamps"):
        ((count, total),) = pg_sql(
            db, f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM ONLY {table} t"
        )
        assert old.parts[f"table public.{table}"] == postgres_rows.rows_part(int(count), int(total)), table
