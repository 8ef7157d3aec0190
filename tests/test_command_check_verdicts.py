"""A user's check program that gave no verdict is an error, never a detection (review of verdicts, finding 2).

Real child processes: one kills itself with SIGKILL as the OOM killer would; under
``expect: fail`` its 'fail' was counted as the detection the negative control exists for.
"""

from __future__ import annotations

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
