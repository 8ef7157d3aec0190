"""The contract every assertion fulfils, and the state it judges.

An assertion never measures anything itself: it reads what the runner recorded in the
drill state during the run and turns it into a verdict with evidence. That keeps every
verdict traceable to a measurement taken at a known moment of the timeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from drills.assertions.expect import ExpectSpec, check_short_form

if TYPE_CHECKING:
    from drills.foreign_source import ForeignSource
    from drills.history import RunRecord
    from drills.source import OpenedSource

from drills.crosscheck import CheckContext
from engine.components.base import Component
from engine.fingerprint import Fingerprint
from engine.journal import AssertionResult, ComponentResult, DisasterRecord
from engine.manifest import Manifest
from engine.repository.base import Repository


class AssertionParams(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    expect: Literal["pass", "fail"] = Field(
        default="pass",
        description="`fail` for a negative control: the scenario injects the damage this check exists to detect, "
        "and the drill passes only if the check fails (a check that passes then is blind).",
    )

    @property
    def negative_control(self) -> bool:
        """Whether the scenario expects this check to fail (it injected the damage it detects)."""
        return self.expect == "fail"


class CheckParams(AssertionParams):
    """A user's check: ``expect`` is what the value read must be, ``outcome`` the negative control."""

    expect: Annotated[str, AfterValidator(check_short_form)] | ExpectSpec = Field(  # type: ignore[assignment]
        default="rows",
        description="`> 0`, `>= N`, `= N`, `!= N` on the first value read; `rows` / `no rows`; or "
        "`{equals: X}`, `{matches: REGEX}`, `{contains: TEXT}`, `{rows: [[...], ...]}`.",
    )
    outcome: Literal["pass", "fail"] = Field(
        default="pass", description="`fail` for a negative control: the scenario broke what this check reads."
    )

    @property
    def negative_control(self) -> bool:
        return self.outcome == "fail"


@dataclass
class RestoreAttempt:
    step: int
    backup: str
    backup_id: str
    component: str
    outcome: str  # ok | refused | failed
    detail: str
    expected: str  # success | refused
    # For a refusal: the check that refused (engine.errors: IntegrityError.detector), and
    # the checks the scenario said must refuse it (``refused_by``; empty: any).
    detector: str | None = None
    refused_by: tuple[str, ...] = ()


@dataclass
class DrillState:
    """Everything the runner recorded, for assertions and the journal."""

    repository: Repository
    components: dict[str, Component] = field(default_factory=dict)
    results: dict[str, ComponentResult] = field(default_factory=dict)
    backups: dict[str, Manifest] = field(default_factory=dict)  # by step name, in order
    disasters: list[DisasterRecord] = field(default_factory=list)
    restores: list[RestoreAttempt] = field(default_factory=list)
    final_fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    fingerprint_errors: dict[str, str] = field(default_factory=dict)
    rto_objective: float | None = None
    stack_rto: float | None = None
    first_disaster_offset: float | None = None
    first_disaster_at: datetime | None = None  # wall clock, for point-in-time restores
    rpo_objective: float | None = None
    stack_rpo: float | None = None
    workload_ran: bool = False
    fingerprints_before_disaster: dict[str, Fingerprint] = field(default_factory=dict)
    # Backups read from a repository other than the drill's own (a restore test's source), by name.
    repositories: dict[str, Repository] = field(default_factory=dict)
    # When the recovery being timed began, on the drill's clock, and what that moment was:
    # the first disaster of a drill, or the start of a restore test's first restore.
    recovery_started: float | None = None
    recovery_started_by: str = "injection of the first disaster"
    source: OpenedSource | ForeignSource | None = None  # a restore test's backups, and where they are read
    # The newest earlier passing restore test of the same source (from --history), for drift.
    previous_restore_test: RunRecord | None = None
    previous_why: str | None = None  # why there is none, when there is none
    base_dir: Path | None = None  # the scenario's directory: where a user's check programs run
    # What each ``failover`` step measured (drills/steps/failover.py), for the failover_outcome check.
    failovers: list[dict[str, Any]] = field(default_factory=list)
    # Components whose restore left its proof to the fidelity check (a restore test's sandbox).
    proofs_deferred: set[str] = field(default_factory=set)
    # Components restored from a foreign backup nothing could verify (``unverified: true``), with why:
    # the run's verdict is then never pass (drills/runner.py).
    unverified: dict[str, str] = field(default_factory=dict)

    def repository_of(self, backup_name: str) -> Repository:
        return self.repositories.get(backup_name, self.repository)

    @property
    def sandbox(self) -> list[str]:
        """The components a restore test made empty sandboxes for (none in a synthetic drill).

        Each starts empty, so each must come back for the stack to count as recovered.
        """
        if self.source is None:
            return []
        names = getattr(self.source, "components", None)
        return list(names) if names is not None else list(getattr(self.source, "backups", {}))

    @property
    def recovering(self) -> list[str]:
        """The components the stack's RTO waits for: every one a disaster damaged, every one a
        restore replaced or tried to (a refused restore touched nothing), and a restore test's
        sandboxes.

        Found by review: only the damaged ones counted, so a restore step that put the whole
        set back stopped the stack's clock at the damaged database while the volume it
        replaced next was still being restored (and one whose restore failed was ignored).
        """
        touched = {a.component for a in self.restores if a.outcome != "refused"}
        names = {n for n, r in self.results.items() if r.damaged_by} | touched | set(self.sandbox)
        return [n for n in self.results if n in names]

    def backup_name_of(self, backup_id: str) -> str | None:
        for name, m in self.backups.items():
            if m.id == backup_id:
                return name
        return None


class Assertion(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[AssertionParams]]
    description: ClassVar[str]

    @abstractmethod
    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        """One result per thing judged (e.g. per component), each with its evidence."""

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        """Add to ``ctx`` what this check needs from the scenario and does not get (``params`` raw).

        Called after every step was checked, so ``ctx`` knows the whole timeline.
        """
        return None

    def proves_restore(self, params: Any, component: str, backup: str) -> bool:
        """Whether this check, as declared, compares ``component`` with backup step ``backup``.

        Why: a restore into a sandbox may leave its proof to such a check
        (``engine.backup.restore(defer_proof=True)``); a check that cannot fail on a
        restore that differs from the backup must never stand in for that proof.
        """
        return False


def unrestored_sandbox(state: DrillState, name: str) -> str | None:
    """Why ``name`` holds nothing of the backup for a check to judge, or None.

    A restore test's sandbox starts empty: until a restore into it succeeds, a check that
    reads it judges an empty server. Found by review: with the restore failed (a damaged
    RDB), ``EXISTS banned:1`` expecting ``= 0`` passed on the empty sandbox. Such a check is
    ``not_compared``: never a pass, never a detection, and the run's verdict rests on what
    found the restore failing. Outside a restore test a component holds its live data
    whether a restore was refused or not.
    """
    if name not in state.sandbox:
        return None
    attempts = [a for a in state.restores if a.component == name]
    if any(a.outcome == "ok" for a in attempts):
        return None
    if not attempts:
        what = "no restore into it ran"
    else:
        detail = " ".join(attempts[-1].detail.split())
        what = f"its restore {attempts[-1].outcome} ({detail[:200]})"
    return f"{name} is the restore test's sandbox and {what}, so it holds nothing of the backup to check"


def result(id: str, name: str, status: str, summary: str, **kw: Any) -> AssertionResult:
    return AssertionResult(id=id, name=name, status=status, summary=summary, **kw)  # type: ignore[arg-type]
