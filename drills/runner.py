"""Executing a scenario's timeline and recording what really happened.

The runner owns the order of events and the clock: every phase is timed with the
monotonic clock (wall-clock UTC is recorded beside it for people), and every verdict is
left to the assertions, which judge only what was recorded here. Whatever happens —
a failed step, Ctrl-C, a bug — the runtime is torn down and a journal is produced; a
drill that did not run to the end is an error, never a pass.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills.assertions import DrillState, RestoreAttempt, assertion_kinds
from drills.controls import evaluate as evaluate_controls
from drills.loader import LoadedScenario
from drills.scenario import DisasterCommon, assertion_params
from drills.workload import writer_for
from drills.workload.run import Workload, recovery_point
from engine import __version__
from engine import backup as engine_backup
from engine.components import component_kinds
from engine.components.base import Component
from engine.components.postgres import PostgresComponent
from engine.crypto import Encryption, fingerprint
from engine.errors import ConfigError, DrproofError, IntegrityError
from engine.faults import REPOSITORY_TARGET, FaultContext, faults
from engine.journal import (
    AssertionResult,
    BackupRecord,
    ComponentResult,
    DisasterRecord,
    Measured,
    Objectives,
    Phase,
    RecoveryPoint,
    Results,
    ScenarioInfo,
    SourceLocation,
)
from engine.lazy import lazy
from engine.manifest import Manifest
from engine.repository import LocalRepository
from engine.repository.base import Repository
from engine.runtime import runtimes
from engine.runtime.base import Runtime

if TYPE_CHECKING:
    import psycopg2
    import redis
else:
    psycopg2 = lazy("psycopg2")
    redis = lazy("redis")

HEALTH_TIMEOUT = 30.0
# A backup's offsite copy is retried this often, with this pause (seconds) times the
# attempt number between tries: enough to ride out a blip, short enough for a drill.
OFFSITE_ATTEMPTS = 3
OFFSITE_BACKOFF = 0.2


class StepFailed(DrproofError):
    """A step that must succeed for the drill to continue did not."""


@dataclass
class Hooks:
    """Callbacks for progress output and for tests that tamper with a run on purpose."""

    phase_started: Callable[[str], None] = lambda name: None
    phase_finished: Callable[[Phase], None] = lambda phase: None
    after_restore: Callable[[Component], None] = lambda comp: None


@dataclass
class _Clock:
    start: float = field(default_factory=time.monotonic)

    def offset(self) -> float:
        return time.monotonic() - self.start


class DrillRunner:
    def __init__(
        self,
        loaded: LoadedScenario,
        *,
        runtime: str | None = None,
        work_root: Path | None = None,
        keep_workdir: bool = False,
        hooks: Hooks | None = None,
    ) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.runtime_name = runtime or self.scenario.stack.runtime
        self.work_root = work_root
        self.keep_workdir = keep_workdir
        self.hooks = hooks or Hooks()
        self.phases: list[Phase] = []
        self.backup_records: list[BackupRecord] = []
        self.tools: dict[str, str] = {}
        self.clock = _Clock()
        self.workdir: Path | None = None
        self.runtime: Runtime | None = None
        self.runtime_facts: dict[str, str] = {"runtime": self.runtime_name}
        self.state: DrillState | None = None
        self.internal_error: str | None = None
        self.workload: Workload | None = None
        self.interrupted_results: Results | None = None  # set when Ctrl-C ends a run
        self.offsite: Repository | None = None
        # The run's encryption key: generated here, kept only in memory, never written.
        self._key: bytes | None = None
        self.backup_outcomes: list[dict[str, Any]] = []

    # -- phases --------------------------------------------------------------------------
    @contextmanager
    def phase(
        self, name: str, kind: str, *, step: int | None = None, component: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Time a phase; the body may set ``status``, ``detail`` and ``data`` in the dict it gets."""
        self.hooks.phase_started(name)
        rec: dict[str, Any] = {"status": "ok", "detail": "", "data": {}}
        started_at = datetime.now(UTC)
        t0 = self.clock.offset()
        try:
            yield rec
        except BaseException as exc:
            rec["status"] = "error"
            rec["detail"] = str(exc) if isinstance(exc, DrproofError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            phase = Phase(
                name=name,
                kind=kind,
                step=step,
                component=component,
                status=rec["status"],
                started_at=started_at,
                finished_at=datetime.now(UTC),
                offset_seconds=round(t0, 6),
                duration_seconds=round(self.clock.offset() - t0, 6),
                detail=rec["detail"],
                data=rec["data"],
            )
            self.phases.append(phase)
            self.hooks.phase_finished(phase)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Results:
        started_at = datetime.now(UTC)
        self.clock = _Clock()
        error: str | None = None
        interrupted: BaseException | None = None
        self.assertion_results: list[AssertionResult] | None = None
        try:
            self._run_timeline()
            assert self.state is not None
            self.state.stack_rto = self._stack_rto()
            # Judged before teardown: some checks (backup_integrity) read the repository.
            with self.phase("evaluate assertions", "check"):
                self.assertion_results = self._assertions()
        except DrproofError as exc:
            error = str(exc)
        except KeyboardInterrupt as exc:
            error = "interrupted by the user (Ctrl-C or SIGTERM); the drill did not finish"
            interrupted = exc
        except Exception as exc:
            # A bug in drproof or an unexpected library error: the drill could not run.
            # Record it (exit 2, never a pass), keep the traceback for the bug report.
            self.internal_error = traceback.format_exc()
            error = f"internal error (a bug in drproof; traceback on stderr): {type(exc).__name__}: {exc}"
        finally:
            teardown_error = self._teardown()
            if teardown_error and error is None:
                error = teardown_error
        results = self._results(started_at, error)
        if interrupted is not None:
            results.exit_code = 130
            self.interrupted_results = results
            raise interrupted
        return results

    def _run_timeline(self) -> None:
        s = self.scenario
        parent = self.work_root or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"drproof-{s.name}-", dir=parent))
        if s.repository.path is not None:
            repo_path = s.repository.path
            if not repo_path.is_absolute():
                repo_path = self.loaded.base_dir / repo_path
        else:
            repo_path = self.workdir / "repository"
        encryption = None
        if s.repository.encryption:
            self._key = os.urandom(32)
            encryption = _drill_encryption(self._key)
        repository = LocalRepository(repo_path, encryption)
        if s.repository.offsite is not None:
            offsite_path = s.repository.offsite.path
            if offsite_path is None:
                offsite_path = self.workdir / "offsite"
            elif not offsite_path.is_absolute():
                offsite_path = self.loaded.base_dir / offsite_path
            self.offsite = LocalRepository(offsite_path, encryption)
        self.state = state = DrillState(
            repository=repository, rto_objective=s.objectives.rto, rpo_objective=s.objectives.rpo
        )

        unsupported = [
            f"{name} ({spec.kind}: {', '.join(sorted(k.runtimes))})"
            for name, spec in s.stack.components.items()
            if (k := component_kinds.get(spec.kind)).runtimes is not None and self.runtime_name not in k.runtimes
        ]
        for i, step in enumerate(s.steps):
            if s.step_kind(i) == "restore" and step.restore.repository == "offsite" and self.offsite is None:
                raise StepFailed(
                    f"step {i + 1}: restore from the offsite repository, but `repository.offsite` is not set"
                )
            if s.step_kind(i) == "disaster":
                fault = faults.get(step.disaster.fault)
                if fault.runtimes is not None and self.runtime_name not in fault.runtimes:
                    unsupported.append(f"step {i + 1}, fault {fault.name} ({', '.join(sorted(fault.runtimes))})")
        if unsupported:
            raise StepFailed(
                f"these components cannot run on the {self.runtime_name} runtime: {'; '.join(unsupported)} "
                "(the runtimes each kind supports are in parentheses)"
            )
        with self.phase(f"start {self.runtime_name} runtime", "provision"):
            try:
                runtime_cls = runtimes.get(self.runtime_name)
            except KeyError as exc:
                raise StepFailed(str(exc.args[0])) from None
            self.runtime = runtime_cls(self.workdir, images={str(k): v for k, v in s.stack.images.items()})

        for name, comp_spec in s.stack.components.items():
            kind = component_kinds.get(comp_spec.kind)
            params = comp_spec.seed
            sql_file = getattr(params, "sql_file", None)
            if sql_file is not None and not sql_file.is_absolute():
                params = params.model_copy(update={"sql_file": self.loaded.base_dir / sql_file})
            comp = kind(name, params, self.runtime)
            state.components[name] = comp
            state.results[name] = ComponentResult(name=name, kind=kind.name)
            with self.phase(f"provision {name}", "provision", component=name) as rec:
                comp.provision()
            with self.phase(f"seed {name}", "seed", component=name) as rec:
                rec["data"] = state.results[name].seed = comp.seed()
        self.runtime_facts = self.runtime.describe() if self.runtime else self.runtime_facts

        for i, step in enumerate(s.steps):
            kind_name = s.step_kind(i)
            spec: Any = getattr(step, kind_name)
            if kind_name == "backup":
                self._backup(i, spec)
            elif kind_name == "wait":
                with self.phase(f"wait {spec:g}s", "wait", step=i + 1):
                    time.sleep(spec)
            elif kind_name == "workload":
                self._start_workload(i, spec)
            elif kind_name == "sql":
                self._sql(i, spec)
            elif kind_name == "disaster":
                self._disaster(i, spec)
            elif kind_name == "restore":
                self._restore(i, spec)

        with self.phase("final fingerprints", "check") as rec:
            for name, comp in state.components.items():
                try:
                    fp = comp.fingerprint()
                    state.final_fingerprints[name] = fp
                    state.results[name].fingerprint_final = fp.digest
                except DrproofError as exc:
                    state.fingerprint_errors[name] = str(exc)
                health = comp.health()
                if state.results[name].healthy is None or not health.ok:
                    state.results[name].healthy = health.ok
                    state.results[name].health_detail = health.detail
            rec["data"] = {n: f.digest for n, f in state.final_fingerprints.items()}
        if self.workload is not None:
            self._measure_rpo()

    # -- workload and recovery point -----------------------------------------------------------
    def _start_workload(self, i: int, spec: Any) -> None:
        state = self.state
        assert state is not None
        if self.workload is not None:
            raise StepFailed(f"step {i + 1}: a workload is already running; a drill has one workload step")
        workload = Workload(self.clock.offset)
        names = spec.components or [n for n, c in state.components.items() if writer_for(c) is not None]
        for name in names:
            comp = state.components[name]
            writer = writer_for(comp)
            if writer is None:
                raise StepFailed(f"step {i + 1}: no workload writer for {name!r} (a {comp.name})")
            workload.add(name, writer(comp), spec.rate)
        if not workload.streams:
            raise StepFailed(f"step {i + 1}: no component of this stack takes a workload")
        with self.phase(f"start workload ({spec.rate:g} writes/s)", "workload", step=i + 1) as rec:
            workload.start()
            rec["detail"] = "writing to " + ", ".join(workload.streams)
        self.workload = workload
        state.workload_ran = True

    def _stop_workload(self, why: str) -> None:
        workload = self.workload
        if workload is None or not workload.running:
            return
        with self.phase(f"stop workload ({why})", "workload") as rec:
            workload.stop()
            rec["data"] = {
                name: {"acknowledged": len(s.acks), "failed": s.failures} for name, s in workload.streams.items()
            }
            rec["detail"] = ", ".join(f"{n}: {len(s.acks)} acknowledged" for n, s in workload.streams.items())

    def _measure_rpo(self) -> None:
        state, workload = self.state, self.workload
        assert state is not None and workload is not None and workload.started_at is not None
        with self.phase("measure recovery point", "check") as rec:
            windows: dict[str, float | None] = {}
            for name, stream in workload.streams.items():
                point = recovery_point(stream.acks, stream.writer.survivors(), workload.started_at)
                result = RecoveryPoint(rate=stream.rate, failed_writes=stream.failures, **point)
                state.results[name].recovery_point = result
                windows[name] = result.loss_window_seconds
            rec["data"] = windows
            measured = [w for w in windows.values() if w is not None]
            state.stack_rpo = max(measured) if measured and len(measured) == len(windows) else None
            rec["detail"] = ", ".join(f"{n}: {w}s" for n, w in windows.items())

    def _backup(self, i: int, spec: Any) -> None:
        """One backup step; with ``expect: failure`` its failure is recorded and judged, not fatal."""
        name = spec.name or f"step{i + 1}-backup"
        if spec.expect == "success":
            self._backup_step(i, spec, name)
            self.backup_outcomes.append({"step": i + 1, "backup": name, "expected": "success", "outcome": "ok"})
            return
        try:
            self._backup_step(i, spec, name)
        except DrproofError as exc:
            self.backup_outcomes.append(
                {"step": i + 1, "backup": name, "expected": "failure", "outcome": "failed", "detail": str(exc)}
            )
            # The phase already recorded the failure as an error; it was declared, so say so.
            last = self.phases[-1]
            if last.step == i + 1 and last.kind == "backup":
                last.status = "failed"
                last.detail = f"failed as expected: {last.detail}"
        else:
            self.backup_outcomes.append({"step": i + 1, "backup": name, "expected": "failure", "outcome": "ok"})

    def _backup_step(self, i: int, spec: Any, name: str) -> None:
        state = self.state
        assert state is not None
        chosen = [state.components[c] for c in (spec.components or list(state.components))]
        with self.phase(f"backup {name}", "backup", step=i + 1) as rec:
            t0 = time.monotonic()
            manifest = engine_backup.backup(
                state.repository,
                chosen,
                label=name,
                labels={"scenario": self.scenario.name, "scenario_sha256": self.loaded.sha256, "step": str(i + 1)},
            )
            duration = time.monotonic() - t0
            rec["data"] = {"backup_id": manifest.id}
            if self.offsite is not None:
                offsite: dict[str, Any] = {}
                rec["data"]["offsite"] = offsite
                self._copy_offsite(manifest, offsite)
            state.backups[name] = manifest
            for c in chosen:
                taken = manifest.component(c.instance).fingerprint
                assert taken is not None  # asked for above
                state.results[c.instance].fingerprint_at_backup = taken.digest
            self.tools.update(manifest.tools)
            self.backup_records.append(
                BackupRecord(
                    name=name,
                    id=manifest.id,
                    created_at=manifest.created_at,
                    components=[c.instance for c in chosen],
                    artifacts=[
                        {"key": a.key, "size": a.size, "raw_size": a.raw_size, "sha256": a.sha256}
                        for a in manifest.artifacts
                    ],
                    manifest_sha256=hashlib.sha256(manifest.to_json().encode()).hexdigest(),
                    duration_seconds=round(duration, 6),
                )
            )
            rec["detail"] = (
                f"backup set {manifest.id}: {len(manifest.artifacts)} artifacts, "
                f"{sum(a.size for a in manifest.artifacts)} bytes stored"
            )

    def _copy_offsite(self, manifest: Manifest, record: dict[str, Any]) -> None:
        """Copy a new set (and any parent the offsite lacks) offsite, retrying; raise if it never works.

        The backup step fails when this raises: a set that exists only locally is one
        disk away from gone, and nobody notices a gap that is only logged. Every attempt
        goes into ``record`` (the phase's data) as it happens, so a failure keeps them too.
        """
        state = self.state
        assert state is not None and self.offsite is not None
        attempts: list[dict[str, Any]] = []
        record.update(repository=self.offsite.describe().get("path", ""), verified=False, attempts=attempts)
        for attempt in range(1, OFFSITE_ATTEMPTS + 1):
            t0 = time.monotonic()
            try:
                copied = engine_backup.sets_to_copy(state.repository, self.offsite, manifest)
                for m in copied:
                    engine_backup.copy_set(state.repository, self.offsite, m)
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

    def _replace_offsite(self, repo: Repository) -> None:
        self.offsite = repo

    def _lose_key(self) -> dict[str, str]:
        """Forget the run's key: every later operation on either repository gets a new random one."""
        state = self.state
        assert state is not None and self._key is not None
        before = fingerprint(self._key)
        self._key = os.urandom(32)
        encryption = _drill_encryption(self._key)
        state.repository.encryption = encryption
        if self.offsite is not None:
            self.offsite.encryption = encryption
        return {"key_fingerprint_before": before, "key_fingerprint_after": fingerprint(self._key)}

    def _find_backup(self, name: str | None) -> Manifest:
        state = self.state
        assert state is not None
        if not state.backups:
            raise StepFailed("no backup has been taken yet")
        if name is None:
            return list(state.backups.values())[-1]
        return state.backups[name]

    def _disaster(self, i: int, spec: Any) -> None:
        state = self.state
        assert state is not None and isinstance(spec, DisasterCommon)
        fault_name: str = spec.fault  # type: ignore[attr-defined]
        fault = faults.get(fault_name)(spec)  # type: ignore[arg-type]
        name = spec.name or fault_name
        target = spec.target
        component = None if target == REPOSITORY_TARGET else state.components[target]
        ctx = FaultContext(
            component=component,
            repository=state.repository,
            find_backup=self._find_backup,
            rng=random.Random(spec.random_seed),  # type: ignore[attr-defined]
            offsite=self.offsite,
            replace_offsite=self._replace_offsite if self.offsite is not None else None,
            lose_key=self._lose_key if self._key is not None else None,
        )
        # The workload ends where the disaster begins: the last write it had acknowledged
        # is the one a perfect recovery would keep.
        self._stop_workload("disaster")
        if state.first_disaster_at is None:
            if self._wants_state_before_disaster():
                with self.phase("fingerprints before the disaster", "check") as rec:
                    state.fingerprints_before_disaster = {n: c.fingerprint() for n, c in state.components.items()}
                    rec["data"] = {n: f.digest for n, f in state.fingerprints_before_disaster.items()}
            state.first_disaster_at = datetime.now(UTC)
        with self.phase(
            f"disaster {name} on {target}", "disaster", step=i + 1, component=None if component is None else target
        ) as rec:
            effect = fault.inject(ctx)
            injected = self.clock.offset()
            rec["data"] = effect
            rec["detail"] = ", ".join(f"{k}={v}" for k, v in effect.items() if not isinstance(v, list | dict))
        if state.first_disaster_offset is None:
            state.first_disaster_offset = injected
        if component is not None:
            result = state.results[target]
            result.damaged_by.append(name)
            # Damaged again after a restore: it is down until the next successful restore.
            result.rto_seconds = None
            result.healthy = None
        state.disasters.append(
            DisasterRecord(
                step=i + 1,
                name=name,
                fault=fault_name,
                target=target,
                injected_at=datetime.now(UTC),
                offset_seconds=round(injected, 6),
                effect=effect,
            )
        )

    def _restore(self, i: int, spec: Any) -> None:
        state = self.state
        assert state is not None
        manifest = self._find_backup(spec.from_)
        backup_name = state.backup_name_of(manifest.id) or manifest.id
        repository = state.repository
        if spec.repository == "offsite":
            assert self.offsite is not None  # checked before the drill started
            repository = self.offsite
        targets = spec.components or [c.name for c in manifest.components]
        for name in targets:
            comp = state.components[name]
            result = state.results[name]
            where = " (offsite)" if spec.repository == "offsite" else ""
            with self.phase(f"restore {name} from {backup_name}{where}", "restore", step=i + 1, component=name) as rec:
                t0 = time.monotonic()
                try:
                    try:
                        # A set the key on hand cannot open is refused before anything is touched.
                        repository.cipher_for(manifest)
                    except ConfigError as exc:
                        raise IntegrityError(f"refusing to restore {name!r}: {exc}") from exc
                    if spec.point_in_time is None:
                        engine_backup.restore(repository, manifest, comp)
                    else:
                        self._restore_point_in_time(comp, spec.point_in_time, repository)
                except IntegrityError as exc:
                    outcome, detail = "refused", str(exc)
                except DrproofError as exc:
                    outcome, detail = "failed", str(exc)
                except (redis.RedisError, psycopg2.Error) as exc:
                    outcome, detail = "failed", _driver_failure(name, exc)
                else:
                    self.hooks.after_restore(comp)
                    health = _wait_healthy(comp)
                    result.healthy, result.health_detail = health.ok, health.detail
                    outcome = "ok" if health.ok else "failed"
                    detail = health.detail if health.ok else f"restored but not healthy: {health.detail}"
                elapsed = time.monotonic() - t0
                state.restores.append(RestoreAttempt(i, backup_name, manifest.id, name, outcome, detail, spec.expect))
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
                    if state.first_disaster_offset is not None:
                        result.rto_seconds = round(self.clock.offset() - state.first_disaster_offset, 6)
                if spec.expect == "refused":
                    rec["status"] = "refused" if outcome == "refused" else "failed"
                    if outcome == "ok":
                        rec["detail"] = "expected the restore to be refused, but it went ahead: " + detail
                else:
                    rec["status"] = {"ok": "ok", "refused": "refused", "failed": "failed"}[outcome]

    def _wants_state_before_disaster(self) -> bool:
        return any(
            getattr(params, "against", None) == "before_disaster"
            for params in (assertion_params(a)[1] for a in self.scenario.assertions)
        )

    def _sql(self, i: int, spec: Any) -> None:
        state = self.state
        assert state is not None
        comp = state.components[spec.target]
        with self.phase(f"sql on {spec.target}", "change", step=i + 1, component=spec.target) as rec:
            if not isinstance(comp, PostgresComponent):
                raise StepFailed(f"step {i + 1}: {spec.target!r} is a {comp.name}, not a PostgreSQL component")
            conn = comp.connect()
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(spec.statement)
                    rec["detail"] = f"{cur.statusmessage} ({cur.rowcount} rows)"
            except psycopg2.Error as exc:
                raise StepFailed(f"step {i + 1}: SQL on {spec.target!r} failed: {str(exc).strip()}") from exc
            finally:
                conn.close()

    def _restore_point_in_time(self, comp: Component, point: str, repository: Repository) -> None:
        state = self.state
        assert state is not None
        target = None
        if point == "before_disaster":
            if state.first_disaster_at is None:
                raise StepFailed("point_in_time: before_disaster needs an earlier disaster step")
            target = state.first_disaster_at
        engine_backup.restore_to_time(repository, comp, target, live_wal=True)

    def _teardown(self) -> str | None:
        problem = None
        try:
            self._stop_workload("teardown")
        except Exception as exc:  # never let cleanup hide the real result
            problem = f"teardown: stopping the workload: {type(exc).__name__}: {exc}"
        if self.runtime is not None:
            try:
                with self.phase(f"stop {self.runtime_name} runtime", "teardown"):
                    self.runtime.close()
            except DrproofError as exc:
                problem = f"teardown: {exc}"
            except Exception as exc:  # never let cleanup hide the real result
                problem = f"teardown: {type(exc).__name__}: {exc}"
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return problem

    # -- results -----------------------------------------------------------------------------
    def _source(self, *path: str | int) -> SourceLocation:
        """Where in the scenario file a check was declared, for the report and failures."""
        mark = self.loaded.document.locate(path)
        return SourceLocation(
            file=str(self.loaded.path), line=mark.line if mark else None, column=mark.column if mark else None
        )

    def _timeline_check(self) -> AssertionResult:
        """The steps' own declarations hold: each restore did what its ``expect`` said.

        Always present, because a restore that failed (or went ahead when the scenario
        said it must be refused) must never leave a drill green, whatever it asserts.
        """
        state = self.state
        assert state is not None
        findings = [
            f"step {r.step + 1}: restore of {r.component} from {r.backup} was expected to "
            f"{'be refused' if r.expected == 'refused' else 'succeed'} but {r.outcome}"
            + (f": {r.detail}" if r.outcome != "ok" else "")
            for r in state.restores
            if (r.expected == "refused") != (r.outcome == "refused") or (r.expected == "success" and r.outcome != "ok")
        ] + [
            f"step {b['step']}: backup {b['backup']} was expected to fail but succeeded"
            for b in self.backup_outcomes
            if b["expected"] == "failure" and b["outcome"] == "ok"
        ]
        evidence = {
            "steps_run": len(self.scenario.steps),
            "restores": [
                {
                    "step": r.step + 1,
                    "component": r.component,
                    "backup": r.backup,
                    "expected": r.expected,
                    "outcome": r.outcome,
                }
                for r in state.restores
            ],
            "backups": self.backup_outcomes,
        }
        summary = (
            f"{len(findings)} step(s) did not do what the scenario declared"
            if findings
            else f"all {len(self.scenario.steps)} steps ran; {len(state.restores)} restore(s) behaved as declared"
            + (
                f"; {failing} backup(s) failed as declared"
                if (failing := sum(b["expected"] == "failure" for b in self.backup_outcomes))
                else ""
            )
        )
        return AssertionResult(
            id="timeline",
            name="timeline",
            status="fail" if findings else "pass",
            evidence=evidence,
            source=self._source("steps"),
            summary=summary,
            findings=findings,
        )

    def _assertions(self) -> list[AssertionResult]:
        state = self.state
        assert state is not None
        out: list[AssertionResult] = [self._timeline_check()]
        for idx, spec in enumerate(self.scenario.assertions):
            tag, params = assertion_params(spec)
            source = self._source("assertions", idx)
            try:
                for r in assertion_kinds.get(tag)().evaluate(params, state):
                    r.source = source
                    out.append(_negative_control(r) if getattr(params, "expect", "pass") == "fail" else r)
            except DrproofError as exc:
                out.append(AssertionResult(id=tag, name=tag, status="error", summary=str(exc), source=source))
        return out

    def _stack_rto(self) -> float | None:
        state = self.state
        if state is None or state.first_disaster_offset is None:
            return None
        damaged = [r for r in state.results.values() if r.damaged_by]
        considered = damaged or [r for r in state.results.values() if r.restored_from]
        if not considered or any(r.rto_seconds is None for r in considered):
            return None
        return max(r.rto_seconds for r in considered if r.rto_seconds is not None)

    def _describe_repositories(self) -> dict[str, str]:
        if self.state is None:
            return {}
        facts = self.state.repository.describe()
        if self.offsite is not None:
            facts["offsite"] = self.offsite.describe().get("path", self.offsite.name)
        return facts

    def _results(self, started_at: datetime, error: str | None) -> Results:
        state = self.state
        if error is None and self.assertion_results is not None:
            assertions = self.assertion_results
        else:
            assertions = [
                AssertionResult(
                    id=tag,
                    name=tag,
                    status="not_run",
                    source=self._source("assertions", idx),
                    summary="not checked: the drill stopped before the end",
                )
                for idx, (tag, _) in enumerate(assertion_params(a) for a in self.scenario.assertions)
            ]
        statuses = {a.status for a in assertions}
        if error is not None or "error" in statuses or "not_run" in statuses or not assertions:
            verdict, code = "error", 2
        elif "fail" in statuses:
            verdict, code = "fail", 1
        else:
            verdict, code = "pass", 0
        components = list(state.results.values()) if state else []
        s = self.scenario
        results = Results(
            drproof_version=__version__,
            scenario=ScenarioInfo(
                name=s.name,
                description=s.description,
                file=str(self.loaded.path),
                sha256=self.loaded.sha256,
                source=self.loaded.document.text,
            ),
            verdict=verdict,  # type: ignore[arg-type]
            exit_code=code,
            runtime=self.runtime_facts,
            repository=self._describe_repositories(),
            environment=_environment(),
            tools=self.tools,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            objectives=Objectives(rto_seconds=s.objectives.rto, rpo_seconds=s.objectives.rpo),
            measured=Measured(
                rto_seconds=state.stack_rto if state else None,
                components={r.name: r.rto_seconds for r in components},
                drill_seconds=round(self.clock.offset(), 6),
                rpo_seconds=state.stack_rpo if state else None,
                rpo_components={
                    r.name: r.recovery_point.loss_window_seconds for r in components if r.recovery_point is not None
                },
            ),
            components=components,
            phases=self.phases,
            backups=self.backup_records,
            disasters=state.disasters if state else [],
            assertions=assertions,
            error=error,
            report={k: v for k, v in s.report.model_dump().items() if v is not None},
        )
        results.controls = evaluate_controls(s.controls, results)
        return results


