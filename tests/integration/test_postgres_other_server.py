"""A logical backup restored into another server whose settings differ (found by review).

The review restored hostile schemas from one fresh server into another and found healthy
restores refused, and damage passed, where the fingerprint depended on how the target
printed values or kept lists:

- quiet controls: a server in another time zone, with another IntervalStyle and
  ``extra_float_digits = 0``; access lists and default privileges whose entries come back
  in another order; a publication of tables not created in name order, owned by a role
  of its own; a foreign server with two user mappings; a domain whose default names a
  sequence unqualified; tables in schemas whose names hold dots;
- negative controls: a float changed in its last digits, a sequence set back without
  being called, rows deleted from one of two tables whose dotted names used to share a
  part, a publication's row filter and column list dropped: each named.

On PostgreSQL 18 (embedded) and 15 (Debian), each restored into a server of its version.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.components.postgres import PostgresComponent
from engine.fingerprint import Fingerprint, compare
from tests.integration.helpers import pg_sql, restored_into_another_server
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]

SCHEMA = """
CREATE ROLE zed; CREATE ROLE abe; CREATE ROLE pubowner;
CREATE TABLE ev (id int, at timestamptz, span interval, x float8);
INSERT INTO ev VALUES (1, '2026-03-01 12:00:00+00', '1 day 02:03:04', 0.1::float8 + 0.2::float8);
CREATE SCHEMA h;
ALTER DEFAULT PRIVILEGES IN SCHEMA h GRANT SELECT ON TABLES TO zed;
ALTER DEFAULT PRIVILEGES IN SCHEMA h GRANT SELECT ON TABLES TO abe;
CREATE TABLE h.r (id int);
GRANT SELECT ON ev TO zed; GRANT SELECT ON ev TO abe;
CREATE SEQUENCE invoice_no; ALTER SEQUENCE invoice_no RESTART WITH 1000;
CREATE SEQUENCE order_no;
CREATE DOMAIN order_id AS bigint DEFAULT nextval('order_no');
CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (x int); INSERT INTO "a.b".c VALUES (1);
CREATE SCHEMA a; CREATE TABLE a."b.c" (x int); INSERT INTO a."b.c" VALUES (1), (2);
CREATE TABLE zz (id int PRIMARY KEY, region text, secret text);
CREATE TABLE aa (id int PRIMARY KEY);
CREATE PUBLICATION pub FOR TABLE zz (id, region) WHERE (region = 'eu'), aa;
ALTER PUBLICATION pub OWNER TO pubowner;
CREATE FOREIGN DATA WRAPPER w; CREATE SERVER srv FOREIGN DATA WRAPPER w;
CREATE USER MAPPING FOR zed SERVER srv OPTIONS (user 'z');
CREATE USER MAPPING FOR abe SERVER srv OPTIONS (user 'a');
GRANT USAGE ON FOREIGN DATA WRAPPER w TO zed;
CREATE TABLE ri (id int NOT NULL, k int NOT NULL);
CREATE UNIQUE INDEX ri_a ON ri (id); CREATE UNIQUE INDEX ri_b ON ri (k);
ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_a;
CREATE COLLATION c2 FROM "C";
CREATE TYPE textrange AS RANGE (subtype = text, collation = c2);
CREATE EXTENSION hstore;
REVOKE EXECUTE ON FUNCTION hstore_to_json(hstore) FROM PUBLIC;
REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
REVOKE USAGE ON TYPE hstore FROM PUBLIC;
CREATE TABLE my_drproof_workload_log (id int);
INSERT INTO my_drproof_workload_log VALUES (1);
CREATE SCHEMA shop; CREATE SCHEMA sales;
CREATE TABLE shop.drproof_workload_archive (id serial PRIMARY KEY, note text);
INSERT INTO shop.drproof_workload_archive (note) VALUES ('kept');
CREATE TABLE shop.drproof_workload (id int); INSERT INTO shop.drproof_workload VALUES (1);
CREATE TABLE drproof_workload (id int); INSERT INTO drproof_workload VALUES (1);
CREATE FUNCTION sales.drproof_workload_x() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=1 dbname=upstream password=sub-secret'
  PUBLICATION up WITH (connect = false);
