"""Scheme ``postgres/4``: what a review of the PostgreSQL fingerprint found unseen, and two false alarms.

False alarms (a healthy pg_dump/pg_restore round trip was refused): a database holding
an index left invalid by a failed ``CREATE INDEX CONCURRENTLY`` (pg_dump leaves it out),
and one holding an enabled subscription (pg_dump restores every subscription disabled).
False matches (a broken restore compared equal): each negative control below changes
one thing the way a faulty restore could, and the fingerprint must name the part.
Backups of schemes 3 and 2 are still compared in their own scheme, with a note of what
they cannot see (``test_typed_rows``; the digests an earlier drproof wrote are kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]


def _images(server: str) -> dict[str, str] | None:
    return {"postgres": str(require_pg15())} if server == "15" else None


def _sql(comp: PostgresComponent, statements: str, db: str | None = None) -> None:
    conn = comp.connect(db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statements)
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["18", "15"])
def test_invalid_index_and_enabled_subscription_round_trip_quietly(tmp_path: Path, server: str) -> None:
    """Before: ``index public.i missing`` and ``subscription sb changed`` on every healthy restore."""
    with LocalRuntime(tmp_path / "src", _images(server)) as src, LocalRuntime(tmp_path / "dst", _images(server)) as dst:
        source = PostgresComponent("db", PostgresParams(database="db", generate=False), src)
        source.provision()
        source.seed()
        _sql(source, "CREATE DATABASE pubdb", "postgres")
        _sql(source, "CREATE TABLE t(id int PRIMARY KEY); CREATE PUBLICATION pb FOR TABLE t", "pubdb")
        password = source.service.tool_env().get("PGPASSWORD")
        conninfo = source.service.dsn("pubdb") + (f" password={password}" if password else "")
        _sql(
            source,
            "CREATE TABLE t(id int PRIMARY KEY, a int); INSERT INTO t VALUES (1, 1), (2, 1);"
            f"CREATE SUBSCRIPTION sb CONNECTION '{conninfo}' PUBLICATION pb WITH (create_slot = false, copy_data = false)",
        )
        with pytest.raises(Exception, match="could not create unique index"):
            _sql(source, "CREATE UNIQUE INDEX CONCURRENTLY i ON t(a)")  # left behind, invalid, as in production
        target = PostgresComponent("db", PostgresParams(database="db", generate=False), dst)
        target.provision()
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [source])
        expected = manifest.component("db").fingerprint
        assert expected is not None and expected.scheme == "postgres/7"  # scheme 4's classes, and more
        engine_backup.restore(repo, manifest, target)
        diffs = compare(expected, target.fingerprint())
        assert diffs == [], [d.describe() for d in diffs]
        # The subscriptions' options are compared all the same: a changed one is named.
        _sql(target, "ALTER SUBSCRIPTION sb SET (binary = true)")
        assert {d.part for d in compare(expected, target.fingerprint())} == {"subscription sb"}


@pytest.fixture(scope="module", params=["18", "15"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    with LocalRuntime(tmp_path_factory.mktemp(f"pg{request.param}"), _images(request.param)) as runtime:
        comp = PostgresComponent("db", PostgresParams(database="postgres", generate=False), runtime)
        comp.provision()
        yield comp


_created = iter(range(1000))


def _fresh(server: PostgresComponent, extra: str = "") -> PostgresComponent:
    name = f"c{next(_created)}"
    _sql(server, f"CREATE DATABASE {name} {extra}", "postgres")
    comp = PostgresComponent("db", PostgresParams(database=name, generate=False), server.runtime)
    comp.provision()
    return comp


_SUB = "CREATE PUBLICATION pb; CREATE SUBSCRIPTION sb CONNECTION 'dbname=nowhere' PUBLICATION pb WITH (connect = false)"
_AGG = (
    "CREATE AGGREGATE s(int) (sfunc = int4pl, stype = int, initcond = '0', msfunc = int4pl, minvfunc = int4mi,"
    " mstype = int, minitcond = '0', finalfunc = int4abs, finalfunc_modify = read_only, parallel = safe)"
)
_CONFIG = (
    "CREATE EXTENSION citext; CREATE TABLE cfg(id int, builtin bool); ALTER EXTENSION citext ADD TABLE cfg;"
    " UPDATE pg_extension SET extconfig = ARRAY['public.cfg'::regclass::oid], extcondition = ARRAY['WHERE NOT builtin']"
    " WHERE extname = 'citext'; INSERT INTO cfg VALUES (1, true), (2, false)"
)
# name -> (setup, damage a faulty restore could do, the part that must say so, servers where it applies)
DAMAGE: dict[str, tuple[str, str, str, str]] = {
    "index comes back invalid": (
        "CREATE TABLE t(a int); CREATE UNIQUE INDEX i ON t(a)",
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.i'::regclass",
        "index public.i",
        "18 15",
    ),
    "subscription binary": (_SUB, "ALTER SUBSCRIPTION sb SET (binary = true)", "subscription sb", "18 15"),
    "subscription disable on error": (
        _SUB,
        "ALTER SUBSCRIPTION sb SET (disable_on_error = true)",
        "subscription sb",
        "18 15",
    ),
    "subscription origin": (_SUB, "ALTER SUBSCRIPTION sb SET (origin = none)", "subscription sb", "18"),
    "aggregate moving initial value": (
        _AGG,
        "UPDATE pg_aggregate SET aggminitval = '100' WHERE aggfnoid = 'public.s(int)'::regprocedure",
        "function public.s(integer)",
        "18 15",
    ),
    "aggregate parallel": (_AGG, "UPDATE pg_proc SET proparallel = 'u' WHERE oid = 'public.s(int)'::regprocedure", "function public.s(integer)", "18 15"),
    "aggregate finalfunc modify": (
        _AGG,
        "UPDATE pg_aggregate SET aggfinalmodify = 'w' WHERE aggfnoid = 'public.s(int)'::regprocedure",
        "function public.s(integer)",
        "18 15",
    ),
    "toast options": (
        "CREATE TABLE t(a text); ALTER TABLE t SET (toast.autovacuum_enabled = false)",
        "ALTER TABLE t RESET (toast.autovacuum_enabled)",
        "table definition public.t",
        "18 15",
    ),
    "index column statistics": (
        "CREATE TABLE t(a int); CREATE INDEX i ON t((a + 1)); ALTER INDEX i ALTER COLUMN 1 SET STATISTICS 500",
        "ALTER INDEX i ALTER COLUMN 1 SET STATISTICS -1",
        "index public.i",
        "18 15",
    ),
    "extension comment": (
        "CREATE EXTENSION citext; COMMENT ON EXTENSION citext IS 'ours'",
        "COMMENT ON EXTENSION citext IS 'changed'",
        "extension citext",
        "18 15",
    ),
    "extension configuration row lost": (_CONFIG, "DELETE FROM cfg WHERE id = 2", "extension table public.cfg", "18 15"),
    "rows of a schema whose name holds a space": (
        'CREATE TABLE t(a int); CREATE SCHEMA "definition public"; CREATE TABLE "definition public".t(a int);'
        ' INSERT INTO "definition public".t VALUES (1)',
        'DELETE FROM "definition public".t',
        'table "definition public".t',
        "18 15",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_every_damage_scheme_4_added_is_named(server: PostgresComponent, case: str) -> None:
    setup, damage, part, servers = DAMAGE[case]
    major = str(server.connect("postgres").server_version // 10000)
    comp = _fresh(server)
    if major not in servers.split():
        # Not a skip: the case is checked to be one this server cannot even make.
        with pytest.raises(psycopg2.Error):
            _sql(comp, setup)
            _sql(comp, damage)
        return
    _sql(comp, setup)
    before = comp.fingerprint()
    _sql(comp, damage)
    assert part in {d.part for d in compare(before, comp.fingerprint())}


def test_rows_of_an_extension_configuration_table_filtered_as_pg_dump_does(server: PostgresComponent) -> None:
    """The extension's own rows (``builtin``, left out by its filter) are not the user's: pg_dump does not dump them."""
    comp = _fresh(server)
    _sql(comp, _CONFIG)
    before = comp.fingerprint()
    assert before.parts["extension table public.cfg"].count == 1
    _sql(comp, "UPDATE cfg SET id = 7 WHERE builtin")
    assert compare(before, comp.fingerprint()) == []


def test_the_database_locale_provider_is_compared(server: PostgresComponent) -> None:
    """A database restored with the libc provider instead of ICU (or builtin, 17+) sorts and case-maps differently."""
    major = server.connect("postgres").server_version // 10000
    provider = "builtin BUILTIN_LOCALE 'C.UTF-8'" if major >= 17 else "icu ICU_LOCALE 'und'"
    backed_up = _fresh(server, f"TEMPLATE template0 ENCODING UTF8 LOCALE 'C' LOCALE_PROVIDER {provider}")
    before = backed_up.fingerprint()
    restored = _fresh(server, "TEMPLATE template0 ENCODING UTF8 LOCALE 'C' LOCALE_PROVIDER libc")
    assert "database" in {d.part for d in compare(before, restored.fingerprint())}


def test_parameter_privileges_are_compared(server: PostgresComponent) -> None:
    comp = _fresh(server)
    _sql(comp, "CREATE ROLE rv_param; GRANT SET ON PARAMETER log_statement TO rv_param")
    try:
        before = comp.fingerprint()
        _sql(comp, "REVOKE SET ON PARAMETER log_statement FROM rv_param")
        assert "parameter log_statement" in {d.part for d in compare(before, comp.fingerprint())}
    finally:
        _sql(comp, "REVOKE SET ON PARAMETER log_statement FROM rv_param; DROP ROLE rv_param")


def test_older_schemes_record_what_they_did_and_refuse_a_name_collision(server: PostgresComponent) -> None:
    """Scheme 3 does not see what scheme 4 added; where its part names collide, it says so, not a false match."""
    comp = _fresh(server)
    _sql(comp, _AGG)
    old = comp.legacy_fingerprint("postgres/3")
    assert old is not None and old.scheme == "postgres/3"
    _sql(comp, "UPDATE pg_proc SET proparallel = 'u' WHERE oid = 'public.s(int)'::regprocedure")
    assert compare(old, comp.fingerprint_like(old)) == []  # scheme 3 never recorded it: its note says so
    assert "aggregate" in (comp.blind_spot("postgres/3") or "")
    _sql(comp, 'CREATE TABLE t(a int); CREATE SCHEMA "definition public"; CREATE TABLE "definition public".t(a int)')
    with pytest.raises(ComponentError, match=r"part name 'table definition public\.t'"):
        comp.legacy_fingerprint("postgres/3")
