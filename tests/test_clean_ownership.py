"""`drproof clean` ends only what a gone drproof of this host left: never a live run's servers.

Found by review: the run a leftover belonged to was named by its drproof's pid alone, so a
dead run's leftover and the servers of a live run that now has the same pid were one run,
and a plain `drproof clean` killed both; and a drproof in a container (another pid
namespace) named itself by its pid there, which on the host is another process or none,
so its live servers were a dead run's leftovers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.runtime import processes
from tests.conftest import in_pid_namespace
from tests.integration.servers import unavailable

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def _sleeper(marker: str, mark: str | None) -> Iterator[subprocess.Popen[bytes]]:
    """A process named ``marker`` carrying ``mark`` as its owner (none: not drproof's)."""
    env = {k: v for k, v in os.environ.items() if k != processes.OWNER_ENV}
    if mark is not None:
        env[processes.OWNER_ENV] = mark
    proc = subprocess.Popen(["bash", "-c", f"exec -a {marker} sleep 60"], env=env)
    try:
        time.sleep(0.2)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _listed(marker: str, everything: bool = False) -> dict[str, list[str]]:
    return {
        run: i for run, items in processes.leftovers(everything).items() if (i := [x for x in items if marker in x])
    }


def test_clean_of_a_dead_run_leaves_the_live_run_that_has_its_pid_now_alone() -> None:
    marker = f"drproof-reuse-test-{time.monotonic_ns()}"
    with _sleeper(marker + "-drproof", None) as live_drproof:  # a live drproof that got a dead one's pid
        pid = live_drproof.pid
        start = processes._start_ticks(pid)
        namespace = processes.pid_namespace()
        with (
            _sleeper(marker + "-old", f"{pid}:1:{namespace}") as old,
            _sleeper(marker + "-live", f"{pid}:{start}:{namespace}") as live,
        ):
            assert _listed(marker) == {f"local pid {pid}": [f"process {old.pid} ({marker}-old 60)"]}
            gone = processes.remove_leftovers(f"local pid {pid}")
            assert gone == [f"process {old.pid} ({marker}-old 60)"]  # quiet control: the dead run's still goes
            assert old.wait(5) is not None
            time.sleep(0.2)
            assert live.poll() is None, "a live run's server was killed"
            assert _listed(marker, everything=True) == {
                f"local pid {pid} (still running)": [f"process {live.pid} ({marker}-live 60)"]
            }


def test_the_servers_of_a_drproof_in_another_pid_namespace_are_not_a_dead_runs() -> None:
    """The mark of a drproof in a container: pid 1 of a namespace that is not ours."""
    marker = f"drproof-namespace-test-{time.monotonic_ns()}"
    with _sleeper(marker, f"1:{time.monotonic_ns()}:4026000001"):
        assert _listed(marker) == {}
        assert list(_listed(marker, everything=True)) == ["local pid 1 (still running)"]


def test_a_real_drproof_in_a_pid_namespace_keeps_its_servers(tmp_path: Path) -> None:
    """The same with a real pid namespace (``unshare``, as a container has): its pid 1 is not this host's."""
    marker = f"drproof-unshare-test-{time.monotonic_ns()}"
    script = (
        "from pathlib import Path; from engine.runtime import processes; import sys; "
        f"p = processes.spawn(['bash', '-c', 'exec -a {marker} sleep 60'], log=Path({str(tmp_path / 'log')!r})); "
        "print(processes.owner_mark(), flush=True); sys.stdin.read(); p.kill()"
    )
    with in_pid_namespace(script, "") as mark:
        assert mark.startswith("1:")
        time.sleep(0.2)
        assert _listed(marker) == {}


def test_a_docker_run_of_another_host_is_gone_only_once_older_than_any_drill() -> None:
    import datetime

    from engine.runtime import docker

    def created(days: float) -> str:
        then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
        return then.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")

    other = {docker.LABEL_HOST: "ci-job-container-b", docker.LABEL_PID: "1"}
    assert docker._run_alive(other, created(0.01))
    assert docker._run_alive(other, "not a time")  # unreadable: not ours to judge
    assert not docker._run_alive(other, created(8))
    inside = {docker.LABEL_HOST: socket.gethostname(), docker.LABEL_OWNER: "1:5:4026000001"}
    assert docker._run_alive(inside, created(0.01))  # this hostname, but a container's pid namespace


def _dead_mark() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = processes._start_ticks(proc.pid)
    proc.wait()
    return f"{proc.pid}:{start}:{processes.pid_namespace()}"


def test_clean_never_kills_the_process_that_took_a_listed_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: between the listing of /proc and the kill, a leftover may end and its pid go to another
    program's process, which the plain kill ended. The listing here is that stale one."""
    mark = _dead_mark()
    with _sleeper(f"drproof-took-pid-{time.monotonic_ns()}", None) as theirs:
        monkeypatch.setattr(processes, "_marked", lambda: [(theirs.pid, mark, "postgres")])
        assert processes.remove_leftovers(f"local pid {mark.split(':')[0]}") == []
        time.sleep(0.2)
        assert theirs.poll() is None, "another program's process was killed"


def test_close_never_kills_the_process_that_took_a_listed_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a closing run's late writers: the process now at the listed pid is not ours, though it works
    in the run's directory (an operator's shell)."""
    from engine.runtime import local

    run = tmp_path / "run"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != processes.OWNER_ENV}
    theirs = subprocess.Popen(["sleep", "60"], cwd=run, env=env)
    try:
        monkeypatch.setattr(processes, "working_in", lambda dirs: [theirs.pid])
        local._remove_run_files([run], grace=0.2)
        assert theirs.poll() is None, "an operator's process was killed"
    finally:
        theirs.kill()
        theirs.wait()


_REUSE = """
import sys, time
from pathlib import Path
from engine.runtime import local, processes

