"""rpo: the acknowledged writes a disaster lost span no more time than the objective.

The figure is measured, never inferred from backup times: a workload wrote numbered
records, and the records that came back after the restore decide. A component that no
workload wrote to has no measured recovery point, and that is an error, not a pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from drills.durations import Duration, format_duration
from engine.journal import AssertionResult


class RpoParams(AssertionParams):
    max: Duration | None = Field(default=None, description="Objective for this check; default: objectives.rpo.")
    component: str | None = Field(default=None, description="Check one component; default: the whole stack.")
    max_lost_writes: int | None = Field(
        default=None, ge=0, description="Also fail if more acknowledged writes than this were lost."
    )


class Rpo(Assertion):
    name: ClassVar[str] = "rpo"
    Params: ClassVar[type[AssertionParams]] = RpoParams
    description: ClassVar[str] = (
        "Measured recovery point: from the newest acknowledged workload write that survived the restore to the "
        "last one acknowledged before the disaster, per component (the stack's is the worst), is at most the "
        "objective; writes lost before a surviving one are always a failure."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if params.get("max") is None and ctx.objectives.get("rpo") is None:
            ctx.add(("assertions", index), "rpo needs an objective: set objectives.rpo or rpo.max")
        if "workload" not in ctx.steps_seen:
            ctx.add(
                ("assertions", index),
                "rpo needs a workload step: without writes in flight there is no recovery point to measure",
            )
        ctx.check_component(("assertions", index, self.name, "component"), params.get("component"))

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, RpoParams)
        objective = params.max if params.max is not None else state.rpo_objective
        scope = params.component or "stack"
        rid = f"rpo[{scope}]"
        if objective is None:
            return [result(rid, self.name, "error", "no RPO objective: set objectives.rpo or rpo.max")]
        if not state.workload_ran:
            return [result(rid, self.name, "error", "RPO not measured: the scenario has no workload step")]
        names = [params.component] if params.component else list(state.results)
        points = {n: state.results[n].recovery_point for n in names}
        missing = [n for n, p in points.items() if p is None or not p.measured]
        # Written to, then not read back (the server did not answer), or never acknowledged
        # a write at all (found by review: a component whose every write failed was left
        # out and the stack passed on the others): no measurement, whatever the others say.
        unread = {n: p.reason for n, p in points.items() if p is not None and not p.measured}
        if unread:
            return [
                result(
                    rid,
                    self.name,
                    "error",
                    f"RPO not measured for {', '.join(unread)}: " + "; ".join(unread.values()),
                    findings=[f"{n}: {why}" for n, why in unread.items()],
                )
            ]
        if params.component and missing:
            return [
                result(rid, self.name, "error", f"RPO not measured for {params.component}: no workload wrote to it")
            ]
        measured = {n: p for n, p in points.items() if p is not None and p.measured}
        if not measured:
            return [result(rid, self.name, "error", "RPO not measured: no component acknowledged a workload write")]
        worst_name, worst = max(measured.items(), key=lambda kv: kv[1].loss_window_seconds or 0.0)
        window = worst.loss_window_seconds or 0.0
        evidence: dict[str, Any] = {
            "objective_seconds": objective,
            "measured_seconds": window,
            "worst_component": worst_name,
            # Compact here; the full recovery point of each is in components[].recovery_point.
            "components": {
                n: f"{p.lost_writes} of {p.acknowledged} writes lost, window {p.loss_window_seconds} s"
                + (f", {p.hole_count} hole(s)" if p.hole_count else "")
                for n, p in measured.items()
            },
            "not_written": missing,
            # Components recovered to different moments: e.g. orders whose session keys or
            # uploaded files did not come back. Zero when every component lost the same window.
            "skew_seconds": round(
                max(p.loss_window_seconds or 0.0 for p in measured.values())
                - min(p.loss_window_seconds or 0.0 for p in measured.values()),
                6,
            ),
        }
        findings = []
        for n, p in measured.items():
            if p.hole_count:
                findings.append(f"{n}: {p.hole_count} acknowledged write(s) lost before a surviving one: {p.holes}")
            if (p.loss_window_seconds or 0.0) > objective:
                findings.append(
                    f"{n}: lost {p.lost_writes} of {p.acknowledged} acknowledged writes, "
                    f"{p.loss_window_seconds:.2f} s of data ({p.note or 'newest survivor to last write'})"
                )
            if params.max_lost_writes is not None and p.lost_writes > params.max_lost_writes:
                findings.append(f"{n}: lost {p.lost_writes} writes, more than the {params.max_lost_writes} allowed")
        lost = sum(p.lost_writes for p in measured.values())
        summary = (
            f"{scope} lost {window:.2f} s of acknowledged writes ({lost} write(s)) at worst ({worst_name}), "
            f"{'within' if window <= objective else 'over'} the {format_duration(objective)} objective"
        )
        if missing:  # said where the verdict is read, not only in the evidence
            summary += f"; not measured (no workload wrote to them): {', '.join(missing)}"
        if findings:
            return [result(rid, self.name, "fail", summary, evidence=evidence, findings=findings)]
        bounded = [n for n, p in measured.items() if p.lower_bound]
        if bounded:
            return [_only_bounded(rid, self.name, bounded, measured, objective, evidence)]
        unprobed = {
            n: p
            for n, p in measured.items()
            if (p.loss_window_seconds or 0.0) + (p.unprobed_seconds or 0.0) > objective
        }
        if unprobed:
            return [_unprobed(rid, self.name, unprobed, objective, evidence)]
        return [result(rid, self.name, "pass", summary, evidence=evidence, findings=findings)]


def _only_bounded(
    rid: str, name: str, bounded: list[str], measured: dict[str, Any], objective: float, evidence: dict[str, Any]
) -> AssertionResult:
    """No acknowledged write survived: the loss is at least the window since the workload began.

    Found by review: that lower bound passed the objective, though the restored state
    predated the workload (a backup taken ten seconds before it began lost at least ten
    seconds, not the one counted) or the server was never brought back. A lower bound
    can fail an objective (the check above does), never meet one.
    """
    findings = [
        f"{n}: none of its {measured[n].acknowledged} acknowledged writes survived, so only a lower bound of "
        f"{measured[n].loss_window_seconds:.2f} s is known (the restored state predates the workload, or its data "
        "did not come back)"
        for n in bounded
    ]
    return result(
        rid,
        name,
        "error",
        f"RPO not measured for {', '.join(bounded)}: no acknowledged write survived; the loss is at least the "
        f"lower bound, which cannot show it is within the {format_duration(objective)} objective",
        evidence=evidence,
        findings=findings,
    )


def _unprobed(
    rid: str, name: str, unprobed: dict[str, Any], objective: float, evidence: dict[str, Any]
) -> AssertionResult:
    """The measured window is within the objective, but the workload stopped probing too early to show it.

    Found by review: with one write every 5 s, a backup just after a write and the
    disaster 3 s later, no acknowledged write was lost and the RPO "0.00 s" met a 1 s
    objective, though 3 s of writes made after the backup would have been lost. The
    time from a component's last acknowledged write to the disaster (a slow rate, or
    writes failing before it) was probed by no write: the loss may be that much longer.
    """
    findings = [
        f"{n}: its last acknowledged write came {p.unprobed_seconds:.2f} s before the disaster, so a loss of up to "
        f"{(p.loss_window_seconds or 0.0) + p.unprobed_seconds:.2f} s cannot be excluded (its {p.acknowledged} "
        f"write(s) at {p.rate:g}/s, {p.failed_writes} failed)"
        for n, p in unprobed.items()
    ]
    return result(
        rid,
        name,
        "error",
        f"RPO not measured for {', '.join(unprobed)}: no write probed the last moments before the disaster, so "
        f"the loss cannot be shown within the {format_duration(objective)} objective (raise the workload's rate, "
        "or find why its writes failed)",
        evidence={**evidence, "unprobed_seconds": {n: p.unprobed_seconds for n, p in unprobed.items()}},
        findings=findings,
    )
