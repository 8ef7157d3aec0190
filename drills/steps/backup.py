"""backup: take a backup set of the stack (and copy it offsite when the scenario has one)."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from drills.crosscheck import CheckContext, str_list
from drills.steps.base import StepFailed, StepKind
from drills.strict import Name, Strict, none_is_empty
from engine import backup as engine_backup
from engine.components.livechanges import describe
from engine.errors import DrproofError
from engine.journal import BackupRecord
from engine.manifest import Manifest

if TYPE_CHECKING:
    from drills.runner import DrillRunner

# A backup's offsite copy is retried this often, with this pause (seconds) times the
# attempt number between tries: enough to ride out a blip, short enough for a drill.
OFFSITE_ATTEMPTS = 3
OFFSITE_BACKOFF = 0.2


class BackupSpec(Strict):
    name: Name | None = Field(default=None, description="Name later steps use to refer to this backup.")
    components: list[Name] | None = Field(default=None, description="Components to back up; default: all.")
    canary: bool = Field(
        default=False,
        description="Plant a canary in each component that can hold one (postgres, redis, volumes and configuration kinds) just before the "
        "backup; the `canary` check then proves a restore brought back this very backup.",
    )
    expect: Literal["success", "failure"] = Field(
        default="success",
        description="`failure` when the drill proves a backup fails loudly (e.g. its offsite copy cannot be made); "
        "the drill then fails if it succeeds.",
    )


class BackupStep(Strict):
    """Take a full backup of the components into the repository."""

    backup: Annotated[BackupSpec, BeforeValidator(none_is_empty)] = Field(default_factory=BackupSpec)


def backup_name(index: int, spec: Any) -> str:
    """The name later steps refer to a backup by: its own, else ``step<N>-backup``."""
    name = spec.get("name") if isinstance(spec, dict) else spec.name
    return name if isinstance(name, str) and name else f"step{index + 1}-backup"


class Backup(StepKind):
    name: ClassVar[str] = "backup"
    model: ClassVar[type[Strict]] = BackupStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        # A backup expected to fail is no backup later steps can name (found by review:
        # restoring from one passed validation and then crashed with a KeyError).
        if not (isinstance(spec, dict) and spec.get("expect") == "failure"):
            ctx.backups.append(backup_name(index, spec))
        path = ("steps", index, self.name, "components")
        ctx.check_components(path, spec.get("components"))
        for j, c in str_list(spec.get("components")):
            if ctx.stateless(c):
                ctx.add((*path, j), f"{c!r} is a {ctx.kinds[c]}: it holds no data to back up")

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        """One backup step; with ``expect: failure`` its failure is recorded and judged, not fatal."""
        name = backup_name(index, spec)
        if spec.expect == "success":
            found = _take(run, index, spec, name)
            run.backup_outcomes.append(_outcome(index, name, "success", found))
            return
        try:
            found = _take(run, index, spec, name)
        except DrproofError as exc:
            run.backup_outcomes.append(
                {"step": index + 1, "backup": name, "expected": "failure", "outcome": "failed", "detail": str(exc)}
            )
            # The phase already recorded the failure as an error; it was declared, so say so.
            last = run.phases[-1]
            if last.step == index + 1 and last.kind == "backup":
                last.status = "failed"
                last.detail = f"failed as expected: {last.detail}"
        else:
            run.backup_outcomes.append(_outcome(index, name, "failure", found))
            last = run.phases[-1]
            if found and last.step == index + 1 and last.kind == "backup":  # the declared failure: its findings
                last.detail = f"failed as expected: {last.detail}"


def _outcome(index: int, name: str, expected: str, findings: list[str]) -> dict[str, Any]:
    """A backup that completed: ``ok``, or ``findings`` when the set is sound but an objective is lost.

    Why not ``ok`` with a note: ``drproof backup`` exits 1 on the same set (a hole in the WAL
    archive since the previous backup), so a drill that took it must not pass silently; the
    timeline check fails unless the scenario declared the backup to fail.
    """
    if findings:
        return {"step": index + 1, "backup": name, "expected": expected, "outcome": "findings", "findings": findings}
    return {"step": index + 1, "backup": name, "expected": expected, "outcome": "ok"}


def _take(run: DrillRunner, index: int, spec: Any, name: str) -> list[str]:
    """Take the backup; what its set cannot do (``limits``), already put on the phase."""
    state = run.state
    assert state is not None
    # Services (application components) hold no data: a backup of "everything" leaves them out.
    chosen = [state.components[c] for c in (spec.components or [n for n, c in state.components.items() if c.stateful])]
    with run.phase(f"backup {name}", "backup", step=index + 1) as rec:
        t0 = time.monotonic()
        manifest = engine_backup.backup(
            state.repository,
            chosen,
            label=name,
            labels={"scenario": run.scenario.name, "scenario_sha256": run.loaded.sha256, "step": str(index + 1)},
            canaries={c.instance for c in chosen if c.supports_canary} if spec.canary else (),
        )
        duration = time.monotonic() - t0
        rec["data"] = {"backup_id": manifest.id}
        if run.offsite is not None:
            offsite: dict[str, Any] = {}
            rec["data"]["offsite"] = offsite
            copy_offsite(run, manifest, offsite)
        state.backups[name] = manifest
        for c in chosen:
            taken = manifest.component(c.instance).fingerprint
            assert taken is not None  # asked for above
            state.results[c.instance].fingerprint_at_backup = taken.digest
        run.tools.update(manifest.tools)
        run.backup_records.append(_record(manifest, name, [c.instance for c in chosen], duration))
        rec["detail"] = (
            f"backup set {manifest.id}: {len(manifest.artifacts)} artifacts, "
            f"{sum(a.size for a in manifest.artifacts)} bytes stored"
        )
        moved = sum(int(c.details.get("changed_while_archived", {}).get("count", 0)) for c in manifest.components)
        if moved:
            rec["detail"] += f"; {moved} entries changed while archived (stored as read)"
        found = engine_backup.limits(manifest)
        if found:  # the set is kept (it restores to its own end); the phase and the timeline say what is lost
            rec["status"] = "failed"
            rec["data"]["findings"] = found
            rec["detail"] += "; but: " + "; ".join(found)
        return found


def _record(manifest: Manifest, name: str, components: list[str], duration: float) -> BackupRecord:
    return BackupRecord(
        name=name,
        id=manifest.id,
        created_at=manifest.created_at,
        components=components,
        artifacts=[
            {"key": a.key, "size": a.size, "raw_size": a.raw_size, "sha256": a.sha256} for a in manifest.artifacts
        ],
        manifest_sha256=hashlib.sha256(manifest.to_json().encode()).hexdigest(),
        duration_seconds=round(duration, 6),
        changed_while_archived=[
            f"{c.name}: {line}" for c in manifest.components if c.name in components for line in describe(c.details)
        ],
    )


def copy_offsite(run: DrillRunner, manifest: Manifest, record: dict[str, Any]) -> None:
    """Copy a new set (and any parent the offsite lacks) offsite, retrying; raise if it never works.

    The backup step fails when this raises: a set that exists only locally is one
    disk away from gone, and nobody notices a gap that is only logged. Every attempt
    goes into ``record`` (the phase's data) as it happens, so a failure keeps them too.
    """
    state = run.state
    assert state is not None and run.offsite is not None
    attempts: list[dict[str, Any]] = []
    record.update(repository=run.offsite.describe().get("path", ""), verified=False, attempts=attempts)
    for attempt in range(1, OFFSITE_ATTEMPTS + 1):
        t0 = time.monotonic()
        try:
            copied = engine_backup.sets_to_copy(state.repository, run.offsite, manifest)
            for m in copied:
                engine_backup.copy_set(state.repository, run.offsite, m)
        except DrproofError as exc:
            attempts.append({"attempt": attempt, "ok": False, "error": str(exc)})
            if attempt < OFFSITE_ATTEMPTS:
                time.sleep(OFFSITE_BACKOFF * attempt)
            continue
        attempts.append({"attempt": attempt, "ok": True, "seconds": round(time.monotonic() - t0, 6)})
        record.update(copied=[m.id for m in copied], verified=True)
        return
    raise StepFailed(
        f"backup set {manifest.id} was written locally, but its offsite copy failed "
        f"{OFFSITE_ATTEMPTS} times (last: {attempts[-1]['error']}); it exists in one place only"
    )
