"""``drproof recovery restore``: restores that say where they write, ask first, and never guess.

A restore replaces data. On the worst day an operator must know exactly what will be
replaced before anything is, so a restore names its target explicitly:

- ``--to SCRATCH.yaml``: another configuration naming other servers and directories (a
  sandbox, a staging copy, a new host). A target that is (or lies inside) one the
  production configuration names is refused: that is what ``--in-place`` is for.
- ``--in-place``: the live servers and directories the configuration names. Confirmed
  on a terminal, or with ``--yes`` where nobody is there to type.
- ``--dry-run`` (with either): every artifact proven, what is at each target now and
  what the backup holds, and nothing changed: no hooks, no restore.

Each component gets its outcome whatever happens to the others: a server that cannot be
reached or a directory whose parent is missing fails that component, and the rest are
still restored and reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drills.backup_config import BackupConfig, secret_variables
from engine import backup as engine_backup
from engine.audit import AuditLog, Outcome
from engine.childenv import operator_environment
from engine.components.base import UNHEALTHY_AT_BACKUP, Component
from engine.errors import ConfigError, DrproofError, IntegrityError, NotComparable, UnhealthySet
from engine.fingerprint import compare, summarize
from engine.lazy import lazy
from engine.manifest import Manifest
from engine.repository.base import Repository

if TYPE_CHECKING:
    import psycopg2
    import redis
else:
    psycopg2 = lazy("psycopg2")
    redis = lazy("redis")

Progress = Callable[[str], None]

NOT_COMPARED_PITR = "not compared: a point in time has no fingerprint taken at backup time"


@dataclass
class RestoreOutcome:
    component: str
    status: str  # restored | refused | failed
    detail: str
    fidelity: str = "not compared"  # match | differs | not compared: <why>
    differences: list[str] = field(default_factory=list)
    target: str = ""
    notes: list[str] = field(default_factory=list)  # what the comparison could not see, and why


@dataclass
class Request:
    """What to restore, from which backup, into which targets."""

    config: BackupConfig  # where the backups are: repository and encryption
    targets: BackupConfig  # where they go: ``config`` itself in place, or the --to file
    in_place: bool
    manifest: Manifest
    names: list[str]
    point_in_time: datetime | str | None = None
    accept_unhealthy: bool = False  # --accept-unhealthy: restore in place a set taken of an unhealthy source

    @classmethod
    def build(
        cls,
        config: BackupConfig,
        manifest: Manifest,
        names: Sequence[str] | None,
        *,
        targets: BackupConfig | None,
        in_place: bool,
        point_in_time: datetime | str | None = None,
        accept_unhealthy: bool = False,
    ) -> Request:
        if (targets is None) == (not in_place):
            raise ConfigError(
                "recovery restore needs a target: --to SCRATCH-CONFIG restores into the servers and directories "
                "another configuration names (a sandbox), --in-place replaces the live data this configuration "
                "names (after confirmation); add --dry-run to either to see what would happen"
            )
        request = cls(
            config,
            targets or config,
            in_place,
            manifest,
            list(names or [c.name for c in manifest.components]),
            point_in_time,
            accept_unhealthy,
        )
        request.check()
        return request

    def check(self) -> None:
        """Refuse a request that cannot be right before anything is read or written."""
        missing = [n for n in self.names if n not in self.targets.components]
        if missing:
            where = "the configuration" if self.in_place else "the --to configuration"
            raise ConfigError(f"backup {self.manifest.id} holds {', '.join(missing)}, which {where} does not name")
        if self.point_in_time is not None:
            wrong = [n for n in self.names if self.targets.components[n].kind != "postgres-physical"]
            if wrong:
                raise ConfigError(
                    f"a point-in-time restore applies to postgres-physical components only; {', '.join(wrong)} "
                    "cannot be: name the physical ones with --components"
                )
        if self.in_place:
            self._refuse_unhealthy_in_place()
            return
        for name in self.names:
            target = self.targets.components[name]
            clashes = [
                p for p, spec in self.config.components.items() if spec.overlaps(target) or target.overlaps(spec)
            ]
            if clashes:
                raise ConfigError(
                    f"--to names {target.location()} for {name!r}, which is where production component "
                    f"{clashes[0]!r} lives: a restore there replaces live data. Use --in-place for that (it asks "
                    "first), or point the --to configuration at a scratch server or directory"
                )


    def _refuse_unhealthy_in_place(self) -> None:
        """A set taken of a source that failed its health check is not put over live data unasked.

        The set holds the damage as it was (a NaN vector, an index contradicting its
        metadata): restored in place it brings that damage back, perhaps over a source
        repaired since, and "latest" picks it like any other set (found by review). In a
        sandbox (``--to``) it may be looked at freely; a point-in-time restore chooses its
        own base. Refused before anything is read or written, dry run included.
        """
        if self.point_in_time is not None or self.accept_unhealthy:
            return
        unhealthy = {
            c.name: c.details.get(UNHEALTHY_AT_BACKUP)
            for c in self.manifest.components
            if c.name in self.names and isinstance(c.details, dict) and c.details.get(UNHEALTHY_AT_BACKUP)
        }
        if unhealthy:
            what = "; ".join(f"{name}: {detail}" for name, detail in unhealthy.items())
            raise UnhealthySet(
                f"backup {self.manifest.id} was taken of a source that failed its health check ({what}); restored "
                "in place it would bring that damage back over the live data, which were not touched. Choose an "
                "earlier set with --id (drproof recovery list marks sets with findings), look at this one in a "
                "sandbox with --to, or, if this state is what you want back, add --accept-unhealthy"
            )


# -- dry run -------------------------------------------------------------------------------------


@dataclass
class PlannedStep:
    component: str
    kind: str
    target: str
    now: str
    backup_holds: str
    artifacts: int
    stored_bytes: int
    proof: str  # "proven" or the problems found

    def describe(self) -> str:
        return (
            f"{self.component} ({self.kind}) -> {self.target}\n"
            f"    now:          {self.now}\n"
            f"    backup holds: {self.backup_holds}\n"
            f"    artifacts:    {self.artifacts} ({self.stored_bytes:,} bytes stored), {self.proof}"
        )


def plan(request: Request, repo: Repository, progress: Progress) -> list[PlannedStep]:
    """What a restore would do, with every artifact proven; changes nothing."""
    from drills.standalone import components

    steps = []
    for comp in components(request.targets, request.names, provision=False):
        spec = request.targets.components[comp.instance]
        record = request.manifest.component(comp.instance)
        artifacts = request.manifest.artifacts_of(comp.instance)
        progress(f"proving the artifacts of {comp.instance}")
        problems = [c for c in (repo.prove_artifact(request.manifest, a) for a in artifacts) if not c.ok]
        proof = (
            "every check passed"
            if not problems
            else "DAMAGED: " + "; ".join(f"{c.artifact} {c.problem}" for c in problems)
        )
        holds = (
            summarize(record.fingerprint)
            if record.fingerprint is not None
            else "no fingerprint: a restore would be refused"
        )
        steps.append(
            PlannedStep(
                comp.instance,
                comp.name,
                spec.location(),
                _current_state(comp),
                holds,
                len(artifacts),
                sum(a.size for a in artifacts),
                proof,
            )
        )
    return steps


def _current_state(comp: Component) -> str:
    try:
        comp.provision()
        health = comp.health()
    except (DrproofError, OSError, psycopg2.Error, redis.RedisError) as exc:
        return f"cannot be read: {exc}"
    return health.detail if health.ok else f"unhealthy: {health.detail}"


def check_confirmable(request: Request, assume_yes: bool) -> None:
    """Refuse at once, before anything is read, an in-place restore nobody can confirm."""
    if request.in_place and not assume_yes and not sys.stdin.isatty():
        raise ConfigError(
            "--in-place replaces live data and nobody is at a terminal to confirm it; add --yes to confirm, or run "
            "with --dry-run first to see what would be replaced"
        )


def confirm(request: Request, steps: list[PlannedStep], out: Any, assume_yes: bool) -> None:
    """Ask before replacing live data; refuse where nobody can answer and --yes is absent."""
    if not request.in_place or assume_yes:
        return
    check_confirmable(request, assume_yes)
    out.print("This replaces LIVE data:", markup=False)
    for step in steps:
        out.print(step.describe(), markup=False, highlight=False)
    out.print("Type 'yes' to restore in place: ", end="", markup=False)
    if sys.stdin.readline().strip() != "yes":
        raise ConfigError("not confirmed; nothing was changed")


# -- restore -------------------------------------------------------------------------------------


@dataclass
class HookRun:
    """One operator hook as it ran: recorded in the JSON output and the audit log, pass or fail."""

    when: str  # before_restore | after_restore
    argv: list[str]
    exit_code: int | None  # None: it could not be started, or ran out of time
    seconds: float
    stdout: str = ""  # the last MAX_HOOK_OUTPUT characters, secrets masked
    stderr: str = ""
    error: str | None = None  # why it did not run to an exit code

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        what = f"{self.when} hook {self.argv[0]!r}"
        if self.error is not None:
            return f"{what} could not run: {self.error}"
        last = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
        return f"{what} exited {self.exit_code}" + (f": {last[0][:300]}" if not self.ok else "")


@dataclass
class RestoreResult:
    outcomes: list[RestoreOutcome]
    hooks: list[HookRun] = field(default_factory=list)


def restore(
    request: Request,
    repo: Repository,
    progress: Progress,
    audit: AuditLog | None = None,
    repo_where: str = "",
) -> RestoreResult:
    """Restore every requested component; one outcome each, recorded in the audit log with the hooks."""
    with (audit or AuditLog(None)).operation("restore", repo_where) as op:
        op.backup_ids = [request.manifest.id]
        op.components = list(request.names)
        op.extra["target"] = (
            "in place"
            if request.in_place
            else "--to " + ", ".join(request.targets.components[n].location() for n in request.names)
        )
        with repo.lock(exclusive=False):
            result = _restore_all(request, repo, progress)
        op.extra["results"] = {o.component: f"{o.status}, fidelity {o.fidelity}" for o in result.outcomes}
        op.extra["hooks"] = [{"when": h.when, "argv0": h.argv[0], "exit_code": h.exit_code, "error": h.error} for h in result.hooks]
        problem = _audit_problem(result)
        if problem is not None:
            op.fail(problem[0], outcome=problem[1])
    return result


def _audit_problem(result: RestoreResult) -> tuple[str, Outcome] | None:
    outcomes = result.outcomes
    hooks = [h.describe() for h in result.hooks if not h.ok]
    failed = [f"{o.component}: {o.detail}" for o in outcomes if o.status == "failed"] + hooks
    refused = [f"{o.component}: {o.detail}" for o in outcomes if o.status == "refused"]
    differs = [o.component for o in outcomes if o.fidelity == "differs"]
    unproven = [o.component for o in outcomes if o.status == "restored" and o.fidelity.startswith("not compared")]
    problems = [f"failed: {'; '.join(failed)}"] if failed else []
    problems += [f"content differs from the backup: {', '.join(differs)}"] if differs else []
    if problems:
        problems += [f"refused: {'; '.join(refused)}"] if refused else []
        problems += [f"restored but not compared with a fingerprint: {', '.join(unproven)}"] if unproven else []
        return "; ".join(problems), "failed"
    if refused:
        return f"refused (nothing was changed): {'; '.join(refused)}", "refused"
    if unproven:
        return f"restored but not compared with a fingerprint: {', '.join(unproven)}", "unverified"
    return None


def _restore_all(request: Request, repo: Repository, progress: Progress) -> RestoreResult:
    from drills.standalone import components

    hooks = request.targets.hooks
    secrets = secret_variables(request.config, request.targets)
    result = RestoreResult([])
    result.hooks += run_hooks(hooks.before_restore, "before_restore", progress, secrets)
    if not all(h.ok for h in result.hooks):
        return result  # a failed before_restore hook: nothing is restored, nothing changed
    for comp in components(
        request.targets, request.names, provision=False, foreign_backups=not request.in_place, restoring=True
    ):
        outcome = _restore_one(request, repo, comp, progress)
        outcome.target = request.targets.components[comp.instance].location()
        result.outcomes.append(outcome)
    result.hooks += run_hooks(hooks.after_restore, "after_restore", progress, secrets)
    return result


def _restore_one(request: Request, repo: Repository, comp: Component, progress: Progress) -> RestoreOutcome:
    """One component's restore, never raising for what a user can cause or fix."""
    name = comp.instance
    try:
        comp.provision()
        request.targets.components[name].configure(comp)
        if request.point_in_time is not None:
            return _restore_point_in_time(repo, comp, request.point_in_time, progress, live_wal=request.in_place)
        progress(f"restoring {name} from {request.manifest.id}")
        engine_backup.restore(repo, request.manifest, comp)
    except IntegrityError as exc:
        return RestoreOutcome(name, "refused", str(exc))
    except DrproofError as exc:
        return RestoreOutcome(name, "failed", str(exc))
    except (OSError, psycopg2.Error, redis.RedisError) as exc:
        return RestoreOutcome(name, "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    except Exception as exc:  # a fault of drproof's: this component fails, the others and the hooks still run
        return RestoreOutcome(name, "failed", f"unexpected {type(exc).__name__} (a drproof bug): {str(exc)[:500]}")
    return _judge(repo, comp, request.manifest, progress)


def _judge(repo: Repository, comp: Component, manifest: Manifest, progress: Progress) -> RestoreOutcome:
    """Health, then the restored component's fingerprint against the backup's."""
    try:
        health = comp.health()
        if not health.ok:
            return RestoreOutcome(comp.instance, "failed", f"restored but not healthy: {health.detail}")
        expected = engine_backup.recorded_fingerprint(repo, manifest, comp.instance)
        outcome = RestoreOutcome(comp.instance, "restored", health.detail)
        if expected is None:  # the engine refuses these; kept so no path can report "match" without one
            outcome.fidelity = "not compared: the backup holds no fingerprint"
            return outcome
        progress(f"comparing {comp.instance} with the backup's fingerprint")
        # An older backup is compared in its own scheme, and the outcome says what that cannot see.
        diffs = compare(expected, comp.fingerprint_like(expected))
    except NotComparable as exc:
        outcome.fidelity = f"not compared: {exc}"
        return outcome
    except (DrproofError, OSError, psycopg2.Error, redis.RedisError) as exc:
        return RestoreOutcome(comp.instance, "failed", f"restored, but it could not be checked: {exc}")
    outcome.fidelity = "differs" if diffs else "match"
    outcome.differences = diffs.describe()
    if (blind := comp.blind_spot(expected.scheme)) is not None:
        outcome.notes.append(blind)
    outcome.notes += comp.comparison_notes(manifest.component(comp.instance).details)
    return outcome


def _restore_point_in_time(
    repo: Repository, comp: Component, point: datetime | str, progress: Progress, *, live_wal: bool
) -> RestoreOutcome:
    """``live_wal`` only in place: the archive a --to configuration names is the target's own.

    Its segments are that server's WAL, not production's; found by review: after an earlier
    --to restore, the scratch's own writes (archived on its new timeline) were replayed as
    if production's "live archive".
    """
    target = None if point == "latest" else point
    assert target is None or isinstance(target, datetime)
    progress(f"restoring {comp.instance} to {'the newest archived WAL' if target is None else target.isoformat()}")
    used = engine_backup.restore_to_time(repo, comp, target, live_wal=live_wal)
    health = comp.health()
    where = getattr(getattr(comp, "service", None), "replaced", None)
    detail = f"{health.detail}; replayed WAL from {used[0].id} through {used[-1].id}"
    if used.live:
        detail += " and the live archive"
    elif not live_wal:
        detail += " (the repository's WAL only)"
    if where is not None:
        detail += f"; the replaced data directory is kept at {where}"
    outcome = RestoreOutcome(comp.instance, "restored" if health.ok else "failed", detail)
    outcome.fidelity = NOT_COMPARED_PITR
    return outcome


def exit_code(result: RestoreResult) -> int:
    """0 only when every component was restored and matched its backup-time fingerprint.

    2: something failed, or was restored without a comparison (nothing proves it), or a
    before_restore hook failed (nothing was restored);
    1: refused (nothing changed), restored but different from the backup, or an
    after_restore hook (the operator's own check of the restored service) failed.
    """
    outcomes = result.outcomes
    before = [h for h in result.hooks if h.when == "before_restore"]
    if any(not h.ok for h in before) or any(
        o.status == "failed" or (o.status == "restored" and o.fidelity != "match" and o.fidelity != "differs")
        for o in outcomes
    ):
        return 2
    if any(o.status == "refused" or o.fidelity == "differs" for o in outcomes):
        return 1
    return 1 if any(not h.ok for h in result.hooks) else 0


MAX_HOOK_OUTPUT = 4000  # characters of a hook's stdout and of its stderr kept, the last ones
HOOK_TIMEOUT = 600


def run_hooks(commands: list[list[str]], when: str, progress: Progress, secrets: Sequence[str] = ()) -> list[HookRun]:
    """The operator's commands, argv only, with the environment minus drproof's secrets.

    Each is recorded with its exit code and output (masked, capped), failing or not; the
    first that fails ends the list, as a failed hook means what follows cannot be trusted.
    """
    runs: list[HookRun] = []
    values = [os.environ[name] for name in secrets if os.environ.get(name)]
    for argv in commands:
        progress(f"{when} hook: {argv[0]}")
        started = time.monotonic()
        try:
            done = subprocess.run(argv, capture_output=True, timeout=HOOK_TIMEOUT, env=operator_environment(secrets))
        except (OSError, subprocess.SubprocessError) as exc:
            runs.append(HookRun(when, list(argv), None, round(time.monotonic() - started, 3), error=str(exc)))
            break
        runs.append(
            HookRun(
                when,
                list(argv),
                done.returncode,
                round(time.monotonic() - started, 3),
                _hook_output(done.stdout, values),
                _hook_output(done.stderr, values),
            )
        )
        if done.returncode != 0:
            break
    return runs


def _hook_output(data: bytes, secrets: list[str]) -> str:
    from engine.redaction import redact, redact_value

    text = redact(redact_value(data.decode("utf-8", "replace"), secrets))
    return text if len(text) <= MAX_HOOK_OUTPUT else "…" + text[-MAX_HOOK_OUTPUT:]
