"""Durations as people write them in scenarios: ``90s``, ``5m``, ``1h30m``, ``250ms``.

A bare number is refused on purpose: ``rto: 5`` is ambiguous (seconds? minutes?) and an
RTO objective silently read in the wrong unit is a compliance finding waiting to happen.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit such as 90s, 5m or 1h30m, got {value!r}")
    text = value.strip().replace(" ", "")
    if not _WHOLE.match(text):
        raise ValueError(f"expected a duration with a unit such as 90s, 5m or 1h30m, got {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:g}s" if secs else f"{int(minutes)}m"
    hours, minutes = divmod(int(minutes), 60)
    text = f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    if secs:
        text += f"{secs:g}s"
    return text


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _WHOLE.pattern, "examples": ["90s", "5m", "1h30m"]}),
]
