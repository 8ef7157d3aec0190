"""A user's check program that gave no verdict is an error, never a detection (review of verdicts, finding 2).

Real child processes: one kills itself with SIGKILL as the OOM killer would; under
``expect: fail`` its 'fail' was counted as the detection the negative control exists for.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.command_check import CommandCheck, CommandParams
from drills.runner import _negative_control
from engine.journal import AssertionResult


def _run(code: str, **params: Any) -> AssertionResult:
    state = DrillState(repository=None)  # type: ignore[arg-type]
    spec = CommandParams.model_validate({"argv": ["{python}", "-c", code], **params})
    return CommandCheck().evaluate(spec, state)[0]


def test_a_check_killed_by_a_signal_gave_no_verdict() -> None:
    r = _run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", expect="fail")
    assert r.status == "error" and "killed by SIGKILL" in r.summary, r.summary
    assert _negative_control(r).status == "error"


def test_an_exit_code_is_still_a_verdict() -> None:
    assert _run("raise SystemExit(0)").status == "pass"
    failed = _run("import sys; print('3 orders missing', file=sys.stderr); sys.exit(1)")
    assert failed.status == "fail" and "3 orders missing" in failed.summary
    assert _negative_control(_run("raise SystemExit(1)", expect="fail")).status == "pass"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_check_that_times_out_takes_what_it_started_with_it(tmp_path: Path) -> None:
    # Review of verdict-honesty leftovers, 2: only the program was killed on timeout, and its
    # children (here a background sleep of a shell) kept running after the check "stopped".
    pidfile = tmp_path / "grandchild.pid"
    state = DrillState(repository=None, base_dir=tmp_path)  # type: ignore[arg-type]
    spec = CommandParams.model_validate(
        {"argv": ["sh", "-c", f"sleep 1000 & echo $! > {pidfile}; sleep 1000"], "timeout": "1s", "expect": "fail"}
    )
    r = CommandCheck().evaluate(spec, state)[0]
    grandchild = int(pidfile.read_text())
    try:
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild), "the shell's background sleep outlived the check's timeout"
        assert r.status == "error" and "still running after 1 s" in r.summary, r.summary
        assert _negative_control(r).status == "error"
    finally:
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def _check(tmp_path: Path, script: str, timeout: str = "20s") -> AssertionResult:
    state = DrillState(repository=None, base_dir=tmp_path)  # type: ignore[arg-type]
    spec = CommandParams.model_validate({"argv": ["sh", "-c", script], "timeout": timeout})
    return CommandCheck().evaluate(spec, state)[0]


@pytest.mark.parametrize("redirect", ["", " >/dev/null 2>&1"], ids=["holding-stdout", "output-redirected"])
def test_what_a_check_left_running_is_ended_when_it_exits_and_named(tmp_path: Path, redirect: str) -> None:
    """Review of verdict-honesty leftovers (s32): a check that exited 0 left its background sleep running past the
    drill; one whose background process kept stdout open waited the whole timeout and became "no verdict"."""
    pidfile = tmp_path / "background.pid"
    started = time.monotonic()
    r = _check(tmp_path, f"sleep 1000{redirect} & echo $! > {pidfile}; echo ok")
    took = time.monotonic() - started
    background = int(pidfile.read_text())
    try:
        assert not _alive(background), "the background sleep outlived the check"
        assert r.status == "pass", r.summary
        assert took < 10, f"waited {took:.1f} s for the background process's output"
        # Named as the kernel names it when it is ended: "sh" if the forked shell had not yet become sleep.
        assert r.summary in (
            f"sh exited 0; ended 1 process(es) it left running: {background} ({name})" for name in ("sleep", "sh")
        ), r.summary
        assert r.evidence["left_running"] in ([f"{background} (sleep)"], [f"{background} (sh)"])
        assert r.evidence["stdout"] == "ok\n"
    finally:
        if _alive(background):
            os.kill(background, signal.SIGKILL)


def test_quiet_control_a_check_that_leaves_nothing_running_is_unchanged(tmp_path: Path) -> None:
    r = _check(tmp_path, "echo ok; echo warn >&2")
    assert r.status == "pass" and r.summary == "sh exited 0", r.summary
    assert "left_running" not in r.evidence and "output_held_open" not in r.evidence
    assert (r.evidence["stdout"], r.evidence["stderr"], r.evidence["exit_code"]) == ("ok\n", "warn\n", 0)
    failed = _check(tmp_path, "echo 'row count 0' >&2; exit 3")
    assert failed.status == "fail" and failed.summary == "sh exited 3: row count 0", failed.summary


def test_a_process_that_left_the_group_holding_the_output_does_not_hang_the_check(tmp_path: Path) -> None:
    """A process that started a session of its own is out of reach: the verdict stands, and says it could not be ended."""
    pidfile = tmp_path / "escaped.pid"
    started = time.monotonic()
    r = _check(tmp_path, f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 1000' & sleep 0.5; echo ok")
    took = time.monotonic() - started
    escaped = int(pidfile.read_text())
    try:
        assert r.status == "pass", r.summary
        assert took < 10, f"waited {took:.1f} s for the escaped process's output"
        assert r.evidence["output_held_open"] is True
        assert "held open by a process outside its process group" in r.summary, r.summary
    finally:
        os.kill(escaped, signal.SIGKILL)


def test_a_background_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "stubborn.pid"
    r = _check(tmp_path, f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done' & sleep 0.3")
    stubborn = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(stubborn) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(stubborn)
        assert r.status == "pass" and "ended" in r.summary, r.summary
    finally:
        if _alive(stubborn):
            os.kill(stubborn, signal.SIGKILL)


def test_a_drill_interrupted_during_a_check_ends_the_checks_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a check runs: Popen's exit does not wait for the program, so its group must be ended here."""
    from drills.assertions import command_check

    pidfile = tmp_path / "program.pid"
    real = command_check._Output.read_until

    def interrupted(self: Any, done: Any, deadline: float) -> bool:
        real(self, lambda: pidfile.exists() and bool(pidfile.read_text().strip()), deadline)
        raise KeyboardInterrupt

    monkeypatch.setattr(command_check._Output, "read_until", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _check(tmp_path, f"sleep 1000 & echo $! > {pidfile}; sleep 1000")
    background = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(background), "the check's background sleep outlived the interrupted drill"
    finally:
        if _alive(background):
            os.kill(background, signal.SIGKILL)
