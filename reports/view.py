"""Presentation helpers for the HTML report: number formats and the timeline geometry.

They live in Python rather than in the template because they carry the judgement calls
(how precise a duration must be, how to draw a drill that took zero seconds) and those
deserve unit tests; the template only lays out what these functions decide.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.journal import AssertionResult, Results

__all__ = [
    "KIND_COLOURS",
    "REMEDIATION",
    "Bar",
    "ChartBar",
    "ChartRow",
    "ExecutiveSummary",
    "IdentityView",
    "Marker",
    "ObjectiveChart",
    "Remediation",
    "Sparkline",
    "Tick",
    "Timeline",
    "Trend",
    "as_json",
    "component_content",
    "executive_summary",
    "format_bytes",
    "format_seconds",
    "format_utc",
    "identity_view",
    "iso_utc",
    "mapping_items",
    "objective_chart",
    "plain",
    "recovery_points",
    "remediation",
    "rpo_assertion",
    "rto_assertion",
    "short_digest",
    "slowest_restore",
    "timeline",
    "to_utc",
    "trend",
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
    """The stack RPO verdict (``rpo[stack]``), or None: the objectives table's row is the stack's."""
    return _stack_assertion(results, "rpo")


def rto_assertion(results: Results) -> AssertionResult | None:
    """The stack RTO verdict (``rto[stack]``), or None.

    Not the first RTO assertion declared (found by review): a component's own check with
    its own ``max`` passed while the stack missed the objective, and the row, which
    compares the stack's RTO with the scenario's objective, showed that pass.
    """
    return _stack_assertion(results, "rto")


def _stack_assertion(results: Results, name: str) -> AssertionResult | None:
    for assertion in results.assertions:
        if assertion.name == name and assertion.id in (f"{name}[stack]", name):
            return assertion
    return None


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


# --- executive summary -------------------------------------------------------------------

# Runtime entries that describe how the stack was run rather than what software it ran;
# they stay in the Environment section, the summary line is for versions.
_NOT_VERSIONS = frozenset({"runtime", "name", "isolation"})
VERSION_CHARS = 48


_PROVIDER_NAMES = {
    "github-actions": "GitHub Actions",
    "gitlab-ci": "GitLab CI",
    "jenkins": "Jenkins",
    "buildkite": "Buildkite",
    "circleci": "CircleCI",
}


@dataclass(frozen=True)
class IdentityView:
    """Who ran the drill, in the words the executive summary uses; "not recorded" where unknown."""

    run_by: str
    ci: str
    ci_url: str | None  # only an http(s) URL, so the report never links anywhere else
    commit: str
    display_name: str


def identity_view(results: Results) -> IdentityView:
    """The environment's account of who ran the drill, apart from the name the scenario gives."""
    ident = getattr(results, "identity", None)
    operator = results.report.get("operator")
    display = str(operator) if operator else "not given"
    if ident is None:
        missing = "not recorded (results of an older drproof)"
        return IdentityView(missing, missing, None, missing, display)
    who = ident.user or "an unrecorded account"
    run_by = f"{who} on {ident.host}" if ident.host else who
    if ident.ci_provider is None:
        ci = "not run in a recognised CI system"
    else:
        parts = [_PROVIDER_NAMES.get(ident.ci_provider, ident.ci_provider)]
        if ident.ci_job:
            parts.append(ident.ci_job)
        parts.append(f"run {ident.ci_run_id}" if ident.ci_run_id else "run id not recorded")
        if ident.ci_actor:
            parts.append(f"started by {ident.ci_actor}")
        ci = ", ".join(parts)
    url = ident.ci_job_url if ident.ci_job_url and ident.ci_job_url.startswith(("https://", "http://")) else None
    if ident.git_commit is None:
        commit = f"not recorded ({ident.git_problem})" if ident.git_problem else "not recorded"
    else:
        state = {
            "committed": "the scenario file as committed",
            "modified": "the scenario file has uncommitted changes",
            "untracked": "the scenario file is not in git",
        }.get(ident.scenario_git_state or "", "scenario file state not recorded")
        tree = "other uncommitted changes in the repository" if ident.git_dirty else "repository clean"
        commit = f"{ident.git_commit} ({state}; {tree})"
    return IdentityView(run_by, ci, url, commit, display)