def _negative_control(r: AssertionResult) -> AssertionResult:
    """Judge a check the scenario expects to fail: failing is its success.

    A check that passes on damage injected for it is blind, and that fails the drill.
    "error" and "not run" stay what they are: a check that could not run detected nothing.
    """
    r.expected, r.observed = "fail", r.status
    if r.status == "fail":
        r.status = "pass"
        r.evidence = {**r.evidence, "findings_as_expected": r.findings}
        r.summary = f"failed as expected: {r.summary}"
        r.findings = []
    elif r.status == "pass":
        r.status = "fail"
        r.findings = ["expected this check to fail on the damage the scenario injected, but it passed", *r.findings]
        r.summary = f"passed, but was expected to fail: {r.summary}"
    return r


def _driver_failure(name: str, exc: Exception) -> str:
    """A client driver's error that escaped a component's restore, told as a failed restore.

    Why: a server that refuses drproof's password during a restore (a rotated secret)
    raised redis-py's ``AuthenticationError`` straight through ``engine.backup.restore``,
    and the drill ended as an "internal error (a bug in drproof)" with a traceback instead
    of a failed restore step. The drivers' messages never quote the password.
    """
    text = " ".join(str(exc).split())
    return f"restore of {name!r} failed: {type(exc).__name__}: {text}"


def _drill_encryption(key: bytes) -> Encryption:
    return Encryption(key=key, source="the drill's in-memory key")


def _wait_healthy(comp: Component) -> Any:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    health = comp.health()
    while not health.ok and time.monotonic() < deadline:
        time.sleep(0.2)
        health = comp.health()
    return health


def _environment() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
    }
