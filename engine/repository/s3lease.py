"""The repository lock of an S3 repository: lease objects with an expiry, renewed while held.

S3 has no lock, so each holder writes a small object naming itself (host, pid,
operation, since) under ``<prefix>/locks/``, keeps renewing it, and deletes it when done:

    locks/exclusive.json            one prune at a time: created with ``If-None-Match: *``
    locks/shared/<holder>.json      one per backup, restore or copy in progress

Exclusion rests on two things the store must give: a conditional create that fails with
412 when the key exists (so two prunes never both create ``exclusive.json``), and
read-after-write consistency of GET and LIST (AWS S3 and SeaweedFS give both). Shared and
exclusive holders each *announce, then check*: a prune creates ``exclusive.json`` and then
waits until no shared lease is alive; a backup writes its shared lease and then looks for
``exclusive.json``, withdrawing its lease if one is alive. Whichever of the two writes
came second, its writer's check sees the other, so a prune never deletes under a copy or
restore in flight; a waiting prune also keeps new shared holders out, so it cannot starve.

Expiry is judged by the store's clock only: a lease is alive until its ``LastModified``
plus the ``ttl`` written in it (plus a second for rounding), compared with the ``Date`` of
the store's latest answer,
so clocks of different hosts never need to agree. A holder that dies stops renewing, and
its lease is ignored (and an exclusive one taken over by a conditional delete) once
expired. A holder that cannot renew for a whole ``ttl`` (a long pause, a cut link) has
lost the lock and says so before it deletes anything (:meth:`Lease.check`). The limits are
in docs/security.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from engine.errors import RepositoryError

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(seconds=120)
POLL = 0.5
# LastModified and Date have whole seconds: a lease is judged alive one second longer, so
# that rounding never ends it before its holder's own (monotonic) clock does.
RESOLUTION = timedelta(seconds=1)
MAX_TTL = timedelta(days=3650)  # a note claiming longer is read as this: no date overflows


class Store(Protocol):
    """What a lease needs of an S3 repository."""

    client: Any
    bucket: str

    def lock_key(self, name: str) -> str: ...

    def write_args(self) -> dict[str, Any]: ...

    def where(self) -> str: ...


class LockBusy(RepositoryError):
    """Another holder kept the repository lock for longer than this operation would wait."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease, as its object says, and until when the store keeps it alive."""

    key: str
    host: str
    pid: int | None
    operation: str
    since: str
    expires: datetime

    def describe(self) -> str:
        return (
            f"{self.operation} on host {self.host} (pid {self.pid}) since {self.since}, "
            f"lease expires {self.expires.isoformat()} unless renewed"
        )


def _ttl(value: object) -> timedelta:
    """A lease's lifetime as its note says, or the default when the note does not say it usably.

    Anyone who can write ``locks/`` can write a note: a lifetime that is not a number of
    seconds, or one no date can be added to, raised ValueError or OverflowError (a
    traceback) out of every operation that takes the lock.
    """
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_TTL
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_TTL
    return timedelta(seconds=min(seconds, MAX_TTL.total_seconds()))


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _denied(exc: BaseException) -> bool:
    """Access denied by the store, directly or as the cause of a RepositoryError."""
    return any(_code(e) in ("AccessDenied", "403") for e in (exc, exc.__cause__) if isinstance(e, Exception))


def _server_date(response: dict[str, Any]) -> datetime | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).astimezone(UTC) if date else None