@dataclass(frozen=True)
class ExecutiveSummary:
    verdict: str
    date: str
    scope: list[str]
    tested: str  # real backup or synthetic data, in one sentence ("not recorded" for older results)
    runtime: str
    versions: list[str]
    operator: str
    recovery_point: list[str]
    rto_line: str
    rpo_line: str | None


def _objective_line(name: str, measured: float | None, objective: float | None, status: str | None) -> str:
    """One sentence per objective, worded so it stands alone in a printed summary."""
    got = format_seconds(measured, "not measured")
    target = "no objective set" if objective is None else f"objective {format_seconds(objective)}"
    verdict = f" — {status.replace('_', ' ')}" if status else ""
    return f"{name} {got} against {target}{verdict}"


def _critical_path(results: Results) -> str:
    """The chain of dependent restores that set the RTO, when there was more than one link."""
    path = list(getattr(results.measured, "critical_path", []) or [])
    return f"; critical path {' → '.join(path)}" if len(path) > 1 else ""


def recovery_points(results: Results) -> list[str]:
    """Which backup(s) the stack was restored from, as the restore phases recorded it.

    An auditor's first question after "did it work" is "from what": a drill restored from
    a fresh backup proves less than one restored from last night's. A restore phase that
    says it went to a point in time is reported as such, because no single backup id then
    describes what was recovered.
    """
    seen: dict[str, list[str]] = {}
    for phase in results.phases:
        if phase.kind != "restore" or phase.status != "ok":
            continue
        point = phase.data.get("point_in_time")
        text = f"{phase.name} {phase.detail}".lower()
        if point or "point in time" in text or "point-in-time" in text:
            label = f"point in time ({point})" if isinstance(point, str) and point else "point in time"
        else:
            backup_id = phase.data.get("backup_id")
            if not backup_id:
                continue
            name = next((b.name for b in results.backups if b.id == backup_id), None)
            label = f"{name} ({backup_id})" if name else str(backup_id)
        seen.setdefault(label, [])
        if phase.component and phase.component not in seen[label]:
            seen[label].append(phase.component)
    if not seen:
        # Older runs recorded the backup id only on the component; read it from there.
        for comp in results.components:
            if comp.restored_from:
                name = next((b.name for b in results.backups if b.id == comp.restored_from), None)
                label = f"{name} ({comp.restored_from})" if name else comp.restored_from
                seen.setdefault(label, []).append(comp.name)
    return [f"{label}: {', '.join(comps)}" if comps else label for label, comps in seen.items()]


def executive_summary(results: Results) -> ExecutiveSummary:
    """Everything an auditor signs off on, in one block, drawn only from the record."""
    runtime = results.runtime.get("runtime") or results.runtime.get("name") or "not recorded"
    versions = [
        f"{key}: {_truncate(value, VERSION_CHARS)}"
        for key, value in mapping_items(results.runtime)
        if key not in _NOT_VERSIONS
    ]
    operator = results.report.get("operator")
    rto = rto_assertion(results)
    rpo = rpo_assertion(results)
    has_rpo = results.objectives.rpo_seconds is not None or results.measured.rpo_seconds is not None
    return ExecutiveSummary(
        verdict=results.verdict.upper(),
        date=format_utc(results.started_at),
        scope=[f"{c.name} ({c.kind})" for c in results.components],
        tested=results.scope.statement if results.scope is not None else "not recorded (results of an older drproof)",
        runtime=str(runtime),
        versions=versions,
        operator=str(operator) if operator else "not recorded",
        recovery_point=recovery_points(results),
        rto_line=_objective_line(
            "RTO", results.measured.rto_seconds, results.objectives.rto_seconds, rto.status if rto else None
        )
        + _critical_path(results),
        rpo_line=_objective_line(
            "RPO", results.measured.rpo_seconds, results.objectives.rpo_seconds, rpo.status if rpo else None
        )
        if has_rpo
        else None,
    )


# --- objectives chart --------------------------------------------------------------------

