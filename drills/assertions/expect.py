"""What a user's check expects of the value it reads: ``> 0``, ``{equals: ok}``, ``rows``, ...

Shared by the ``query``, ``redis`` and ``http`` checks so a business rule is written the
same way whatever it reads. The short forms are text, checked when the scenario is
validated: a comparison with a number (``> 0``, ``>= 10``, ``= 42``, ``!= 0``) of the
single value read, ``rows`` (a query returned at least one row) and ``no rows``. The
long forms are mappings: ``{equals: X}`` (typed by how X is written: an unquoted
``true``/``false`` is a boolean and judges only a boolean, an unquoted number judges the
value as an exact number like ``= N``, a quoted string compares text and refuses a boolean),
``{matches: REGEX}`` (the value as text matches anywhere), ``{contains: TEXT}``, and
``{rows: [[...], ...]}`` (a query returned exactly these rows, each value judged as
``equals`` judges it, a NULL only with ``null``). Numbers are compared exactly (as decimals: a bigint above 2**53
is not its neighbour); a timestamp with time zone as its UTC text, whatever the server's
TimeZone. A reply of several values (a Redis list, set or hash, a JSON array
or object) meets ``rows`` when it holds any; an expectation of one value cannot judge it
(:class:`Unjudgeable`, an error of the check, never a verdict).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drills.yamlsource import WrittenFloat
from engine.redaction import redact

_COMPARISON = re.compile(r"^(>=|<=|==|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)$")
_WORDS = ("rows", "no rows")
MAX_SHOWN = 300  # characters of a value shown in a finding
MAX_ROWS = 1000  # rows a query check reads, and so rows a `{rows: ...}` expectation may list
# A reply of several values (a Redis list, set or hash; a JSON array or object).
COLLECTION = (list, tuple, set, frozenset, dict)


class Unjudgeable(ValueError):
    """The value read cannot be judged by this expectation (it is not one value): no verdict.

    Found by review: a list, set or hash reply was judged by its Python text, so
    ``contains: "{"`` passed on an empty hash and a comparison never saw which value it meant.
    """


class ExpectSpec(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    equals: Any = Field(
        default=None,
        description=(
            "The value equals this: `true`/`false` (unquoted) a boolean; an unquoted number the value as an exact "
            "number (`1` equals numeric 1.00); a quoted string the value's text (a boolean is refused: write true/false)."
        ),
    )
    matches: str | None = Field(default=None, description="A regular expression the value (as text) matches.")
    contains: str | None = Field(default=None, description="Text the value (as text) contains.")
    rows: list[list[Any]] | None = Field(
        default=None,
        max_length=MAX_ROWS,
        description=(
            f"A query's exact result, each value judged as by equals (at most {MAX_ROWS} rows; null is SQL NULL)."
        ),
    )

    @model_validator(mode="after")
    def _one(self) -> ExpectSpec:
        given = [k for k in ("equals", "matches", "contains", "rows") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, matches, contains, rows")
        for wanted in [self.equals] if self.equals is not None else [v for row in self.rows or [] for v in row]:
            _one_value(wanted)
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: not a regular expression: {exc}") from None
        return self


Expect = str | ExpectSpec


def _one_value(wanted: Any) -> None:
    """Refuse at load what ``equals`` (or a cell of ``rows``) could never be met by honestly."""
    if isinstance(wanted, COLLECTION):
        raise ValueError("equals (and each value of rows) takes one value: a quoted string, a number, true or false")
    number = _number(wanted) if isinstance(wanted, int | float | Decimal) else None
    if number is not None and number.is_nan():
        raise ValueError("equals: .nan is never equal to anything (NaN is not NaN); compare a text instead")


def not_rows(expect: Expect) -> Expect:
    """Refuse ``{rows: ...}`` where no query is run (a Redis reply, a JSON value): it would judge nothing."""
    if isinstance(expect, ExpectSpec) and expect.rows is not None:
        raise ValueError("{rows: ...} judges a query's rows; a reply is one value: use equals, matches, contains or a comparison")
    return expect


def check_short_form(text: str) -> str:
    """Validate ``> 0`` / ``rows`` / ``no rows`` at load time; anything else is refused."""
    if text.strip() in _WORDS or _COMPARISON.match(text.strip()):
        return text.strip()
    raise ValueError(
        f"expect {text!r} is not understood: write a comparison with a number ('> 0', '= 42', '!= 0'), "
        "'rows', 'no rows', or a mapping {equals: ...}, {matches: ...}, {contains: ...}, {rows: [...]}"
    )


def as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime) and value.utcoffset() is not None:
        # A timestamptz, in UTC whatever the server's TimeZone. Found by review: the same
        # instant met `matches: "^2026-12-07"` from a database set to Asia/Tokyo and not in UTC.
        return str(value.astimezone(UTC))
    if isinstance(value, memoryview):
        # A PostgreSQL bytea, as psql shows it (hex). Found by review: it was judged as
        # "<memory at 0x...>", so `matches: "."` passed on an empty bytea.
        return "\\x" + value.tobytes().hex()
    return "" if value is None else str(value)


def shown(value: Any) -> str:
    """``value`` as a report shows it: capped, and masked where it looks like a credential.

    Found by review: a query reading a connection string (``postgresql://app:pw@...``) or a
    Redis value holding a token wrote it in clear into results.json, junit.xml and the
    report, while an http body was masked. Only what is shown is masked, never what is judged.
    """
    text = as_text(value) if not isinstance(value, list | tuple) else repr(value)
    text = redact(text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def single_value(expect: Expect) -> bool:
    """Whether ``expect`` judges one value (a comparison, equals, matches, contains), not a row set."""
    if isinstance(expect, ExpectSpec):
        return expect.rows is None
    return expect.strip() not in _WORDS


def judge(expect: Expect, value: Any, rows: list[tuple[Any, ...]] | None = None) -> tuple[bool, str]:
    """(held, what was seen) for ``value`` (the single value read) or ``rows`` (a query's result).

    Raises :class:`Unjudgeable` when ``value`` is a collection and ``expect`` wants one value.
    """
    if isinstance(value, COLLECTION) and single_value(expect):
        raise Unjudgeable(
            f"what was read is {len(value)} value(s) (a {type(value).__name__}), and '{describe(expect)}' judges one"
        )
    if isinstance(expect, ExpectSpec):
        return _judge_spec(expect, value, rows)
    text = expect.strip()
    if text in _WORDS:
        count = _count(value, rows)
        unit = "value(s)" if isinstance(value, COLLECTION) else "row(s)"
        return (count > 0) == (text == "rows"), f"{count} {unit}"
    m = _COMPARISON.match(text)
    assert m is not None  # validated at load time
    if value is None:
        return False, _absent(rows)
    number = _number(value)
    if number is None:
        return False, f"{shown(value)!r}, not a number"
    if number.is_nan():
        return False, "NaN"
    # Decimal, not float: a bigint above 2**53 equalled its neighbour as a float (found by review).
    limit = Decimal(m.group(2))
    held = {
        ">": number > limit,
        ">=": number >= limit,
        "<": number < limit,
        "<=": number <= limit,
        "=": number == limit,
        "==": number == limit,
        "!=": number != limit,
    }[m.group(1)]
    return held, shown(value)


def _count(value: Any, rows: list[tuple[Any, ...]] | None) -> int:
    """Rows of a query; items of a collection reply (an empty list, set or hash has none); else 0 or 1."""
    if rows is not None:
        return len(rows)
    if isinstance(value, COLLECTION):
        return len(value)
    return 0 if value is None else 1


_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$|^\s*[+-]?(nan|inf|infinity)\s*$", re.IGNORECASE)


def _number(value: Any) -> Decimal | None:
    """``value`` as an exact number, or None: a boolean is not 1, and ``1_000`` is text, not a thousand."""
    if isinstance(value, bool):
        return None
    if isinstance(value, WrittenFloat):
        text = value.written  # as the scenario or the JSON wrote it: the float may not be that decimal
    else:
        text = repr(value) if isinstance(value, float) else as_text(value)
    if not _NUMBER.match(text):
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
        return None


def _judge_spec(expect: ExpectSpec, value: Any, rows: list[tuple[Any, ...]] | None) -> tuple[bool, str]:
    if expect.rows is not None:
        if rows is None:
            # Found by review: on a Redis reply or a JSON value, `{rows: []}` compared no rows
            # with none and passed whatever was read.
            raise Unjudgeable("{rows: ...} judges the rows of a query, and this is a single reply")
        # A NULL is not the empty text: `{rows: [[""]]}` must not be met by a NULL, nor `[[null]]` by ''.
        got = [[_cell(v) for v in row] for row in (rows or [])]
        return _same_rows(expect.rows, rows or []), f"{len(got)} row(s): {shown(got[:5])}"
    if value is None:
        # Nothing read is not the empty text: `equals: ""` or `matches: ".*"` met by a
        # query that returned no row, or a NULL, would pass without a value.
        return False, _absent(rows)
    if expect.equals is not None:
        return equal(expect.equals, value), shown(value)
    if isinstance(value, bool):
        raise Unjudgeable(_BOOLEAN_TEXT.format(value=str(value).lower()))
    text = as_text(value)
    if expect.matches is not None:
        return re.search(expect.matches, text) is not None, shown(value)
    assert expect.contains is not None
    return expect.contains in text, shown(value)


_BOOLEAN_TEXT = (
    "what was read is a boolean ({value}), and its text ('t', 'true', 'True') depends on who prints it: "
    "judge it with {{equals: true}} or {{equals: false}}, unquoted"
)


def equal(wanted: Any, value: Any) -> bool:
    """Whether ``value`` (read, not NULL) is ``wanted`` (as the scenario wrote it), typed by how it was written.

    Found by review: both were compared as Python text, so ``{equals: "t"}`` and
    ``{equals: "true"}`` never met a true PostgreSQL boolean (its text was ``True``), nor
    ``{equals: 1}`` a numeric ``1.00``: failures where the data were right; and
    ``{equals: 0.10000000000000001}`` (a YAML float: 0.1) met numeric ``0.1``, a false pass. Now a boolean
    judges a boolean, a number an exact number (Decimal, as the comparisons: a bigint
    above 2**53 is not its neighbour, ``0.1`` is not the float nearest it), and a quoted
    string text. Raises :class:`Unjudgeable` where the two kinds cannot be compared
    honestly (a boolean against anything else): an error of the check, never a verdict.
    """
    if isinstance(wanted, bool):
        if not isinstance(value, bool):
            raise Unjudgeable(
                f"{{equals: {str(wanted).lower()}}} judges a boolean, and what was read is not one "
                f'({type(value).__name__} {shown(value)!r}); to compare its text, quote it: equals: "{shown(value)}"'
            )
        return value is wanted
    if isinstance(wanted, int | float | Decimal):
        want, got = _number(wanted), _number(value)
        return want is not None and got is not None and not got.is_nan() and got == want
    if isinstance(value, bool):
        raise Unjudgeable(_BOOLEAN_TEXT.format(value=str(value).lower()))
    return as_text(value) == as_text(wanted)


def _same_rows(wanted: list[list[Any]], rows: list[tuple[Any, ...]]) -> bool:
    """Whether ``rows`` are exactly ``wanted``, each value as :func:`equal` judges it; a NULL only ``null``."""
    if len(wanted) != len(rows) or any(len(w) != len(r) for w, r in zip(wanted, rows, strict=True)):
        return False
    return all(
        (w is None and v is None) or (w is not None and v is not None and equal(w, v))
        for want_row, row in zip(wanted, rows, strict=True)
        for w, v in zip(want_row, row, strict=True)
    )


def _cell(value: Any) -> str | None:
    return None if value is None else as_text(value)


def _absent(rows: list[tuple[Any, ...]] | None) -> str:
    """What was seen when no value was: no row, a NULL, or (a Redis reply) nil."""
    if rows is None:
        return "nil (no value)"
    return "no rows" if not rows else "NULL"


def describe(expect: Expect) -> str:
    if isinstance(expect, str):
        return expect
    key = next(k for k in ("equals", "matches", "contains", "rows") if getattr(expect, k) is not None)
    wanted = getattr(expect, key)
    if isinstance(wanted, bool):
        return f"{key} {str(wanted).lower()}"
    if key == "equals" and isinstance(wanted, str):
        return f'{key} "{shown(wanted)}"'  # quoted: text, not the number or boolean it may look like
    return f"{key} {shown(wanted)}"