"""
# The target prints differently: another time zone, interval style and float precision.
TARGET_SETTINGS = (
    "ALTER SYSTEM SET timezone = 'Asia/Tokyo'",
    "ALTER SYSTEM SET intervalstyle = 'iso_8601'",
    "ALTER SYSTEM SET extra_float_digits = 0",
    "SELECT pg_reload_conf()",
)


@pytest.fixture(params=["18", "15"], scope="module")
def restored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PostgresComponent, Fingerprint]]:
    """The backup of a source server restored into another: the target's component and the backup's fingerprint."""
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    root = tmp_path_factory.mktemp(f"other{request.param}")
    # Proven on a side database first: refused before the fix.
    with restored_into_another_server(root, SCHEMA, images, *TARGET_SETTINGS) as found:
        yield found


def test_the_restore_into_a_server_that_prints_differently_is_quiet(
    restored: tuple[PostgresComponent, Fingerprint],
) -> None:
    target, taken = restored
    assert pg_sql(target, "SHOW timezone") == [("Asia/Tokyo",)], "the target's settings did not apply"
    assert compare(taken, target.fingerprint()) == []
    parts = set(taken.parts)
    assert {'table "a.b".c', 'table a."b.c"'} <= parts, sorted(p for p in parts if p.startswith("table"))


DAMAGES = {
    "a float changed in its last digits": (
        "UPDATE ev SET x = 0.3",
        "table public.ev",
        "UPDATE ev SET x = 0.1::float8 + 0.2::float8",
    ),
    "a sequence set back without being called": (
        "SELECT setval('invoice_no', 1, false)",
        "sequence public.invoice_no",
        "SELECT setval('invoice_no', 1000, false)",
    ),
    "rows deleted from one of two tables whose names share dots": (
        'DELETE FROM a."b.c"',
        'table a."b.c"',
        'INSERT INTO a."b.c" VALUES (1), (2)',
    ),
    "a publication's row filter and column list dropped": (
        "ALTER PUBLICATION pub SET TABLE zz, aa",
        "publication pub",
        "ALTER PUBLICATION pub SET TABLE zz (id, region) WHERE (region = 'eu'), aa",
    ),
    "replica identity moved to another index": (
        "ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_b",
        "table definition public.ri",
        "ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_a",
    ),
    "usage on a foreign data wrapper revoked": (
        "REVOKE USAGE ON FOREIGN DATA WRAPPER w FROM zed",
        "foreign data wrapper w",
        "GRANT USAGE ON FOREIGN DATA WRAPPER w TO zed",
    ),
    "a connection limit set on the database": (
        "ALTER DATABASE db CONNECTION LIMIT 5",
        "database",
        "ALTER DATABASE db CONNECTION LIMIT -1",
    ),
    "rows of a table whose name contains the workload's mark deleted": (
        "DELETE FROM my_drproof_workload_log",
        "table public.my_drproof_workload_log",
        "INSERT INTO my_drproof_workload_log VALUES (1)",
    ),
    # Found by review: the database's own objects named like the drill workload's were
    # left out in every schema, though no workload ever ran on this backup.
    "rows of a user's table named like the workload's, in another schema, deleted": (
        "DELETE FROM shop.drproof_workload_archive",
        "table shop.drproof_workload_archive",
        "INSERT INTO shop.drproof_workload_archive VALUES (1, 'kept')",
    ),
    "a user's sequence named like the workload's set back": (
        "SELECT setval('shop.drproof_workload_archive_id_seq', 1, false)",
        "sequence shop.drproof_workload_archive_id_seq",
        "SELECT setval('shop.drproof_workload_archive_id_seq', 1, true)",
    ),
    "a user's function named like the workload's changed": (
        "CREATE OR REPLACE FUNCTION sales.drproof_workload_x() RETURNS int LANGUAGE sql AS 'SELECT 2'",
        "function sales.drproof_workload_x()",
        "CREATE OR REPLACE FUNCTION sales.drproof_workload_x() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ),
    "a user's table of the workload's name, in another schema, lost": (
        "DROP TABLE shop.drproof_workload",
        "table definition shop.drproof_workload",
        "CREATE TABLE shop.drproof_workload (id int); INSERT INTO shop.drproof_workload VALUES (1)",
    ),
    "rows of a user's table of the workload's very name, where no workload ran, deleted": (
        "DELETE FROM drproof_workload",
        "table public.drproof_workload",
        "INSERT INTO drproof_workload VALUES (1)",
    ),
    "a privilege on an extension's function granted again": (
        "GRANT EXECUTE ON FUNCTION hstore_to_json(hstore) TO PUBLIC",
        "extension member privileges function public.hstore_to_json(public.hstore)",
        "REVOKE EXECUTE ON FUNCTION hstore_to_json(hstore) FROM PUBLIC",
    ),
    "usage on the language plpgsql granted again": (
        "GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC",
        "extension member privileges language plpgsql",
        "REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC",
    ),
    "usage on an extension's type granted again": (
        "GRANT USAGE ON TYPE hstore TO PUBLIC",
        "extension member privileges type public.hstore",
        "REVOKE USAGE ON TYPE hstore FROM PUBLIC",
    ),
    "a subscription's connection string changed": (
        "ALTER SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=2 dbname=upstream password=sub-secret'",
        "subscription sub",
        "ALTER SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=1 dbname=upstream password=sub-secret'",
    ),
    "a subscription's publications changed": (
        "ALTER SUBSCRIPTION sub SET PUBLICATION other WITH (refresh = false)",
        "subscription sub",
        "ALTER SUBSCRIPTION sub SET PUBLICATION up WITH (refresh = false)",
    ),
    "a default privilege revoked": (
        "ALTER DEFAULT PRIVILEGES IN SCHEMA h REVOKE SELECT ON TABLES FROM abe",
        None,
        "ALTER DEFAULT PRIVILEGES IN SCHEMA h GRANT SELECT ON TABLES TO abe",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damage_is_named(restored: tuple[PostgresComponent, Fingerprint], damage: str) -> None:
    target, taken = restored
    statement, part, undo = DAMAGES[damage]
    pg_sql(target, statement)
    try:
        named = {d.part for d in compare(taken, target.fingerprint())}
        if part is None:
            assert any(p.startswith("default privileges") for p in named), named
        else:
            assert part in named, named
    finally:
        pg_sql(target, undo)
    assert compare(taken, target.fingerprint()) == []


def test_a_subscriptions_connection_string_is_compared_and_never_shown(
    restored: tuple[PostgresComponent, Fingerprint],
) -> None:
    """Its digest is in the part (the damage above is named); the string, with its password, in no finding."""
    target, taken = restored
    pg_sql(target, "ALTER SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=3 dbname=upstream password=sub-secret'")
    try:
        found = compare(taken, target.fingerprint())
        assert [d.part for d in found] == ["subscription sub"]
        assert not any("sub-secret" in line or "port=" in line for line in found.describe())
        assert "sub-secret" not in taken.model_dump_json()
    finally:
        pg_sql(target, "ALTER SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=1 dbname=upstream password=sub-secret'")