out = Path(sys.argv[1])
# The stand-in postmaster's child ends during the clean shutdown; the next pid is made its, and another program's
# process (a session of its own, no drproof mark) takes it; then the stand-in exits.
on_int = (
    "kill $child; wait $child; echo $((child - 1)) > /proc/sys/kernel/ns_last_pid; "
    "setsid env -u DRPROOF_SERVER_OF sleep 100 </dev/null >/dev/null 2>&1 & "
    f"sleep 0.2; cat /proc/$child/comm > {out}/took; echo $child > {out}/child; exit 0"
)
svc = local.LocalPostgres.__new__(local.LocalPostgres)
svc.proc = processes.spawn(["sh", "-c", f"sleep 100 & child=$!; trap '{on_int}' INT; wait"], log=out / "log")
time.sleep(0.5)
svc.stop()
time.sleep(0.5)  # a SIGKILLed process is a zombie (Z) a moment later
child = int((out / "child").read_text())
took = (out / "took").read_text() if (out / "took").exists() else "?"
print(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0], took, sep="|")
"""


def test_a_clean_stop_never_kills_the_process_that_took_a_childs_pid(tmp_path: Path) -> None:
    """Found by review: ``LocalPostgres.stop`` listed the postmaster's children, shut it down (seconds), then
    SIGKILLed the listed pids; a child that ended meanwhile may have left its pid to another program's process.
    Reproduced in a pid namespace of its own, where the next pid can be chosen (``ns_last_pid``)."""
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _REUSE, str(tmp_path)]
    try:
        seen = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    except FileNotFoundError:
        unavailable("no unshare")
    if seen.returncode != 0 and ("unshare" in seen.stderr or "ns_last_pid" in seen.stderr):
        unavailable(f"no pid namespace of our own here: {seen.stderr[-200:]}")
    assert seen.returncode == 0, seen.stderr
    state, took = seen.stdout.strip().split("|")
    assert took.strip() == "sleep", f"the pid was not taken as planned: {seen.stdout!r}"
    assert state != "Z", "another program's process was killed"


def test_a_clean_stop_still_kills_a_child_the_shutdown_left(tmp_path: Path) -> None:
    """Quiet control: a child that outlived its server's clean shutdown (a paused one) is still ended."""
    from engine.runtime import local

    svc = local.LocalPostgres.__new__(local.LocalPostgres)
    svc.proc = processes.spawn(
        ["sh", "-c", f"setsid sleep 100 & echo $! > {tmp_path}/child; trap 'exit 0' INT; wait"], log=tmp_path / "log"
    )
    time.sleep(0.5)
    child = int((tmp_path / "child").read_text())
    try:
        svc.stop()
        deadline = time.monotonic() + 5
        while processes.pid_alive(child) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)
            time.sleep(0.05)
        assert not processes.pid_alive(child) or processes.command_line(child) == ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_run_whose_leftovers_cannot_all_be_removed_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: one run's failed removal (a container the engine would not remove) ended `drproof clean`
    with the other runs' leftovers still there; now each run is tried, the failure said, and the exit is 1."""
    from drills.cli import main
    from engine import runtime as runtime_module
    from engine.errors import RuntimeStartError

    removed: list[str] = []

    class Stubborn:
        name = "local"

        @staticmethod
        def leftovers(everything: bool = False) -> dict[str, list[str]]:
            return {"local pid 1": ["a container"], "local pid 2": ["a directory"]}

        @staticmethod
        def remove_leftovers(run: str) -> list[str]:
            if run == "local pid 1":
                raise RuntimeStartError("container drproof-x could not be removed: device busy")
            removed.append(run)
            return ["a directory"]

    monkeypatch.setattr(runtime_module, "runtimes", [Stubborn])
    assert main(["clean"]) == 1
    captured = capsys.readouterr()
    assert removed == ["local pid 2"]
    assert "local pid 1: not all removed: container drproof-x could not be removed" in captured.err
    assert "local pid 2: removed a directory" in captured.out
    removed.clear()
    monkeypatch.setattr(Stubborn, "remove_leftovers", staticmethod(lambda run: removed.append(run) or ["x"]))
    assert main(["clean"]) == 0 and removed == ["local pid 1", "local pid 2"]  # control: all removed, exit 0
