"""The repository lock: who holds it, and a message naming them when someone has to wait.

Why: a backup's retention deleted a set while another process was copying it offsite
(a false "offsite copy failed", 2 of 5 racing rounds, issue 17). Every operation now
holds the repository lock the way it needs: backups, copies, restores and verifications
shared for as long as they read (nothing they read can be deleted under them), pruning
exclusive while it deletes. Publishing a set (choosing its place in the chain) is
serialized by a second, short lock, so two backups never claim the same place.

A lock nobody names is a support ticket: each holder leaves a note (host, pid, the
process's start time, operation, shared or exclusive, since when) beside the lock file,
and a waiter says whom it waits for, and gives up after a timeout with the same names.
Notes of processes that died are ignored (and removed) the way ``staging`` tells a dead
writer from a live one; a lock held by a dead process is released by the kernel anyway.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from engine.errors import ConfigError, RepositoryLocked
from engine.procinfo import start_ticks as _process_start

log = logging.getLogger("engine.repository.lock")

TIMEOUT_ENV = "DRPROOF_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 3600.0  # seconds: a prune or backup longer than an hour is worth a look
REMIND_EVERY = 30.0
FILE_MODE = 0o600


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    operation: str
    exclusive: bool
    since: str

    def describe(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        try:
            held = f", for {max(0, round((now - datetime.fromisoformat(self.since)).total_seconds()))} s"
        except ValueError:
            held = ""
        mode = "exclusive" if self.exclusive else "shared"
        return f"{self.operation} (pid {self.pid} on {self.host}, {mode}, since {self.since}{held})"


def lock_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: must not be negative")
    return value


def _notes_dir(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".holders")


def holders(lock_file: Path) -> list[Holder]:
    """Live holders of ``lock_file`` by their notes; notes of dead processes of this host are removed."""
    out = []
    directory = _notes_dir(lock_file)
    if not directory.is_dir():
        return []
    host = socket.gethostname()
    for note in sorted(directory.glob("*.json")):
        try:
            data = json.loads(note.read_text(encoding="utf-8"))
            holder = Holder(
                data["host"], int(data["pid"]), str(data["operation"]), bool(data["exclusive"]), data["since"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if holder.host == host and _process_start(holder.pid) != data.get("start"):
            with suppress(OSError):
                note.unlink()  # its process is gone, and so is its lock
            continue
        out.append(holder)
    return out


def _describe_holders(lock_file: Path) -> str:
    found = holders(lock_file)
    if not found:
        return "a process that left no note (an older drproof, or another tool)"
    return "; ".join(h.describe() for h in found)


@contextmanager
def _note(lock_file: Path, operation: str, exclusive: bool) -> Iterator[None]:
    """Leave a note naming this holder while the block runs; without one if it cannot be written.

    Why: the note only names the holder to those who wait; the lock is the flock. On a
    full repository disk its write raised ENOSPC as a traceback out of every command that
    takes the lock, ``restore`` and ``verify`` included: the day the backup disk filled up,
    nothing could be restored from it, and the empty note was left behind for ever.
    """
    try:
        path = _write_note(lock_file, operation, exclusive)
    except OSError as exc:
        log.warning(
            "%s: cannot leave a note naming this holder beside %s (%s); going on without",
            operation,
            lock_file,
            exc.strerror or exc,
        )
        path = None
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def _write_note(lock_file: Path, operation: str, exclusive: bool) -> Path:
    """The note naming this holder, written whole or not at all (raises OSError)."""
    directory = _notes_dir(lock_file)
    with suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    pid = os.getpid()
    body = {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _process_start(pid),
        "operation": operation,
        "exclusive": exclusive,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = directory / f"{socket.gethostname()}-{pid}-{secrets.token_hex(4)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(body))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def open_lock_file(lock_file: Path) -> IO[str]:
    """The lock file, created owner-only if absent, never through a link (raises OSError)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    return os.fdopen(fd, "r+")


@contextmanager
def file_lock(
    fh: IO[str], lock_file: Path, *, exclusive: bool, operation: str, what: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold the open ``lock_file`` (flock) shared or exclusive, with a note naming this holder.

    Waits up to ``timeout`` seconds (default ``$DRPROOF_LOCK_TIMEOUT``, else an hour),
    logging whom it waits for, then raises :class:`RepositoryLocked` naming them.
    ``what`` names the lock in messages ("the lock of repository /srv/backups").
    Closes ``fh`` when done.
    """
    limit = lock_timeout() if timeout is None else timeout
    with fh:
        _acquire(fh.fileno(), lock_file, exclusive, operation, what, limit)
        try:
            with _note(lock_file, operation, exclusive):
                yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _acquire(fd: int, lock_file: Path, exclusive: bool, operation: str, what: str, limit: float) -> None:
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    started = time.monotonic()
    reminded = None
    pause = 0.02
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if waited >= limit:
            raise RepositoryLocked(
                f"{operation}: gave up after {waited:.0f} s waiting for {what}, held by {_describe_holders(lock_file)}; "
                f"run again when it is done (or raise {TIMEOUT_ENV})"
            )
        if reminded is None or time.monotonic() - reminded >= REMIND_EVERY:
            log.info("%s: waiting for %s, held by %s", operation, what, _describe_holders(lock_file))
            reminded = time.monotonic()
        time.sleep(min(pause, max(0.0, limit - waited)))
        pause = min(pause * 2, 0.5)
