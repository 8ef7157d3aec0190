"""restore: restore components from a backup and wait until they are healthy."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from drills.assertions import RestoreAttempt
from drills.crosscheck import CheckContext, str_list
from drills.foreign_source import ForeignBackup, ForeignSource
from drills.source import SOURCE_BACKUP
from drills.steps.base import StepFailed, StepKind
from drills.strict import Name, Strict, none_is_empty
from engine import backup as engine_backup
from engine.components import component_kinds
from engine.components.base import Component
from engine.errors import ConfigError, DrproofError, IntegrityError
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
    expect: Literal["success", "refused"] = Field(
        default="success",
        description="`refused` when the drill proves a damaged backup is rejected; the step then fails if it restores.",
    )


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
        if spec.from_ == SOURCE_BACKUP and isinstance(state.source, ForeignSource):
            if state.recovery_started is None:
                state.recovery_started = run.clock.offset()
                state.recovery_started_by = "start of the restore of the foreign backups"
            for name in spec.components or state.source.components:
                _restore_foreign(run, index, name, state.source.backups[name])
            return
        manifest = run.find_backup(spec.from_)
        repository = state.repository_of(spec.from_ or "")
        if spec.from_ == SOURCE_BACKUP and state.recovery_started is None:
            # A restore test times the restore itself: the whole stack is lost from the start.
            state.recovery_started = run.clock.offset()
            state.recovery_started_by = f"start of the restore of backup {manifest.id}"
        if spec.repository == "offsite":
            assert run.offsite is not None  # checked before the drill started
            repository = run.offsite
        # Default: every component of the backup this run has (a restore test may restore
        # only some components of its source set).
        for name in spec.components or [c.name for c in manifest.components if c.name in state.components]:
            _restore_one(run, index, spec, name, manifest, repository)


def _restore_one(
    run: DrillRunner, index: int, spec: Any, name: str, manifest: Manifest, repository: Repository
) -> None:
    state = run.state
    assert state is not None
    comp = state.components[name]
    result = state.results[name]
    backup_name = state.backup_name_of(manifest.id) or manifest.id
    where = " (offsite)" if spec.repository == "offsite" else ""
    with run.phase(f"restore {name} from {backup_name}{where}", "restore", step=index + 1, component=name) as rec:
        t0 = time.monotonic()
        outcome, detail = _attempt(run, spec, comp, manifest, repository)
        elapsed = time.monotonic() - t0
        state.restores.append(RestoreAttempt(index, backup_name, manifest.id, name, outcome, detail, spec.expect))
        rec["detail"] = detail
        rec["data"] = {
            "backup_id": manifest.id,
            "repository": spec.repository,
            "outcome": outcome,
            "expected": spec.expect,
            "point_in_time": spec.point_in_time,
        }
        if outcome == "ok":
            result.restored_from = manifest.id
            result.restore_seconds = round(elapsed, 6)
            if state.recovery_started is not None:
                result.rto_seconds = round(run.clock.offset() - state.recovery_started, 6)
        if spec.expect == "refused":
            rec["status"] = "refused" if outcome == "refused" else "failed"
            if outcome == "ok":
                rec["detail"] = "expected the restore to be refused, but it went ahead: " + detail
        else:
            rec["status"] = {"ok": "ok", "refused": "refused", "failed": "failed"}[outcome]


def _restore_foreign(run: DrillRunner, index: int, name: str, backup: ForeignBackup) -> None:
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
        state.restores.append(RestoreAttempt(index, SOURCE_BACKUP, backup.location, name, outcome, detail, "success"))
        rec["detail"], rec["status"] = detail, outcome
        rec["data"] = {"format": backup.format.name, "location": backup.location, "outcome": outcome, **details}
        if outcome == "ok":
            result.restored_from = f"{backup.format.name} {backup.location}"
            result.restore_seconds = round(time.monotonic() - t0, 6)
            if state.recovery_started is not None:
                result.rto_seconds = round(run.clock.offset() - state.recovery_started, 6)


def _attempt(
    run: DrillRunner, spec: Any, comp: Component, manifest: Manifest, repository: Repository
) -> tuple[str, str]:
    """(outcome, detail) of one restore: ok, refused (damage, nothing touched) or failed."""
    state = run.state
    assert state is not None
    try:
        try:
            # A set the key on hand cannot open is refused before anything is touched.
            repository.cipher_for(manifest)
        except ConfigError as exc:
            raise IntegrityError(f"refusing to restore {comp.instance!r}: {exc}") from exc
        if spec.point_in_time is None:
            engine_backup.restore(repository, manifest, comp)
        else:
            _restore_point_in_time(run, comp, spec.point_in_time, repository)
    except IntegrityError as exc:
        return "refused", str(exc)
    except DrproofError as exc:
        return "failed", str(exc)
    except (redis.RedisError, psycopg2.Error) as exc:
        return "failed", driver_failure(comp.instance, exc)
    run.hooks.after_restore(comp)
    health = wait_healthy(comp)
    state.results[comp.instance].healthy, state.results[comp.instance].health_detail = health.ok, health.detail
    if health.ok:
        return "ok", health.detail
    return "failed", f"restored but not healthy: {health.detail}"


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
