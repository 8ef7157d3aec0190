"""Presentation helpers for the HTML report: number formats and the timeline geometry.

They live in Python rather than in the template because they carry the judgement calls
(how precise a duration must be, how to draw a drill that took zero seconds) and those
deserve unit tests; the template only lays out what these functions decide.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.journal import AssertionResult, Results

__all__ = [
    "KIND_COLOURS",
    "Bar",
    "Marker",
    "Tick",
    "Timeline",
    "as_json",
    "format_bytes",
    "format_seconds",
    "format_utc",
    "iso_utc",
    "mapping_items",
    "plain",
    "rpo_assertion",
    "rto_assertion",
    "short_digest",
    "timeline",
    "to_utc",
]

# Okabe-Ito derived palette: distinguishable with the common colour-vision deficiencies,
# and every bar also carries its kind in a tooltip and in the phase table, so colour is
# never the only carrier of meaning.
KIND_COLOURS: dict[str, str] = {
    "provision": "#8c8c8c",
    "seed": "#56b4e9",
    "backup": "#0072b2",
    "wait": "#c8c8c8",
    "disaster": "#d55e00",
    "restore": "#009e73",
    "check": "#cc79a7",
    "teardown": "#a6a6a6",
}
OTHER_KIND_COLOUR = "#6f6f6f"
MARKED_STATUSES = frozenset({"failed", "error", "refused"})


def to_utc(moment: datetime) -> datetime:
    """Normalise to UTC, reading a naive timestamp as UTC because the journal records UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_utc(moment: datetime | None) -> str:
    """Second precision is what an auditor compares against change tickets; more is noise."""
    if moment is None:
        return "—"
    return to_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_utc(moment: datetime) -> str:
    """Machine-readable form for ``<time datetime>``, kept exact so nothing is lost."""
    return to_utc(moment).isoformat().replace("+00:00", "Z")


def format_seconds(seconds: float | None, missing: str = "—") -> str:
    """Human durations: centiseconds matter for a 4 s restore, not for a 2 min one."""
    if seconds is None or isinstance(seconds, bool):
        return missing
    if not math.isfinite(seconds):
        return str(seconds)
    sign = "-" if seconds < 0 else ""
    value = abs(seconds)
    if value < 60:
        text = f"{value:.2f} s"
        if text != "60.00 s":
            return sign + text
    hours, rest = divmod(round(value), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes or (hours and secs):
        parts.append(f"{minutes} min")
    if secs:
        parts.append(f"{secs} s")
    return sign + " ".join(parts)


def format_bytes(size: Any) -> str:
    """Binary units for reading, with the exact count kept because auditors compare bytes."""
    if isinstance(size, bool) or not isinstance(size, int):
        return "—" if size is None else str(size)
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit} ({size:,} bytes)"


def short_digest(digest: Any, length: int = 16) -> str:
    """A prefix is enough to tell digests apart by eye; the full one goes in a tooltip."""
    if digest is None or digest == "":
        return "—"
    text = str(digest)
    return text if len(text) <= length else text[:length] + "…"


def as_json(value: Any) -> str:
    """Compact, stable JSON for nested evidence: sorted keys so two reports diff cleanly.

    Returns plain text on purpose (unlike Jinja's ``tojson``) so autoescaping shows a
    reader ``<`` rather than ``\\u003c``.
    """
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(", ", ": "))


