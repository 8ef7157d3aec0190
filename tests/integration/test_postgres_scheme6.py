"""Scheme ``postgres/6``: what a hostile review of the PostgreSQL fingerprint found unseen.

Each negative control makes a database, fingerprints it, then changes ONE thing the way a
faulty restore could, and the fingerprint must name the object. Before scheme 6 each of
these compared equal ("all parts match"): a partition's index no longer attached to its
partitioned index (the step pg_dump restores apart; lost, the partitioned index stays
invalid), an inheritance child's own copy of an inherited column or CHECK constraint
(lost, dropping the parent's column drops the child's data), conversions, procedural
languages, text search parsers and templates, transforms, (16+) who granted a role
membership, a composite type's attributes (the ``type`` part meant to hold them but read
none) and a base type's definition beyond its input and output functions. On PostgreSQL 18 (embedded)
and 15 (Debian). Backups of scheme 5 are still compared in their own scheme, with a note
of what it cannot see. Quiet controls: the zoo and the sample databases round trip clean
(``test_postgres_fidelity``), and a copy of the zoo has the same fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError
from engine.fingerprint import compare
from tests.integration.helpers import empty_postgres

pytestmark = [pytest.mark.integration]


def _sql(comp: PostgresComponent, statements: str, db: str | None = None) -> None:
    conn = comp.connect(db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statements)
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["18", "15"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    with empty_postgres(tmp_path_factory.mktemp(f"pg{request.param}"), request.param) as comp:
        yield comp


_created = iter(range(1000))


def _fresh(server: PostgresComponent) -> PostgresComponent:
    name = f"s6_{next(_created)}"
    _sql(server, f"CREATE DATABASE {name}", "postgres")
    comp = PostgresComponent("db", PostgresParams(database=name, generate=False), server.runtime)
    comp.provision()
    return comp


_PARTITIONED = (
    "CREATE TABLE p(a int) PARTITION BY RANGE (a); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
    " CREATE UNIQUE INDEX pi ON p(a)"
)
# What a restore that never ran pg_dump's ``ALTER INDEX ... ATTACH PARTITION`` step leaves:
# the partition's index on its own, the partitioned index invalid.
_DETACHED = (
    "DELETE FROM pg_depend WHERE objid = 'p1_a_idx'::regclass AND refobjid = 'pi'::regclass;"
    " DELETE FROM pg_inherits WHERE inhrelid = 'p1_a_idx'::regclass;"
    " UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'pi'::regclass"
)
_CHILD = (
    "CREATE TABLE par(a int CONSTRAINT c CHECK (a > 0));"
    " CREATE TABLE ch(a int CONSTRAINT c CHECK (a > 0), b int) INHERITS (par)"
)
_LANGUAGE = (
    "CREATE FUNCTION h() RETURNS language_handler LANGUAGE c AS '$libdir/plpgsql', 'plpgsql_call_handler';"
    " CREATE LANGUAGE pl2 HANDLER h"
)
_TRANSFORM = (
    _LANGUAGE + "; CREATE FUNCTION fsql(internal) RETURNS internal LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';"
    " CREATE FUNCTION tsql(internal) RETURNS int LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';"
    " CREATE TRANSFORM FOR int LANGUAGE pl2 (FROM SQL WITH FUNCTION fsql(internal), TO SQL WITH FUNCTION tsql(internal))"
)
_ROLE = "DO $$BEGIN CREATE ROLE s6_owner; EXCEPTION WHEN duplicate_object THEN END$$"
_CONVERSION = "CREATE CONVERSION cv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8"
_PARSER = (
    "CREATE TEXT SEARCH PARSER prs (START = prsd_start, GETTOKEN = prsd_nexttoken, END = prsd_end,"
    " LEXTYPES = prsd_lextype)"
)
_TEMPLATE = "CREATE TEXT SEARCH TEMPLATE tpl (LEXIZE = dsimple_lexize)"
_BASE = (
    "CREATE TYPE bt; CREATE FUNCTION bt_in(cstring) RETURNS bt LANGUAGE internal IMMUTABLE STRICT AS 'int4in';"
    " CREATE FUNCTION bt_out(bt) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out';"
    " CREATE FUNCTION bt_recv(internal) RETURNS bt LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';"
    " CREATE TYPE bt (INPUT = bt_in, OUTPUT = bt_out, RECEIVE = bt_recv, INTERNALLENGTH = 4, PASSEDBYVALUE,"
    " ALIGNMENT = int4, DEFAULT = '0')"
)
# name -> (setup, damage a faulty restore could do, the part that must say so)
DAMAGE: dict[str, tuple[str, str, str]] = {
    "partition index not attached": (_PARTITIONED, _DETACHED, "index attachment public.p1_a_idx"),
    "inherited column no longer the child's own": (
        _CHILD,
        "UPDATE pg_attribute SET attislocal = false WHERE attrelid = 'ch'::regclass AND attname = 'a'",
        "inheritance public.ch",
    ),
    "inherited check no longer the child's own": (
        _CHILD,
        "UPDATE pg_constraint SET conislocal = false WHERE conrelid = 'ch'::regclass AND conname = 'c'",
        "inheritance public.ch",
    ),
    "conversion lost": (_CONVERSION, "DROP CONVERSION cv", "conversion public.cv"),
    "conversion owner": (
        f"{_ROLE}; {_CONVERSION}; ALTER CONVERSION cv OWNER TO s6_owner",
        "ALTER CONVERSION cv OWNER TO CURRENT_USER",
        "conversion public.cv",
    ),
    "language lost": (_LANGUAGE, "DROP LANGUAGE pl2", "language pl2"),
    "language trust": (_LANGUAGE, "UPDATE pg_language SET lanpltrusted = true WHERE lanname = 'pl2'", "language pl2"),
    "language privileges": (
        f"{_ROLE}; {_LANGUAGE}; UPDATE pg_language SET lanpltrusted = true WHERE lanname = 'pl2';"
        " GRANT USAGE ON LANGUAGE pl2 TO s6_owner",
        "REVOKE USAGE ON LANGUAGE pl2 FROM s6_owner",
        "language pl2",
    ),
    "text search parser lost": (_PARSER, "DROP TEXT SEARCH PARSER prs", "text search parser public.prs"),
    "text search template comment": (
        f"{_TEMPLATE}; COMMENT ON TEXT SEARCH TEMPLATE tpl IS 'ours'",
        "COMMENT ON TEXT SEARCH TEMPLATE tpl IS NULL",
        "text search template public.tpl",
    ),
    "composite attribute added": ("CREATE TYPE ct AS (a text)", "ALTER TYPE ct ADD ATTRIBUTE b int", "composite type public.ct"),
    "composite attribute retyped": (
        "CREATE TYPE ct AS (a text, b int)",
        "ALTER TYPE ct ALTER ATTRIBUTE b TYPE bigint",
        "composite type public.ct",
    ),
    "composite attribute collation": (
        'CREATE TYPE ct AS (a text COLLATE "C")',
        "DROP TYPE ct; CREATE TYPE ct AS (a text)",
        "composite type public.ct",
    ),
    "base type receive function": (_BASE, "ALTER TYPE bt SET (RECEIVE = NONE)", "base type public.bt"),
    "base type default": (_BASE, "UPDATE pg_type SET typdefault = NULL WHERE typname = 'bt'", "base type public.bt"),
    "transform lost": (_TRANSFORM, "DROP TRANSFORM FOR int LANGUAGE pl2", "transform integer language pl2"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_every_damage_scheme_6_added_is_named(server: PostgresComponent, case: str) -> None:
    setup, damage, part = DAMAGE[case]
    comp = _fresh(server)
    _sql(comp, setup)
    before = comp.fingerprint()
    assert before.scheme == "postgres/7"  # scheme 6's classes, and more
    _sql(comp, damage)
    assert part in {d.part for d in compare(before, comp.fingerprint())}


def test_a_partition_index_attached_as_before_is_quiet(server: PostgresComponent) -> None:
    """Quiet control: built the way pg_dump restores it (ON ONLY, then ATTACH), it compares equal."""
    original, rebuilt = _fresh(server), _fresh(server)
    _sql(original, _PARTITIONED)
    _sql(
        rebuilt,
        "CREATE TABLE p(a int) PARTITION BY RANGE (a); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
        " CREATE UNIQUE INDEX pi ON ONLY p(a); CREATE UNIQUE INDEX p1_a_idx ON p1(a); ALTER INDEX pi ATTACH PARTITION p1_a_idx",
    )
    assert compare(original.fingerprint(), rebuilt.fingerprint()) == []


def test_who_granted_a_role_membership_is_compared_from_postgresql_16(server: PostgresComponent) -> None:
    """``GRANT ga TO gb GRANTED BY gc`` restored as granted by another role: named from 16 on (15 gives it no meaning)."""
    comp = _fresh(server)
    _sql(
        comp,
        "CREATE ROLE s6_ga; CREATE ROLE s6_gb; CREATE ROLE s6_gc; GRANT s6_ga TO s6_gc WITH ADMIN OPTION;"
        " GRANT s6_ga TO s6_gb GRANTED BY s6_gc",
    )
    try:
        before, old = comp.fingerprint(), comp.legacy_fingerprint("postgres/5")
        assert old is not None
        _sql(comp, "REVOKE s6_ga FROM s6_gb GRANTED BY s6_gc; GRANT s6_ga TO s6_gb")
        named = {d.part for d in compare(before, comp.fingerprint())}
        major = comp.connect().server_version // 10000
        assert named == ({"role s6_gb"} if major >= 16 else set())
        assert compare(old, comp.fingerprint_like(old)) == []  # scheme 5 never recorded it: its note says so
        assert "GRANTED BY" in (comp.blind_spot("postgres/5") or "")
    finally:
        _sql(comp, "DROP ROLE s6_gb; DROP ROLE s6_gc; DROP ROLE s6_ga")


def test_a_scheme_5_backup_is_compared_in_its_scheme_and_says_what_it_cannot_see(server: PostgresComponent) -> None:
    comp = _fresh(server)
    _sql(comp, _PARTITIONED)
    old = comp.legacy_fingerprint("postgres/5")
    assert old is not None and old.scheme == "postgres/5"
    assert not [name for name in old.parts if name.startswith("index attachment ")]
    _sql(comp, _DETACHED)
    assert compare(old, comp.fingerprint_like(old)) == []  # scheme 5 never recorded it: its note says so
    assert "attached" in (comp.blind_spot("postgres/5") or "")
    assert "attached" in (comp.blind_spot("postgres/4") or "")
    assert "attached" not in (comp.blind_spot("postgres/6") or "")
    assert comp.blind_spot("postgres/7") is None


_FORCED = (
    "CREATE ROLE rls_owner_{n}; CREATE TABLE t(id int, tenant text);"
    " INSERT INTO t SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 10) g;"
    " ALTER TABLE t OWNER TO rls_owner_{n}; GRANT USAGE ON SCHEMA public TO rls_owner_{n};"
    " ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;"
    " CREATE POLICY only_a ON t USING (tenant = 'a')"
)


def test_a_role_that_row_security_restricts_cannot_fingerprint_a_subset(server: PostgresComponent) -> None:
    """Found by review: the fingerprint read rows with row security on, so a role a policy
    restricts (here the table's owner under FORCE ROW LEVEL SECURITY) digested only the
    rows it could see. Only the catalog read after it, which such a role cannot make
    (``pg_user_mapping``), kept that from a match, and failed naming another table. Now,
    as pg_dump does, the rows are read whole or the read fails, saying why and what to do."""
    comp = _fresh(server)
    n = comp.db
    _sql(comp, _FORCED.format(n=n))
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE rls_owner_{n}")
        with pytest.raises(ComponentError, match=r"(?s)row-level security.*BYPASSRLS"):
            comp._parts_in(conn)
    finally:
        conn.close()
    # Quiet control: a role row security does not restrict reads every row, hidden ones included.
    before = comp.fingerprint()
    _sql(comp, "DELETE FROM t WHERE tenant = 'b'")
    assert "table public.t" in {d.part for d in compare(before, comp.fingerprint())}
