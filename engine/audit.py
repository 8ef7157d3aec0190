"""The standalone engine's audit log: one JSON object per line for every operation.

An auditor asks who took, checked, restored, deleted or copied which backup, when, from
where, and whether it worked. Console output is gone by then and webhooks only cover
backups, so the engine appends each operation's outcome to a file it never rewrites.

Why the writing is this strict:

- **Whole lines only.** Each line is one ``write()`` on a descriptor opened with
  ``O_APPEND``. On a local filesystem the kernel puts every such write at the end of the
  file in one piece, so concurrent drproof processes (a cron backup and an operator's
  restore) never interleave half lines. A short write is reported, never completed by a
  second write that another process's line could split; the next line then starts on a
  line of its own (``_after_torn_line``).
- **Durable before the command returns.** Every line is fsynced; a line that was printed
  as written survives a crash.
- **Loud failure.** A log that cannot be written raises :class:`AuditError` (exit code
  2): an unaudited deletion is an audit finding, so a missing line must never pass
  silently.
- **No secrets.** Repositories are described without credentials and error texts go
  through :func:`engine.redaction.redact`.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from engine import __version__
from engine.errors import DrproofError, IntegrityError
from engine.redaction import redact

if TYPE_CHECKING:
    from engine.chain import PublishedRecord

Event = Literal["backup", "verify", "restore", "delete", "copy"]
# "unverified": done, but nothing could prove the result (a point-in-time restore has no
# fingerprint taken at that moment); never counted as "ok".
Outcome = Literal["ok", "failed", "refused", "unverified"]
EVENTS: tuple[Event, ...] = ("backup", "verify", "restore", "delete", "copy")
OUTCOMES: tuple[Outcome, ...] = ("ok", "failed", "refused", "unverified")
DEFAULT_NAME = "audit.jsonl"  # inside a local repository's directory when audit_log is not set
_READS_BACKUPS = frozenset({"restore", "copy"})
MAX_ERROR_CHARS = 2000  # keeps every line one modest write(), however verbose a tool's error


class AuditError(DrproofError):
    """The audit log could not be written: the operation must not look like it went unrecorded."""


def describe_repository(facts: dict[str, str]) -> str:
    """``local /path`` or ``s3://bucket/prefix at https://endpoint``, credentials stripped.

    ``facts`` is a repository's ``describe()``; an endpoint URL may carry ``user:password@``,
    which is dropped.
    """
    if facts.get("type") == "s3":
        text = f"s3://{facts.get('bucket', '')}/{facts.get('prefix', '')}".rstrip("/")
        endpoint = facts.get("endpoint_url")
        if endpoint:
            parts = urlsplit(endpoint)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            text += " at " + urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return text
    return f"{facts.get('type', 'local')} {facts.get('path', '')}".strip()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Operation:
    """What one audited operation found out while running; recorded when it ends."""

    event: Event
    repository: str
    backup_ids: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    outcome: Outcome = "ok"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    record_success: bool = True  # False: only a failure of this step is worth a line

    def fail(self, error: str, outcome: Outcome = "failed") -> None:
        self.outcome = outcome
        self.error = error


class AuditLog:
    """Appends audit lines to ``path``; with ``path`` None (an S3 repository and no
    ``audit_log`` configured) it records nothing, because there is no local place that
    belongs to the repository."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._user = _user()
        self._host = socket.gethostname()

    def check(self) -> None:
        """Create the log (and its directory) if needed and prove it is writable.

        Called before an operation starts, so a log that cannot be written stops the
        command before it deletes or restores anything.
        """
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from exc

    def line(
        self,
        event: Event,
        outcome: Outcome,
        *,
        backup_ids: Sequence[str],
        components: Sequence[str],
        repository: str,
        duration_seconds: float,
        error: str | None = None,
        **extra: Any,
    ) -> str:
        """The JSON text of one record (without the newline)."""
        record: dict[str, Any] = {
            "timestamp": _now(),
            "event": event,
            "outcome": outcome,
            "backup_ids": list(backup_ids),
            "components": list(components),
            "repository": repository,
            "user": self._user,
            "host": self._host,
            "drproof_version": __version__,
            "duration_seconds": round(duration_seconds, 3),
        }
        if outcome != "ok":
            text = redact(error or "no error text")
            record["error"] = text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
        clash = sorted(set(extra) & set(record))
        if clash:
            raise ValueError(f"audit extras may not replace the standard fields: {', '.join(clash)}")
        record.update(extra)
        # ensure_ascii: one line of plain ASCII whatever the error text holds (no raw newlines).
        return json.dumps(record, ensure_ascii=True, default=str)

    def record(
        self,
        event: Event,
        outcome: Outcome,
        *,
        backup_ids: Sequence[str],
        components: Sequence[str],
        repository: str,
        duration_seconds: float,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        """Append one line, durably, or raise :class:`AuditError`."""
        if self.path is None:
            return
        text = self.line(
            event,
            outcome,
            backup_ids=backup_ids,
            components=components,
            repository=repository,
            duration_seconds=duration_seconds,
            error=error,
            **extra,
        )
        data = (text + "\n").encode("ascii")
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
                readable = True
            except PermissionError:  # a log this process may append to but not read: no check
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                readable = False
            try:
                if readable:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # no other drproof mid-write while the end is read
                    data = _after_torn_line(fd) + data
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit log {self.path}: {exc.strerror or exc}; "
                f"the {event} ({outcome}) of {', '.join(backup_ids) or 'no backup id'} is not recorded"
            ) from exc

    def published(self, repository: str) -> PublishedRecord | None:
        """The sets this log records as published in ``repository``, oldest first; None without a log.

        Why: the newest set deleted whole (directory, manifest and signature) leaves no
        trace in the repository itself (engine/chain.py), and "latest" became the set
        before it: a restore in place rolled live data back, exit 0. Every backup that
        published a set wrote a line here first, so a set the log names after every set
        still present, that retention did not delete, is a set that went missing
        (:func:`engine.chain.missing_from_record`). A log kept away from the repository
        (``audit_log`` on the backup host) is out of a repository writer's reach; the
        default one inside a local repository only catches a writer who missed it.
        Lines that cannot be read are skipped: the log vouches only for what it says.
        """
        from engine.chain import PublishedRecord

        if self.path is None:
            return None
        ids: dict[str, None] = {}
        try:
            with open(self.path, "rb") as fh:
                for raw in fh:
                    _published_line(raw, repository, ids)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {self.path}: {exc.strerror or exc}") from exc
        return PublishedRecord(f"the audit log {self.path}", tuple(ids))

    @contextmanager
    def operation(self, event: Event, repository: str) -> Iterator[Operation]:
        """Time the block and record it: ``ok`` unless the block called ``fail()``, and
        ``failed`` (``refused`` for damaged backups) if it raised, with the error text.

        A failure to record replaces a successful result with :class:`AuditError`; if the
        block itself failed, the audit error is raised from the original one so both show.
        """
        op = Operation(event, repository)
        started = time.monotonic()
        try:
            yield op
        except BaseException as exc:
            # Reading a damaged backup is refused; a backup or deletion that breaks has failed.
            refused = isinstance(exc, IntegrityError) and event in _READS_BACKUPS
            outcome: Outcome = "refused" if refused else "failed"
            error = _why(exc)
            try:
                self._finish(op, outcome, error, started)
            except AuditError as audit_exc:
                raise AuditError(f"{audit_exc} (the {event} itself failed: {redact(error)})") from exc
            raise
        if op.record_success or op.outcome != "ok":
            self._finish(op, op.outcome, op.error, started)

    def _finish(self, op: Operation, outcome: Outcome, error: str | None, started: float) -> None:
        self.record(
            op.event,
            outcome,
            backup_ids=op.backup_ids,
            components=op.components,
            repository=op.repository,
            duration_seconds=time.monotonic() - started,
            error=error,
            **op.extra,
        )


