"""failover_outcome: each failover step recovered as declared, without a split brain, and a rejoin is faithful.

Judged only from what the ``failover`` step recorded (drills/steps/failover.py), which
comes from acknowledged workload writes: when a new primary took its first write, which
nodes took writes at the same time, and what a rejoined old primary holds against the
new one. The writes a failover lost are judged by ``rpo`` (``max: 0s`` for a
synchronous topology), here only when ``max_lost_writes`` is set.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from drills.durations import Duration, format_duration
from engine.journal import AssertionResult


class FailoverParams(AssertionParams):
    step: str | None = Field(default=None, description="The failover step to judge, by name; default: every one.")
    max_rto: Duration | None = Field(
        default=None, description="Most seconds from the fault to the new primary's first acknowledged write."
    )
    recovered_by: Literal["automatic", "promote"] | None = Field(
        default=None,
        description="How the new primary must have come: by the topology itself, or by the runbook's promotion "
        "(e.g. `promote` when a Sentinel quorum was lost and the fallback had to act).",
    )
    max_lost_writes: int | None = Field(
        default=None, ge=0, description="Most acknowledged writes the failover may lose; default: not judged here."
    )


class FailoverOutcome(Assertion):
    name: ClassVar[str] = "failover_outcome"
    Params: ClassVar[type[AssertionParams]] = FailoverParams
    description: ClassVar[str] = (
        "Per failover step: a new primary acknowledged a write (within `max_rto`, by the declared means), no two "
        "nodes acknowledged writes at the same time (split brain), and a rejoined old primary holds exactly what "
        "the new primary holds, with no write of its abandoned history."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if "failover" not in ctx.steps_seen:
            ctx.add(("assertions", index), "failover_outcome needs a failover step to judge")

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, FailoverParams)
        records = [r for r in state.failovers if params.step is None or r["name"] == params.step]
        if not records:
            what = f"no failover step named {params.step!r} ran" if params.step else "no failover step ran"
            return [result("failover_outcome", self.name, "error", what)]
        return [self._one(params, r) for r in records]

    def _one(self, params: FailoverParams, record: dict[str, Any]) -> AssertionResult:
        rid = f"failover_outcome[{record['name']}@step{record['step']}]"
        findings = _findings(params, record)
        evidence = {
            k: record.get(k)
            for k in (
                "target", "fault", "strategy", "old_primary", "new_primary", "recovered_by", "rto_seconds",
                "lost_writes", "lost_span_seconds", "writers", "split_brain", "most_primaries_at_once",
                "promotion", "rejoin", "topology",
            )
        }  # fmt: skip
        rto = record.get("rto_seconds")
        summary = (
            f"{record['target']}: {record['old_primary']} → {record['new_primary']} by {record['recovered_by']} in "
            f"{rto:.2f} s, {_lost(record)}"
            if rto is not None
            else f"{record['target']}: no new primary acknowledged a write within {record['timeout_seconds']:g} s"
        )
        if "rejoin" in record:
            summary += "; old primary " + ("rejoined" if record["rejoin"].get("ok") else "did not rejoin")
        if not findings and params.max_lost_writes is not None and record["lost_writes"] is None:
            # The limit cannot be judged: no node answered to count what survived.
            return result(rid, self.name, "error", summary, evidence=evidence, findings=[_lost(record)])
        return result(rid, self.name, "fail" if findings else "pass", summary, evidence=evidence, findings=findings)


def _findings(params: FailoverParams, record: dict[str, Any]) -> list[str]:
    findings: list[str] = []
    rto = record.get("rto_seconds")
    if rto is None:
        findings.append(
            f"no node other than {record['old_primary']} acknowledged a write within {record['timeout_seconds']:g} s "
            f"of the fault ({record['strategy']} strategy)"
        )
    elif params.max_rto is not None and rto > params.max_rto:
        findings.append(f"failover took {rto:.2f} s, over the {format_duration(params.max_rto)} allowed")
    if rto is not None and params.recovered_by is not None and record["recovered_by"] != params.recovered_by:
        findings.append(f"the new primary came by {record['recovered_by']}, not by {params.recovered_by}")
    for overlap in record.get("split_brain", []):
        a, b = sorted(overlap["nodes"])  # as named in the drill; the record's order is which node wrote first
        findings.append(
            f"split brain: {a} and {b} both acknowledged writes during {overlap['overlap_seconds']:.2f} s "
            f"({overlap['writes']})"
        )
    if record.get("most_primaries_at_once", 0) > 1 and not record.get("split_brain"):
        findings.append(
            f"{record['most_primaries_at_once']} nodes answered as primary at the same time (no write reached both)"
        )
    if (
        params.max_lost_writes is not None
        and record["lost_writes"] is not None
        and record["lost_writes"] > params.max_lost_writes
    ):
        findings.append(
            f"the failover lost {record['lost_writes']} acknowledged write(s), more than {params.max_lost_writes}: "
            f"{record['lost_seqs']}"
        )
    findings += _rejoin_findings(record.get("rejoin"))
    return findings


def _lost(record: dict[str, Any]) -> str:
    if record["lost_writes"] is None:
        return f"acknowledged writes lost not counted ({record.get('lost_not_measured')})"
    return f"{record['lost_writes']} acknowledged write(s) lost"


def _rejoin_findings(rejoin: dict[str, Any] | None) -> list[str]:
    if rejoin is None:
        return []
    if not rejoin.get("ok"):
        return [f"{rejoin['node']} did not rejoin: {rejoin.get('error')}"]
    findings = []
    if not rejoin.get("content_equal"):
        findings.append(f"{rejoin['node']} rejoined but differs from the new primary: {rejoin.get('differences')}")
    if rejoin.get("old_timeline_writes"):
        findings.append(
            f"{rejoin['node']} rejoined still holding {rejoin['old_timeline_writes']} write(s) of its abandoned "
            f"history: {rejoin.get('old_timeline_examples')}"
        )
    return findings
