"""This host's own record of the newest set it saw in each repository: a witness out of a writer's reach.

Why: the repository's head record (``head.json``) shows the newest set deleted whole,
but a writer of the storage who also deletes the record, or puts back an older signed
copy they kept, and empties an audit log kept in the repository, leaves a chain that
simply ends one set earlier: "latest" then rolls live data back. Every host that runs
drproof keeps, outside the repository, the newest head record it wrote or read for each
repository (the rollback defence of update frameworks such as TUF, which remember the
newest metadata version they accepted). A repository whose chain no longer reaches the
place this host saw is named ``missing`` and "latest" is refused, as for a lost head.

The record is bound to the repository's identity: a repository emptied and started
again at the same place (a new identity) is not held to the old one's history.
Writing it is best effort (a read-only home must not fail a backup): a failure is
logged, and the repository's own records still stand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.smallfiles import replace_with

log = logging.getLogger(__name__)

WITNESS_FORMAT = "drproof-witness-v1"
STATE_ENV = "DRPROOF_STATE_DIR"  # where the witness lives; set to an empty string to keep none
MAX_WITNESS_BYTES = 64 * 1024
MAX_IDENTITIES = 8  # repositories remembered per place (the oldest forgotten first)
LOCK_WAIT = 10.0  # seconds a write waits for another drproof process writing the same record


@dataclass(frozen=True)
class Witnessed:
    """A head record this host kept, with the identity of the repository it was read from or written to."""

    repository_id: str
    record: bytes
    signature: bytes | None
    path: Path


def state_dir() -> Path | None:
    """Where this host keeps its witness: ``$DRPROOF_STATE_DIR``, else ``$XDG_STATE_HOME/drproof``, else ``~/.local/state/drproof``."""
    configured = os.environ.get(STATE_ENV)
    if configured is not None:
        return Path(configured) if configured.strip() else None
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "drproof"


def file_for(location: str) -> Path | None:
    """The file that keeps the record for ``location`` (named in a refusal: deleting it accepts a rollback made on purpose)."""
    root = state_dir()
    if root is None:
        return None
    return root / "witness" / f"{hashlib.sha256(location.encode('utf-8')).hexdigest()[:40]}.json"


def recall(location: str) -> Witnessed | None:
    """The head record this host kept last for the repository at ``location``; None if none or unreadable."""
    held = recall_all(location)
    return held[-1] if held else None


def recall_all(location: str) -> list[Witnessed]:
    """Every head record this host keeps for ``location``, one per repository identity, the last written last.

    Why more than one: a place that held another repository for a while (swapped in by a
    writer of the storage, with the same signing key) must not make this host forget the
    newest set of the repository that is put back there.
    """
    path = file_for(location)
    if path is None:
        return []
    try:
        raw = _read_regular(path)
        body = json.loads(raw)
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    if len(raw) > MAX_WITNESS_BYTES or not isinstance(body, dict) or body.get("format") != WITNESS_FORMAT:
        return []
    if body.get("location") != location:
        return []
    others = body.get("others")
    entries = [*(others if isinstance(others, list) else []), body]
    return [w for w in (_entry(e, path) for e in entries) if w is not None]


def _entry(entry: object, path: Path) -> Witnessed | None:
    if not isinstance(entry, dict):
        return None
    rid, record, sig = entry.get("repository_id"), entry.get("head"), entry.get("signature")
    if not isinstance(rid, str) or not isinstance(record, str):
        return None
    return Witnessed(rid, record.encode("utf-8"), sig.encode("utf-8") if isinstance(sig, str) else None, path)


def _read_regular(path: Path) -> bytes:
    """At most one byte over the limit of a regular file; anything else (a FIFO someone left there) is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(MAX_WITNESS_BYTES + 1)


def remember(location: str, repository_id: str, record: bytes, signature: bytes | None, sequence: int) -> None:
    """Keep ``record`` (naming place ``sequence``) unless this host already saw a later place of the same repository.

    Under a lock on the record's file: a backup writing place 6 while a ``recovery list``
    that read place 5 writes too must not leave 5 (the record would move backwards, and a
    rollback to 5 go unseen). A lock not had within LOCK_WAIT seconds leaves the record as it is.
    """
    path = file_for(location)
    if path is None:
        return
    try:
        with _locked(path):
            _remember_locked(path, location, repository_id, record, signature, sequence)
    except OSError as exc:
        log.warning("cannot keep this host's record of the newest set in %s (%s): %s", location, path, exc)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(f"another drproof process held {path.with_suffix('.lock')} for {LOCK_WAIT} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remember_locked(
    path: Path, location: str, repository_id: str, record: bytes, signature: bytes | None, sequence: int
) -> None:
    held = recall_all(location)
    if any(w.repository_id == repository_id and _sequence(w.record) >= sequence for w in held):
        return
    others = [
        {"repository_id": w.repository_id, "head": w.record.decode("utf-8"), "signature": _text(w.signature)}
        for w in held
        if w.repository_id != repository_id
    ][-(MAX_IDENTITIES - 1) :]
    body = {
        "format": WITNESS_FORMAT,
        "location": location,
        "repository_id": repository_id,
        "head": record.decode("utf-8"),
        "signature": _text(signature),
        "others": others,  # the other repositories seen here, oldest first
    }
    _write_atomically(path, json.dumps(body, indent=2) + "\n")


def _text(signature: bytes | None) -> str | None:
    return signature.decode("utf-8") if signature is not None else None


def _sequence(record: bytes) -> int:
    try:
        value = json.loads(record).get("sequence")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return 0
    return value if type(value) is int else 0


def _write_atomically(path: Path, text: str) -> None:
    """A crash leaves the old record or the new, never half (the directory made owner-only first)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_with(path, text)
