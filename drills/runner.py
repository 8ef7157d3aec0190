"""Executing a scenario's timeline and recording what really happened.

The runner owns the order of events and the clock: every phase is timed with the
monotonic clock (wall-clock UTC is recorded beside it for people), and every verdict is
left to the assertions, which judge only what was recorded here. Whatever happens —
a failed step, Ctrl-C, a bug — the runtime is torn down and a journal is produced; a
drill that did not run to the end is an error, never a pass.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills import plan
from drills.assertions import DrillState, assertion_kinds
from drills.controls import evaluate as evaluate_controls
from drills.durations import format_duration
from drills.foreign_source import ForeignSource, foreign_component, open_foreign
from drills.loader import LoadedScenario
from drills.scenario import assertion_params
from drills.signing_spec import SigningSpec
from drills.source import SOURCE_BACKUP, SourceSpec, open_source, sandbox_component, source_record
from drills.steps import StepFailed, step_kinds
from drills.workload.run import Workload, recovery_point
from engine import __version__
from engine.audit import describe_repository
from engine.chain import NOT_PROVEN
from engine.components import component_kinds
from engine.components.base import Component
from engine.crypto import Encryption, fingerprint
from engine.errors import DrproofError
from engine.fingerprint import Fingerprint
from engine.journal import (
    AssertionResult,
    BackupRecord,
    ComponentResult,
    Measured,
    Objectives,
    Phase,
    RecoveryPoint,
    Results,
    ScenarioInfo,
    Scope,
    SourceLocation,
)
from engine.manifest import Manifest
from engine.repository import LocalRepository, OpenContext, open_repository
from engine.repository.base import Repository
from engine.runtime import refusal, runtimes
from engine.runtime.base import Runtime
from engine.scratch import kept_dir, owned_dir
from engine.signing import RepositoryTrust

TIMELINE = "timeline"  # the implicit check every drill gets: its steps ran as declared


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
        history: Path | None = None,
    ) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.runtime_name = runtime or self.scenario.stack.runtime
        self.work_root = work_root
        self.keep_workdir = keep_workdir
        self.hooks = hooks or Hooks()
        self.history = history  # where earlier restore tests are recorded (``drift``)
        # ``depends_on`` of every component: the order of starts and restores.
        self.dependencies: dict[str, set[str]] = {
            name: set(spec.depends_on) for name, spec in self.scenario.stack.components.items()
        }
        self._phase_lock = threading.Lock()  # phases of components restored in parallel
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
        self.key: bytes | None = None
        self.backup_outcomes: list[dict[str, Any]] = []

    # -- phases --------------------------------------------------------------------------
    @contextmanager
    def phase(
        self, name: str, kind: str, *, step: int | None = None, component: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Time a phase; the body may set ``status``, ``detail`` and ``data`` in the dict it gets."""
        with self._phase_lock:
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
            with self._phase_lock:
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
            self._previous_restore_test()
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
        self.workdir = self._make_workdir(s.name)
        self.state = DrillState(
            repository=self._open_repositories(),
            rto_objective=s.objectives.rto,
            rpo_objective=s.objectives.rpo,
            base_dir=self.loaded.base_dir,
        )
        self._preflight()
        self._start_runtime()
        if s.source is not None:
            self._provision_sandbox(s.source)
        self._provision_stack()
        for i, step in enumerate(s.steps):
            kind_name = s.step_kind(i)
            step_kinds.get(kind_name)().run(self, i, getattr(step, kind_name))
        # A workload a failover left running ends with the timeline: the recovery point is
        # read from what the writers recorded, not from writes still in flight.
        self.stop_workload("end of the timeline")
        self._final_checks()
        if self.workload is not None:
            self._measure_rpo()

    def _scenario_path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.loaded.base_dir / path

    def _open_repositories(self) -> Repository:
        """The drill's repository (and offsite copy), encrypted with a key kept only in memory.

        Opened through the backend registry like the standalone engine's: a local one
        defaults to a private directory of the run, an S3 one keeps the run's sets under
        ``<prefix>/<run work directory's name>``.
        """
        s = self.scenario
        assert self.workdir is not None
        encryption = None
        if s.repository.encryption:
            self.key = os.urandom(32)
            encryption = _drill_encryption(self.key)
        trust = self._trust()
        if s.repository.offsite is not None:
            offsite = s.repository.offsite.path
            offsite_path = self._scenario_path(offsite) if offsite else self.workdir / "offsite"
            self.offsite = LocalRepository(offsite_path, encryption, trust=trust)
            self.offsite.keeps_witness = False
            self.offsite.role = "copy"  # its tombstones are its own; the primary's are refused there
        spec = s.repository.model_copy()
        spec.resolve_paths(self.loaded.base_dir)
        run = OpenContext(
            encryption=encryption, run_dir=self.workdir / "repository", run_name=self.workdir.name, trust=trust
        )
        repo = open_repository(spec, run)
        repo.keeps_witness = False  # the drill's own sets: no host record outlives the run (engine/witness.py)
        return repo

    def _trust(self) -> RepositoryTrust | None:
        """The drill's signing keys: made for this run and kept in memory, or the files the scenario names."""
        signing = self.scenario.repository.signing
        if signing is True:
            return RepositoryTrust.generated()
        if isinstance(signing, SigningSpec):
            spec = signing.model_copy(deep=True)
            spec.resolve_paths(self.loaded.base_dir)
            return spec.trust(require_signer=True)
        return None

    def _preflight(self) -> None:
        """Refuse, before anything starts, components and steps this runtime cannot run."""
        s = self.scenario
        unsupported = [
            f"{name} ({spec.kind} {why})"
            for name, spec in s.stack.components.items()
            if (k := component_kinds.get(spec.kind))
            and (why := refusal(self.runtime_class(), k.needs_for(getattr(spec, k.params_key)), k.server)) is not None
        ]
        for i, step in enumerate(s.steps):
            kind_name = s.step_kind(i)
            unsupported += step_kinds.get(kind_name)().preflight(self, i, getattr(step, kind_name))
        if unsupported:
            raise StepFailed(
                f"these components cannot run on the {self.runtime_name} runtime: {'; '.join(unsupported)}"
            )

    def runtime_class(self) -> type[Runtime]:
        """The class of the runtime this drill runs on, for checks made before it starts."""
        try:
            return runtimes.get(self.runtime_name)
        except KeyError as exc:
            raise StepFailed(str(exc.args[0])) from None

    def _start_runtime(self) -> None:
        assert self.workdir is not None
        with self.phase(f"start {self.runtime_name} runtime", "provision"):
            runtime_cls = self.runtime_class()
            images = {str(k): v for k, v in self.scenario.stack.images.items()}
            self.runtime = runtime_cls(self.workdir, images=images)

    def _provision_stack(self) -> None:
        """Start and seed every component of the stack, each after what it depends on.

        A service that depends on a restore test's sandbox components is not started here:
        those are empty until the restore, which starts it once they are back.
        """
        state, runtime = self.state, self.runtime
        assert state is not None and runtime is not None
        specs = self.scenario.stack.components
        sandbox = set(state.components)  # a restore test's, provisioned already
        for name in plan.topological(list(specs), self.dependencies):
            comp_spec = specs[name]
            kind = component_kinds.get(comp_spec.kind)
            comp = kind(name, self._component_params(kind, comp_spec), runtime)
            comp.dependencies = {d: state.components[d] for d in self.dependencies.get(name, set())}  # type: ignore[attr-defined]
            state.components[name] = comp
            state.results[name] = ComponentResult(name=name, kind=kind.name)
            with self.phase(f"provision {name}", "provision", component=name):
                comp.provision()
            if not comp.stateful and self.dependencies.get(name, set()) & sandbox:
                continue  # started by the restore, once its sandbox dependencies are back
            with self.phase(f"seed {name}" if comp.stateful else f"start {name}", "seed", component=name) as rec:
                rec["data"] = state.results[name].seed = comp.seed()
        self.runtime_facts = runtime.describe()

    def _component_params(self, kind: type[Component], comp_spec: Any) -> Any:
        """The component's parameters, with paths written in the scenario made relative to it."""
        params = getattr(comp_spec, kind.params_key)
        updates = {
            key: self._scenario_path(value)
            for key in ("sql_file", "cwd")
            if isinstance(value := getattr(params, key, None), Path)
        }
        if "cwd" in type(params).model_fields and params.cwd is None:
            updates["cwd"] = self.loaded.base_dir
        return params.model_copy(update=updates) if updates else params

    def _provision_sandbox(self, spec: SourceSpec) -> None:
        """Open the source, and give each of its components an empty sandbox server or
        directory of the version its backup needs (nothing is seeded)."""
        state = self.state
        assert state is not None
        if spec.backups is not None:
            self._provision_foreign(spec)
            return
        with self.phase("open the source repository (read-only)", "provision") as rec:
            opened = open_source(spec, self.loaded.base_dir)
            state.source = opened
            state.backups[SOURCE_BACKUP] = opened.manifest
            state.repositories[SOURCE_BACKUP] = opened.repository
            rec["detail"] = f"backup {opened.manifest.id}: {opened.picked.reason}"
            rec["data"] = {"backup_id": opened.manifest.id, "age_seconds": round(opened.age_seconds, 3)}
            self.backup_records.append(source_record(opened))
        for name in opened.components:
            assert self.runtime is not None
            record = opened.manifest.component(name)
            fingerprint = record.fingerprint.digest if record.fingerprint else None
            self._provision_one(name, sandbox_component(opened, name, self.runtime, self.runtime_name), fingerprint)

    def _provision_foreign(self, spec: SourceSpec) -> None:
        state = self.state
        assert state is not None and spec.backups is not None and self.workdir is not None
        with self.phase("inspect the foreign backups", "provision") as rec:
            opened = open_foreign(spec.backups, spec.s3, self.loaded.base_dir, self.workdir)
            state.source = opened
            rec["detail"] = opened.describe()
            rec["data"] = {
                name: {
                    "taken_at": b.facts.taken_at.isoformat() if b.facts.taken_at else None,
                    **b.facts.details,
                    **({"download_seconds": round(b.fetch_seconds, 6)} if b.fetch_seconds else {}),
                }
                for name, b in opened.backups.items()
            }
        for name, backup in opened.backups.items():
            assert self.runtime is not None
            self._provision_one(name, foreign_component(backup, self.runtime), None)

    def _provision_one(self, name: str, comp: Component, fingerprint_at_backup: str | None) -> None:
        state = self.state
        assert state is not None
        state.components[name] = comp
        state.results[name] = ComponentResult(name=name, kind=comp.name, fingerprint_at_backup=fingerprint_at_backup)
        with self.phase(f"provision sandbox {name}", "provision", component=name):
            comp.provision()

    def _previous_restore_test(self) -> None:
        """The newest passing restore test of this source in the history, for ``drift``."""
        state = self.state
        assert state is not None
        key = self._scope([]).source if state.source is not None else None
        if key is None:
            return
        if self.history is None or not self.history.is_file():
            state.previous_why = "no history to compare with: run with --history FILE to record restore tests"
            return
        from drills.history import open_history

        with open_history(self.history, create=False) as history:
            passing = [r for r in history.runs(source=key, limit=100) if r.verdict == "pass"]
        state.previous_restore_test = passing[0] if passing else None
        if not passing:
            state.previous_why = f"no earlier passing restore test of this source in {self.history}"

    def _foreign_scope(self, opened: ForeignSource, systems: list[str], seeded: list[str]) -> Scope:
        """A restore test of backups other tools made: each named with its format and location."""
        taken = opened.taken_at
        age = opened.age_seconds
        when = (
            f", the oldest taken {taken.strftime('%Y-%m-%d %H:%M:%S UTC')} "
            f"({format_duration(max(round(age), 0))} before the test)"
            if taken is not None
            else ""
        )
        statement = (
            f"restore test of backups not made by drproof ({opened.describe()}){when}, restored into a sandbox on "
            f"the {self.runtime_name} runtime; no fingerprint was taken when they were made, so fidelity is not "
            "compared" + (f"; also seeded by drproof: {', '.join(seeded)}" if seeded else "")
        )
        return Scope(
            kind="restore-test",
            statement=statement,
            systems=systems,
            backup_id=opened.backup_id,
            backup_taken_at=taken,
            backup_age_seconds=round(age, 3) if taken is not None else None,
            repository="foreign backups",
            source=opened.describe(),
        )

    def _final_fingerprint(self, name: str, comp: Component) -> Fingerprint:
        """The component's fingerprint now, in the scheme of the backup it was restored from.

        A restore test may restore a set an earlier drproof took; its fingerprint is then
        of an older scheme, which the kind still computes (``fingerprint_like``), so the
        comparison is like with like and says what the old scheme cannot see.
        """
        state = self.state
        assert state is not None
        restored = [r for r in state.restores if r.component == name and r.outcome == "ok"]
        manifest = state.backups.get(restored[-1].backup) if restored else None
        expected = manifest.component(name).fingerprint if manifest is not None else None
        if expected is not None and expected.scheme != comp.fingerprint_scheme:
            return comp.fingerprint_like(expected)
        return comp.fingerprint()

    def _final_checks(self) -> None:
        """The fingerprint (of data components) and health of every component once the timeline has run."""
        state = self.state
        assert state is not None
        with self.phase("final fingerprints", "check") as rec:
            for name, comp in state.components.items():
                if comp.stateful:  # a service holds no data: its health is what counts
                    self._record_final_fingerprint(name, comp)
                health = comp.health()
                if state.results[name].healthy is None or not health.ok:
                    state.results[name].healthy = health.ok
                    state.results[name].health_detail = health.detail
            rec["data"] = {n: f.digest for n, f in state.final_fingerprints.items()}

    def _record_final_fingerprint(self, name: str, comp: Component) -> None:
        state = self.state
        assert state is not None
        try:
            fp = self._final_fingerprint(name, comp)
        except DrproofError as exc:
            state.fingerprint_errors[name] = str(exc)
            return
        if (why := fp.unmeasured()) is not None:
            state.fingerprint_errors[name] = f"{name} could not be read, so nothing was measured: {why}"
            return
        state.final_fingerprints[name] = fp
        state.results[name].fingerprint_final = fp.digest
        state.results[name].content, state.results[name].row_counts = content_of(fp)

    def stop_workload(self, why: str) -> None:
        workload = self.workload
        if workload is None or not workload.running:
            return
        with self.phase(f"stop workload ({why})", "workload") as rec:
            workload.stop(why)
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
                try:
                    survivors = stream.writer.survivors()
                except DrproofError as exc:  # not "nothing survived": nothing was read
                    result = RecoveryPoint(
                        measured=False,
                        reason=f"the surviving writes could not be read: {exc}",
                        rate=stream.rate,
                        acknowledged=len(stream.acks),
                        failed_writes=stream.failures,
                    )
                else:
                    stopped = workload.stop_requested_at if workload.stop_reason == "disaster" else None
                    point = recovery_point(stream.acks, survivors, workload.started_at, stream.takeovers, stopped)
                    if not stream.acks:  # written to, and never acknowledged: say why
                        point["reason"] = (
                            f"the workload wrote to it and it acknowledged none of {stream.failures} write(s)"
                            + (f" (last error: {stream.last_error})" if stream.last_error else "")
                        )
                    result = RecoveryPoint(rate=stream.rate, failed_writes=stream.failures, **point)
                state.results[name].recovery_point = result
                # A lower bound is no measurement of the stack's RPO (the rpo check judges it).
                windows[name] = None if result.lower_bound else result.loss_window_seconds
            rec["data"] = windows
            measured = [w for w in windows.values() if w is not None]
            state.stack_rpo = max(measured) if measured and len(measured) == len(windows) else None
            rec["detail"] = ", ".join(f"{n}: {w}s" for n, w in windows.items())

    def replace_offsite(self, repo: Repository) -> None:
        self.offsite = repo

    def lose_key(self) -> dict[str, str]:
        """Forget the run's key: every later operation on either repository gets a new random one."""
        state = self.state
        assert state is not None and self.key is not None
        before = fingerprint(self.key)
        self.key = os.urandom(32)
        encryption = _drill_encryption(self.key)
        state.repository.encryption = encryption
        if self.offsite is not None:
            self.offsite.encryption = encryption
        return {"key_fingerprint_before": before, "key_fingerprint_after": fingerprint(self.key)}

    def find_backup(self, name: str | None) -> Manifest:
        state = self.state
        assert state is not None
        if not state.backups:
            raise StepFailed("no backup has been taken yet")
        if name is None:
            return list(state.backups.values())[-1]
        if name not in state.backups:
            raise StepFailed(f"no backup named {name!r} was taken (a backup step that failed leaves none)")
        return state.backups[name]

    def wants_state_before_disaster(self) -> bool:
        return any(
            getattr(params, "against", None) == "before_disaster"
            for params in (assertion_params(a)[1] for a in self.scenario.assertions)
        )

    def restore_proven_afterwards(self, component: str, backup: str) -> bool:
        """Whether a declared check compares ``component``, once restored, with backup step ``backup``."""
        for spec in self.scenario.assertions:
            tag, params = assertion_params(spec)
            if assertion_kinds.get(tag)().proves_restore(params, component, backup):
                return True
        return False

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    def _make_workdir(self, name: str) -> Path:
        """The run's private directory; in the system temp directory, named so a killed run's is removed.

        A drill SIGKILLed mid-run left its whole directory (the repository, a restored
        production database) in /tmp for ever. Named for this process, it is removed by
        the next run of the same scenario once this process is gone. A ``--work-dir`` (maybe
        shared between hosts, where a pid says nothing) and a kept directory are never swept.
        """
        if self.work_root is None and not self.keep_workdir:
            return owned_dir(f"drproof-{name}-")
        parent = (self.work_root or Path(tempfile.gettempdir())).absolute()
        parent.mkdir(parents=True, exist_ok=True)
        return kept_dir(f"drproof-{name}-", parent)

    def _teardown(self) -> str | None:
        problem = None
        try:
            self.stop_workload("teardown")
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
        findings = (
            [
                f"step {r.step + 1}: restore of {r.component} from {r.backup} was expected to "
                f"{'be refused' if r.expected == 'refused' else 'succeed'} but {r.outcome}"
                + (f": {r.detail}" if r.outcome != "ok" else "")
                for r in state.restores
                if (r.expected == "refused") != (r.outcome == "refused")
                or (r.expected == "success" and r.outcome != "ok")
            ]
            + [
                f"step {r.step + 1}: restore of {r.component} from {r.backup} was refused by the {r.detector} check, "
                f"not by {' or '.join(r.refused_by)} as declared: {r.detail}"
                for r in state.restores
                if r.expected == "refused"
                and r.outcome == "refused"
                and r.refused_by
                and r.detector not in r.refused_by
            ]
            + [
                f"step {b['step']}: backup {b['backup']} was expected to fail but succeeded"
                for b in self.backup_outcomes
                if b["expected"] == "failure" and b["outcome"] == "ok"
            ]
            + [
                f"step {b['step']}: backup {b['backup']} is complete, but: {line}"
                for b in self.backup_outcomes
                if b["expected"] == "success" and b["outcome"] == "findings"
                for line in b["findings"]
            ]
        )
        evidence = {
            "steps_run": len(self.scenario.steps),
            "restores": [
                {
                    "step": r.step + 1,
                    "component": r.component,
                    "backup": r.backup,
                    "expected": r.expected,
                    "outcome": r.outcome,
                    **({"refused_by": r.detector} if r.outcome == "refused" else {}),
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
            id=TIMELINE,
            name=TIMELINE,
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
                    out.append(_negative_control(r) if getattr(params, "negative_control", False) else r)
            except DrproofError as exc:
                out.append(AssertionResult(id=tag, name=tag, status="error", summary=str(exc), source=source))
        return out

    def _stack_rto(self) -> float | None:
        state = self.state
        if state is None or state.recovery_started is None:
            return None
        # A restore test's sandbox starts empty: every component of it must come back,
        # restored or not (found by review: one of four restored made "stack recovered").
        # A component a restore replaced was down while it was restored, damaged or not.
        considered = [state.results[n] for n in state.recovering]
        if not considered or any(r.rto_seconds is None for r in considered):
            return None
        return max(r.rto_seconds for r in considered if r.rto_seconds is not None)

    def _describe_repositories(self) -> dict[str, str]:
        if self.state is None:
            return {}
        facts = self.state.repository.describe()
        # A restore test's integrity is that of the repository its backup is read from.
        source = getattr(self.state.source, "repository", None)
        trust = (source if isinstance(source, Repository) else self.state.repository).trust
        facts.pop("signing", None)
        if trust is not None and trust.verifies:
            facts["signing"] = trust.describe()
        else:
            facts["integrity"] = NOT_PROVEN
        if self.offsite is not None:
            facts["offsite"] = self.offsite.describe().get("path", self.offsite.name)
        return facts

    def _results(self, started_at: datetime, error: str | None) -> Results:
        state = self.state
        if self.assertion_results is not None:
            # The checks were judged (before teardown): keep what they found even when
            # teardown then failed. Found by review: a teardown error replaced them all
            # with "not checked", hiding a fidelity failure that had found lost data.
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
        assertions = unique_ids(assertions)
        statuses = {a.status for a in assertions}
        declared = {a.status for a in assertions if a.id != TIMELINE}  # the implicit check only says the steps ran
        if error is None and declared == {"not_compared"} and "fail" not in statuses:
            # Every check the scenario asked for had nothing to compare with: nothing was proven, so no pass.
            # (A failed timeline, a restore that failed, is itself the finding: the run fails.)
            error = "nothing was compared: every check this drill declares reported 'not compared'"
        if error is None and state is not None and state.unverified and "fail" not in statuses:
            # A restore from a backup nothing verified proves nothing about the backup: never a pass.
            error = "restored from a backup nothing verified, so this run cannot pass: " + "; ".join(
                f"{name}: {why}" for name, why in state.unverified.items()
            )
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
                critical_path=plan.critical_path(
                    {r.name: r.rto_seconds for r in components if r.damaged_by or r.restored_from}, self.dependencies
                ),
            ),
            components=components,
            phases=self.phases,
            backups=self.backup_records,
            disasters=state.disasters if state else [],
            assertions=assertions,
            error=error,
            report={k: v for k, v in s.report.model_dump().items() if v is not None},
        )
        results.scope = self._scope(components)
        results.controls = evaluate_controls(s.controls, results)
        return self._attest(results)

    def _attest(self, results: Results) -> Results:
        """Who ran the drill (drills/identity.py), and the record with the scenario's secrets masked (drills/scrub.py)."""
        from drills import identity, scrub

        results.identity = identity.collect(self.loaded.path, self.scenario.report.operator)
        return scrub.scrub(results)

    def _scope(self, components: list[ComponentResult]) -> Scope:
        """Say plainly whether this run restored a real backup or data drproof seeded."""
        systems = [f"{c.name} ({c.kind})" for c in components]
        seeded = [n for n in self.scenario.stack.components]
        opened = self.state.source if self.state is not None else None
        if opened is None:
            if self.scenario.source is not None:  # the source could not be opened
                named = self.scenario.source.config or ", ".join(self.scenario.source.backups or {})
                statement = f"restore test of the backups of {named}; no backup could be opened"
                return Scope(kind="restore-test", statement=statement, systems=systems)
            statement = (
                f"synthetic drill: drproof seeded deterministic data into a private {self.runtime_name} stack "
                f"({', '.join(seeded)}); no production backup was involved"
            )
            return Scope(kind="synthetic", statement=statement, systems=systems)
        if isinstance(opened, ForeignSource):
            return self._foreign_scope(opened, systems, seeded)
        m = opened.manifest
        repo = "the repository " + describe_repository(opened.repository.describe())
        statement = (
            f"restore test of backup {m.id}, taken {m.created_at.strftime('%Y-%m-%d %H:%M:%S UTC')} "
            f"({format_duration(max(round(opened.age_seconds), 0))} before the test) from {repo}, restored into a "
            f"sandbox on the {self.runtime_name} runtime"
            + (f"; also seeded by drproof: {', '.join(seeded)}" if seeded else "")
        )
        return Scope(
            kind="restore-test",
            statement=statement,
            systems=systems,
            backup_id=m.id,
            backup_taken_at=m.created_at,
            backup_age_seconds=round(opened.age_seconds, 3),
            repository=repo,
            source=f"{repo.removeprefix('the repository ')} :: {', '.join(sorted(opened.components))}",
            source_config=str(opened.config_path),
            picked=opened.picked.reason,
            seed=opened.picked.seed,
        )


MAX_ROW_COUNTS = 1000  # tables listed per component in results.json; the totals cover all


def content_of(fp: Fingerprint) -> tuple[dict[str, int], dict[str, int]]:
    """What a fingerprint counted: totals by unit, and rows per table (the first thousand)."""
    rows: dict[str, int] = {}
    for name, part in fp.parts.items():  # inline parts only: a streamed tree has files, not tables
        if part.unit == "rows" and len(rows) < MAX_ROW_COUNTS:
            rows[name] = part.count
    return fp.totals(), rows


def _negative_control(r: AssertionResult) -> AssertionResult:
    """Judge a check the scenario expects to fail: failing is its success.

    A check that passes on damage injected for it is blind, and that fails the drill.
    "error" and "not run" stay what they are: a check that could not run detected nothing.
    """
    r.expected, r.observed = "fail", r.status
    if r.status == "fail" and r.evidence.get("measured") is False:
        r.status = "error"  # it failed without reading anything: no detection
        r.summary = f"measured nothing, so it detected nothing: {r.summary}"
    elif r.status == "fail":
        r.status = "pass"
        r.evidence = {**r.evidence, "findings_as_expected": r.findings}
        r.summary = f"failed as expected: {r.summary}"
        r.findings = []
    elif r.status == "pass":
        r.status = "fail"
        r.findings = ["expected this check to fail on the damage the scenario injected, but it passed", *r.findings]
        r.summary = f"passed, but was expected to fail: {r.summary}"
    return r


def _drill_encryption(key: bytes) -> Encryption:
    return Encryption(key=key, source="the drill's in-memory key")


def _environment() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
    }


def unique_ids(assertions: list[AssertionResult]) -> list[AssertionResult]:
    """Each check's id once in the run: a repeated one gets ``#2``, ``#3`` in the scenario's order.

    Two unnamed checks of one kind on one target (two ``query`` checks of ``shop-db``)
    were both ``query[shop-db]``, one passing and one failing; a CI view that merges test
    cases by name, or anything keyed by id, could show the failure as passed (found by
    review). The order of the scenario keeps the suffixes the same from run to run, so
    history compares like with like.
    """
    seen: dict[str, int] = {}
    taken = {a.id for a in assertions}
    for a in assertions:
        seen[a.id] = seen.get(a.id, 0) + 1
        if seen[a.id] > 1:
            n = seen[a.id]
            while f"{a.id}#{n}" in taken:
                n += 1
            a.id = f"{a.id}#{n}"
            taken.add(a.id)
    return assertions
