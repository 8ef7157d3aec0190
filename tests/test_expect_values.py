"""What a user's check reads is judged exactly: numbers as decimals, NULL apart from '', and a
reply of several values never by its Python text (hostile review of user checks).

Each was a false pass: a bigint above 2**53 equalled its neighbour as a float; ``1_000``
was a thousand; ``{rows: [[""]]}`` was met by a NULL; ``rows`` was met by an empty JSON array,
an empty Redis hash or set; ``contains: "{"`` by an empty hash.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from drills.assertions.expect import MAX_ROWS, ExpectSpec, Unjudgeable, check_short_form, judge
from drills.assertions.http_check import HttpParams
from drills.assertions.redis_check import RedisCheckParams

BIG = 2**53


def test_a_bigint_is_not_its_neighbour() -> None:
    assert judge(check_short_form(f"= {BIG}"), BIG + 1)[0] is False
    assert judge(check_short_form(f"!= {BIG}"), BIG + 1)[0] is True
    assert judge(check_short_form(f"> {BIG}"), str(BIG + 1).encode())[0] is True  # bytes from Redis
    assert judge(check_short_form("> 0.1"), Decimal("0.1000000000000000001"))[0] is True


def test_only_numbers_are_numbers() -> None:
    assert judge(check_short_form("= 1000"), "1_000") == (False, "'1_000', not a number")
    assert judge(check_short_form("= 1"), True) == (False, "'True', not a number")
    assert judge(check_short_form("> 0"), float("nan")) == (False, "NaN")
    assert judge(check_short_form("> 0"), Decimal("NaN")) == (False, "NaN")


def test_numbers_of_every_type_still_compare() -> None:
    """The quiet control: what PostgreSQL, Redis and JSON give for a number keeps meeting a comparison."""
    for value in (42, 42.0, Decimal("42.000"), "42", b"42", " 42 ", "4.2e1", float("inf")):
        assert judge(check_short_form(">= 42"), value)[0] is True, value
    assert judge(check_short_form("= 0.3"), 0.3)[0] is True  # a float8 0.3 is 0.3, not its binary expansion
    assert judge(check_short_form("< 0"), "-1.5")[0] is True


def test_a_null_is_not_the_empty_text_in_rows() -> None:
    assert judge(ExpectSpec(rows=[[""]]), None, [(None,)])[0] is False
    assert judge(ExpectSpec(rows=[[None]]), None, [("",)])[0] is False
    assert judge(ExpectSpec(rows=[[None, 1]]), None, [(None, 1)])[0] is True
    assert judge(ExpectSpec(rows=[["", "a"]]), None, [("", "a")])[0] is True


def test_rows_may_list_no_more_than_a_query_reads() -> None:
    ExpectSpec(rows=[[i] for i in range(MAX_ROWS)])
    with pytest.raises(ValidationError, match=f"at most {MAX_ROWS}"):
        ExpectSpec(rows=[[i] for i in range(MAX_ROWS + 1)])


@pytest.mark.parametrize("empty", [[], {}, set(), ()])
def test_an_empty_reply_of_several_values_has_no_rows(empty: object) -> None:
    assert judge("rows", empty) == (False, "0 value(s)")
    assert judge("no rows", empty) == (True, "0 value(s)")


def test_a_reply_of_several_values_with_some_has_rows() -> None:
    assert judge("rows", [b"a"]) == (True, "1 value(s)")
    assert judge("rows", {b"f": b"v"}) == (True, "1 value(s)")
    assert judge("rows", 0) == (True, "1 row(s)")  # one scalar reply, as before


@pytest.mark.parametrize("expect", [ExpectSpec(contains="{"), ExpectSpec(equals="[]"), ExpectSpec(matches="."), "> 0"])
@pytest.mark.parametrize("value", [[], {}, set(), ["1", "2"]])
def test_one_value_expectations_cannot_judge_several(expect: object, value: object) -> None:
    with pytest.raises(Unjudgeable, match="judges one"):
        judge(expect, value)  # type: ignore[arg-type]


def test_one_value_expectations_still_judge_one() -> None:
    assert judge(ExpectSpec(contains="ok"), "all ok")[0] is True
    assert judge(ExpectSpec(equals=2), b"2")[0] is True
    assert judge(ExpectSpec(matches="^p"), "paid")[0] is True


def test_a_bytea_is_judged_as_postgresql_shows_it() -> None:
    """psycopg2 gives a bytea as a memoryview, which was judged as "<memory at 0x...>"."""
    assert judge(ExpectSpec(equals="\\x616263"), memoryview(b"abc")) == (True, "\\x616263")
    assert judge(ExpectSpec(contains="memory"), memoryview(b"abc"))[0] is False


def test_rows_of_a_query_are_not_asked_of_a_reply() -> None:
    """`{rows: []}` on a Redis reply or a JSON value compared no rows with none, and passed."""
    for value in (b"anything", None, 0):
        with pytest.raises(Unjudgeable, match="rows of a query"):
            judge(ExpectSpec(rows=[]), value)
    with pytest.raises(ValidationError, match="judges a query's rows"):
        RedisCheckParams(target="s", command=["GET", "k"], expect={"rows": []})
    with pytest.raises(ValidationError, match="judges a query's rows"):
        HttpParams.model_validate({"url": "http://127.0.0.1:1/", "json": {"path": "a", "expect": {"rows": [["x"]]}}})
    RedisCheckParams(target="s", command=["GET", "k"], expect={"equals": "v"})  # the quiet control
    assert judge(ExpectSpec(rows=[]), None, [])[0] is True  # a query's empty result still meets it


def test_a_credential_read_is_judged_but_never_shown() -> None:
    """A connection string read by a query was written in clear into results and reports."""
    held, seen = judge(ExpectSpec(contains="hunter22"), "postgresql://app:hunter22@db/shop")
    assert held is True and "hunter22" not in seen and seen == "postgresql://app:***@db/shop"
    held, seen = judge(ExpectSpec(rows=[["postgresql://app:hunter22@db/shop"]]), None, [("postgresql://app:hunter22@db/shop",)])
    assert held is True and "hunter22" not in seen
    assert judge(ExpectSpec(equals="ok"), "ok") == (True, "ok")  # the quiet control: plain values shown as they are


def test_a_timestamp_with_time_zone_is_judged_in_utc() -> None:
    """The same instant met `matches: "^2026-12-07"` from a server in Tokyo and not from one in UTC."""
    tokyo = datetime(2026, 12, 7, 8, 30, tzinfo=timezone(timedelta(hours=9)))
    assert judge(ExpectSpec(matches="^2026-12-07"), tokyo) == (False, "2026-12-06 23:30:00+00:00")
    assert judge(ExpectSpec(equals="2026-12-07 08:30:00"), datetime(2026, 12, 7, 8, 30))[0] is True  # no zone: as read
