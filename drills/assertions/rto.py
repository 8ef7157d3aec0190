"""rto: the measured time to recover is within the objective."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from drills.durations import Duration, format_duration
from engine.journal import AssertionResult


class RtoParams(AssertionParams):
    max: Duration | None = Field(default=None, description="Objective for this check; default: objectives.rto.")
    component: str | None = Field(default=None, description="Check one component's RTO; default: the whole stack.")


class Rto(Assertion):
    name: ClassVar[str] = "rto"
    Params: ClassVar[type[AssertionParams]] = RtoParams
    description: ClassVar[str] = (
        "Measured recovery time, from the first disaster's injection until every damaged component (or the one "
        "named) is restored and healthy, is at most the objective."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if params.get("max") is None and ctx.objectives.get("rto") is None:
            ctx.add(("assertions", index), "rto needs an objective: set objectives.rto or rto.max")
        if ctx.source is not None:
            if "restore" not in ctx.steps_seen:
                ctx.add(("assertions", index), "rto needs a restore step to time")
        elif not {"disaster", "restore"} <= ctx.steps_seen and "failover" not in ctx.steps_seen:
            ctx.add(("assertions", index), "rto needs a disaster step and a restore step (or a failover step) to time")
        ctx.check_component(("assertions", index, self.name, "component"), params.get("component"))

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, RtoParams)
        objective = params.max if params.max is not None else state.rto_objective
        scope = params.component or "stack"
        rid = f"rto[{scope}]"
        if objective is None:
            return [result(rid, self.name, "error", "no RTO objective: set objectives.rto or rto.max")]
        if state.recovery_started is None:
            return [result(rid, self.name, "error", "no disaster happened and no restore test ran: nothing to time")]
        measured = state.results[params.component].rto_seconds if params.component else state.stack_rto
        evidence: dict[str, Any] = {
            "objective_seconds": objective,
            "measured_seconds": measured,
            "clock": "monotonic",
            "from": state.recovery_started_by,
            "until": "restored and healthy",
        }
        if measured is None:
            lost = [params.component] if params.component else state.recovering
            not_recovered = sorted(n for n in lost if n in state.results and state.results[n].rto_seconds is None)
            why = {n: _why_down(state, n) for n in not_recovered}
            return [
                result(
                    rid,
                    self.name,
                    "fail",
                    f"{scope} never recovered, so the RTO is unbounded",
                    evidence=evidence,
                    findings=[f"{n}: {why[n]} and not restored to a healthy state" for n in not_recovered],
                )
            ]
        if measured <= objective:
            return [
                result(
                    rid,
                    self.name,
                    "pass",
                    f"{scope} recovered in {measured:.2f} s, within the {format_duration(objective)} objective",
                    evidence=evidence,
                )
            ]
        return [
            result(
                rid,
                self.name,
                "fail",
                f"{scope} recovered in {measured:.2f} s, over the {format_duration(objective)} objective",
                evidence=evidence,
                findings=[f"RTO exceeded by {measured - objective:.2f} s"],
            )
        ]


def _why_down(state: DrillState, name: str) -> str:
    if state.results[name].damaged_by:
        return "damaged"
    return "an empty sandbox" if name in state.sandbox else "replaced by a restore that failed"
