"""freshness: the backup a restore test restored was young enough to meet the RPO.

A restore test of last night's backup proves the data come back; whether they come back
recent enough is the other half of the objective. What a real loss would cost at the
moment of the test is at least the age of the newest backup there is, so the age of the
set the test restored is measured against the limit, on the wall clock (the repository
records wall-clock times), when the test opened it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext, as_dict
from drills.durations import Duration, format_duration
from engine.journal import AssertionResult

# A set dated this far in the future is not trusted for its age: the clock that stamped
# it was wrong (or the manifest was written by someone else). Less is clock drift.
FUTURE_TOLERANCE_S = 300.0


class FreshnessParams(AssertionParams):
    max: Duration | None = Field(
        default=None,
        description="Oldest acceptable backup, e.g. 26h; default: the source's `pick.latest_within`, "
        "else objectives.rpo.",
    )


class Freshness(Assertion):
    name: ClassVar[str] = "freshness"
    Params: ClassVar[type[AssertionParams]] = FreshnessParams
    description: ClassVar[str] = (
        "Restore tests: the restored backup was at most this old when the test began (its age is the data a "
        "loss at that moment would cost); a backup dated in the future is never trusted for its age."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if ctx.source is None:
            ctx.add(("assertions", index), "freshness needs a `source:` of real backups to judge their age")
            return
        pick = as_dict(ctx.source.get("pick"))
        if params.get("max") is None and "latest_within" not in pick and ctx.objectives.get("rpo") is None:
            ctx.add(
                ("assertions", index),
                "freshness needs a limit: freshness.max, source.pick.latest_within or objectives.rpo",
            )

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, FreshnessParams)
        source = state.source
        if source is None:
            return [result("freshness", self.name, "error", "no source backup was opened; its age is unknown")]
        limit, limit_from = _limit(params, source.freshness_limit, state.rpo_objective)
        rid = f"freshness[{source.backup_id}]"
        if limit is None:
            return [result(rid, self.name, "error", "no freshness limit: set freshness.max or objectives.rpo")]
        age, taken = source.age_seconds, source.taken_at
        if taken is None or age != age:  # NaN: a foreign backup that records no time
            return [result(rid, self.name, "error", f"{source.label}: records no time it was taken")]
        evidence: dict[str, Any] = {
            "backup_id": source.backup_id,
            "taken_at": taken.isoformat(),
            "opened_at": source.opened_at.isoformat(),
            "age_seconds": round(age, 3),
            "limit_seconds": limit,
            "limit_from": limit_from,
            "clock": "wall clock (UTC) of the manifest and of this host",
            "taken_at_from": source.taken_at_from,
        }
        if age < -FUTURE_TOLERANCE_S:
            return [
                result(
                    rid,
                    self.name,
                    "fail",
                    f"{source.label} is dated {format_duration(-age)} in the future: its age cannot "
                    "be trusted",
                    evidence=evidence,
                    findings=[
                        f"taken_at {evidence['taken_at']} is after this test began ({evidence['opened_at']}): the "
                        "clock of the host that took it was wrong, or the manifest was not written by drproof"
                    ],
                )
            ]
        shown = format_duration(max(round(age), 0))
        stamped = source.dated_by_file_stamp
        if age <= limit and stamped:
            return [_unproven(rid, self.name, source.label, stamped, shown, evidence)]
        if age <= limit:
            summary = f"{source.label} was {shown} old, within the {format_duration(limit)} limit"
            return [result(rid, self.name, "pass", summary, evidence=evidence)]
        return [
            result(
                rid,
                self.name,
                "fail",
                f"{source.label} was {shown} old, over the {format_duration(limit)} limit",
                evidence=evidence,
                findings=[f"the newest backup restored is {format_duration(age - limit)} older than {limit_from} allows"],
            )
        ]


def _limit(params: FreshnessParams, latest_within: float | None, rpo: float | None) -> tuple[float | None, str]:
    if params.max is not None:
        return params.max, "freshness.max"
    if latest_within is not None:
        return latest_within, "source.pick.latest_within"
    return rpo, "objectives.rpo"


def _unproven(
    rid: str, name: str, label: str, stamped: list[str], shown: str, evidence: dict[str, Any]
) -> AssertionResult:
    """Young only by a file's modification time: not a pass (a copy or a touch makes any backup young).

    An old stamp still fails (above): a copy is never older than what it copies.
    """
    return result(
        rid,
        name,
        "not_compared",
        f"{label} looks {shown} old, but only by its file's modification time, which any copy, touch or upload "
        "resets: its age is not proven",
        evidence=evidence,
        findings=[
            f"{n}: dated only by its file's modification time; a format that records when it was taken (pg_dump "
            "-Fc or -Fd, an RDB with its ctime, a tar of the files) would prove the age"
            for n in stamped
        ],
    )
