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

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WITNESS_FORMAT = "drproof-witness-v1"
STATE_ENV = "DRPROOF_STATE_DIR"  # where the witness lives; set to an empty string to keep none
MAX_WITNESS_BYTES = 64 * 1024


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
    """The head record this host kept for the repository at ``location``; None if none or unreadable."""
    path = file_for(location)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_WITNESS_BYTES + 1)
        body = json.loads(raw)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if len(raw) > MAX_WITNESS_BYTES or not isinstance(body, dict) or body.get("format") != WITNESS_FORMAT:
        return None
    rid, record, sig = body.get("repository_id"), body.get("head"), body.get("signature")
    if body.get("location") != location or not isinstance(rid, str) or not isinstance(record, str):
        return None
    return Witnessed(rid, record.encode("utf-8"), sig.encode("utf-8") if isinstance(sig, str) else None, path)


def remember(location: str, repository_id: str, record: bytes, signature: bytes | None, sequence: int) -> None:
    """Keep ``record`` (naming place ``sequence``) unless this host already saw a later place of the same repository."""
    path = file_for(location)
    if path is None:
        return
    held = recall(location)
    if held is not None and held.repository_id == repository_id and _sequence(held.record) >= sequence:
        return
    body = {
        "format": WITNESS_FORMAT,
        "location": location,
        "repository_id": repository_id,
        "head": record.decode("utf-8"),
        "signature": signature.decode("utf-8") if signature is not None else None,
    }
    try:
        _write_atomically(path, json.dumps(body, indent=2) + "\n")
    except OSError as exc:
        log.warning("cannot keep this host's record of the newest set in %s (%s): %s", location, path, exc)


def _sequence(record: bytes) -> int:
    try:
        value = json.loads(record).get("sequence")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return 0
    return value if type(value) is int else 0


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a crash leaves the old record or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".witness-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
