"""Child processes that die with drproof.

Servers run in their own session so a Ctrl-C in the terminal reaches drproof (which
then stops them cleanly) instead of killing them mid-write; PR_SET_PDEATHSIG makes the
kernel kill them if drproof itself is SIGKILLed, so no server outlives its run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import pwd
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.childenv import tool_environment
from engine.procinfo import pid_namespace, processes_visible
from engine.procinfo import start_ticks as _start_ticks

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: rely on explicit cleanup only
        pass


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _from_a_lasting_thread(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run ``start`` on a thread that lives as long as drproof: the main one, or one kept for it.

    Why: PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
    process. A server started from a worker thread of a parallel restore was SIGKILLed
    the moment the restore's thread pool shut down (seen: a restored PostgreSQL gone
    before the final fingerprint). Children started from worker threads are forked by one
    thread that is never shut down instead, so they still die with drproof and only then.
    """
    if threading.current_thread() is threading.main_thread():
        return start()
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drproof-spawner")
    return _spawner.submit(start).result()


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    return _from_a_lasting_thread(lambda: _spawn(argv, log=log, user=user, env=env, cwd=cwd))


def _spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: str | None,
    env: dict[str, str] | None,
    cwd: Path | None,
) -> subprocess.Popen[bytes]:
    kwargs: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    if env is None:
        env = tool_environment()  # a server needs none of the secrets drproof holds
    env = {**env, OWNER_ENV: owner_mark()}  # inherited by what it starts: ``leftovers`` finds them all
    with open(log, "ab") as log_fh:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
            cwd=cwd,
            **kwargs,
        )


def stop(proc: subprocess.Popen[bytes], graceful: signal.Signals, timeout: float = 15.0) -> None:
    """Ask politely, then insist."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(graceful)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.05, progress: str | None = None, every: float = 15.0
) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; ``progress`` names the wait in a log line every ``every`` s.

    Every wait in drproof has a deadline; the long ones (recovery of a large cluster)
    also say, while they last, what they wait for and for how long already.
    """
    started = time.monotonic()
    deadline = started + timeout
    said = started
    while time.monotonic() < deadline:
        if check():
            return True
        now = time.monotonic()
        if progress is not None and now - said >= every:
            log.info("still waiting for %s: %.0f s of at most %.0f s", progress, now - started, timeout)
            said = now
        time.sleep(interval)
    return check()


# Servers get ports from here up to the start of the kernel's ephemeral range.
_PORT_FLOOR = 15000
_PORT_TRIES = 64


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server to bind a moment later; outside the ephemeral range.

    Why: a port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the
    same range every outgoing connection on the host takes its local port from. Between
    the pick and the server's bind (or a rebuild's restart on the same port, whole steps
    later), any client connection (a test's, a drill's own health check) could take it,
    and under load one did (a test failed in CI). Below that range only a process that
    binds a port explicitly can take it. Where the range leaves too little below it, the
    kernel's pick it is.
    """
    low = _ephemeral_low()
    if low - _PORT_FLOOR >= 1000:
        pick = random.SystemRandom()
        for _ in range(_PORT_TRIES):
            port = pick.randrange(_PORT_FLOOR, low)
            if _bindable(port):
                return port
    return _kernel_port()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux), or 0 where it cannot be read."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def run_as(user: str | None) -> dict[str, object]:
    """subprocess keyword arguments to run a short command as ``user``."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def current_is_root() -> bool:
    return os.geteuid() == 0


# Every server drproof starts carries this variable, naming the drproof process (pid, its
# start time so a reused pid is not mistaken for it, and its pid namespace so a drproof
# in a container is not mistaken for this host's process of that pid); the processes the server
# starts in turn inherit it. Most servers die with drproof (PR_SET_PDEATHSIG), but not
# what a manager such as Patroni starts in a session of its own: `drproof clean` finds
# those by the variable.
OWNER_ENV = "DRPROOF_SERVER_OF"


def owner_mark() -> str:
    """``pid:start:pid namespace`` of this drproof (see ``OWNER_ENV``)."""
    return f"{os.getpid()}:{_start_ticks(os.getpid())}:{pid_namespace()}"


def owner_alive(mark: str) -> bool:
    """Whether the drproof ``mark`` names still runs; one of another pid namespace counts as running.

    Why: a drproof in a container (a CI job with ``--runtime local``) names itself by its
    pid *there*, 1 or 7; read here, that pid is another process or none, and `drproof
    clean` on the host took the container's live servers for a dead run's and killed them
    (found by review). From here its liveness cannot be told, so it is not ours to end;
    its processes die with its container. A mark without a namespace is an older drproof's.
    """
    if in_another_namespace(mark) or not processes_visible():
        return True
    pid, ticks = [*mark.split(":"), ""][:2]
    return pid.isdigit() and _start_ticks(int(pid)) == ticks


def in_another_namespace(mark: str) -> bool:
    """Whether the drproof ``mark`` names runs in another pid namespace than this process (see ``owner_alive``)."""
    namespace = [*mark.split(":"), "", ""][2]
    return bool(namespace) and namespace != pid_namespace()


def _run_of(mark: str, alive: bool) -> str:
    """The name ``drproof clean`` gives the run of ``mark``: its pid, and whether it still runs.

    Why the second part: a pid is reused. With the pid alone, the dead run's leftovers
    and the servers of a live run that has the same pid now were one run, and removing
    the first (a plain `drproof clean`, not ``--all``) killed the second (found by review).
    """
    return f"local pid {mark.split(':')[0]}" + (" (still running)" if alive else "")