OBJ_WIDTH = 720
OBJ_LEFT = 70
OBJ_RIGHT_PAD = 170
OBJ_BAR = 16
OBJ_GROUP = 64
OBJ_TOP = 8
STATUS_FILLS = {"pass": "#0e6630", "fail": "#a1122a", "error": "#7a3f00", "none": "#45455a"}
OBJECTIVE_FILL = "#9aa3ad"


@dataclass(frozen=True)
class ChartBar:
    label: str
    text: str
    x: float
    y: float
    width: float
    text_x: float
    text_y: float
    fill: str


@dataclass(frozen=True)
class ChartRow:
    name: str
    status: str
    label_y: float
    objective: ChartBar | None
    measured: ChartBar | None


@dataclass(frozen=True)
class ObjectiveChart:
    width: int
    height: int
    left: int
    rows: list[ChartRow]
    description: str


def _row_status(assertion: AssertionResult | None, measured: float | None, objective: float | None) -> str:
    """The assertion's word when there is one; otherwise the comparison the numbers make."""
    if assertion is not None:
        return {"pass": "pass", "fail": "fail", "error": "error"}.get(assertion.status, "none")
    if measured is None or objective is None:
        return "none"
    return "pass" if measured <= objective else "fail"


def objective_chart(results: Results) -> ObjectiveChart | None:
    """Horizontal bars, objective over measured, on one scale per chart.

    One scale for RTO and RPO keeps the picture honest (both are seconds); each bar
    carries its value and status in text so the chart still reads in black-and-white
    print. Returns None when there is nothing to draw, rather than an empty frame.
    """
    specs: list[tuple[str, float | None, float | None, AssertionResult | None]] = [
        ("RTO", results.measured.rto_seconds, results.objectives.rto_seconds, rto_assertion(results))
    ]
    if results.objectives.rpo_seconds is not None or results.measured.rpo_seconds is not None:
        specs.append(("RPO", results.measured.rpo_seconds, results.objectives.rpo_seconds, rpo_assertion(results)))
    values = [v for _, m, o, _ in specs for v in (m, o) if v is not None and math.isfinite(v) and v >= 0]
    if not values:
        return None
    scale_max = max(values) or 1.0
    span = OBJ_WIDTH - OBJ_LEFT - OBJ_RIGHT_PAD

    def bar(kind: str, value: float | None, y: float, fill: str, suffix: str) -> ChartBar | None:
        if value is None or not math.isfinite(value):
            return None
        width = round(max(min(max(value, 0.0), scale_max) / scale_max * span, MIN_BAR_WIDTH), 2)
        text = f"{kind} {format_seconds(value)}{suffix}"
        return ChartBar(
            label=kind,
            text=text,
            x=float(OBJ_LEFT),
            y=y,
            width=width,
            text_x=round(OBJ_LEFT + width + 6, 2),
            text_y=y + OBJ_BAR - 3,
            fill=fill,
        )

    rows: list[ChartRow] = []
    described: list[str] = []
    for index, (name, measured, objective, assertion) in enumerate(specs):
        status = _row_status(assertion, measured, objective)
        top = OBJ_TOP + index * OBJ_GROUP
        word = {"none": "not judged"}.get(status, status)
        fill = STATUS_FILLS[status]
        if assertion is None and status in ("pass", "fail"):
            # The numbers compare, but no assertion judged them: say so rather than "pass".
            word = ("within" if status == "pass" else "over") + " objective, not asserted"
            # Nor paint it as one (found by review): the bar was the pass green while the
            # table beside it said "not asserted" in grey. Over the objective stays red: a
            # warning is never a false pass.
            fill = STATUS_FILLS["none"] if status == "pass" else fill
        rows.append(
            ChartRow(
                name=name,
                status=status,
                label_y=top + OBJ_BAR + 6,
                objective=bar("objective", objective, top, OBJECTIVE_FILL, ""),
                measured=bar("measured", measured, top + OBJ_BAR + 4, fill, f" — {word}"),
            )
        )
        described.append(
            f"{name}: measured {format_seconds(measured, 'not measured')}, "
            f"objective {format_seconds(objective, 'none set')}, {word}."
        )
    return ObjectiveChart(
        width=OBJ_WIDTH,
        height=OBJ_TOP + len(specs) * OBJ_GROUP - 12,
        left=OBJ_LEFT,
        rows=rows,
        description=" ".join(described),
    )


