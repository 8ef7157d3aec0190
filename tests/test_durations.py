"""Durations in scenarios must carry a unit: an RTO read in the wrong unit is a silent
compliance failure, so bare numbers and junk are refused and the formatter round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (" 2m ", 120.0),
        ("1d", 86400.0),
        ("0s", 0.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("2s500ms", 2.5),
    ],
)
def test_parse_duration_accepts_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [5, 5.0, "5", "5x", "", "   ", True, False, None, "-5s", "5 x", "m", "1.s", ".5s", "1h30", "s5", ["5s"]],
)
def test_parse_duration_refuses_bare_numbers_and_junk(value: object) -> None:
    with pytest.raises(ValueError, match="duration with a unit"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (1.0, "1s"),
        (45.0, "45s"),
        (1.5, "1.5s"),
        (90.0, "1m30s"),
        (300.0, "5m"),
        (5400.0, "1h30m"),
        (7200.0, "2h"),
        (3661.0, "1h1m1s"),
        (3630.0, "1h30s"),
    ],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=10 * 86400))
def test_format_duration_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(float(seconds))) == seconds


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_parse_duration_single_unit(n: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


def test_format_duration_keeps_seconds_above_an_hour() -> None:
    # The Duration serializer must round-trip: "1h1m1s" must not come back as "1h1m".
    assert parse_duration(format_duration(3661.0)) == 3661.0
