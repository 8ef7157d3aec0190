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
