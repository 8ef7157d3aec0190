"""disaster: break something on purpose, with a fault from the registry."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

from pydantic import Field, create_model

from drills.crosscheck import CheckContext
from drills.steps.base import StepKind
from drills.strict import Name, Strict, literal, tagged
from engine.faults import REPOSITORY_TARGET, FaultContext, faults, fits
from engine.journal import DisasterRecord

if TYPE_CHECKING:
    from drills.runner import DrillRunner


class DisasterCommon(Strict):
    target: str = Field(description="Component name, or `repository` for faults on stored backups.")
    name: Name | None = Field(default=None, description="Name for the report; default: the fault name.")


def _fault_model(fault: Any) -> type[Strict]:
    model = create_model(
        f"{''.join(p.capitalize() for p in fault.name.split('_'))}Disaster",
        __base__=(DisasterCommon, fault.Params),
        __doc__=fault.description,
        fault=(literal(fault.name), Field(description="Fault to inject.")),
    )
    return tagged(model, fault.name)


FAULT_MODELS = [_fault_model(f) for f in faults]
if TYPE_CHECKING:
    DisasterSpec = Any
else:
    DisasterSpec = Annotated[Union[tuple(FAULT_MODELS)], Field(discriminator="fault")]  # noqa: UP007


class DisasterStep(Strict):
    """Break something on purpose."""

    disaster: DisasterSpec


class Disaster(StepKind):
    name: ClassVar[str] = "disaster"
    model: ClassVar[type[Strict]] = DisasterStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        fault_name, target = spec.get("fault"), spec.get("target")
        if not isinstance(fault_name, str) or fault_name not in faults or not isinstance(target, str):
            return  # pass 1 reports these
        fault = faults.get(fault_name)
        base = ("steps", index, self.name)
        if target == REPOSITORY_TARGET:
            self._check_repository_fault(ctx, base, fault, spec)
        elif target not in ctx.components:
            ctx.bad_component((*base, "target"), target, "target")
        elif isinstance(kind := ctx.kinds[target], str) and not fits(fault, kind):
            fitting = [f.name for f in faults if fits(f, kind)]
            ctx.add(
                (*base, "fault"),
                f"fault {fault.name!r} cannot hit {target!r} (a {kind}); "
                f"faults for {kind}: {', '.join(fitting) or 'none'}",
            )

    @staticmethod
    def _check_repository_fault(ctx: CheckContext, base: tuple[Any, ...], fault: Any, spec: dict[str, Any]) -> None:
        if REPOSITORY_TARGET not in fault.targets:
            ctx.add(
                (*base, "target"),
                f"fault {fault.name!r} hits {', '.join(sorted(fault.targets))} components, not the repository",
            )
        if not ctx.backups and fault.needs_backup:
            ctx.add(base, "a repository fault needs an earlier backup step")
        ctx.check_backup_ref((*base, "backup"), spec.get("backup"))
        ctx.check_component((*base, "component"), spec.get("component"))

    def preflight(self, run: DrillRunner, index: int, spec: Any) -> list[str]:
        from engine.runtime import refusal

        fault = faults.get(spec.fault)
        why = refusal(run.runtime_class(), fault.needs)
        return [] if why is None else [f"step {index + 1}, fault {fault.name} ({why})"]

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        state = run.state
        assert state is not None and isinstance(spec, DisasterCommon)
        fault_name: str = spec.fault  # type: ignore[attr-defined]
        fault = faults.get(fault_name)(spec)  # type: ignore[arg-type]
        name = spec.name or fault_name
        target = spec.target
        component = None if target == REPOSITORY_TARGET else state.components[target]
        ctx = FaultContext(
            component=component,
            repository=state.repository,
            find_backup=run.find_backup,
            rng=random.Random(spec.random_seed),  # type: ignore[attr-defined]
            offsite=run.offsite,
            replace_offsite=run.replace_offsite if run.offsite is not None else None,
            lose_key=run.lose_key if run.encrypted else None,
        )
        # The workload ends where the disaster begins: the last write it had acknowledged
        # is the one a perfect recovery would keep. Faults on one node of a replicated
        # topology leave it writing: the failover that follows is what it measures.
        if not fault.keeps_workload:
            run.stop_workload("disaster")
        if state.first_disaster_at is None:
            before_first_disaster(run)
        with run.phase(
            f"disaster {name} on {target}", "disaster", step=index + 1, component=None if component is None else target
        ) as rec:
            # The outage begins when the fault does (a SIGKILL, then the deletion of the data
            # directory): found by review, the clock started once the injection was done, and
            # the seconds the fault itself took (1.1 s of a 2.3 s RTO) were left out of the RTO.
            began = run.clock.offset()
            effect = fault.inject(ctx)
            injected = run.clock.offset()
            rec["data"] = effect
            rec["detail"] = ", ".join(f"{k}={v}" for k, v in effect.items() if not isinstance(v, list | dict))
        if state.first_disaster_offset is None:
            state.first_disaster_offset = injected
        if state.recovery_started is None:
            state.recovery_started = began
        if component is not None:
            result = state.results[target]
            result.damaged_by.append(name)
            # Damaged again after a restore: it is down until the next successful restore.
            result.rto_seconds = None
            result.healthy = None
        state.disasters.append(
            DisasterRecord(
                step=index + 1,
                name=name,
                fault=fault_name,
                target=target,
                injected_at=datetime.now(UTC),
                offset_seconds=round(injected, 6),
                effect=effect,
            )
        )


def before_first_disaster(run: DrillRunner) -> None:
    """Record the state a check against ``before_disaster`` compares with, and the moment."""
    state = run.state
    assert state is not None
    if run.wants_state_before_disaster():
        with run.phase("fingerprints before the disaster", "check") as rec:
            state.fingerprints_before_disaster = {n: c.fingerprint() for n, c in state.components.items()}
            rec["data"] = {n: f.digest for n, f in state.fingerprints_before_disaster.items()}
    state.first_disaster_at = datetime.now(UTC)
