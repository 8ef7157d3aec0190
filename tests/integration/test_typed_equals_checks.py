"""``equals`` on what real servers give: a PostgreSQL boolean, numeric, bigint, float8; a Redis reply.

Before: ``{equals: "t"}`` failed on a true boolean (judged as Python's ``True``),
``{equals: 1}`` on numeric ``1.00``, and ``{equals:
0.10000000000000001}`` passed on numeric ``0.1`` (both read as the float 0.1). The checks
are written as a scenario writes them (through the YAML loader). PostgreSQL 18 (embedded)
and 15 (Debian), and the local runtime's Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.query import Query, QueryParams
from drills.assertions.redis_check import RedisCheck, RedisCheckParams
from drills.yamlsource import parse
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.journal import AssertionResult
from engine.runtime.local import LocalRuntime
from tests.integration.servers import require_pg15

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["18", "15"])
def state(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillState]:
    images = {"postgres": str(require_pg15())} if request.param == "15" else None
    with LocalRuntime(tmp_path_factory.mktemp(f"eq{request.param}") / "rt", images) as rt:
        db = PostgresComponent("shop-db", PostgresParams(database="shop", customers=1), rt)
        cache = RedisComponent("sessions", RedisParams(keys=1), rt)
        for comp in (db, cache):
            comp.provision()
            comp.seed()
        cache.client(0).hset("cart:1", mapping={"qty": "2", "price": "1.50", "paid": "true"})
        yield DrillState(repository=None, components={"shop-db": db, "sessions": cache})  # type: ignore[arg-type]


def _loaded(yaml_text: str) -> Any:
    return parse(f"expect: {yaml_text}\n", "scenario.yaml").data["expect"]


def _query(state: DrillState, sql: str, expect: str) -> AssertionResult:
    params = QueryParams.model_validate({"target": "shop-db", "sql": sql, "expect": _loaded(expect)})
    [r] = Query().evaluate(params, state)
    return r


def _redis(state: DrillState, command: list[str], expect: str) -> AssertionResult:
    params = RedisCheckParams.model_validate({"target": "sessions", "command": command, "expect": _loaded(expect)})
    [r] = RedisCheck().evaluate(params, state)
    return r


@pytest.mark.parametrize(
    ("sql", "expect"),
    [
        ("SELECT true", "{equals: true}"),
        ("SELECT 1 = 2", "{equals: false}"),
        ("SELECT 1.00::numeric(10,2)", "{equals: 1}"),
        ("SELECT 0.1::numeric", "{equals: 0.1}"),
        ("SELECT 0.1::float8", "{equals: 0.1}"),
        ("SELECT 9007199254740993::bigint", "{equals: 9007199254740993}"),
        ("SELECT 12.50::money::numeric", "{equals: 12.5}"),
        ("SELECT '1.00'::numeric::text", '{equals: "1.00"}'),
        ("SELECT true, 1.00::numeric, NULL::int, 'x'", '{rows: [[true, 1, null, "x"]]}'),
    ],
)
def test_typed_values_meet_typed_equals(state: DrillState, sql: str, expect: str) -> None:
    r = _query(state, sql, expect)
    assert r.status == "pass", r.summary


@pytest.mark.parametrize(
    ("sql", "expect"),
    [
        ("SELECT false", "{equals: true}"),
        ("SELECT 1.01::numeric", "{equals: 1}"),
        ("SELECT 9007199254740992::bigint", "{equals: 9007199254740993}"),
        ("SELECT 0.1::numeric", "{equals: 0.10000000000000001}"),
        ("SELECT 1.00::numeric", '{equals: "1"}'),  # quoted: text, and numeric 1.00 prints "1.00"
        ("SELECT NULL::boolean", "{equals: false}"),
        ("SELECT NULL::int", "{equals: 0}"),
        ("SELECT true", "{equals: 1}"),
    ],
)
def test_what_differs_fails(state: DrillState, sql: str, expect: str) -> None:
    r = _query(state, sql, expect)
    assert r.status == "fail", r.summary


@pytest.mark.parametrize(("sql", "expect"), [("SELECT true", '{equals: "t"}'), ("SELECT 't'::text", "{equals: true}")])
def test_a_boolean_against_text_is_an_error_that_says_how_to_write_it(state: DrillState, sql: str, expect: str) -> None:
    r = _query(state, sql, expect)
    assert r.status == "error", r.summary
    assert "unquoted" in r.summary or "quote it" in r.summary, r.summary


def test_a_redis_reply_is_text_and_a_number_is_judged_as_one(state: DrillState) -> None:
    assert _redis(state, ["HGET", "cart:1", "qty"], "{equals: 2}").status == "pass"
    assert _redis(state, ["HGET", "cart:1", "price"], "{equals: 1.5}").status == "pass"  # "1.50" is 1.5
    assert _redis(state, ["HGET", "cart:1", "price"], '{equals: "1.50"}').status == "pass"
    assert _redis(state, ["HGET", "cart:1", "price"], '{equals: "1.5"}').status == "fail"  # text is text
    assert _redis(state, ["HGET", "cart:1", "qty"], "{equals: 3}").status == "fail"
    assert _redis(state, ["HGET", "cart:1", "missing"], "{equals: 0}").status == "fail"  # nil is not 0
    r = _redis(state, ["HGET", "cart:1", "paid"], "{equals: true}")
    assert r.status == "error" and "quote it" in r.summary, r.summary