def plain(value: Any) -> str:
    """Scalars as JSON spells them, so ``null``/``true`` read the same as in results.json."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, datetime):
        return format_utc(value)
    return str(value)


def rpo_assertion(results: Results) -> AssertionResult | None:
    """The stack RPO verdict, chosen like the RTO one."""
    candidates = [a for a in results.assertions if a.name == "rpo"]
    for assertion in candidates:
        if assertion.id == "rpo[stack]":
            return assertion
    return candidates[0] if candidates else None


def rto_assertion(results: Results) -> AssertionResult | None:
    """The stack RTO verdict: prefer the assertion whose id is exactly ``rto``.

    Per-component RTO assertions (``rto[db]``) may also exist; the objectives table is
    about the whole stack, so it takes the plain one when present and the first RTO
    assertion otherwise.
    """
    candidates = [a for a in results.assertions if a.name == "rto"]
    for assertion in candidates:
        if assertion.id == "rto":
            return assertion
    return candidates[0] if candidates else None


# --- timeline geometry -------------------------------------------------------------------

VIEW_WIDTH = 1000
CHART_LEFT = 260
CHART_RIGHT_PAD = 40
ROW_HEIGHT = 22
BAR_HEIGHT = 14
TOP = 10
AXIS_HEIGHT = 30
MIN_BAR_WIDTH = 2.0
LABEL_CHARS = 34


@dataclass(frozen=True)
class Bar:
    label: str
    title: str
    x: float
    width: float
    y: float
    text_y: float
    fill: str
    marked: bool


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Marker:
    x: float
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    chart_left: int
    chart_right: float
    axis_y: float
    span_seconds: float
    bars: list[Bar]
    ticks: list[Tick]
    markers: list[Marker]
    kinds: list[tuple[str, str]]


_TICK_STEPS = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
    10800, 21600, 43200, 86400,
)  # fmt: skip


def _tick_label(t: float) -> str:
    if t == 0:
        return "0"
    if t < 60:
        return f"{t:g} s"
    minutes, secs = divmod(round(t), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timeline(results: Results) -> Timeline:
    """Lay out one bar per phase on a shared time axis.

    The span is the longest of the recorded drill time and the last phase end, so a bar
    never runs off the chart; a zero span (a drill that failed instantly) is drawn over
    one second so nothing divides by zero and the phases still show as slivers.
    """
    phases = results.phases
    ends = [max(p.offset_seconds, 0.0) + max(p.duration_seconds, 0.0) for p in phases]
    candidates = [results.measured.drill_seconds, *ends, *(d.offset_seconds for d in results.disasters)]
    span = max((c for c in candidates if math.isfinite(c)), default=0.0)
    if span <= 0:
        span = 1.0
    chart_width = VIEW_WIDTH - CHART_LEFT - CHART_RIGHT_PAD
    chart_right = float(CHART_LEFT + chart_width)

    def x_of(seconds: float) -> float:
        if not math.isfinite(seconds):
            seconds = 0.0
        clamped = min(max(seconds, 0.0), span)
        return round(CHART_LEFT + clamped / span * chart_width, 2)

    bars: list[Bar] = []
    kinds: dict[str, str] = {}
    for index, phase in enumerate(phases):
        fill = KIND_COLOURS.get(phase.kind, OTHER_KIND_COLOUR)
        kinds.setdefault(phase.kind, fill)
        x = x_of(phase.offset_seconds)
        end = x_of(phase.offset_seconds + max(phase.duration_seconds, 0.0))
        width = max(end - x, MIN_BAR_WIDTH)
        if x + width > chart_right:
            x = round(chart_right - width, 2)
        marked = phase.status in MARKED_STATUSES
        label = phase.name
        if phase.component is not None and phase.component not in phase.name:
            label = f"{phase.name} ({phase.component})"
        if marked:
            label = f"✕ {label} — {phase.status}"
        title = (
            f"{phase.name} [{phase.kind}] — {phase.status}; starts +{format_seconds(phase.offset_seconds)}, "
            f"lasts {format_seconds(phase.duration_seconds)}"
        )
        if phase.detail:
            title += f"; {phase.detail}"
        y = TOP + index * ROW_HEIGHT
        bars.append(
            Bar(
                label=_truncate(label, LABEL_CHARS),
                title=title,
                x=x,
                width=round(width, 2),
                y=y + (ROW_HEIGHT - BAR_HEIGHT) / 2,
                text_y=y + ROW_HEIGHT / 2 + 4,
                fill=fill,
                marked=marked,
            )
        )

    axis_y = float(TOP + len(phases) * ROW_HEIGHT + 4)
    step = next((s for s in _TICK_STEPS if span / s <= 8), _TICK_STEPS[-1])
    ticks: list[Tick] = []
    count = math.floor(span / step + 1e-9)
    for i in range(count + 1):
        t = round(i * step, 6)
        ticks.append(Tick(x=x_of(t), label=_tick_label(t)))

    markers = [
        Marker(
            x=x_of(d.offset_seconds),
            title=f"disaster {d.name}: {d.fault} on {d.target} at +{format_seconds(d.offset_seconds)}",
        )
        for d in results.disasters
    ]
    return Timeline(
        width=VIEW_WIDTH,
        height=int(axis_y + AXIS_HEIGHT),
        chart_left=CHART_LEFT,
        chart_right=chart_right,
        axis_y=axis_y,
        span_seconds=span,
        bars=bars,
        ticks=ticks,
        markers=markers,
        kinds=sorted(kinds.items()),
    )


def mapping_items(value: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Sorted so the same results always render the same page (reports get diffed)."""
    return sorted(value.items(), key=lambda item: str(item[0]))
