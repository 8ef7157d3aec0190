"""Scheme ``postgres/7``: tablespaces, the database's own properties and money, which review found unseen.

Each negative control makes a database, fingerprints it, then changes ONE thing the way a
faulty restore could, and the fingerprint must name the object. Before scheme 7 each of
these compared equal: a table, index, materialized view or partitioned table put back in
the database's default tablespace instead of the one pg_dump's ``SET default_tablespace``
named (``--no-tablespaces``, a tablespace missing on the target), or moved into one; the
database's default tablespace (``CREATE DATABASE ... TABLESPACE``) and ``IS_TEMPLATE``;
a tablespace's owner, options, privileges and comment. Not a tablespace's location,
which a restore onto another host rightly changes: the logical round trip below goes into
a server whose tablespaces the operator made elsewhere, and stays quiet.

Money printed in the server's lc_monetary: read where it differs (a database set to
``ja_JP``: no decimal places, another symbol), every money column was reported different
though no value had changed. Scheme 7 reads money in lc_monetary "C", the exact amount in
hundredths. The locale is compiled for the test with ``localedef`` into a directory of its
own (``LOCPATH``), the machine's locales untouched.

On PostgreSQL 18 (embedded) and 15 (Debian). Tablespace directories are made outside
pytest's private (0700) temporary tree, which the servers' unprivileged user cannot reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine import childenv
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.errors import ComponentError, RestoreMismatch
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import lossy_side_load, pg_sql
from tests.integration.servers import require_pg15, unavailable

pytestmark = [pytest.mark.integration]


def _images(major: str) -> dict[str, str] | None:
    return {"postgres": str(require_pg15())} if major == "15" else None


@pytest.fixture(scope="module")
def spaces() -> Iterator[Path]:
    """Where tablespace directories go: outside pytest's 0700 tree, readable by the servers' user."""
    path = Path(tempfile.mkdtemp(prefix="drproof-tablespaces-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


_made = iter(range(10000))


def _tablespace(comp: PostgresComponent, spaces: Path, *options: str) -> str:
    """A new tablespace in a directory of its own; returns its name."""
    name = f"s7_ts_{next(_made)}"
    where = spaces / name
    where.mkdir()
    owner = comp.service.server_file_owner()  # type: ignore[attr-defined]
    if owner is not None:
        os.chown(where, *owner)
    pg_sql(comp, f"CREATE TABLESPACE {name} LOCATION '{where}'", *options, db="postgres")
    return name


@pytest.fixture(scope="module", params=["18", "15"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    with LocalRuntime(tmp_path_factory.mktemp(f"pg{request.param}"), _images(request.param)) as runtime:
        comp = PostgresComponent("db", PostgresParams(database="postgres", generate=False), runtime)
        comp.provision()
        pg_sql(comp, "DO $$BEGIN CREATE ROLE s7_owner; EXCEPTION WHEN duplicate_object THEN END$$")
        yield comp


def _fresh(server: PostgresComponent, options: str = "") -> PostgresComponent:
    name = f"s7_{next(_made)}"
    pg_sql(server, f"CREATE DATABASE {name} {options}", db="postgres")
    comp = PostgresComponent("db", PostgresParams(database=name, generate=False), server.runtime)
    comp.provision()
    return comp


# name -> (setup, damage a faulty restore could do, the part that must say so); {ts}: a fresh tablespace.
DAMAGE: dict[str, tuple[str, str, str]] = {
    "table back in the default tablespace": (
        "CREATE TABLE t(a int) TABLESPACE {ts}",
        "ALTER TABLE t SET TABLESPACE pg_default",
        "tablespace of public.t",
    ),
    "table moved into a tablespace": (
        "CREATE TABLE t(a int)",
        "ALTER TABLE t SET TABLESPACE {ts}",
        "tablespace of public.t",
    ),
    "index back in the default tablespace": (
        "CREATE TABLE t(a int); CREATE INDEX ti ON t(a) TABLESPACE {ts}",
        "ALTER INDEX ti SET TABLESPACE pg_default",
        "tablespace of public.ti",
    ),
    "materialized view back in the default tablespace": (
        "CREATE MATERIALIZED VIEW mv TABLESPACE {ts} AS SELECT 1 AS a",
        "ALTER MATERIALIZED VIEW mv SET TABLESPACE pg_default",
        "tablespace of public.mv",
    ),
    "partitioned table's tablespace lost": (
        "CREATE TABLE p(a int) PARTITION BY RANGE (a) TABLESPACE {ts}",
        "ALTER TABLE p SET TABLESPACE pg_default",
        "tablespace of public.p",
    ),
    "tablespace owner": (
        "ALTER TABLESPACE {ts} OWNER TO s7_owner",
        "ALTER TABLESPACE {ts} OWNER TO CURRENT_USER",
        "tablespace definition {ts}",
    ),
    "tablespace options": (
        "ALTER TABLESPACE {ts} SET (random_page_cost = 1.1)",
        "ALTER TABLESPACE {ts} RESET (random_page_cost)",
        "tablespace definition {ts}",
    ),
    "tablespace privileges": (
        "GRANT CREATE ON TABLESPACE {ts} TO s7_owner",
        "REVOKE CREATE ON TABLESPACE {ts} FROM s7_owner",
        "tablespace definition {ts}",
    ),
    "tablespace comment": (
        "COMMENT ON TABLESPACE {ts} IS 'fast disks'",
        "COMMENT ON TABLESPACE {ts} IS NULL",
        "tablespace definition {ts}",
    ),
    "tablespace lost": ("SELECT 1", "DROP TABLESPACE {ts}", "tablespace definition {ts}"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_every_damage_scheme_7_added_is_named(server: PostgresComponent, spaces: Path, case: str) -> None:
    setup, damage, part = DAMAGE[case]
    comp = _fresh(server)
    ts = _tablespace(comp, spaces)
    pg_sql(comp, *setup.format(ts=ts).split("; "))
    before = comp.fingerprint()
    assert before.scheme == "postgres/7"
    pg_sql(comp, damage.format(ts=ts))
    named = {d.part for d in compare(before, comp.fingerprint())}
    assert part.format(ts=ts) in named, sorted(named)
    old = comp.legacy_fingerprint("postgres/6")  # scheme 6 never recorded it: its note says so
    assert old is not None and compare(old, comp.fingerprint_like(old)) == []


# name -> (CREATE DATABASE options, damage run from another database, the part that must say so)
DATABASE_DAMAGE: dict[str, tuple[str, str, str]] = {
    "default tablespace lost": (
        "TABLESPACE {ts}",
        "ALTER DATABASE {db} SET TABLESPACE pg_default",
        "database properties",
    ),
    "template flag": ("IS_TEMPLATE false", "ALTER DATABASE {db} IS_TEMPLATE true", "database properties"),
    "connection limit": ("CONNECTION LIMIT 5", "ALTER DATABASE {db} CONNECTION LIMIT -1", "database"),
    # A database that takes no connections cannot be read at all: every part is missing.
    "connections refused": ("", "ALTER DATABASE {db} ALLOW_CONNECTIONS false", "database properties"),
}


@pytest.mark.parametrize("case", sorted(DATABASE_DAMAGE))
def test_every_change_to_the_database_itself_is_named(server: PostgresComponent, spaces: Path, case: str) -> None:
    options, damage, part = DATABASE_DAMAGE[case]
    ts = _tablespace(server, spaces)
    comp = _fresh(server, options.format(ts=ts))
    pg_sql(comp, "CREATE TABLE t(a int)", "INSERT INTO t VALUES (1)")
    before = comp.fingerprint()
    pg_sql(server, damage.format(db=comp.db), db="postgres")
    try:
        assert part in {d.part for d in compare(before, comp.fingerprint())}
    finally:
        pg_sql(server, f"ALTER DATABASE {comp.db} IS_TEMPLATE false ALLOW_CONNECTIONS true", db="postgres")


def test_a_scheme_6_backup_is_compared_in_its_scheme_and_says_what_it_cannot_see(
    server: PostgresComponent, spaces: Path
) -> None:
    comp = _fresh(server)
    ts = _tablespace(comp, spaces)
    pg_sql(comp, f"CREATE TABLE t(m money) TABLESPACE {ts}")
    old = comp.legacy_fingerprint("postgres/6")
    assert old is not None and old.scheme == "postgres/6"
    assert not [name for name in old.parts if name.startswith(("tablespace", "database properties"))]
    for scheme in ("postgres/6", "postgres/5", "postgres/2"):
        assert "tablespace each table" in (comp.blind_spot(scheme) or ""), scheme
        assert "lc_monetary" in (comp.blind_spot(scheme) or ""), scheme
    assert comp.blind_spot("postgres/7") is None


def test_a_money_value_changed_is_named(server: PostgresComponent) -> None:
    """Negative control: what a restore that misread 12.34 as 1234 (another locale's decimal places) leaves."""
    comp = _fresh(server)
    pg_sql(comp, "CREATE TABLE t(id int, m money DEFAULT 1.5)", "INSERT INTO t VALUES (1, 12.34), (2, -0.01)")
    before = comp.fingerprint()
    pg_sql(comp, "UPDATE t SET m = m * 100 WHERE id = 1")
    assert "table public.t" in {d.part for d in compare(before, comp.fingerprint())}


# -- money in another lc_monetary ---------------------------------------------------------------


@pytest.fixture(scope="module")
def locales() -> Iterator[Path]:
    """ja_JP.UTF-8 (no decimal places, the yen sign) compiled into a directory of its own."""
    if shutil.which("localedef") is None or not Path("/usr/share/i18n/locales/ja_JP").is_file():
        unavailable("localedef and glibc's locale sources (apt-get install locales) are not installed")
    path = Path(tempfile.mkdtemp(prefix="drproof-locales-"))
    path.chmod(0o755)
    made = subprocess.run(
        ["localedef", "-i", "ja_JP", "-f", "UTF-8", str(path / "ja_JP.UTF-8")], capture_output=True, text=True
    )
    if not (path / "ja_JP.UTF-8").is_dir():
        unavailable(f"localedef could not compile ja_JP.UTF-8: {made.stderr.strip()[-500:]}")
    for entry in path.rglob("*"):
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _monetary(comp: PostgresComponent) -> str:
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW lc_monetary")
            row = cur.fetchone()
            return str(row[0]) if row else ""
    finally:
        conn.close()


@pytest.mark.parametrize("major", ["18", "15"])
def test_money_read_where_lc_monetary_differs_is_the_same_money(
    tmp_path: Path, locales: Path, major: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quiet control, and the false difference scheme 6 reported: same values, a server of another lc_monetary."""
    monkeypatch.setattr(childenv, "_BASE", childenv._BASE | {"LOCPATH"})
    monkeypatch.setenv("LOCPATH", str(locales))
    with LocalRuntime(tmp_path / "rt", _images(major)) as runtime:
        comp = PostgresComponent("db", PostgresParams(database="shop", generate=False), runtime)
        comp.provision()
        comp.seed()
        pg_sql(comp, "CREATE TABLE t(id int, m money DEFAULT 1.5)", "INSERT INTO t VALUES (1, 12.34), (2, -1234567.89)")
        before, old = comp.fingerprint(), comp.legacy_fingerprint("postgres/6")
        assert old is not None
        pg_sql(comp, "ALTER SYSTEM SET lc_monetary = 'ja_JP.UTF-8'", "SELECT pg_reload_conf()", db="postgres")
        assert processes.wait_until(lambda: _monetary(comp) == "ja_JP.UTF-8", timeout=10)
        conn = comp.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT m::text FROM t WHERE id = 1")
                assert cur.fetchone() == ("￥1,234",)  # the same 1234 hundredths, printed as yen: the locale is in use
        finally:
            conn.close()
        assert compare(before, comp.fingerprint()) == []
        named = {d.part for d in compare(old, comp.fingerprint_like(old))}
        assert named == {"table public.t"}  # scheme 6: a false difference
        pg_sql(comp, "UPDATE t SET m = m + '1'::money WHERE id = 2")  # one yen: one hundredth of the stored dollar
        assert {d.part for d in compare(before, comp.fingerprint())} == {"table public.t"}


# -- round trips: quiet controls ------------------------------------------------------------------


def _furnish(comp: PostgresComponent, spaces: Path) -> tuple[str, str]:
    """Two tablespaces with owner, options, a grant and a comment, and the database ``db`` placed in them."""
    pg_sql(comp, "DO $$BEGIN CREATE ROLE s7_owner; EXCEPTION WHEN duplicate_object THEN END$$")
    fast, slow = _tablespace(comp, spaces), _tablespace(comp, spaces)
    pg_sql(
        comp,
        f"ALTER TABLESPACE {fast} OWNER TO s7_owner",
        f"ALTER TABLESPACE {fast} SET (random_page_cost = 1.1, seq_page_cost = 0.9)",
        f"GRANT CREATE ON TABLESPACE {fast} TO s7_owner",
        f"COMMENT ON TABLESPACE {fast} IS 'fast disks'",
        f"ALTER DATABASE db SET TABLESPACE {fast}",
        "ALTER DATABASE db CONNECTION LIMIT 50",
        db="postgres",
    )
    pg_sql(
        comp,
        "CREATE TABLE t(id int PRIMARY KEY, m money DEFAULT 1.5, note text)",
        f"CREATE TABLE archive(id int, m money) TABLESPACE {slow}",
        "CREATE INDEX t_note ON t(note) TABLESPACE pg_default",
        f"CREATE INDEX archive_id ON archive(id) TABLESPACE {fast}",
        f"CREATE MATERIALIZED VIEW totals TABLESPACE {slow} AS SELECT sum(m) AS total FROM t",
        f"CREATE TABLE p(a int) PARTITION BY RANGE (a) TABLESPACE {slow}",
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10)",
        "INSERT INTO t SELECT g, g * 1.25, 'n' || g FROM generate_series(1, 200) g",
        "INSERT INTO archive SELECT g, -g * 0.01 FROM generate_series(1, 200) g",
        "INSERT INTO p SELECT g FROM generate_series(0, 9) g",
        "REFRESH MATERIALIZED VIEW totals",
    )
    return fast, slow


@pytest.mark.parametrize("major", ["18", "15"])
def test_a_logical_round_trip_with_tablespaces_is_identical(tmp_path: Path, spaces: Path, major: str) -> None:
    """Into another server whose operator made the tablespaces elsewhere: the locations differ, nothing else."""
    with LocalRuntime(tmp_path / "src", _images(major)) as src, LocalRuntime(tmp_path / "dst", _images(major)) as dst:
        source = PostgresComponent("db", PostgresParams(database="db", generate=False), src)
        source.provision()
        source.seed()
        fast, slow = _furnish(source, spaces)
        target = PostgresComponent("db", PostgresParams(database="db", generate=False), dst)
        target.provision()
        # pg_dumpall sets a tablespace's owner in its CREATE TABLESPACE, which fails on one
        # that exists: the operator makes them as they were, owner included.
        pg_sql(target, "CREATE ROLE s7_owner", db="postgres")
        for name, owner_role in ((fast, "s7_owner"), (slow, "CURRENT_USER")):
            where = spaces / f"{name}_elsewhere"
            where.mkdir()
            owner = target.service.server_file_owner()  # type: ignore[attr-defined]
            if owner is not None:
                os.chown(where, *owner)
            pg_sql(target, f"CREATE TABLESPACE {name} OWNER {owner_role} LOCATION '{where}'", db="postgres")
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [source])
        expected = manifest.component("db").fingerprint
        assert expected is not None and expected.scheme == "postgres/7"
        assert {f"tablespace of public.{n}" for n in ("archive", "t_note", "totals", "p")} <= set(expected.parts)
        engine_backup.restore(repo, manifest, target)
        diffs = compare(expected, target.fingerprint())
        assert diffs == [], [d.describe() for d in diffs]


@pytest.mark.parametrize("major", ["18", "15"])
def test_a_physical_round_trip_with_money_and_database_properties_is_identical(tmp_path: Path, major: str) -> None:
    """pg_basebackup to one stream takes no tablespace, so this cluster has none; the rest round trips clean."""
    with LocalRuntime(tmp_path / "rt", _images(major)) as rt:
        comp = PostgresPhysicalComponent("db", PostgresParams(database="db", generate=False), rt)
        comp.provision()
        comp.seed()
        pg_sql(comp, "ALTER DATABASE db CONNECTION LIMIT 50", db="postgres")
        pg_sql(
            comp,
            "CREATE TABLE t(id int PRIMARY KEY, m money DEFAULT 1.5)",
            "INSERT INTO t SELECT g, g * 1.25 FROM generate_series(1, 200) g",
        )
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        expected = manifest.component("db").fingerprint
        assert expected is not None and expected.scheme == "postgres/7" and "database properties" in expected.parts
        comp.service.wipe_data()
        engine_backup.restore(repo, manifest, comp)
        diffs = compare(expected, comp.fingerprint())
        assert diffs == [], [d.describe() for d in diffs]


@pytest.mark.parametrize("major", ["18", "15"])
def test_a_physical_backup_of_a_cluster_with_tablespaces_is_refused_saying_what_to_do(
    tmp_path: Path, spaces: Path, major: str
) -> None:
    """pg_basebackup to one stream cannot hold a tablespace: drproof says which, and the way out."""
    with LocalRuntime(tmp_path / "rt", _images(major)) as rt:
        comp = PostgresPhysicalComponent("db", PostgresParams(database="db", generate=False), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        engine_backup.backup(repo, [comp])  # quiet control: no tablespace, a backup
        ts = _tablespace(comp, spaces)
        pg_sql(comp, f"CREATE TABLE t(a int) TABLESPACE {ts}")
        with pytest.raises(ComponentError, match=rf"tablespace\(s\) {ts}; .*logical postgres kind"):
            engine_backup.backup(repo, [comp])


@pytest.mark.parametrize("major", ["18", "15"])
def test_a_restore_that_put_a_table_back_in_pg_default_is_refused(
    tmp_path: Path, spaces: Path, major: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end, on the server the backup came from: a sound restore passes; one whose load put
    ``archive`` in pg_default (what ``--no-tablespaces`` or a missing tablespace does) is refused
    naming it, and the live database stays as it was."""
    with LocalRuntime(tmp_path / "rt", _images(major)) as rt:
        comp = PostgresComponent("db", PostgresParams(database="db", generate=False), rt)
        comp.provision()
        comp.seed()
        _furnish(comp, spaces)
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        expected = manifest.component("db").fingerprint
        assert expected is not None
        engine_backup.restore(repo, manifest, comp)  # quiet control: the same server, its tablespaces
        assert compare(expected, comp.fingerprint()) == []
        lossy_side_load(monkeypatch, "ALTER TABLE archive SET TABLESPACE pg_default")
        with pytest.raises(RestoreMismatch, match=r"tablespace of public\.archive"):
            engine_backup.restore(repo, manifest, comp)
        assert compare(expected, comp.fingerprint()) == [], "a refused restore changed the live database"
