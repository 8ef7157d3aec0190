"""A drill's results as monitoring sees them: Prometheus metrics and one JSON event.

Why: a drill nobody hears about proves recovery to nobody. Teams already alert on
Prometheus and feed compliance platforms from CI, so a drill (or a restore test of a real
backup) publishes what it measured in both shapes: gauges for dashboards and alerts, and
one self-contained JSON event for a chat webhook or a platform's evidence API.

Both are derived from :class:`engine.journal.Results` only, like every other report, so
they say what results.json says: an unmeasured RTO is an absent sample, never zero, and
a check that did not run is not counted as passed. The record is already scrubbed of the
scenario's secrets (drills/scrub.py), so neither carries one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from engine.journal import Results

__all__ = ["EVENT_SCHEMA", "STATUSES", "VERDICTS", "event", "registry"]

EVENT_SCHEMA = "drproof.drill.v1"
VERDICTS = ("pass", "fail", "error")
STATUSES = ("pass", "fail", "error", "not_run", "not_compared")


def _kind(results: Results) -> str:
    return results.scope.kind if results.scope is not None else "synthetic"


def registry(results: Results) -> CollectorRegistry:
    """Gauges of one run, labelled by scenario (and component or check); a new registry each time."""
    reg = CollectorRegistry()
    base = {"scenario": results.scenario.name, "kind": _kind(results)}
    names = list(base)

    def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, text, [*names, *extra], registry=reg)

    gauge("drproof_drill_success", "1 if the last run passed, else 0.").labels(**base).set(
        1 if results.verdict == "pass" else 0
    )
    verdict = gauge("drproof_drill_verdict", "1 for the verdict of the last run, 0 for the others.", ("verdict",))
    for v in VERDICTS:
        verdict.labels(**base, verdict=v).set(1 if results.verdict == v else 0)
    gauge("drproof_drill_last_run_timestamp_seconds", "When the last run finished (Unix time).").labels(**base).set(
        results.finished_at.timestamp()
    )
    gauge("drproof_drill_duration_seconds", "How long the last run took.").labels(**base).set(
        results.measured.drill_seconds
    )
    _objectives(results, gauge, base)
    _components(results, gauge, base)
    _checks(results, gauge, base)
    return reg


def _objectives(results: Results, gauge: Any, base: dict[str, str]) -> None:
    pairs = (
        ("drproof_drill_rto_seconds", "Measured stack RTO (absent when not measured).", results.measured.rto_seconds),
        ("drproof_drill_rto_objective_seconds", "The scenario's RTO objective.", results.objectives.rto_seconds),
        ("drproof_drill_rpo_seconds", "Measured stack RPO (absent when not measured).", results.measured.rpo_seconds),
        ("drproof_drill_rpo_objective_seconds", "The scenario's RPO objective.", results.objectives.rpo_seconds),
    )
    for name, text, value in pairs:
        g = gauge(name, text)
        if value is not None:
            g.labels(**base).set(value)
    age = gauge("drproof_restore_test_backup_age_seconds", "Restore tests: the age of the backup restored.")
    if results.scope is not None and results.scope.backup_age_seconds is not None:
        age.labels(**base).set(results.scope.backup_age_seconds)


def _components(results: Results, gauge: Any, base: dict[str, str]) -> None:
    rto = gauge("drproof_component_rto_seconds", "Measured RTO of one component.", ("component",))
    rpo = gauge("drproof_component_rpo_seconds", "Measured loss window (RPO) of one component.", ("component",))
    for name, value in results.measured.components.items():
        if value is not None:
            rto.labels(**base, component=name).set(value)
    for name, value in results.measured.rpo_components.items():
        if value is not None:
            rpo.labels(**base, component=name).set(value)


def _checks(results: Results, gauge: Any, base: dict[str, str]) -> None:
    status = gauge("drproof_check_status", "1 for each check's status in the last run, 0 for the others.", ("check", "status"))
    counts = gauge("drproof_checks", "How many checks of the last run ended in each status.", ("status",))
    for a in results.assertions:
        for s in STATUSES:
            status.labels(**base, check=a.id, status=s).set(1 if a.status == s else 0)
    for s in STATUSES:
        counts.labels(**base, status=s).set(sum(1 for a in results.assertions if a.status == s))


def event(
    results: Results,
    *,
    results_sha256: str | None = None,
    report_dir: str | None = None,
    signing_key: str | None = None,
) -> dict[str, Any]:
    """The run as one JSON document (schema ``drproof.drill.v1``, docs/ci.md) for webhooks and platforms."""
    scope = results.scope
    ident = results.identity
    return {
        "schema": EVENT_SCHEMA,
        "event": "restore-test" if _kind(results) == "restore-test" else "drill",
        "status": results.verdict,
        "exit_code": results.exit_code,
        "scenario": {"name": results.scenario.name, "file": results.scenario.file, "sha256": results.scenario.sha256},
        "started_at": results.started_at.isoformat(),
        "finished_at": results.finished_at.isoformat(),
        "scope": scope.model_dump(mode="json") if scope is not None else None,
        "identity": ident.model_dump(mode="json") if ident is not None else None,
        "objectives": {"rto_seconds": results.objectives.rto_seconds, "rpo_seconds": results.objectives.rpo_seconds},
        "measured": {
            "rto_seconds": results.measured.rto_seconds,
            "rpo_seconds": results.measured.rpo_seconds,
            "components": {
                name: {"rto_seconds": rto, "rpo_seconds": results.measured.rpo_components.get(name)}
                for name, rto in results.measured.components.items()
            },
        },
        "checks": [{"id": a.id, "status": a.status, "summary": a.summary} for a in results.assertions],
        "controls": [{"id": c.id, "framework": c.framework, "status": c.status} for c in results.controls],
        "error": results.error,
        "evidence": {"report_dir": report_dir, "results_sha256": results_sha256, "signing_key": signing_key},
        "drproof_version": results.drproof_version,
    }
