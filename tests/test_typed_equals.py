"""``equals`` is typed by how the scenario wrote its value (review of user checks).

Both sides were compared as Python text: ``{equals: "t"}`` and ``{equals: "true"}`` never
met a true PostgreSQL boolean (its text was ``True``, which ``{equals: "True"}`` met),
``{equals: 1}`` never a numeric ``1.00``: checks that failed where the data were right;
and ``{equals: 0.10000000000000001}`` met numeric ``0.1`` (YAML's float is 0.1), a false pass. Now an unquoted boolean judges a boolean,
an unquoted number the value as an exact decimal (never a float: 9007199254740993 is not
9007199254740992, 0.10000000000000001 is not 0.1), a quoted string text, and a boolean
against text is an error that says how to write the check, never a verdict. The values
come through the scenario's YAML loader, as a user's would.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drills.assertions.expect import ExpectSpec, Unjudgeable, describe, judge
from drills.assertions.http_check import JsonValue, _json_value
from drills.yamlsource import parse


def spec(yaml_text: str) -> ExpectSpec:
    """``{equals: ...}`` or ``{rows: ...}`` as the scenario loader reads it."""
    return ExpectSpec.model_validate(parse(f"expect: {yaml_text}\n", "s.yaml").data["expect"])


# -- booleans -----------------------------------------------------------------------------


def test_a_yaml_boolean_equals_a_sql_boolean() -> None:
    assert judge(spec("{equals: true}"), True)[0] is True
    assert judge(spec("{equals: false}"), False)[0] is True
    assert judge(spec("{equals: true}"), False)[0] is False  # the negative control
    assert judge(spec("{equals: false}"), True)[0] is False
    assert describe(spec("{equals: true}")) == "equals true"


@pytest.mark.parametrize("text", ['"t"', '"true"', '"True"', "t", '"f"'])
def test_a_string_against_a_boolean_is_refused_with_how_to_write_it(text: str) -> None:
    """Before: "t" and "true" failed on a true boolean, "True" passed (Python's text); no form is a verdict now."""
    with pytest.raises(Unjudgeable, match=r"\{equals: true\} or \{equals: false\}, unquoted"):
        judge(spec(f"{{equals: {text}}}"), True)
    with pytest.raises(Unjudgeable, match="judge it with"):
        judge(spec('{matches: "^t"}'), True)


@pytest.mark.parametrize("value", ["true", "t", 1, b"1", Decimal(1)])
def test_a_yaml_boolean_against_anything_else_is_refused(value: Any) -> None:
    """A text column holding 'true', a Redis "1", a number 1: none is a boolean, and none passes."""
    with pytest.raises(Unjudgeable, match=r"judges a boolean.*quote it"):
        judge(spec("{equals: true}"), value)


def test_a_number_is_never_a_boolean() -> None:
    assert judge(spec("{equals: 1}"), True)[0] is False
    assert judge(spec("{equals: 0}"), False)[0] is False


# -- numbers ------------------------------------------------------------------------------


def test_a_yaml_number_equals_a_sql_number_by_value() -> None:
    assert judge(spec("{equals: 1}"), Decimal("1.00"))[0] is True  # failed before: "1.00" != "1"
    assert judge(spec("{equals: 1.5}"), Decimal("1.50"))[0] is True
    assert judge(spec("{equals: 0.1}"), Decimal("0.1"))[0] is True
    assert judge(spec("{equals: 0.1}"), 0.1)[0] is True  # a float8 0.1
    assert judge(spec("{equals: -2}"), -2)[0] is True
    assert judge(spec("{equals: 2}"), b"2")[0] is True  # a Redis reply: text that is a number, as `= 2` reads it
    assert judge(spec("{equals: 1}"), Decimal("1.01"))[0] is False
    assert judge(spec("{equals: 1}"), "one")[0] is False
    assert judge(spec("{equals: 1}"), Decimal("NaN"))[0] is False


def test_a_number_is_not_its_float_neighbour() -> None:
    assert judge(spec("{equals: 9007199254740993}"), 9007199254740992)[0] is False
    assert judge(spec("{equals: 9007199254740993}"), 9007199254740993)[0] is True
    assert judge(spec("{equals: 9007199254740993.0}"), Decimal("9007199254740992"))[0] is False  # its float is ...992
    assert judge(spec("{equals: 0.10000000000000001}"), Decimal("0.1"))[0] is False  # its float is 0.1
    assert judge(spec("{equals: 0.10000000000000001}"), Decimal("0.10000000000000001"))[0] is True


def test_a_quoted_number_compares_text() -> None:
    """Decided explicitly: quoted is text, as the value is printed (numeric 1.00 is "1.00")."""
    assert judge(spec('{equals: "1"}'), 1)[0] is True
    assert judge(spec('{equals: "1"}'), Decimal("1.00"))[0] is False
    assert judge(spec('{equals: "1.00"}'), Decimal("1.00"))[0] is True
    assert describe(spec('{equals: "1"}')) == 'equals "1"'


def test_null_equals_nothing() -> None:
    for text in ("true", "false", "0", '""', '"None"', "null-ish"):
        assert judge(spec(f"{{equals: {text}}}"), None, [(None,)])[0] is False


def test_what_could_never_be_met_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="NaN is not NaN"):
        spec("{equals: .nan}")
    with pytest.raises(ValidationError, match="takes one value"):
        spec("{equals: [1, 2]}")


