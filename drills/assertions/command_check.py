"""command: the user's own check program, with the restored components' connection details.

Whatever the team already uses to smoke-test a restore (a script, a CLI, a test suite)
runs as an argv (no shell) with ``DRPROOF_<COMPONENT>_URL``, ``_HOST``, ``_PORT``,
``_DATABASE``, ``_USER``, ``_PASSWORD`` (or ``_PATH`` for directories) in its environment,
and passes on exit 0. Its output is kept as evidence, capped and with every password of
the run masked; passwords reach it only through the environment, never its arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

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
        except OSError as exc:
            return [result(rid, self.name, "error", f"could not start {program}: {exc}", evidence=evidence)]
        evidence.update(_output(done.stdout, done.stderr, secrets))
        tail = _aftermath(done, evidence)
        if done.returncode is None:
            # No verdict: a check that did not finish measured nothing, so it is an error,
            # never a failure a negative control (expect: fail) would count as detection.
            finding = f"{program} still running after {params.timeout:g} s; stopped: no verdict{tail}"
            return [result(rid, self.name, "error", finding, evidence=evidence, findings=[finding])]
        evidence["exit_code"] = done.returncode
        if done.returncode < 0:
            return [_killed(rid, self.name, program, -done.returncode, evidence)]
        if done.returncode == 0:
            return [result(rid, self.name, "pass", f"{program} exited 0{tail}", evidence=evidence)]
        last = (evidence["stderr"] or evidence["stdout"]).strip().splitlines()[-1:] or [""]
        finding = f"{program} exited {done.returncode}: {last[0][:300]}{tail}"
        return [result(rid, self.name, "fail", finding, evidence=evidence, findings=[finding])]


GRACE = 2.0  # seconds the processes a check left running get between SIGTERM and SIGKILL
DRAIN = 2.0  # seconds its output is still read once its process group has ended
_STEP = 0.05  # seconds between looks at whether the program has exited
_KEPT = 1 << 20  # bytes of each stream kept while reading (the evidence keeps far less)


@dataclasses.dataclass
class _Finished:
    """How a check program ended: ``returncode`` None when it was still running at its timeout."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    left_running: list[str]  # the processes of its group still running when it exited, ended then
    held_open: bool  # its output was still open after its group ended: a process outside the group holds it


def _run(argv: list[str], env: dict[str, str], cwd: Path | None, timeout: float) -> _Finished:
    """Run the check in a session of its own, and end every process of it when it is done.

    Found by review: on timeout only the program was killed, so what it started
    (``sh -c 'sleep 1000 & sleep 1000'``, a test runner's workers) kept running, and
    kept reading and writing the restored stack, after drproof reported the check stopped.
    A program that exits normally ends its checks too (s32): what it left running in the
    background (``sh -c 'server & echo ok'``) outlived the drill, and when that kept the
    program's stdout open, reading it to its end waited for the timeout and reported the
    passed check as "still running: no verdict". Now the program's own exit is awaited
    (its output read meanwhile), then whatever of its group still runs is ended (SIGTERM,
    then SIGKILL after ``GRACE``) and named, and its output is read for at most ``DRAIN``
    more: a process that started a session of its own leaves the group and is not
    reached, and if it holds the output, the verdict says so instead of waiting for it.
    The group is signalled before the program is reaped (``WNOWAIT``), so its id cannot
    belong to anyone else.
    """
    with subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        with _Output(proc.stdout, proc.stderr) as output:
            try:
                exited = output.read_until(lambda: _exited(proc.pid), time.monotonic() + timeout)
            except BaseException:  # the drill interrupted (Ctrl-C): the check's processes end with it
                _kill_group(proc.pid)
                raise
            left_running = _end_group(proc.pid) if exited else _kill_group(proc.pid)
            held_open = not output.read_until(output.closed, time.monotonic() + DRAIN)
        returncode = proc.wait()
    return _Finished(
        returncode if exited else None, bytes(output.data[0]), bytes(output.data[1]), left_running, held_open
    )


def _exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, without reaping it (its id stays its group's)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


class _Output:
    """The program's stdout and stderr, read as they come (never waiting on either alone)."""

    def __init__(self, *streams: IO[bytes]) -> None:
        self.selector = selectors.DefaultSelector()
        self.data = [bytearray() for _ in streams]
        for i, stream in enumerate(streams):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream.fileno(), selectors.EVENT_READ, i)

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.selector.close()

    def closed(self) -> bool:
        return not self.selector.get_map()

    def read_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Read what comes until ``done()``; False if ``deadline`` came first."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.closed():
                time.sleep(min(left, _STEP))
                continue
            for key, _events in self.selector.select(min(left, _STEP)):
                self._read(key)
        return True

    def _read(self, key: selectors.SelectorKey) -> None:
        try:
            chunk = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(key.fd)
            return
        kept = self.data[key.data]
        kept += chunk
        if len(kept) > 2 * _KEPT:
            del kept[:-_KEPT]


def _group(pgid: int) -> list[str] | None:
    """The running processes of group ``pgid`` but its leader, as "pid (name)"; None where /proc cannot say."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != pgid]
    except OSError:
        return None
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        fields = rest.split()
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            found.append(f"{pid} ({head.partition('(')[2]})")
    return found


def _end_group(pgid: int) -> list[str]:
    """End what the exited (unreaped) program ``pgid`` left running in its group; what that was."""
    running = _group(pgid)
    if running is None:  # no /proc: nothing to name, the group is ended all the same
        _signal_group(pgid, signal.SIGKILL)
        return []
    if not running:
        return []
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(_STEP)
    if _group(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return running


def _kill_group(pgid: int) -> list[str]:
    """Kill the whole group of a program still running at its timeout (it is not reaped yet)."""
    _signal_group(pgid, signal.SIGKILL)
    return []


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _aftermath(done: _Finished, evidence: dict[str, Any]) -> str:
    """What the verdict adds about the processes the program left: the evidence, and the words for its summary."""
    tail = ""
    if done.left_running:
        evidence["left_running"] = done.left_running
        shown = ", ".join(done.left_running[:5]) + (" ..." if len(done.left_running) > 5 else "")
        tail += f"; ended {len(done.left_running)} process(es) it left running: {shown}"
    if done.held_open:
        evidence["output_held_open"] = True
        tail += (
            "; its output was still held open by a process outside its process group (one that started a "
            f"session of its own, which drproof cannot end): not read after {DRAIN:g} s"
        )
    return tail


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


def _output(stdout: bytes, stderr: bytes, secrets: list[str]) -> dict[str, str]:
    def clean(data: bytes) -> str:
        text = redact(redact_value(data.decode("utf-8", "replace"), secrets))
        return text if len(text) <= MAX_OUTPUT else "…" + text[-MAX_OUTPUT:]

    return {"stdout": clean(stdout), "stderr": clean(stderr)}
