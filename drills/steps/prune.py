"""prune: apply a retention policy to the drill's repository, as `drproof recovery prune` does.

Why a step: retention is where a wrong order does its damage (a set dated a year ahead
made keep-last delete the newest real backup, issue 17). A drill that prunes between its
backups and its restore proves the same code an operator's nightly prune runs keeps the
right sets: ``engine.retention.prune``, under the exclusive repository lock, each
deletion after its signed tombstone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from drills.crosscheck import CheckContext
from drills.steps.base import StepFailed, StepKind
from drills.strict import Strict
from engine import retention

if TYPE_CHECKING:
    from drills.runner import DrillRunner


class PruneSpec(Strict):
    keep_last: int = Field(default=0, ge=0, description="Always keep the newest N backups (newest by the chain).")
    daily: int = Field(default=0, ge=0, description="Keep the newest backup of each of the last N days with backups.")
    weekly: int = Field(default=0, ge=0, description="... of each of the last N ISO weeks with backups.")
    monthly: int = Field(default=0, ge=0, description="... of each of the last N months with backups.")
    repository: Literal["primary", "offsite"] = Field(default="primary", description="Which repository to prune.")

    @model_validator(mode="after")
    def _keeps_something(self) -> PruneSpec:
        if not any((self.keep_last, self.daily, self.weekly, self.monthly)):
            raise ValueError("a retention policy that keeps nothing would delete every backup; set at least one count")
        return self


class PruneStep(Strict):
    """Delete the backups a retention policy does not keep, as `drproof recovery prune` does."""

    prune: PruneSpec


class Prune(StepKind):
    name: ClassVar[str] = "prune"
    model: ClassVar[type[Strict]] = PruneStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        if not ctx.backups:
            ctx.add(("steps", index, self.name), "prune needs an earlier backup step")

    def preflight(self, run: DrillRunner, index: int, spec: Any) -> list[str]:
        if spec.repository == "offsite" and run.offsite is None:
            raise StepFailed(f"step {index + 1}: prune the offsite repository, but `repository.offsite` is not set")
        return []

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        state = run.state
        assert state is not None
        repo = run.offsite if spec.repository == "offsite" else state.repository
        assert repo is not None
        policy = retention.Policy(keep_last=spec.keep_last, daily=spec.daily, weekly=spec.weekly, monthly=spec.monthly)
        with run.phase(f"prune the {spec.repository} repository", "prune", step=index + 1) as rec:
            seen = repo.chain_audit()  # what retention faced: a misdated set is named before it may go
            pruned = retention.prune(repo, policy, now=datetime.now(UTC))
            decisions = pruned.decisions
            name = {d.backup_id: state.backup_name_of(d.backup_id) or d.backup_id for d in decisions}
            kept = [d for d in decisions if d.keep]
            deleted = [d for d in decisions if not d.keep]
            rec["data"] = {
                "kept": [{"id": d.backup_id, "name": name[d.backup_id], "reasons": d.reasons} for d in kept],
                "locked": {i: [h.as_dict() for h in hs] for i, hs in pruned.locked.items()},
                "deleted": [{"id": d.backup_id, "name": name[d.backup_id]} for d in deleted],
                "chain_findings": [f"{f.kind}: {f}" for f in seen.findings],
            }
            rec["detail"] = (
                f"kept {', '.join(name[d.backup_id] for d in kept) or 'nothing'}; "
                f"deleted {', '.join(name[d.backup_id] for d in deleted) or 'nothing'}"
            )
