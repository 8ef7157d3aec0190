"""Fleets: many scenarios at once, ``drproof run DIR|FILES... --parallel N``.

A platform team drills hundreds of systems; it wants one command that runs them with a
bound on how many run at the same time, and one answer: which drills did not pass.

Each drill runs as its own ``drproof run SCENARIO`` child process, exactly as a single
drill runs. That is the isolation the drills need and nothing less: a crash, a leaked
server or a stuck teardown in one drill cannot take the others with it, every drill gets
its own work directory (the runner makes a private one under ``--work-dir``) and picks its
own server ports (the local runtime starts a server again on a new port when another
drill took the one it picked), and a signed report directory is signed by the process
that wrote it. Each child's output goes to ``<report-dir>/<drill>.log``; its reports to
``<report-dir>/<drill>/``. The fleet then reads back each drill's results.json, so the
scorecard, the combined JUnit and the summary page say only what the drills recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from drills.scenario_files import SUFFIXES, is_scenario_file
from engine.errors import ConfigError
from engine.journal import Results

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 20
# Options that name one output file: many drills would overwrite each other's.
_ONE_FILE_OPTIONS = {"metrics_textfile": "--metrics-textfile", "event_file": "--event-file"}


def is_fleet(paths: Sequence[Path], parallel: int | None) -> bool:
    """A fleet unless one scenario file is run without ``--parallel``: that stays a plain drill."""
    return parallel is not None or len(paths) != 1 or paths[0].is_dir()


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """The scenario files named: files as given, and each directory's scenario files (not its subdirectories).

    A directory's other YAML (a backup-config beside a restore test, CI files) is left out,
    as the pytest plugin leaves it out; a file named explicitly is run even if it does not
    look like a scenario, so that its problems are reported instead of silently skipped.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file() and is_scenario_file(p))
            if not inside:
                raise ConfigError(f"{path}: no scenario files in this directory (YAML with top-level stack: and steps:)")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such scenario file or directory")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


@dataclass(frozen=True)
class Drill:
    """One scenario of the fleet and where its reports and output go."""

    scenario: Path
    name: str  # the report subdirectory's name: the file's stem, made unique within the fleet
    report_dir: Path
    log: Path


def plan(files: Sequence[Path], report_root: Path) -> list[Drill]:
    """A report directory per scenario; an old drill's reports there are refused, never mixed in.

    The scorecard is read from each directory's results.json: a results.json left by an
    earlier run would be read as this run's verdict if this drill then failed to write one.
    """
    drills: list[Drill] = []
    taken: set[str] = set()
    for path in files:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        report_dir = report_root / name
        if (report_dir / "results.json").exists():
            raise ConfigError(
                f"{report_dir} already holds a drill's reports; give the fleet a new --report-dir "
                "(the default is a new directory per run)"
            )
        drills.append(Drill(path, name, report_dir, report_root / f"{name}.log"))
    return drills


def child_options(args: argparse.Namespace) -> list[str]:
    """The ``drproof run`` options every drill of the fleet is given, from the fleet's own.

    Secrets never pass through here: a signing key is a file path or the inherited
    ``DRPROOF_SIGNING_KEY`` variable, a webhook URL the name of a variable.
    """
    for attr, flag in _ONE_FILE_OPTIONS.items():
        if getattr(args, attr) is not None:
            raise ConfigError(
                f"{flag} names one file, which the drills of a fleet would overwrite; run the drills one by one "
                "for it, or use --pushgateway (metrics grouped by scenario)"
            )
    pairs: list[tuple[str, object]] = [
        ("--runtime", args.runtime),
        ("--work-dir", args.work_dir),
        ("--sign-key", args.sign_key),
        ("--history", args.history),
        ("--pushgateway", args.pushgateway),
        ("--webhook-url-env", args.webhook_url_env),
    ]
    options = [item for flag, value in pairs if value is not None for item in (flag, str(value))]
    options += [flag for flag, on in (("--keep-workdir", args.keep_workdir), ("--pdf", args.pdf)) if on]
    if args.webhook_url_env is not None:
        options += ["--webhook-on", args.webhook_on]
    if args.fail_on_regression is not None:
        options += ["--fail-on-regression", f"{args.fail_on_regression:f}%"]
    if args.history is not None:
        options += ["--regression-runs", str(args.regression_runs), "--regression-floor", f"{args.regression_floor:f}s"]
    return options


