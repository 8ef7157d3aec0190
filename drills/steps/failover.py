"""failover: take a replicated topology's primary away under the workload, recover, and measure.

The fault (``kill_primary``, ``stop_primary``, ``pause_primary``) hits the primary while
the workload keeps writing through the topology's endpoint. Recovery is the scenario's
strategy: ``automatic`` waits for the topology to fail over by itself (Patroni, Sentinel,
Cluster); ``promote`` is the manual runbook step (fence the old primary, then
``pg_promote()`` / ``REPLICAOF NO ONE`` / ``CLUSTER FAILOVER TAKEOVER``), optionally after
an operator's reaction time. Restoring from a backup instead is a ``disaster`` step with
the same fault followed by a ``restore`` step.

Everything measured comes from the workload's acknowledged writes: the RTO runs from the
fault to the first write a new primary acknowledged; the writes lost are those
acknowledged before the takeover that the topology no longer holds; two nodes that
acknowledged writes during a common span are a split brain. With ``rejoin``, the old
primary is brought back as a replica (pg_rewind for PostgreSQL) and its content is
compared with the new primary's.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, create_model

from drills.crosscheck import CheckContext
from drills.durations import Duration
from drills.steps.base import StepFailed, StepKind
from drills.steps.disaster import before_first_disaster
from drills.strict import Name, Strict, literal, tagged
from engine.errors import DrproofError
from engine.faults import FaultContext, faults, fits
from engine.journal import DisasterRecord
from engine.runtime.topology import Topology

if TYPE_CHECKING:
    from drills.runner import DrillRunner
    from drills.workload.run import Stream


class FailoverCommon(Strict):
    target: str = Field(description="The replicated component whose primary the fault hits.")
    name: Name | None = Field(default=None, description="Name for the report; default: the fault name.")
    strategy: Literal["automatic", "promote"] = Field(
        default="automatic",
        description="`automatic`: wait for the topology to fail over by itself (Patroni, Sentinel, Cluster). "
        "`promote`: the manual runbook step: fence the old primary, then promote the most advanced replica "
        "and repoint the others.",
    )
    timeout: Duration = Field(
        default=60.0, gt=0, description="How long to wait for a new primary to acknowledge a write."
    )
    fallback: Literal["promote"] | None = Field(
        default=None,
        description="With `automatic`: promote by hand when no new primary acknowledged a write within `timeout` "
        "(the runbook when automatic failover is broken); the wait then starts again.",
    )
    reaction: Duration = Field(
        default=0.0,
        ge=0,
        description="With `promote`: the time an operator takes to notice and act, spent before promoting.",
    )
    fence: bool = Field(
        default=True,
        description="With `promote`: SIGKILL the old primary first if its process still exists (paused or "
        "hung), so it cannot come back as a second primary. `false` shows what an unfenced failover does.",
    )
    settle: Duration = Field(
        default=1.0,
        ge=0,
        description="Keep writing this long after the new primary's first acknowledged write before measuring; "
        "cover a paused primary's `seconds` to see whether it comes back as a second primary.",
    )
    rejoin: bool = Field(
        default=False,
        description="Bring the old primary back as a replica of the new one (pg_rewind for PostgreSQL, a restart "
        "that the topology makes a replica for Redis) and compare its content with the new primary's.",
    )


def _fault_model(fault: Any) -> type[Strict]:
    model = create_model(
        f"{''.join(p.capitalize() for p in fault.name.split('_'))}Failover",
        __base__=(FailoverCommon, fault.Params),
        __doc__=fault.description,
        fault=(literal(fault.name), Field(description="Fault that takes the primary away.")),
    )
    return tagged(model, fault.name)


PRIMARY_FAULTS = [f for f in faults if f.hits_primary]
FAILOVER_MODELS = [_fault_model(f) for f in PRIMARY_FAULTS]
if TYPE_CHECKING:
    FailoverSpec = Any
else:
    FailoverSpec = Annotated[Union[tuple(FAILOVER_MODELS)], Field(discriminator="fault")]  # noqa: UP007


class FailoverStep(Strict):
    """Take a replicated component's primary away under the workload; recover by the strategy; measure."""

    failover: FailoverSpec


