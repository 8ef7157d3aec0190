"""A ``query`` check runs exactly one statement, so it cannot end its read-only transaction and write.

``COMMIT; DELETE FROM orders; SELECT count(*) FROM orders`` deleted the rows and passed
(found by review): the server runs every statement of a simple query. The statement
count drproof takes before sending is held equal to the server's own on texts built from
everything that can hide a semicolon (quotes, escape strings, dollar quotes, quoted
identifiers, nested comments); each statement the server runs bumps a session counter.
Against a real PostgreSQL 15 (the lexer is the same in 18 for these tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drills.assertions.base import DrillState
from drills.assertions.expect import ExpectSpec
from drills.assertions.query import Query, QueryParams
from drills.assertions.sql_text import statements_in
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.local import LocalRuntime
from tests.integration.servers import PG15, require_pg15

pytestmark = pytest.mark.integration

COUNT = "set_config('drproof.n', (coalesce(nullif(current_setting('drproof.n', true), ''), '0')::int + 1)::text, false)"
# Literals and comments, each holding a semicolon or a quote character that could end the text early.
HIDERS = [
    "';'",
    "'a'';b'",
    "E'\\\\'",
    "E'\\';'",
    "e'x\\\\';'",
    "U&'\\0041;'",
    "$$;$$",
    "$q$ ; $$ ; $q$",
    '"a;b"',
    '"x"";"',
    "/* ; /* ; */ ; */ 1",
    "1 -- ;\n",
    "x'0f'",
    "b'01'",
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresComponent]:
    require_pg15()
    with LocalRuntime(tmp_path_factory.mktemp("q") / "rt", images={"postgres": str(PG15)}) as rt:
        comp = PostgresComponent("shop-db", PostgresParams(database="shop", customers=20), rt)
        comp.provision()
        comp.seed()
        yield comp


def _server_count(comp: PostgresComponent, sql: str) -> int | None:
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET standard_conforming_strings = on")
            try:
                cur.execute(sql)
            except psycopg2.Error:
                return None  # text the server refuses as a whole runs nothing
            cur.execute("SELECT current_setting('drproof.n', true)")
            row = cur.fetchone()
            return int(row[0] or 0) if row else 0
    finally:
        conn.rollback()
        conn.close()


statement = st.lists(st.sampled_from(HIDERS), max_size=3).map(
    lambda hiders: f"SELECT {COUNT}" + "".join(f", {h}" if not h.startswith("/*") else f" {h}" for h in hiders)
)
text = st.lists(st.tuples(statement, st.sampled_from([";", "; -- c\n", " /* ; */ ;", ";\n"])), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=text, trailing=st.booleans())
def test_the_statement_count_is_the_servers(db: PostgresComponent, parts: list[tuple[str, str]], trailing: bool) -> None:
    sql = "".join(s + sep for s, sep in parts)
    if not trailing:
        sql = sql.rstrip().rstrip(";") if sql.rstrip().endswith(";") else sql
    ran = _server_count(db, sql)
    if ran is not None:
        assert statements_in(sql) == ran, sql


def _orders(comp: PostgresComponent) -> int:
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            row = cur.fetchone()
            return int(row[0]) if row else -1
    finally:
        conn.close()


def _evaluate(comp: PostgresComponent, sql: str, expect: Any = "rows") -> Any:
    params = QueryParams.model_construct(target="shop-db", sql=sql, expect=expect, timeout=30.0, name=None)
    state: Any = DrillState.__new__(DrillState)
    state.components = {"shop-db": comp}
    [outcome] = Query().evaluate(params, state)
    return outcome


@pytest.mark.parametrize(
    "sql",
    [
        "COMMIT; DELETE FROM orders; SELECT count(*) FROM orders",
        "SELECT 1; COMMIT; DELETE FROM orders",
        "SELECT 'unclosed; COMMIT; DELETE FROM orders",
    ],
)
def test_a_check_that_would_end_its_transaction_is_refused_and_writes_nothing(db: PostgresComponent, sql: str) -> None:
    before = _orders(db)
    outcome = _evaluate(db, sql)
    assert outcome.status == "error", outcome.summary
    assert "a query check runs exactly one" in outcome.summary or "never closes" in outcome.summary
    assert _orders(db) == before > 0
    with pytest.raises(ValueError, match="statement"):
        QueryParams.model_validate({"target": "shop-db", "sql": sql})


def test_a_database_without_standard_strings_cannot_hide_a_second_statement(db: PostgresComponent) -> None:
    """With ``standard_conforming_strings`` off (a restored database's setting), ``\\'`` would end no string."""
    conn = db.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER DATABASE shop SET standard_conforming_strings = off")
    conn.close()
    try:
        before = _orders(db)
        # One string to a standard lexer ('' inside it); to the database's own setting, the
        # string "a'" and then a DELETE.
        outcome = _evaluate(db, "SELECT 'a\\''; DELETE FROM orders; --'", ExpectSpec(contains="DELETE"))
        assert outcome.status == "pass", outcome.summary  # one statement: a string, read as such
        assert _orders(db) == before > 0
    finally:
        conn = db.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER DATABASE shop RESET standard_conforming_strings")
        conn.close()


def test_one_statement_with_a_trailing_semicolon_runs(db: PostgresComponent) -> None:
    outcome = _evaluate(db, "SELECT count(*) FROM orders; -- all of them\n", "> 0")
    assert outcome.status == "pass"


def test_a_connection_the_server_ends_is_closed_and_the_verdict_says_why(
    db: PostgresComponent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review (s32): the rollback on a broken connection raised "connection already closed", which replaced
    the query's own error in the verdict, and the connection was never closed."""
    opened: list[Any] = []
    real = db.connect

    def connect() -> Any:
        opened.append(real())
        return opened[-1]

    monkeypatch.setattr(db, "connect", connect)
    outcome = _evaluate(db, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert outcome.status == "error", outcome.summary
    assert "server closed the connection unexpectedly" in outcome.summary, outcome.summary
    assert "connection already closed" not in outcome.summary, outcome.summary
    assert [conn.closed for conn in opened] == [1]  # closed by the check (2: broken, left open)
    monkeypatch.undo()
    assert _evaluate(db, "SELECT count(*) FROM orders", "> 0").status == "pass"  # quiet control