# --- remediation hints -------------------------------------------------------------------

# What to do next, keyed by assertion name, or by ``postgres_checks:<check>`` for the
# database checks whose findings open with ``[severity] check:``. Hints may use
# ``{slowest_restore}``; add a key here and the report picks it up.
REMEDIATION: dict[str, tuple[str, ...]] = {
    "fidelity": (
        "Compare the named parts (tables, keys, files) between the backup and the restored component.",
        "Check the backup was taken after the last change to the data it should hold.",
        "Re-run the drill with only the failing component to rule out interference.",
    ),
    "rto": (
        "Profile the slowest restore phase: {slowest_restore}.",
        "Consider physical backups or parallel restore jobs for the largest components.",
    ),
    "rpo": ("Take backups more often, or archive the WAL continuously so a restore can reach a later point.",),
    "backup_integrity": (
        "The repository storage is damaging data: verify every stored artifact and copy a good set offsite.",
    ),
    "postgres_checks": ("Read each finding below; the check it names says what in the database to inspect.",),
    "postgres_checks:row_counts": ("Row counts differ from the backup: compare the listed tables with the dump.",),
    "postgres_checks:sequences": ("Reset the listed sequences past the highest value in the columns they feed.",),
    "postgres_checks:matviews": ("Run REFRESH MATERIALIZED VIEW on the listed views after the restore.",),
    "postgres_checks:constraints": ("Validate the listed constraints and fix the rows that break them.",),
    "postgres_checks:indexes": ("REINDEX the listed indexes; amcheck found them inconsistent.",),
    "postgres_checks:roles_extensions": ("Restore roles and extensions (globals) along with the database dump.",),
    "regression": ("Compare this run with the last passing run: what changed in data size, versions or hosts.",),
    "timeline": ("The scenario's declared expectations for its steps were not met: read each step's finding.",),
}
GENERIC_HINT = "Read the findings and the evidence column of the assertion."
_CHECK_PREFIX = re.compile(r"^\[[^\]]+\] ([a-z_]+):")


@dataclass(frozen=True)
class Remediation:
    assertion_id: str
    name: str
    status: str
    findings: list[str]
    hints: list[str]


def slowest_restore(results: Results) -> str:
    """The restore phase that took longest, named for the RTO hint."""
    restores = [p for p in results.phases if p.kind == "restore"]
    if not restores:
        return "no restore phase was recorded"
    slowest = max(restores, key=lambda p: p.duration_seconds)
    return f"{slowest.name} ({format_seconds(slowest.duration_seconds)})"


def remediation(results: Results) -> list[Remediation]:
    """A short "what to do" for each failed or errored assertion.

    Hints are advice, not evidence: they live apart from the findings in the report so an
    auditor can tell what was recorded from what drproof suggests.
    """
    context = {"slowest_restore": slowest_restore(results)}
    out: list[Remediation] = []
    for assertion in results.assertions:
        if assertion.status not in ("fail", "error"):
            continue
        keys = [assertion.name]
        for finding in assertion.findings:
            match = _CHECK_PREFIX.match(finding)
            if match and f"{assertion.name}:{match.group(1)}" not in keys:
                keys.append(f"{assertion.name}:{match.group(1)}")
        hints = [hint.format_map(context) for key in keys for hint in REMEDIATION.get(key, ())]
        out.append(
            Remediation(
                assertion_id=assertion.id,
                name=assertion.name,
                status=assertion.status,
                findings=list(assertion.findings),
                hints=hints or [GENERIC_HINT],
            )
        )
    return out


# --- history sparkline -------------------------------------------------------------------

SPARK_WIDTH = 320
SPARK_HEIGHT = 60
SPARK_PAD = 6


@dataclass(frozen=True)
class Sparkline:
    name: str
    points: str
    dots: list[tuple[float, float, str]]
    first: str
    last: str
    minimum: str
    maximum: str


@dataclass(frozen=True)
class Trend:
    width: int
    height: int
    runs: int
    lines: list[Sparkline]
    change: str