class Failover(StepKind):
    name: ClassVar[str] = "failover"
    model: ClassVar[type[Strict]] = FailoverStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        base = ("steps", index, self.name)
        fault_name, target = spec.get("fault"), spec.get("target")
        if "workload" not in ctx.steps_seen:
            ctx.add(base, "failover needs a workload step before it: its RTO is the first acknowledged write")
        if not isinstance(target, str):
            return
        if target not in ctx.components:
            ctx.bad_component((*base, "target"), target, "target")
            return
        kind = ctx.kinds.get(target)
        fault = faults.get(fault_name) if isinstance(fault_name, str) and fault_name in faults else None
        if isinstance(kind, str) and fault is not None and not fits(fault, kind):
            ctx.add(
                (*base, "target"),
                f"{target!r} is a {kind}; {fault.name} hits a replicated kind ({', '.join(sorted(fault.targets))})",
            )

    def preflight(self, run: DrillRunner, index: int, spec: Any) -> list[str]:
        from engine.runtime import refusal

        fault = faults.get(spec.fault)
        why = refusal(run.runtime_class(), fault.needs)
        return [] if why is None else [f"step {index + 1}, failover {fault.name} ({why})"]

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        state = run.state
        assert state is not None and isinstance(spec, FailoverCommon)
        component = state.components[spec.target]
        topology = getattr(component, "topology", None)
        if not isinstance(topology, Topology):
            raise StepFailed(f"step {index + 1}: {spec.target!r} is not a replicated component")
        stream = run.workload.streams.get(spec.target) if run.workload is not None else None
        if stream is None or run.workload is None or not run.workload.running:
            raise StepFailed(f"step {index + 1}: failover needs the workload writing to {spec.target!r}")
        if state.first_disaster_at is None:
            before_first_disaster(run)
        name = spec.name or spec.fault  # type: ignore[attr-defined]
        drill = _Drill(run, index, spec, component, topology, stream, name)
        record = drill.perform()
        state.failovers.append(record)