def _published_line(raw: bytes, repository: str, ids: dict[str, None]) -> None:
    """Add what one audit line says was published in ``repository`` to ``ids``; drop what it says was deleted.

    A backup that published its set but found a limit of it (a WAL gap) ends ``failed``
    with its ``findings``: its set is there all the same.
    """
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return
    if not isinstance(record, dict) or record.get("repository") != repository:
        return
    backup_ids = [b for b in record.get("backup_ids") or [] if isinstance(b, str)]
    event, outcome = record.get("event"), record.get("outcome")
    if event == "backup" and (outcome == "ok" or (outcome == "failed" and record.get("findings"))):
        ids.update(dict.fromkeys(backup_ids))
    elif event == "delete" and outcome == "ok":
        for b in backup_ids:
            ids.pop(b, None)


def _why(exc: BaseException) -> str:
    """What the audit line says went wrong: a domain error's own words, else the exception.

    An interruption is said as one (found by review: a restore stopped by SIGTERM was
    recorded as "KeyboardInterrupt").
    """
    if isinstance(exc, DrproofError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT or SIGTERM) before it finished"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _after_torn_line(fd: int) -> bytes:
    """A newline to start with when the log does not end with one (a line cut short), else nothing.

    Why: a write cut short by a full disk is reported and never completed, so the log
    ended in half a line; found by review, the next line was appended to it, and a reader
    taking one JSON object per line lost that next record too (an audited deletion, say).
    Starting on a line of its own keeps it whole; the torn one stays, visibly torn.
    """
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        return b"\n"
    return b""