def _spark(name: str, values: list[tuple[float | None, str]]) -> Sparkline | None:
    known = [(i, v, verdict) for i, (v, verdict) in enumerate(values) if v is not None and math.isfinite(v)]
    if not known:
        return None
    low = min(v for _, v, _ in known)
    high = max(v for _, v, _ in known)
    spread = (high - low) or 1.0
    step = (SPARK_WIDTH - 2 * SPARK_PAD) / max(len(values) - 1, 1)
    inner = SPARK_HEIGHT - 2 * SPARK_PAD
    dots = [
        (round(SPARK_PAD + i * step, 2), round(SPARK_PAD + inner - (v - low) / spread * inner, 2), verdict)
        for i, v, verdict in known
    ]
    return Sparkline(
        name=name,
        points=" ".join(f"{x},{y}" for x, y, _ in dots),
        dots=dots,
        first=format_seconds(known[0][1]),
        last=format_seconds(known[-1][1]),
        minimum=format_seconds(low),
        maximum=format_seconds(high),
    )


def trend(history: Any) -> Trend | None:
    """Sparklines of RTO (and RPO when any run measured it) over past runs.

    Takes the history duck-typed: it is optional in results.json, and a report must
    render from an older file that has none.
    """
    runs = list(getattr(history, "runs", None) or [])
    if not runs:
        return None
    lines = [
        line
        for line in (
            _spark("RTO", [(getattr(p, "rto_seconds", None), str(getattr(p, "verdict", ""))) for p in runs]),
            _spark("RPO", [(getattr(p, "rpo_seconds", None), str(getattr(p, "verdict", ""))) for p in runs]),
            # Restore tests: how old the restored backup was, test after test.
            _spark(
                "Backup age", [(getattr(p, "backup_age_seconds", None), str(getattr(p, "verdict", ""))) for p in runs]
            ),
        )
        if line is not None
    ]
    baseline = getattr(history, "baseline_rto_seconds", None)
    counted = int(getattr(history, "baseline_runs", 0) or 0)
    last_pass = baseline if baseline is not None else getattr(history, "last_pass_rto_seconds", None)
    against = (
        f"the median of the last {counted} passing runs" if baseline is not None and counted > 1 else "the last passing run"
    )
    change = getattr(history, "rto_change_percent", None)
    if last_pass is None or change is None:
        text = "No earlier passing run to compare the RTO with."
    else:
        text = f"RTO {change:+.1f}% against {against} ({format_seconds(last_pass)})"
        threshold = getattr(history, "regression_threshold_percent", None)
        if getattr(history, "regressed", False):
            text += f": a regression beyond the {threshold:g}% threshold." if threshold is not None else ": regressed."
        elif threshold is not None:
            text += f", within the {threshold:g}% threshold."
        else:
            text += "."
    return Trend(width=SPARK_WIDTH, height=SPARK_HEIGHT, runs=len(runs), lines=lines, change=text)


# --- what a component held -------------------------------------------------------------

TABLES_SHOWN = 20


@dataclass(frozen=True)
class ContentView:
    """What a component really held at the end of the drill, for the components table."""

    totals: list[str]  # "130,500 rows", "2,000 keys"
    tables: list[tuple[str, int]]  # the largest first, at most TABLES_SHOWN
    more_tables: int
    seed_settings: dict[str, Any]  # what the seed was told, minus the counts it generated


def component_content(component: Any) -> ContentView | None:
    """The final fingerprint's counts, in place of the seed's own account of what it generated.

    A seed reports what drproof's generator made: ``customers 0, orders 0`` for a database
    loaded from the team's SQL file, which reads as "empty". The final fingerprint counted
    what was really there, so the report shows that; None for results that did not record it.
    """
    content = dict(getattr(component, "content", None) or {})
    rows = dict(getattr(component, "row_counts", None) or {})
    if not content and not rows:
        return None
    ordered = sorted(rows.items(), key=lambda item: (-item[1], item[0]))
    seed = {
        k: v for k, v in (component.seed or {}).items() if isinstance(v, bool) or not isinstance(v, int | float)
    }
    return ContentView(
        totals=[f"{count:,} {unit}" for unit, count in sorted(content.items())],
        tables=ordered[:TABLES_SHOWN],
        more_tables=max(len(ordered) - TABLES_SHOWN, 0),
        seed_settings=seed,
    )
