"""restore: restore components from a backup and wait until they are healthy."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from drills import plan
from drills.assertions import RestoreAttempt
from drills.crosscheck import CheckContext, str_list
from drills.foreign_source import ForeignBackup, ForeignSource
from drills.source import SOURCE_BACKUP
from drills.steps.base import StepFailed, StepKind
from drills.strict import Name, Strict, none_is_empty
from engine import backup as engine_backup
from engine import selection
from engine.components import component_kinds
from engine.components.base import Component
from engine.errors import BackupNotFound, ConfigError, DrproofError, IntegrityError
from engine.lazy import lazy
from engine.manifest import Manifest
from engine.repository.base import Repository

if TYPE_CHECKING:
    import psycopg2
    import redis

    from drills.runner import DrillRunner
else:
    psycopg2 = lazy("psycopg2")
    redis = lazy("redis")

HEALTH_TIMEOUT = 30.0
# The checks that can refuse a restore (engine.errors: IntegrityError.detector), and
# "set-missing" for a set that is no longer in the repository at all.
Detector = Literal["signature", "chain", "artifact", "encryption-key", "fingerprint", "set-missing", "point-in-time"]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RestoreSpec(Strict):
    from_: Name | None = Field(default=None, alias="from", description="Backup step name; default: the latest.")
    components: list[Name] | None = Field(
        default=None, description="Components to restore; default: all in the backup."
    )
    point_in_time: Literal["latest", "before_disaster"] | None = Field(
        default=None,
        description="Physical PostgreSQL only: replay archived WAL after the base backup, to the newest WAL that "
        "survived (`latest`) or to the moment the first disaster began (`before_disaster`). Default: the state "
        "of the backup itself.",
    )
    repository: Literal["primary", "offsite"] = Field(
        default="primary", description="Restore from the primary repository or from the offsite copy."
    )
    pick: Literal["latest"] | None = Field(
        default=None,
        description="Instead of `from`: the set the repository's chain says is the newest, chosen as `drproof recovery "
        "restore` chooses without `--id` (refused while a forged, replayed or deleted set leaves it in doubt).",
    )
    expect: Literal["success", "refused"] = Field(
        default="success",
        description="`refused` when the drill proves a damaged backup is rejected; the step then fails if it restores.",
    )
    refused_by: Annotated[list[Detector], BeforeValidator(_one_or_many)] = Field(
        default_factory=list,
        description="With `expect: refused`: the check(s) that must be the one refusing (`signature`, `chain`, "
        "`artifact`, `encryption-key`, `fingerprint`, `set-missing`, `point-in-time`: the moment is unreachable); a refusal by another check fails the step. "
        "Default: any.",
    )
    parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Components restored at the same time; each still waits for those it `depends_on`. With "
        "more than 1 the stack's RTO is its critical path, not the sum of its restores.",
    )


    @model_validator(mode="after")
    def _consistent(self) -> RestoreSpec:
        if self.refused_by and self.expect != "refused":
            raise ValueError("refused_by applies to `expect: refused` only")
        if self.pick is not None and self.from_ is not None:
            raise ValueError("give `from` (a backup step) or `pick: latest` (the repository's newest), not both")
        return self


class RestoreStep(Strict):
    """Restore components from a backup and wait until they are healthy."""

    restore: Annotated[RestoreSpec, BeforeValidator(none_is_empty)] = Field(default_factory=RestoreSpec)


def supports_pitr(kind: str) -> bool:
    return kind in component_kinds and bool(getattr(component_kinds.get(kind), "supports_point_in_time", False))


class Restore(StepKind):
    name: ClassVar[str] = "restore"
    model: ClassVar[type[Strict]] = RestoreStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        base = ("steps", index, self.name)
        listed = [c for _, c in str_list(spec.get("components"))]
        if listed and all(ctx.stateless(c) for c in listed):
            return  # services only: they are started again, nothing comes from a backup
        if not ctx.backups:
            ctx.add(base, "restore needs an earlier backup step")
        else:
            ctx.check_backup_ref((*base, "from"), spec.get("from"))
        ctx.check_components((*base, "components"), spec.get("components"))
        if spec.get("point_in_time") is None:
            return
        for c in [c for _, c in str_list(spec.get("components"))] or ctx.names:
            kind = ctx.kinds.get(c)
            if isinstance(kind, str) and not supports_pitr(kind):
                ctx.add(
                    (*base, "point_in_time"),
                    f"{c!r} is a {kind}, which cannot be restored to a point in time; "
                    "use kind postgres-physical, or list only such components in `components`",
                )

    def preflight(self, run: DrillRunner, index: int, spec: Any) -> list[str]:
        if spec.repository == "offsite" and run.offsite is None:
            raise StepFailed(
                f"step {index + 1}: restore from the offsite repository, but `repository.offsite` is not set"
            )
        return []

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        state = run.state
        assert state is not None
        work: dict[str, Callable[[], str]] = {}
        if spec.from_ == SOURCE_BACKUP and isinstance(state.source, ForeignSource):
            foreign = state.source
            fetched = sum(b.fetch_seconds for b in foreign.backups.values())
            why = "start of the restore of the foreign backups"
            if fetched:
                why += f", counting their download from S3 ({fetched:.1f} s) before it"
            _start_clock(run, why, before=fetched)
            for name in spec.components or foreign.components:
                if state.components[name].stateful:
                    work[name] = functools.partial(_restore_foreign, run, index, name, foreign.backups[name])
        elif spec.components is None or any(state.components[c].stateful for c in spec.components):
            repository = state.repository_of(spec.from_ or "")
            if spec.repository == "offsite":
                assert run.offsite is not None  # checked before the drill started
                repository = run.offsite
            chosen = _choose(run, spec, repository)
            if isinstance(chosen, Manifest) and spec.from_ == SOURCE_BACKUP:
                # A restore test times the restore itself: the whole stack is lost from the start.
                _start_clock(run, f"start of the restore of backup {chosen.id}")
            # Default: every component of the backup this run has (a restore test may restore
            # only some components of its source set).
            held = _held(run, chosen)
            for name in spec.components or held:
                if state.components[name].stateful:
                    work[name] = functools.partial(_restore_one, run, index, spec, name, chosen, repository)
        # Services come back after the data they need: each is started again once its
        # dependencies are restored (all of them when the step names no components).
        for name, comp in state.components.items():
            if not comp.stateful and (spec.components is None or name in spec.components):
                work[name] = functools.partial(_recover_one, run, index, name)
        plan.run(
            list(work),
            run.dependencies,
            spec.parallel,
            lambda name: work[name]() == "ok",
            lambda name, failed: _not_attempted(run, index, spec, name, failed),
        )


def _choose(run: DrillRunner, spec: Any, repository: Repository) -> Manifest | IntegrityError:
    """The set to restore: the named backup step's, or the chain's newest; a refusal to choose is returned."""
    if spec.pick != "latest":
        return run.find_backup(spec.from_)
    try:
        return selection.latest(repository).manifest
    except IntegrityError as exc:
        return exc


def _held(run: DrillRunner, chosen: Manifest | IntegrityError) -> list[str]:
    state = run.state
    assert state is not None
    if isinstance(chosen, Manifest):
        return [c.name for c in chosen.components if c.name in state.components]
    # No set was chosen: every data component the drill backs up would have been restored.
    return [n for n, c in state.components.items() if c.stateful]


def _start_clock(run: DrillRunner, why: str, before: float = 0.0) -> None:
    """Start the recovery's clock now, or ``before`` seconds earlier: a download of the backup
    that had to happen first (found by review: an S3 download of hours was left out of the RTO)."""
    state = run.state
    assert state is not None
    if state.recovery_started is None:
        state.recovery_started = run.clock.offset() - before
        state.recovery_started_by = why


def _recover_one(run: DrillRunner, index: int, name: str) -> str:
    """Start a service again once what it depends on is back; timed like a restore."""
    state = run.state
    assert state is not None
    comp, result = state.components[name], state.results[name]
    with run.phase(f"start {name} again", "restore", step=index + 1, component=name) as rec:
        t0 = time.monotonic()
        try:
            comp.recover()
        except DrproofError as exc:
            outcome, detail = "failed", str(exc)
        else:
            health = comp.health()
            result.healthy, result.health_detail = health.ok, health.detail
            outcome, detail = ("ok", health.detail) if health.ok else ("failed", f"started but not healthy: {health.detail}")
        state.restores.append(RestoreAttempt(index, "restart", "", name, outcome, detail, "success"))
        rec["detail"], rec["status"] = detail, outcome
        rec["data"] = {"outcome": outcome, "restarted": True}
        if outcome == "ok":
            result.restored_from = "restarted"
            result.restore_seconds = round(time.monotonic() - t0, 6)
            if state.recovery_started is not None:
                result.rto_seconds = round(run.clock.offset() - state.recovery_started, 6)
    return outcome


def _not_attempted(run: DrillRunner, index: int, spec: Any, name: str, failed: list[str]) -> None:
    """A component whose dependencies did not come back is not attempted: it could not work."""
    state = run.state
    assert state is not None
    detail = f"not attempted: {', '.join(failed)} (which it depends on) did not come back"
    with run.phase(f"restore {name}", "restore", step=index + 1, component=name) as rec:
        rec["detail"], rec["status"] = detail, "failed"
        rec["data"] = {"outcome": "failed", "blocked_by": failed}
    state.restores.append(
        RestoreAttempt(index, spec.from_ or "", "", name, "failed", detail, spec.expect, refused_by=tuple(spec.refused_by))
    )


def _restore_one(
    run: DrillRunner, index: int, spec: Any, name: str, chosen: Manifest | IntegrityError, repository: Repository
) -> str:
    state = run.state
    assert state is not None
    comp = state.components[name]
    result = state.results[name]
    backup_id = chosen.id if isinstance(chosen, Manifest) else ""
    if isinstance(chosen, Manifest) and state.backup_name_of(backup_id) is None:
        # The repository's newest set, which no backup step of the drill made (one that
        # failed as declared still wrote it): known by its id, so checks can find it.
        state.backups[backup_id] = chosen
    backup_name = (state.backup_name_of(backup_id) or backup_id) if backup_id else "the latest (in doubt)"
    where = " (offsite)" if spec.repository == "offsite" else ""
    with run.phase(f"restore {name} from {backup_name}{where}", "restore", step=index + 1, component=name) as rec:
        t0 = time.monotonic()
        if isinstance(chosen, Manifest):
            outcome, detail, detector = _attempt(run, index, spec, comp, chosen, repository)
        else:
            outcome, detail, detector = "refused", f"refusing to restore {name!r} (nothing was touched): {chosen}", chosen.detector
        elapsed = time.monotonic() - t0
        state.restores.append(
            RestoreAttempt(
                index, backup_name, backup_id, name, outcome, detail, spec.expect, detector, tuple(spec.refused_by)
            )
        )
        rec["detail"] = detail
        rec["data"] = {
            "backup_id": backup_id,
            "repository": spec.repository,
            "outcome": outcome,
            "expected": spec.expect,
            "point_in_time": spec.point_in_time,
            "refused_by": detector,
        }
        if name in state.proofs_deferred:
            rec["data"]["proof"] = "after the restore, by the fidelity check (the sandbox held nothing to protect)"
        if outcome == "ok":
            result.restored_from = backup_id
            result.restore_seconds = round(elapsed, 6)
            if state.recovery_started is not None:
                result.rto_seconds = round(run.clock.offset() - state.recovery_started, 6)
        if spec.expect == "refused":
            right = outcome == "refused" and (not spec.refused_by or detector in spec.refused_by)
            rec["status"] = "refused" if right else "failed"
            if outcome == "ok":
                rec["detail"] = "expected the restore to be refused, but it went ahead: " + detail
            elif outcome == "refused" and not right:
                rec["detail"] = (
                    f"refused, but by the {detector} check, not by {' or '.join(spec.refused_by)} as declared: {detail}"
                )
        else:
            rec["status"] = {"ok": "ok", "refused": "refused", "failed": "failed"}[outcome]
    return outcome


def _restore_foreign(run: DrillRunner, index: int, name: str, backup: ForeignBackup) -> str:
    """Restore one foreign backup into its fresh sandbox component, timed like any restore."""
    state = run.state
    assert state is not None
    comp, result = state.components[name], state.results[name]
    with run.phase(
        f"restore {name} from {backup.format.name} {backup.location}", "restore", step=index + 1, component=name
    ) as rec:
        t0 = time.monotonic()
        try:
            details = backup.format.restore(comp, backup.local, backup.facts)
        except DrproofError as exc:
            outcome, detail, details = "failed", str(exc), {}
        except (redis.RedisError, psycopg2.Error) as exc:
            outcome, detail, details = "failed", driver_failure(name, exc), {}
        else:
            health = wait_healthy(comp)
            result.healthy, result.health_detail = health.ok, health.detail
            outcome = "ok" if health.ok else "failed"
            detail = health.detail if health.ok else f"restored but not healthy: {health.detail}"
        if details.get("unverified"):  # restored, but on trust: said in the phase, and the run cannot pass
            state.unverified[name] = str(details["unverified"])
            detail = f"UNVERIFIED ({details['unverified']}): {detail}"
        state.restores.append(RestoreAttempt(index, SOURCE_BACKUP, backup.location, name, outcome, detail, "success"))
        rec["detail"], rec["status"] = detail, outcome
        rec["data"] = {"format": backup.format.name, "location": backup.location, "outcome": outcome, **details}
        if outcome == "ok":
            result.restored_from = f"{backup.format.name} {backup.location}"
            result.restore_seconds = round(time.monotonic() - t0, 6)
            if state.recovery_started is not None:
                result.rto_seconds = round(run.clock.offset() - state.recovery_started, 6)
    return outcome


class _KeyRefused(IntegrityError):
    detector = "encryption-key"


def _attempt(
    run: DrillRunner, index: int, spec: Any, comp: Component, manifest: Manifest, repository: Repository
) -> tuple[str, str, str | None]:
    """(outcome, detail, refusing check) of one restore: ok, refused (nothing touched) or failed."""
    state = run.state
    assert state is not None
    try:
        try:
            # Read again from the repository as an operator's restore would, through its
            # signature and the chain: what the drill remembers of the set proves nothing.
            manifest = selection.by_id(repository, manifest.id).manifest
            # A set the key on hand cannot open is refused before anything is touched.
            repository.cipher_for(manifest)
        except ConfigError as exc:
            raise _KeyRefused(f"refusing to restore {comp.instance!r}: {exc}") from exc
        except BackupNotFound as exc:
            why = f"backup {manifest.id} is missing from the repository ({exc})"
            return "refused", f"refusing to restore {comp.instance!r} (nothing was touched): {why}", "set-missing"
        if spec.point_in_time is None:
            deferred = _proof_deferrable(run, index, spec, comp.instance, manifest)
            if engine_backup.restore(repository, manifest, comp, defer_proof=deferred):
                state.proofs_deferred.add(comp.instance)
        else:
            _restore_point_in_time(run, comp, spec.point_in_time, repository)
    except IntegrityError as exc:
        return "refused", str(exc), exc.detector
    except DrproofError as exc:
        return "failed", str(exc), None
    except (redis.RedisError, psycopg2.Error) as exc:
        return "failed", driver_failure(comp.instance, exc), None
    run.hooks.after_restore(comp)
    health = wait_healthy(comp)
    state.results[comp.instance].healthy, state.results[comp.instance].health_detail = health.ok, health.detail
    if health.ok:
        return "ok", health.detail, None
    return "failed", f"restored but not healthy: {health.detail}", None


def _proof_deferrable(run: DrillRunner, index: int, spec: Any, name: str, manifest: Manifest) -> bool:
    """Whether this restore may leave its proof before the swap to the drill's fidelity check.

    Only a restore test's restore of its source set into the sandbox the runtime built,
    expected to succeed, as the timeline's last step with no workload writing (nothing can
    change or replace what it restored before the check reads it, and the check leaves
    no recorded write out), and compared with that set by a declared check: the sandbox
    holds no live data to protect, and the check reads the restored state whole.
    Everywhere else (a drill's live stack, an expected refusal, a restore later steps or
    a workload act on) the restore proves before the swap.
    """
    state = run.state
    assert state is not None
    source = state.backups.get(SOURCE_BACKUP)
    last = index == len(run.scenario.steps) - 1 and not state.workload_ran
    if state.source is None or source is None or source.id != manifest.id or spec.expect != "success" or not last:
        return False
    return run.restore_proven_afterwards(name, SOURCE_BACKUP)


def _restore_point_in_time(run: DrillRunner, comp: Component, point: str, repository: Repository) -> None:
    state = run.state
    assert state is not None
    target = None
    if point == "before_disaster":
        if state.first_disaster_at is None:
            raise StepFailed("point_in_time: before_disaster needs an earlier disaster step")
        target = state.first_disaster_at
    engine_backup.restore_to_time(repository, comp, target, live_wal=True)


def driver_failure(name: str, exc: Exception) -> str:
    """A client driver's error that escaped a component's restore, told as a failed restore.

    Why: a server that refuses drproof's password during a restore (a rotated secret)
    raised redis-py's ``AuthenticationError`` straight through ``engine.backup.restore``,
    and the drill ended as an "internal error (a bug in drproof)" with a traceback instead
    of a failed restore step. The drivers' messages never quote the password.
    """
    text = " ".join(str(exc).split())
    return f"restore of {name!r} failed: {type(exc).__name__}: {text}"


def wait_healthy(comp: Component) -> Any:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    health = comp.health()
    while not health.ok and time.monotonic() < deadline:
        time.sleep(0.2)
        health = comp.health()
    return health