class Lease:
    """One holder's lease: acquired, renewed in the background, released."""

    def __init__(self, store: Store, exclusive: bool, operation: str, ttl: timedelta, wait: timedelta) -> None:
        self.store, self.exclusive, self.operation = store, exclusive, operation
        self.ttl, self.wait = ttl, wait
        self.token = secrets.token_hex(6)
        name = "exclusive.json" if exclusive else f"shared/{socket.gethostname()}-{os.getpid()}-{self.token}.json"
        self.key = store.lock_key(name)
        self.etag: str | None = None
        self.server_now = datetime.now(UTC)  # replaced by the store's clock at the first answer
        self.renewed_at = 0.0  # monotonic time of the last successful write
        self.lost: str | None = None
        self.unannounced = False  # a shared holder whose keys could not write its lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the store's view -------------------------------------------------------------------
    def _note_date(self, response: dict[str, Any]) -> None:
        date = _server_date(response)
        if date is not None:
            self.server_now = date

    def _body(self) -> bytes:
        note = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "operation": self.operation,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "ttl_seconds": self.ttl.total_seconds(),
            "exclusive": self.exclusive,
            "token": self.token,
        }
        return json.dumps(note).encode()

    def holder(self, key: str) -> Holder | None:
        """The lease at ``key`` if it is there (alive or not); None when it is gone."""
        client = self.store.client
        try:
            obj = client.get_object(Bucket=self.store.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        self._note_date(obj)
        try:
            note = json.loads(obj["Body"].read(1 << 16))
        except ValueError:
            note = {}
        if not isinstance(note, dict):
            note = {}
        return Holder(
            key=key,
            host=str(note.get("host", "?")),
            pid=note.get("pid"),
            operation=str(note.get("operation", "?")),
            since=str(note.get("since", "?")),
            expires=obj["LastModified"].astimezone(UTC) + _ttl(note.get("ttl_seconds")) + RESOLUTION,
        )

    def _alive(self, holder: Holder | None) -> bool:
        return holder is not None and holder.expires > self.server_now

    def _shared_holders(self) -> list[Holder]:
        prefix = self.store.lock_key("shared/")
        found = []
        for page in self.store.client.get_paginator("list_objects_v2").paginate(Bucket=self.store.bucket, Prefix=prefix):
            self._note_date(page)
            for item in page.get("Contents", []):
                if item["Key"] != self.key and (holder := self.holder(item["Key"])) is not None:
                    found.append(holder)
        return found

    # -- acquiring --------------------------------------------------------------------------
    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait.total_seconds()
        if self.exclusive:
            self._acquire_exclusive(deadline)
        else:
            self._acquire_shared(deadline)
        if self.unannounced:
            return
        self._thread = threading.Thread(target=self._renew_loop, name="drproof-s3-lease", daemon=True)
        self._thread.start()

    def _busy(self, holders: list[Holder]) -> LockBusy:
        who = "; ".join(h.describe() for h in holders)
        wanted = "exclusive (prune)" if self.exclusive else f"shared ({self.operation})"
        return LockBusy(
            f"S3 repository {self.store.where()} is locked by {who}; waited {self.wait.total_seconds():g} s for "
            f"the {wanted} lock and did nothing. Run again when that operation has finished; a holder that died "
            "stops renewing its lease and is ignored once the lease expires"
        )

    def _acquire_exclusive(self, deadline: float) -> None:
        while not self._create_exclusive():
            current = self.holder(self.key)
            if current is not None and not self._alive(current):
                self._take_over(current)
                continue
            if time.monotonic() >= deadline:
                raise self._busy([current] if current else [])
            time.sleep(POLL)
        # Announced: new shared holders now back off. Wait for those already in.
        while live := [h for h in self._shared_holders() if self._alive(h)]:
            if time.monotonic() >= deadline:
                self._delete_own()
                raise self._busy(live)
            self._write(conditional=True)  # keep the announcement alive while waiting
            time.sleep(POLL)

    def _create_exclusive(self) -> bool:
        try:
            self._write(if_none_match=True)
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise
        return True

    def _take_over(self, stale: Holder) -> None:
        """Remove an expired exclusive lease, only if it is still the one judged expired."""
        head = self.store.client.head_object(Bucket=self.store.bucket, Key=stale.key)
        with suppress(Exception):  # someone else removed or renewed it first: look again
            self.store.client.delete_object(Bucket=self.store.bucket, Key=stale.key, IfMatch=head["ETag"])

    def _acquire_shared(self, deadline: float) -> None:
        exclusive_key = self.store.lock_key("exclusive.json")
        while True:
            current = self.holder(exclusive_key)
            if not self._alive(current):
                try:
                    self._write()
                except Exception as exc:
                    if not _denied(exc):
                        raise
                    self._read_only(exc)
                    return
                current = self.holder(exclusive_key)  # announced: check again
                if not self._alive(current):
                    return
                self._delete_own()  # a prune announced itself first: let it go ahead
            if time.monotonic() >= deadline:
                raise self._busy([current] if current else [])
            time.sleep(POLL)

    def _read_only(self, exc: Exception) -> None:
        """Keys that may read but not write ``locks/`` (a restore with read-only keys): go on
        unannounced rather than refuse a restore, and say that a prune is not kept out."""
        self.unannounced = True
        log.warning(
            "S3 repository %s: could not write the shared lease %s (%s); going on without it, so a prune "
            "started now would not wait for this %s",
            self.store.where(),
            self.key,
            exc,
            self.operation,
        )

    # -- holding ----------------------------------------------------------------------------
    def _write(self, *, if_none_match: bool = False, conditional: bool = False) -> None:
        args: dict[str, Any] = dict(Bucket=self.store.bucket, Key=self.key, Body=self._body(), **self.store.write_args())
        if if_none_match:
            args["IfNoneMatch"] = "*"
        elif conditional and self.etag is not None:
            args["IfMatch"] = self.etag
        sent = time.monotonic()  # before the request: the store's LastModified is no earlier
        response = self.store.client.put_object(**args)
        self._note_date(response)
        self.etag = response.get("ETag")
        self.renewed_at = sent

    def _renew_loop(self) -> None:
        period = self.ttl.total_seconds() / 3
        while not self._stop.wait(period):
            try:
                self._write(conditional=self.exclusive)
            except Exception as exc:
                if _code(exc) in ("PreconditionFailed", "412"):
                    self.lost = "another holder replaced the lease after it expired"
                    return
                if time.monotonic() - self.renewed_at > self.ttl.total_seconds():
                    self.lost = f"the lease could not be renewed for {self.ttl.total_seconds():g} s ({exc})"
                    return

    def check(self) -> None:
        """Raise if the lease may have expired: nothing may be deleted without the lock."""
        if self.lost is None and time.monotonic() - self.renewed_at > self.ttl.total_seconds():
            self.lost = f"the lease was not renewed for {self.ttl.total_seconds():g} s"
        if self.lost is not None:
            raise RepositoryError(
                f"S3 repository {self.store.where()}: the {self.operation} lock was lost ({self.lost}); "
                "stopped before changing anything more"
            )

    def _delete_own(self) -> None:
        args: dict[str, Any] = dict(Bucket=self.store.bucket, Key=self.key)
        if self.exclusive and self.etag is not None:
            args["IfMatch"] = self.etag  # never remove a lease someone took over
        with suppress(Exception):
            self.store.client.delete_object(**args)
        self.etag = None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.unannounced:
            self._delete_own()


@contextmanager
def held(
    store: Store, exclusive: bool, operation: str, ttl: timedelta, wait: timedelta, guard: Callable[[str], Any]
) -> Iterator[Lease]:
    """The lease for the duration of the block; ``guard(what)`` turns store errors into RepositoryErrors."""
    lease = Lease(store, exclusive, operation, ttl, wait)
    with guard(f"taking the {'exclusive' if exclusive else 'shared'} repository lock for {operation}"):
        lease.acquire()
    try:
        yield lease
    finally:
        with suppress(Exception):
            lease.release()