def _pids() -> list[Path]:
    """The /proc entry of every process; none where /proc cannot be read (a chroot or sandbox without it)."""
    try:
        return [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return []


def _marked() -> list[tuple[int, str, str]]:
    """(pid, owner mark, command line) of every process carrying ``OWNER_ENV`` that we may read."""
    found = []
    prefix = (OWNER_ENV + "=").encode()
    for entry in _pids():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = _program((entry / "cmdline").read_bytes())
        except OSError:
            continue
        marks = [e[len(prefix) :].decode(errors="replace") for e in env if e.startswith(prefix)]
        if marks:
            found.append((int(entry.name), marks[0], cmd))
    return found


def leftovers(everything: bool = False) -> dict[str, list[str]]:
    """Processes drproof started whose drproof is gone (or all of them), by owner."""
    runs: dict[str, list[str]] = {}
    for pid, mark, cmd in _marked():
        alive = owner_alive(mark)
        if everything or not alive:
            runs.setdefault(_run_of(mark, alive), []).append(f"process {pid} ({cmd[:80]})")
    return runs


def remove_leftovers(run: str) -> list[str]:
    """SIGKILL the processes ``leftovers`` listed under ``run``; return what went."""
    gone = []
    for pid, mark, cmd in _marked():
        listed = _run_of(mark, owner_alive(mark)) == run and pid != os.getpid()
        if listed and kill_if_still(pid, functools.partial(_carries, mark)):
            gone.append(f"process {pid} ({cmd[:80]})")
    return gone


def _program(cmdline: bytes) -> str:
    """A process's command line as ``drproof clean`` names it: the program's own name first, then its arguments.

    Why: the full path came first and was cut at 80 characters, so a server run from a
    copy of its install in a run directory showed as ``/tmp/drproof-pg-…/server-install/
    embedded_postgr``: neither the user nor a test could see it was PostgreSQL.
    """
    argv = cmdline.decode(errors="replace").split("\0")
    return " ".join([os.path.basename(argv[0]), *argv[1:]]).strip()


def _carries(mark: str, pid: int) -> bool:
    """Whether ``pid`` carries the owner ``mark`` (and we may read its environment)."""
    try:
        return _mark_of(pid) == mark
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's counts: signalling it is refused, not absent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line(pid: int) -> str:
    """``pid``'s command line, shortened, for a message; "?" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def working_in(dirs: Sequence[Path]) -> list[int]:
    """Processes this drproof started (``OWNER_ENV``) whose working directory is in ``dirs``.

    A PostgreSQL server and every process it forks work in their data directory: what
    still works there after its server was stopped is a server still shutting down, or
    one a manager restarted, and removing the tree under it loses the race. Only our own
    children count: an operator's shell sitting in a kept run directory is not one.
    """
    return [int(e.name) for e in _pids() if int(e.name) != os.getpid() and works_in(int(e.name), dirs)]


def works_in(pid: int, dirs: Sequence[Path]) -> bool:
    """Whether ``pid`` is a process this drproof started working in ``dirs`` (see ``working_in``)."""
    roots = [str(d.absolute()) for d in dirs]
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        inside = any(cwd == r or cwd.startswith(r + "/") for r in roots)
        return inside and _mark_of(pid) == owner_mark()
    except OSError:
        return False


def _mark_of(pid: int) -> str | None:
    """The ``OWNER_ENV`` mark ``pid`` carries, if any (and if we may read its environment)."""
    prefix = (OWNER_ENV + "=").encode()
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    marks = [e[len(prefix) :].decode(errors="replace") for e in env if e.startswith(prefix)]
    return marks[0] if marks else None


def kill_if_still(pid: int, still: Callable[[int], bool]) -> bool:
    """SIGKILL ``pid`` if ``still(pid)`` holds for the process that has that pid now; whether it was sent.

    Why: between a listing of /proc and the kill, the listed process may end and its pid
    go to another process, an operator's or another program's, which a plain ``kill``
    would end (found by review). A pidfd pins the process: checked after it is opened,
    the check and the signal are about the same process, or the signal finds it gone.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd (a kernel before 5.3): only the narrow window is left
        fd = -1
    try:
        if not still(pid):
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def _parent(pid: int) -> int | None:
    """The parent pid of ``pid`` (field 4 of /proc/PID/stat), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def start_of(pid: int) -> str | None:
    """``pid``'s start time (clock ticks since boot): with the pid, names one process for good; None once gone."""
    return _start_ticks(pid)


def started_at(start: str, pid: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (see ``start_of``)."""
    return _start_ticks(pid) == start


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, as /proc lists them now."""
    return [int(e.name) for e in _pids() if _parent(int(e.name)) == pid]


def signal_server(postmaster: int, sig: signal.Signals) -> list[int]:
    """Send ``sig`` to a PostgreSQL postmaster and to every process it started; the pids reached.

    Why not ``killpg``: every child of a postmaster (backends, the WAL receiver, the startup
    process replaying WAL, the WAL senders) makes itself a process-group leader
    (``setsid`` in ``InitPostmasterChild``), so the postmaster's group holds the postmaster
    alone. A "paused" server was only a paused postmaster: its replica kept receiving,
    replaying and acknowledging synchronous commits, and its open sessions kept answering
    (found by review, measured). The postmaster is signalled first, so that it forks no
    new child while its children are listed; resumed, it goes last, for the same reason.
    Any other signal (SIGKILL) reaches the children listed before it, since a dead
    postmaster's children are no longer its children.
    """
    reached = []
    if sig == signal.SIGSTOP:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(postmaster, sig)
            reached.append(postmaster)
        order = children(postmaster)
    else:
        kids = children(postmaster)
        order = [*kids, postmaster] if sig == signal.SIGCONT else [postmaster, *kids]
    for pid in order:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            reached.append(pid)
    return reached
