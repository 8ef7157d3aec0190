"""workload: write numbered records in the background until the first disaster, to measure the RPO."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field

from drills.crosscheck import CheckContext, as_dict, str_list
from drills.steps.base import StepFailed, StepKind
from drills.strict import Name, Strict, none_is_empty
from engine.components import component_kinds

if TYPE_CHECKING:
    from drills.runner import DrillRunner


class WorkloadSpec(Strict):
    rate: float = Field(default=10.0, gt=0, le=1000, description="Acknowledged writes per second, per component.")
    components: list[Name] | None = Field(
        default=None,
        description="Components to write to; default: every component whose kind has a workload writer "
        "(postgres and its variants, redis and its variants, volumes, vectorstore, and applications that "
        "declare `run.workload` endpoints).",
    )


class WorkloadStep(Strict):
    """Start writing numbered records in the background; they run until the first disaster.

    Every acknowledged write is recorded outside the stack, so after the restore drproof
    can count the writes that were lost and measure the recovery point (RPO).
    """

    workload: Annotated[WorkloadSpec, BeforeValidator(none_is_empty)] = Field(default_factory=WorkloadSpec)


def takes_workload(kind: str) -> bool:
    """Whether component kind ``kind`` (or a kind it is built on) has a workload writer."""
    from drills.workload import writer_kinds

    if kind not in component_kinds:
        return True  # an unknown kind is reported on its own
    return any(c.__dict__.get("name") in writer_kinds for c in component_kinds.get(kind).__mro__)


class Workload(StepKind):
    name: ClassVar[str] = "workload"
    model: ClassVar[type[Strict]] = WorkloadStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        path = ("steps", index, self.name, "components")
        ctx.check_components(path, spec.get("components"))
        for j, c in str_list(spec.get("components")):
            kind = ctx.kinds.get(c)
            if isinstance(kind, str) and not takes_workload(kind):
                ctx.add(
                    (*path, j),
                    f"{c!r} is a {kind}, which has no workload writer "
                    "(writers: postgres and its variants, redis and its variants, volumes, vectorstore)",
                )
            elif kind == "application" and not as_dict(as_dict(ctx.components.get(c)).get("run")).get("workload"):
                ctx.add(
                    (*path, j),
                    f"{c!r} is an application without workload endpoints: give it "
                    "run.workload: {write: /path/{seq}, read: /path} to write the workload through it",
                )

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        from drills.workload import writer_for
        from drills.workload.run import Workload as Writers

        state = run.state
        assert state is not None
        if run.workload is not None:
            raise StepFailed(f"step {index + 1}: a workload is already running; a drill has one workload step")
        workload = Writers(run.clock.offset)
        names = spec.components or [n for n, c in state.components.items() if writer_for(c) is not None]
        for name in names:
            comp = state.components[name]
            writer = writer_for(comp)
            if writer is None:
                raise StepFailed(f"step {index + 1}: no workload writer for {name!r} (a {comp.name})")
            workload.add(name, writer(comp), spec.rate)
        if not workload.streams:
            raise StepFailed(f"step {index + 1}: no component of this stack takes a workload")
        with run.phase(f"start workload ({spec.rate:g} writes/s)", "workload", step=index + 1) as rec:
            workload.start()
            rec["detail"] = "writing to " + ", ".join(workload.streams)
        run.workload = workload
        state.workload_ran = True