@dataclass(frozen=True)
class Outcome:
    """How one drill of the fleet ended: its exit code, and its results when it wrote them."""

    drill: Drill
    exit_code: int
    seconds: float
    results: Results | None
    problem: str | None  # why the exit code and the results do not tell the whole story

    @property
    def status(self) -> str:
        """pass, fail or error: the worse of the exit code and the recorded verdict.

        No results, an exit code that is not 0 or 1, or one that contradicts the recorded
        verdict is an error: a drill that could not say how it ended never counts as passed.
        """
        by_code = {0: "pass", 1: "fail"}.get(self.exit_code, "error")
        if self.results is None or self.problem is not None:
            return "error"
        return max(by_code, self.results.verdict, key=RANK.__getitem__)


RANK = {"pass": 0, "fail": 1, "error": 2}


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """The worst drill's: 2 if any could not run or errored, else 1 if any failed, else 0."""
    worst = max((RANK[o.status] for o in outcomes), default=0)
    return {0: 0, 1: 1, 2: 2}[worst]


def log_tail(log: Path) -> list[str]:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]


def _outcome(drill: Drill, code: int, seconds: float) -> Outcome:
    """Read back what the drill recorded; anything unreadable or contradictory becomes the problem."""
    from reports import load_results

    path = drill.report_dir / "results.json"
    results: Results | None = None
    problem: str | None = None
    if path.is_file():
        try:
            results = load_results(path)
        except ConfigError as exc:
            problem = f"its results.json cannot be read: {exc}"
    if results is None and problem is None:
        tail = log_tail(drill.log)
        why = tail[-1] if tail else "no output"
        problem = f"no results (exit code {code}): {why}"
    elif results is not None and code != results.exit_code:
        tail = log_tail(drill.log)
        problem = f"verdict {results.verdict} but drproof exited {code}: {tail[-1] if tail else 'no output'}"
    return Outcome(drill, code, seconds, results, problem)


@dataclass
class _Running:
    drill: Drill
    process: subprocess.Popen[bytes]
    started: float


def _start(drill: Drill, options: Sequence[str]) -> _Running:
    """``drproof run`` for one drill, its output to its log, in a session of its own.

    Its own session: a Ctrl-C at the terminal reaches the fleet alone, which then
    interrupts each drill exactly once, so no drill is hit again while it cleans up.
    """
    drill.log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "drills.cli", "run", str(drill.scenario), "--report-dir", str(drill.report_dir)]
    with drill.log.open("wb") as log:
        process = subprocess.Popen(
            [*argv, *options], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return _Running(drill, process, time.monotonic())


def run(
    drills: Sequence[Drill],
    parallel: int,
    options: Sequence[str],
    finished: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run every drill, at most ``parallel`` at a time, in the order given; outcomes in that order.

    On an interrupt (Ctrl-C, or SIGTERM as ``drproof`` turns it into one) no drill is
    started any more, each running drill is interrupted once and waited for (so it tears
    down its servers and writes its partial results), and :class:`Interrupted` carries
    every drill's outcome on: those that never ran to the end are errors, never absent.
    """
    if parallel < 1:
        raise ConfigError("--parallel must be at least 1")
    waiting = list(drills)
    running: list[_Running] = []
    done: dict[Drill, Outcome] = {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                running.append(_start(waiting.pop(0), options))
            for item in _reap(running):
                outcome = _outcome(item.drill, item.process.returncode, time.monotonic() - item.started)
                done[item.drill] = outcome
                finished(outcome)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _interrupt(running)
        for item in running:
            done[item.drill] = _outcome(item.drill, item.process.returncode, time.monotonic() - item.started)
        for drill in drills:
            done.setdefault(drill, Outcome(drill, 130, 0.0, None, "not run: the fleet was interrupted before it ran"))
        raise Interrupted([done[d] for d in drills]) from None
    return [done[d] for d in drills]


class Interrupted(KeyboardInterrupt):
    """The fleet was interrupted: every drill's outcome, the interrupted and the never started included."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("the fleet was interrupted")
        self.outcomes = outcomes


def _reap(running: list[_Running]) -> Iterator[_Running]:
    """The drills that have ended, taken off the running list."""
    for item in list(running):
        if item.process.poll() is not None:
            running.remove(item)
            yield item


def _interrupt(running: Sequence[_Running]) -> None:
    """Interrupt each running drill once and wait for its teardown; a second Ctrl-C kills them.

    The signal goes to the drill's ``drproof`` process only, not its process group: the
    servers it started are its to stop, in order, as it tears down.
    """
    for item in running:
        with contextlib.suppress(ProcessLookupError):
            item.process.send_signal(signal.SIGTERM)
    try:
        for item in running:
            item.process.wait()
    except KeyboardInterrupt:
        for item in running:
            with contextlib.suppress(ProcessLookupError):
                item.process.kill()
        raise