class _Drill:
    """One failover, from the fault to the measurements."""

    def __init__(
        self, run: DrillRunner, index: int, spec: Any, component: Any, topology: Topology, stream: Stream, name: str
    ) -> None:
        self.run, self.index, self.spec, self.name = run, index, spec, name
        self.component, self.topology, self.stream = component, topology, stream
        self.roles: list[dict[str, Any]] = []  # samples of which nodes answered as primary
        self.fault_began = 0.0  # when the fault began (drill clock): the failover RTO counts from here

    def perform(self) -> dict[str, Any]:
        old = self.topology.primary()
        if old is None:
            raise StepFailed(f"step {self.index + 1}: no node of {self.spec.target!r} answers as primary")
        self.old = old
        self.old_address = self.topology.address(old)  # acknowledgements name the server that took them
        fault_at, effect = self._inject(old)
        recovered_by, promoted = self._recover(old, fault_at)
        first = _first_after(self.stream, fault_at, self.old_address)
        record = self._measure(old, fault_at, effect, recovered_by, promoted, first)
        if self.spec.rejoin and first is not None:
            record["rejoin"] = self._rejoin(old)
        self._account(record)
        return record

    # -- the fault -----------------------------------------------------------------------
    def _inject(self, old: str) -> tuple[float, dict[str, Any]]:
        run, spec, state = self.run, self.spec, self.run.state
        assert state is not None
        fault = faults.get(spec.fault)(spec)
        ctx = FaultContext(
            component=self.component,
            repository=state.repository,
            find_backup=run.find_backup,
            rng=random.Random(spec.random_seed),
        )
        with run.phase(f"failover fault {self.name} on {spec.target} ({old})", "disaster", step=self.index + 1,
                       component=spec.target) as rec:  # fmt: skip
            # The outage begins when the fault does (stopping the primary takes time, and the
            # writes fail from its start): found by review, the RTO was counted from its end.
            self.fault_began = run.clock.offset()
            effect = fault.inject(ctx)
            fault_at = run.clock.offset()
            rec["data"] = effect
            rec["detail"] = ", ".join(f"{k}={v}" for k, v in effect.items() if not isinstance(v, list | dict))
        if state.first_disaster_offset is None:
            state.first_disaster_offset = fault_at
        if state.recovery_started is None:
            state.recovery_started = self.fault_began
        state.disasters.append(
            DisasterRecord(
                step=self.index + 1,
                name=self.name,
                fault=spec.fault,
                target=spec.target,
                injected_at=datetime.now(UTC),
                offset_seconds=round(fault_at, 6),
                effect=effect,
            )
        )
        return fault_at, effect

    # -- recovery ------------------------------------------------------------------------
    def _recover(self, old: str, fault_at: float) -> tuple[str | None, dict[str, Any] | None]:
        """Wait or promote by the strategy; return how the new primary came and the promotion's record."""
        spec = self.spec
        with self.run.phase(f"failover of {spec.target}: {spec.strategy}", "restore", step=self.index + 1,
                            component=spec.target) as rec:  # fmt: skip
            promoted = None
            how: str | None = None
            if spec.strategy == "promote":
                promoted = self._promote(old)
            if self._wait_for_takeover(fault_at, spec.timeout):
                how = "promote" if promoted else "automatic"
            elif spec.strategy == "automatic" and spec.fallback == "promote":
                promoted = self._promote(old)
                how = "promote" if self._wait_for_takeover(fault_at, spec.timeout) else None
            rec["data"] = {"recovered_by": how, "promotion": promoted, "old_primary": old}
            rec["detail"] = (
                f"recovered by {how}" if how else f"no new primary acknowledged a write within {spec.timeout:g}s"
            )
        return how, promoted

    def _promote(self, old: str) -> dict[str, Any]:
        """The runbook: wait for the operator, fence the old primary if it still exists, promote."""
        if self.spec.reaction:
            self._watch(self.spec.reaction)
        fenced = None
        if self.spec.fence and self.topology.role(old) != "down":
            fenced = self.topology.kill_node(old)
        try:
            promotion = self.topology.promote(old)
        except DrproofError as exc:
            raise StepFailed(
                f"step {self.index + 1}: promoting a replica of {self.spec.target!r} failed: {exc}"
            ) from exc
        return {"fenced": fenced, **promotion}

    def _wait_for_takeover(self, fault_at: float, timeout: float) -> bool:
        """Whether a node other than the old primary acknowledged a write within ``timeout``; samples roles meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _first_after(self.stream, fault_at, self.old_address) is not None:
                return True
            self._sample()
            time.sleep(0.1)
        return _first_after(self.stream, fault_at, self.old_address) is not None

    def _watch(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._sample()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _sample(self) -> None:
        primaries = [n for n in self.topology.nodes() if self.topology.role(n) == "primary"]
        self.roles.append({"offset": round(self.run.clock.offset(), 3), "primaries": primaries})

    # -- measurement ---------------------------------------------------------------------
    def _measure(
        self,
        old: str,
        fault_at: float,
        effect: dict[str, Any],
        recovered_by: str | None,
        promoted: dict[str, Any] | None,
        first: Any,
    ) -> dict[str, Any]:
        from drills.workload.failover import lost_before, split_brain, tenures

        spec, stream = self.spec, self.stream
        with self.run.phase(f"measure failover of {spec.target}", "check", step=self.index + 1,
                            component=spec.target) as rec:  # fmt: skip
            since = stream.takeovers[-1] if stream.takeovers else 0.0
            if first is not None:
                self._watch(spec.settle)
                stream.takeovers.append(first.offset)
            try:
                survivors: set[int] | None = stream.writer.survivors()
                unread = None
            except DrproofError as exc:  # no node answers: the loss is unknown, not "everything"
                survivors, unread = None, str(exc)
            until = first.offset if first is not None else self.run.clock.offset()
            lost = lost_before(stream.acks, since, until, survivors) if survivors is not None else []
            record = {
                "step": self.index + 1,
                "name": self.name,
                "target": spec.target,
                "fault": spec.fault,
                "strategy": spec.strategy,
                "automatic_topology": self.topology.automatic,
                "old_primary": old,
                "new_primary": self._name(first.node) if first is not None else None,
                "recovered_by": recovered_by,
                "promotion": promoted,
                "fault_offset_seconds": round(fault_at, 6),
                "fault_began_offset_seconds": round(self.fault_began, 6),
                "rto_seconds": round(first.offset - self.fault_began, 6) if first is not None else None,
                "timeout_seconds": spec.timeout,
                "acknowledged_before": sum(1 for a in stream.acks if since <= a.offset < until),
                "lost_writes": len(lost) if survivors is not None else None,
                "lost_not_measured": unread,
                "lost_seqs": [a.seq for a in lost[:20]],
                "lost_span_seconds": round(lost[-1].offset - lost[0].offset, 6) if lost else 0.0,
                "writers": [{**t.__dict__, "node": self._name(t.node)} for t in tenures(stream.acks, fault_at)],
                "split_brain": [
                    {
                        **s,
                        "nodes": [self._name(n) for n in s["nodes"]],
                        "writes": {self._name(n): w for n, w in s["writes"].items()},
                    }
                    for s in split_brain(stream.acks, fault_at)
                ],
                "most_primaries_at_once": max((len(r["primaries"]) for r in self.roles), default=0),
                "topology": self.topology.describe(),
                "effect": effect,
            }
            rec["data"] = record
            rec["detail"] = (
                f"RTO {record['rto_seconds']}s, {len(lost)} acknowledged write(s) lost, new primary {record['new_primary']}"
                if first is not None
                else f"no new primary within {spec.timeout:g}s"
            )
        return record

    def _name(self, address: str | None) -> str:
        """The node at ``address`` (as acknowledgements name it), by its node name where known."""
        if address == self.old_address:
            return self.old
        return self.topology.node_at(address) or str(address)

    def _rejoin(self, old: str) -> dict[str, Any]:
        """The old primary back as a replica, and whether it holds what the new primary holds."""
        with self.run.phase(f"rejoin {old} to {self.spec.target}", "restore", step=self.index + 1,
                            component=self.spec.target) as rec:  # fmt: skip
            try:
                result = self.topology.rejoin(old)
            except DrproofError as exc:
                rec["status"], rec["detail"] = "failed", str(exc)
                return {"node": old, "ok": False, "error": str(exc)}
            try:
                result.update(_rejoin_fidelity(self.component, self.stream, old))
            except DrproofError as exc:
                rec["status"], rec["detail"] = "failed", f"rejoined, but its content could not be read: {exc}"
                return {"node": old, "ok": False, "error": rec["detail"]}
            rec["data"] = result
            rec["detail"] = f"{old} rejoined in {result.get('seconds')}s; content equal: {result['content_equal']}"
        return {"ok": True, **result}

    def _account(self, record: dict[str, Any]) -> None:
        """The component's RTO is this failover's; it is down until one happened."""
        state = self.run.state
        assert state is not None
        result = state.results[self.spec.target]
        result.damaged_by.append(self.name)
        result.rto_seconds = record["rto_seconds"]
        result.healthy = None


def _first_after(stream: Stream, fault_at: float, old: str) -> Any:
    from drills.workload.failover import first_ack

    return first_ack(list(stream.acks), fault_at, not_by=old)


def _rejoin_fidelity(component: Any, stream: Stream, node: str) -> dict[str, Any]:
    """The rejoined node against the primary: the same content, and no write of the old timeline.

    The node is read first: it may lag the primary by the writes in flight, never lead
    it; a workload record the node holds that the primary lacks survived from the old
    primary's diverged history.
    """
    from engine.fingerprint import compare

    writer = type(stream.writer)
    primary = component.topology.primary()  # the node drproof knows as primary, not whatever the endpoint finds
    on_node = writer(component.on_node(node)).survivors()
    on_primary = writer(component.on_node(primary)).survivors()
    primary_fp, node_fp = component.node_fingerprints(node)
    diffs = compare(primary_fp, node_fp)
    diverged = sorted(on_node - on_primary)
    return {
        "content_equal": not diffs,
        "differences": [d.describe() for d in diffs[:10]],
        "primary_sha256": primary_fp.digest,
        "node_sha256": node_fp.digest,
        "old_timeline_writes": len(diverged),
        "old_timeline_examples": diverged[:20],
        "node_workload_records": len(on_node),
    }
