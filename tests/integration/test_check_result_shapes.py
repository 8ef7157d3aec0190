"""A user's check judges exactly what it read, on real servers (hostile review of user checks).

Each of these passed before: ``no rows`` on a statement with no result at all (``SET``,
``DO``); ``> 0`` on the first value of a result of several rows or columns; ``= 2**53`` on
2**53 + 1; ``{rows: [...1000 rows]}`` on a result of 1001 (only 1000 were read); ``{rows:
[[""]]}`` on a NULL; ``rows`` and ``contains`` on the empty reply Redis gives for a missing
hash, set or list. PostgreSQL 15 and the local runtime's Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.query import Query, QueryParams
from drills.assertions.redis_check import RedisCheck, RedisCheckParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.journal import AssertionResult
from engine.runtime.local import LocalRuntime
from tests.integration.servers import PG15, require_pg15

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillState]:
    require_pg15()
    with LocalRuntime(tmp_path_factory.mktemp("shapes") / "rt", images={"postgres": str(PG15)}) as rt:
        db = PostgresComponent("shop-db", PostgresParams(database="shop", customers=5), rt)
        cache = RedisComponent("sessions", RedisParams(keys=5), rt)
        for comp in (db, cache):
            comp.provision()
            comp.seed()
        cache.client(0).rpush("check:list", "sku-1", "sku-2")
        yield DrillState(repository=None, components={"shop-db": db, "sessions": cache})  # type: ignore[arg-type]


def _query(state: DrillState, sql: str, expect: Any) -> AssertionResult:
    [r] = Query().evaluate(QueryParams(target="shop-db", sql=sql, expect=expect), state)
    return r


def _redis(state: DrillState, command: list[str], expect: Any) -> AssertionResult:
    [r] = RedisCheck().evaluate(RedisCheckParams(target="sessions", command=command, expect=expect), state)
    return r


@pytest.mark.parametrize("sql", ["SET search_path = nowhere", "DO $$ BEGIN END $$"])
def test_a_statement_with_no_result_meets_nothing(state: DrillState, sql: str) -> None:
    r = _query(state, sql, "no rows")
    assert r.status == "error" and "no result set" in r.summary


@pytest.mark.parametrize(
    ("sql", "shape"),
    [("SELECT n FROM (VALUES (5), (0), (-3)) v(n)", "3 row(s) of 1 column(s)"), ("SELECT 1, 'broken'", "1 row(s) of 2")],
)
def test_one_value_is_never_the_first_of_several(state: DrillState, sql: str, shape: str) -> None:
    r = _query(state, sql, "> 0")
    assert r.status == "error" and shape in r.summary and r.evidence["measured"] is False


def test_numbers_and_nulls_are_judged_exactly(state: DrillState) -> None:
    assert _query(state, "SELECT 9007199254740993::bigint", "= 9007199254740992").status == "fail"
    assert _query(state, "SELECT NULL::text", {"rows": [[""]]}).status == "fail"
    assert _query(state, "SELECT ''::text", {"rows": [[None]]}).status == "fail"
    assert _query(state, "SELECT 'abc'::bytea", {"equals": "\\x616263"}).status == "pass"
    assert _query(state, "SELECT ''::bytea", {"contains": "memory"}).status == "fail"
    r = _query(state, "SELECT ARRAY[10, 20]", {"contains": "1"})
    assert r.status == "error" and "::text" in r.summary


def test_a_result_longer_than_what_is_read_never_matches_rows(state: DrillState) -> None:
    r = _query(state, "SELECT g FROM generate_series(1, 1001) g", {"rows": [[i] for i in range(1, 1001)]})
    assert r.status == "fail" and r.evidence["rows_truncated"] is True


def test_results_of_the_expected_shape_still_pass(state: DrillState) -> None:
    """The quiet control."""
    assert _query(state, "SELECT count(*) FROM customers", "= 5").status == "pass"
    assert _query(state, "SELECT 9007199254740993::bigint", "= 9007199254740993").status == "pass"
    assert _query(state, "SELECT NULL::text, 'a'", {"rows": [[None, "a"]]}).status == "pass"
    assert _query(state, "SELECT g FROM generate_series(1, 1000) g", {"rows": [[i] for i in range(1, 1001)]}).status == "pass"
    assert _query(state, "SELECT g FROM generate_series(1, 3) g", "rows").status == "pass"
    assert _query(state, "SELECT 1 WHERE false", "no rows").status == "pass"
    assert _query(state, "SELECT 'Infinity'::float8", "> 0").status == "pass"


@pytest.mark.parametrize("command", [["HGETALL", "no:such:hash"], ["SMEMBERS", "no:such:set"], ["LRANGE", "no:such", "0", "-1"]])
def test_an_empty_redis_reply_has_no_rows(state: DrillState, command: list[str]) -> None:
    assert _redis(state, command, "rows").status == "fail"
    r = _redis(state, command, {"contains": "{"})
    assert r.status == "error" and r.evidence["measured"] is False


def test_redis_replies_with_values_still_pass(state: DrillState) -> None:
    """The quiet control."""
    assert _redis(state, ["LRANGE", "check:list", "0", "-1"], "rows").status == "pass"
    assert _redis(state, ["LINDEX", "check:list", "1"], {"equals": "sku-2"}).status == "pass"
    assert _redis(state, ["LLEN", "check:list"], "= 2").status == "pass"


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT count(*) FROM customers WHERE false", "aggregate without GROUP BY"),
        ("SELECT max(id) FROM customers WHERE false", "aggregate without GROUP BY"),
        ("SELECT EXISTS (SELECT 1 FROM customers WHERE false)", "no FROM"),
        ("SELECT 1", "no FROM"),
    ],
)
def test_rows_that_every_result_meets_is_no_check(state: DrillState, sql: str, why: str) -> None:
    """`SELECT count(*) FROM orders` under the default `rows` passed on an empty table."""
    for expect in ("rows", "no rows"):
        r = _query(state, sql, expect)
        assert r.status == "error" and why in r.summary and r.evidence["measured"] is False, r.summary


def test_rows_still_judges_queries_whose_row_count_depends_on_the_data(state: DrillState) -> None:
    """The quiet control: a HAVING, a WHERE on a constant, a scan, a grouped count, SHOW."""
    assert _query(state, "SELECT count(*) FROM customers HAVING count(*) > 100", "rows").status == "fail"
    assert _query(state, "SELECT count(*) FROM customers HAVING count(*) > 1", "rows").status == "pass"
    assert _query(state, "SELECT 1 WHERE false", "no rows").status == "pass"
    assert _query(state, "SELECT 1 FROM customers LIMIT 1", "rows").status == "pass"
    assert _query(state, "SELECT id, count(*) FROM customers WHERE false GROUP BY id", "no rows").status == "pass"
    assert _query(state, "SHOW server_version", "rows").status == "pass"  # EXPLAIN refuses it: judged as it runs
    assert _query(state, "SELECT count(*) FROM customers", "> 0").status == "pass"


def test_a_credential_a_check_reads_is_masked_in_what_it_writes(state: DrillState) -> None:
    """A connection string in a table, or a token in a Redis value, was written in clear into results."""
    r = _query(state, "SELECT 'postgresql://app:hunter22@db.internal/shop'", {"contains": "db.internal"})
    assert r.status == "pass" and "hunter22" not in r.model_dump_json()
    r = _query(state, "SELECT 'postgresql://app:hunter22@db.internal/shop'", {"contains": "elsewhere"})
    assert r.status == "fail" and "hunter22" not in r.model_dump_json() and "app:***@db.internal" in r.summary
    state.components["sessions"].client(0).set("check:token", "password=hunter22")  # type: ignore[attr-defined]
    r = _redis(state, ["GET", "check:token"], {"equals": "password=hunter22"})
    assert r.status == "pass" and "hunter22" not in r.model_dump_json()


def test_a_timestamptz_reads_the_same_whatever_the_servers_time_zone(state: DrillState) -> None:
    """From a database set to Asia/Tokyo, 23:30 UTC met `matches: "^2026-12-07"` (the next day there)."""
    db: Any = state.components["shop-db"]
    sql = "SELECT timestamptz '2026-12-06 23:30:00+00'"
    verdicts = []
    try:
        for zone in ("Asia/Tokyo", "UTC"):
            _set_time_zone(db, f"SET timezone = '{zone}'")
            verdicts.append(_query(state, sql, {"matches": "^2026-12-06 23:30:00"}).status)
            verdicts.append(_query(state, sql, {"matches": "^2026-12-07"}).status)
    finally:
        _set_time_zone(db, "RESET timezone")
    assert verdicts == ["pass", "fail", "pass", "fail"]


def _set_time_zone(db: Any, setting: str) -> None:
    conn = db.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER DATABASE shop {setting}")
    conn.close()
