"""command: the user's own check program, with the restored components' connection details.

Whatever the team already uses to smoke-test a restore (a script, a CLI, a test suite)
runs as an argv (no shell) with ``DRPROOF_<COMPONENT>_URL``, ``_HOST``, ``_PORT``,
``_DATABASE``, ``_USER``, ``_PASSWORD`` (or ``_PATH`` for directories) in its environment,
and passes on exit 0. Its output is kept as evidence, capped and with every password of
the run masked; passwords reach it only through the environment, never its arguments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from drills.durations import Duration
from engine.childenv import tool_environment
from engine.components.connections import connection_env
from engine.journal import AssertionResult
from engine.redaction import redact, redact_value

MAX_OUTPUT = 4000  # characters of stdout and of stderr kept, the last ones


class CommandParams(AssertionParams):
    argv: list[str] = Field(
        min_length=1, description="The program and its arguments (no shell); `{python}` is the Python drproof runs on."
    )
    components: list[str] | None = Field(
        default=None, description="Components whose connection details it gets; default: all of the run's."
    )
    timeout: Duration = Field(default=60.0, description="Longest it may run; a check still running then fails.")
    name: str | None = Field(default=None, description="Name in the report; default: the program's name.")


class CommandCheck(Assertion):
    name: ClassVar[str] = "command"
    Params: ClassVar[type[AssertionParams]] = CommandParams
    description: ClassVar[str] = (
        "A user's check program (argv, no shell) run with the restored components' connection details in its "
        "environment; exit 0 passes, any other exit fails with its output (capped, passwords masked)."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        ctx.check_components(("assertions", index, self.name, "components"), params.get("components"))

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, CommandParams)
        argv = [sys.executable if a == "{python}" else a for a in params.argv]
        program = params.argv[1] if params.argv[0] == "{python}" and len(params.argv) > 1 else params.argv[0]
        rid = f"command[{params.name or program}]"
        chosen = {n: c for n, c in state.components.items() if params.components is None or n in params.components}
        extra = connection_env(chosen)
        secrets = [v for k, v in extra.items() if k.endswith("_PASSWORD")]
        evidence: dict[str, Any] = {"argv": params.argv, "environment": sorted(extra), "timeout_seconds": params.timeout}
        if (missing := _missing_script(params.argv, state)) is not None:
            # Python would exit 2 ("can't open file"), a 'fail' a negative control counted as a
            # detection (found by review): the check never ran, so it is an error.
            return [result(rid, self.name, "error", f"could not start {program}: {missing}", evidence=evidence)]
        try:
            done = _run(argv, tool_environment(extra), state.base_dir, params.timeout)
        except subprocess.TimeoutExpired as exc:
            evidence.update(_output(exc.stdout, exc.stderr, secrets))
            # No verdict: a check that did not finish measured nothing, so it is an error,
            # never a failure a negative control (expect: fail) would count as detection.
            finding = f"{program} still running after {params.timeout:g} s; stopped: no verdict"
            return [result(rid, self.name, "error", finding, evidence=evidence, findings=[finding])]
        except OSError as exc:
            return [result(rid, self.name, "error", f"could not start {program}: {exc}", evidence=evidence)]
        evidence.update(exit_code=done.returncode, **_output(done.stdout, done.stderr, secrets))
        if done.returncode < 0:
            return [_killed(rid, self.name, program, -done.returncode, evidence)]
        if done.returncode == 0:
            return [result(rid, self.name, "pass", f"{program} exited 0", evidence=evidence)]
        last = (evidence["stderr"] or evidence["stdout"]).strip().splitlines()[-1:] or [""]
        finding = f"{program} exited {done.returncode}: {last[0][:300]}"
        return [result(rid, self.name, "fail", finding, evidence=evidence, findings=[finding])]


def _run(argv: list[str], env: dict[str, str], cwd: Path | None, timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run the check in a session of its own, and end every process of it when it is done.

    Found by review: on timeout only the program was killed, so what it started
    (``sh -c 'sleep 1000 & sleep 1000'``, a test runner's workers) kept running, and
    kept reading and writing the restored stack, after drproof reported the check stopped.
    A process that starts a session of its own leaves the group and is not reached. The
    group is signalled before the program is reaped, so its id cannot belong to anyone else.
    """
    with subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet (at worst a zombie): the group is still its own
            stdout, stderr = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _missing_script(argv: list[str], state: DrillState) -> str | None:
    """Why ``{python} SCRIPT`` cannot start (the script does not exist), or None."""
    if argv[0] != "{python}" or len(argv) < 2 or argv[1].startswith("-"):
        return None
    script = (state.base_dir or Path.cwd()) / argv[1]
    return None if script.is_file() else f"no such file {str(script)!r}"


def _killed(rid: str, name: str, program: str, signum: int, evidence: dict[str, Any]) -> AssertionResult:
    """A check ended by a signal (the OOM killer, a segfault, a SIGKILL) gave no verdict.

    Found by review: it was a ``fail``, which a negative control (``expect: fail``) counted
    as the detection it exists for, so a crashing checker made the drill pass.
    """
    try:
        what = signal.Signals(signum).name
    except ValueError:
        what = f"signal {signum}"
    finding = f"{program} was killed by {what} before it exited: no verdict"
    return result(rid, name, "error", finding, evidence=evidence, findings=[finding])


def _output(stdout: bytes | None, stderr: bytes | None, secrets: list[str]) -> dict[str, str]:
    def clean(data: bytes | None) -> str:
        text = redact(redact_value((data or b"").decode("utf-8", "replace"), secrets))
        return text if len(text) <= MAX_OUTPUT else "…" + text[-MAX_OUTPUT:]

    return {"stdout": clean(stdout), "stderr": clean(stderr)}
