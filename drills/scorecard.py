"""A fleet's answer: the scorecard, the combined JUnit and the summary page.

Worst first, because the reader of a fleet of a hundred drills is looking for the few
that did not pass: errors (could not run, or could not say how they ended), then
failures, then passes, each with its RTO and RPO against the objectives and where its
report is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drills.durations import format_duration
from drills.fleet import RANK, Outcome, log_tail
from engine.journal import Results

JUNIT_FILE = "junit.xml"
SUMMARY_FILE = "index.html"
_MAX_DETAIL = 240


def ordered(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Errors, then failures, then passes; by drill name within each."""
    return sorted(outcomes, key=lambda o: (-RANK[o.status], o.drill.name))


def _against(label: str, measured: float | None, objective: float | None) -> str:
    """``RTO 8.1 s within 2m``, ``RTO 130.0 s OVER 2m``, ``RTO not measured (objective 2m)``, ``RPO —``.

    A dash only where there was neither a measurement nor an objective to hold it to.
    """
    if measured is None:
        return f"{label} not measured (objective {format_duration(objective)})" if objective is not None else f"{label} —"
    text = f"{label} {measured:.1f} s"
    if objective is None:
        return text
    return f"{text} {'within' if measured <= objective else 'OVER'} {format_duration(objective)}"


def _report(outcome: Outcome) -> Path:
    html = outcome.drill.report_dir / "report.html"
    return html if html.is_file() else outcome.drill.report_dir / "results.json"


def _why(outcome: Outcome) -> str:
    """What a reader needs to start on a drill that did not pass, in a few words."""
    if outcome.problem is not None:
        return outcome.problem
    r = outcome.results
    if r is None or outcome.status == "pass":
        return ""
    if r.error:
        return r.error.strip().splitlines()[0]
    failing = [a.id for a in r.assertions if a.status != "pass"]
    return "not passed: " + ", ".join(failing) if failing else ""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One row per drill, worst first: what the scorecard prints and ``--json`` emits."""
    table = []
    for o in ordered(outcomes):
        r: Results | None = o.results
        table.append(
            {
                "drill": o.drill.name,
                "scenario_file": str(o.drill.scenario),
                "status": o.status,
                "exit_code": o.exit_code,
                "rto_seconds": r.measured.rto_seconds if r else None,
                "rto_objective_seconds": r.objectives.rto_seconds if r else None,
                "rpo_seconds": r.measured.rpo_seconds if r else None,
                "rpo_objective_seconds": r.objectives.rpo_seconds if r else None,
                "report": str(_report(o)) if r else None,
                "log": str(o.drill.log),
                "wall_seconds": round(o.seconds, 3),
                "why": _why(o) or None,
            }
        )
    return table


def lines(outcomes: Sequence[Outcome]) -> list[str]:
    """The scorecard's text, columns aligned; a drill without results points at its log."""
    cells = []
    for row in rows(outcomes):
        rto = _against("RTO", row["rto_seconds"], row["rto_objective_seconds"])
        rpo = _against("RPO", row["rpo_seconds"], row["rpo_objective_seconds"])
        where = row["report"] or row["log"]
        why = f"  ({_clip(row['why'])})" if row["why"] else ""
        cells.append((row["status"].upper(), row["drill"], rto, rpo, where + why))
    widths = [max((len(c[i]) for c in cells), default=0) for i in range(4)]
    return ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in cells]


def totals(outcomes: Sequence[Outcome]) -> str:
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in RANK}
    errors = f"{counts['error']} error{'s' if counts['error'] != 1 else ''}"
    return f"{len(outcomes)} drill{'s' if len(outcomes) != 1 else ''}: {counts['pass']} passed, {counts['fail']} failed, {errors}"


def write_outputs(outcomes: Sequence[Outcome], report_root: Path) -> dict[str, Path]:
    """The combined JUnit (every drill a testsuite) and the summary page of this fleet's drills only."""
    from reports.summary import write_summary
    from reports.writers import FleetSuite, write_fleet_junit

    suites = [
        FleetSuite(
            name=o.drill.name,
            file=str(o.drill.scenario),
            results=o.results,
            problem=o.problem,
            details="\n".join(log_tail(o.drill.log)) if o.problem else "",
        )
        for o in ordered(outcomes)
    ]
    junit = write_fleet_junit(suites, report_root / JUNIT_FILE)
    # A drill whose exit code contradicts its results is an error here as on the scorecard:
    # found by review, the page re-read its results.json and showed the PASS it recorded.
    with_results = [o.drill.report_dir for o in outcomes if o.results is not None and o.problem is None]
    not_run = [
        f"{o.drill.name} ({o.drill.scenario}): {o.problem}; output: {o.drill.log}"
        + (f"; its results: {o.drill.report_dir / 'results.json'}" if o.results is not None else "")
        for o in outcomes
        if o.results is None or o.problem is not None
    ]
    summary = report_root / SUMMARY_FILE
    write_summary(with_results, summary, not_run=not_run)
    return {"junit": junit, "summary": summary}