def test_rows_are_typed_like_equals() -> None:
    result = [(1, Decimal("2.50"), True, None, "x")]
    assert judge(spec('{rows: [[1, 2.5, true, null, "x"]]}'), None, result)[0] is True
    assert judge(spec('{rows: [[1, 2.5, false, null, "x"]]}'), None, result)[0] is False
    assert judge(spec('{rows: [[1, 2.5, true, "", "x"]]}'), None, result)[0] is False  # a NULL is not ''
    assert judge(spec("{rows: [[1, 2.5, true, null]]}"), None, result)[0] is False
    with pytest.raises(Unjudgeable, match="unquoted"):
        judge(spec('{rows: [[1, 2.5, "t", null, "x"]]}'), None, result)


# -- exactness, as a property --------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=22)


@st.composite
def written_decimals(draw: st.DrawFn) -> str:
    """A number as a user writes it in YAML: an integer, or a decimal with a fraction (and an exponent)."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(digits).lstrip("0") or "0"
    if draw(st.booleans()):
        return sign + whole
    exponent = draw(st.sampled_from(["", "e+3", "e-7", "e+20"]))
    return f"{sign}{whole}.{draw(digits)}{exponent}"


@settings(max_examples=400, deadline=None)
@given(written_decimals(), st.integers(0, 6), st.integers(1, 9))
def test_equals_is_exact_decimal_equality(written: str, extra_zeros: int, nudge: int) -> None:
    """Met by the same decimal however a database scales it; never by a neighbour in the last digit."""
    exact = Decimal(written)
    expect = spec(f"{{equals: {written}}}")
    with localcontext(prec=200):  # the test's own arithmetic exact (the judging is exact in any context)
        scaled = exact.quantize(Decimal(1).scaleb(exact.as_tuple().exponent - extra_zeros))  # type: ignore[operator]
        neighbour = exact + Decimal(nudge).scaleb(exact.as_tuple().exponent)  # type: ignore[arg-type]
    assert scaled == exact and neighbour != exact
    assert judge(expect, scaled)[0] is True
    assert judge(expect, str(scaled))[0] is True  # the same as text (a Redis reply)
    assert judge(expect, neighbour)[0] is False


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**70), 2**70), st.integers(1, 1000))
def test_an_integer_is_never_its_neighbour(n: int, step: int) -> None:
    expect = spec(f"{{equals: {n}}}")
    assert judge(expect, n)[0] is True
    assert judge(expect, Decimal(n).quantize(Decimal("0.01")))[0] is True
    assert judge(expect, n + step)[0] is False
    assert judge(expect, float(n + step))[0] is (Decimal(repr(float(n + step))) == n)  # a float8 is its own value


# -- http: a JSON value is judged as the body wrote it ---------------------------------------


def _http(body: str, expect: str) -> tuple[bool, str, bool]:
    return _json_value(200, body, JsonValue.model_validate({"path": "v", "expect": spec(expect)}))


def test_a_json_value_is_typed_and_exact() -> None:
    assert _http('{"v": true}', "{equals: true}")[0] is True
    assert _http('{"v": 1.50}', "{equals: 1.5}")[0] is True
    assert _http('{"v": 9007199254740993.5}', "{equals: 9007199254740993.5}")[0] is True
    assert _http('{"v": 9007199254740992.5}', "{equals: 9007199254740993.5}")[0] is False  # same float, not same number
    assert _http('{"v": 0.1}', "{equals: 0.10000000000000001}")[0] is False
    held, seen, _ = _http('{"v": true}', '{equals: "true"}')
    assert held is False and "cannot be judged so" in seen and "unquoted" in seen
    assert _http('{"v": "ok"}', "{equals: ok}")[0] is True  # the quiet control
