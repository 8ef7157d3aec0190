"""Privilege lists that grant exactly an object's defaults (scheme ``postgres/7``).

``GRANT ALL ON t TO <its owner>``, ``GRANT EXECUTE ON FUNCTION f() TO PUBLIC`` (already a
default), a grant revoked again: each leaves an explicit list equal to ``acldefault``.
pg_dump writes nothing for such a list, so a healthy logical restore came back with none,
and twelve parts (tables, a sequence, functions, a schema, types, a foreign data wrapper
and server, a large object) differed: a healthy restore refused. Scheme 7 prints a list of
just the defaults as none. The negative controls hold that a real change of privileges
beside them is still named. On PostgreSQL 18 (embedded) and 15 (Debian).
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
CREATE ROLE app;
CREATE TABLE t (id int); GRANT ALL ON TABLE t TO CURRENT_USER;
CREATE TABLE u (id int); REVOKE ALL ON u FROM CURRENT_USER; GRANT ALL ON u TO CURRENT_USER;
CREATE TABLE d (id int); GRANT SELECT ON d TO app; REVOKE SELECT ON d FROM app;
CREATE TABLE c (id int, v text); GRANT SELECT (v) ON c TO app; REVOKE SELECT (v) ON c FROM app;
CREATE SEQUENCE s; GRANT ALL ON SEQUENCE s TO CURRENT_USER;
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; GRANT EXECUTE ON FUNCTION f() TO PUBLIC;
CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1'; GRANT ALL ON FUNCTION g() TO CURRENT_USER;
CREATE SCHEMA sc; GRANT ALL ON SCHEMA sc TO CURRENT_USER;
CREATE TYPE ty AS (a int); GRANT USAGE ON TYPE ty TO PUBLIC;
CREATE DOMAIN dm AS int; GRANT USAGE ON DOMAIN dm TO CURRENT_USER;
CREATE FOREIGN DATA WRAPPER w; GRANT ALL ON FOREIGN DATA WRAPPER w TO CURRENT_USER;
CREATE SERVER srv FOREIGN DATA WRAPPER w; GRANT ALL ON FOREIGN SERVER srv TO CURRENT_USER;
SELECT lo_create(4242); GRANT ALL ON LARGE OBJECT 4242 TO CURRENT_USER;
"""

# A real change of privileges on the same objects, made after the restore: each must be named.
DAMAGE = {
    "execute on a function taken from PUBLIC": ("REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC", "function public.f()"),
    "a table granted to another role": ("GRANT SELECT ON t TO app", "table definition public.t"),
    "the owner's own privileges narrowed": ("REVOKE DELETE ON u FROM CURRENT_USER", "table definition public.u"),
    "a column granted": ("GRANT SELECT (v) ON c TO app", "table definition public.c"),
    "usage on a type taken from PUBLIC": ("REVOKE USAGE ON TYPE ty FROM PUBLIC", "type public.ty"),
    "a large object granted": ("GRANT SELECT ON LARGE OBJECT 4242 TO app", "large object 4242"),
}


@pytest.fixture(params=["18", "15"], scope="module")
def restored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PostgresComponent, Fingerprint]]:
    """The backup restored into another server by the engine's own (proven) restore: refused before the fix."""
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    with restored_into_another_server(tmp_path_factory.mktemp(f"defaults{request.param}"), SCHEMA, images) as found:
        yield found


def test_a_healthy_restore_of_lists_that_grant_only_the_defaults_is_quiet(
    restored: tuple[PostgresComponent, Fingerprint],
) -> None:
    target, taken = restored
    assert compare(taken, target.fingerprint()) == []


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_real_change_of_privileges_beside_them_is_named(
    restored: tuple[PostgresComponent, Fingerprint], case: str
) -> None:
    target, taken = restored
    statement, part = DAMAGE[case]
    pg_sql(target, statement)
    try:
        assert [d.part for d in compare(taken, target.fingerprint())] == [part]
    finally:
        _undo(target, statement)


def _undo(target: PostgresComponent, statement: str) -> None:
    """Put the privilege back (each damage is its own test on one restored server)."""
    undo = {
        "REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC": "GRANT EXECUTE ON FUNCTION f() TO PUBLIC",
        "GRANT SELECT ON t TO app": "REVOKE SELECT ON t FROM app",
        "REVOKE DELETE ON u FROM CURRENT_USER": "GRANT DELETE ON u TO CURRENT_USER",
        "GRANT SELECT (v) ON c TO app": "REVOKE SELECT (v) ON c FROM app",
        "REVOKE USAGE ON TYPE ty FROM PUBLIC": "GRANT USAGE ON TYPE ty TO PUBLIC",
        "GRANT SELECT ON LARGE OBJECT 4242 TO app": "REVOKE SELECT ON LARGE OBJECT 4242 FROM app",
    }
    pg_sql(target, undo[statement])
