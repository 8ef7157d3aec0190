"""Canaries: a sentinel planted at backup time that proves *which* backup a restore brought back.

Fidelity proves a restored copy holds what a backup's fingerprint describes; it does not
say the backup was the one the operator meant (an older set restored by mistake is
faithful to itself). With a canary, the backup engine writes a random value into the
component just before taking the backup (a row in a ``drproof_canary`` table, a
``drproof:canary`` key, a ``.drproof-canary`` file) and records only its SHA-256 and the
moment in the manifest. After a restore, reading the value back and hashing it proves
that this very backup was restored, and how old it is. The value itself is never
written anywhere else and never printed.

It is opt-in (a canary writes into the data it protects): ``backup: {canary: true}`` in a
drill, ``canary: true`` on a component of backup-config.yaml.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.components.base import Component
from engine.errors import ComponentError

CANARY_NAME = "drproof_canary"  # table; the Redis key is "drproof:canary", the file ".drproof-canary"


def plant(component: Component) -> dict[str, Any]:
    """Write a fresh random value into ``component``; return what the manifest records of it."""
    if not component.supports_canary:
        raise ComponentError(f"{component.name} {component.instance!r} cannot hold a canary")
    planted_at = datetime.now(UTC)
    value = f"{secrets.token_hex(16)}@{planted_at.isoformat()}"
    where = component.plant_canary(value)
    return {"sha256": digest(value), "planted_at": planted_at.isoformat(), "where": where}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


CANARY_FILE = ".drproof-canary"
MAX_CANARY_BYTES = 4096  # what a planted value can be; a larger file at that name is not ours


def plant_file(root: Path, value: str) -> str:
    """Write ``value`` to ``root/.drproof-canary`` atomically (temporary file, fsync, rename), mode 0600.

    Atomic because the backup reads the tree right after: a half-written canary would be
    a canary nobody could ever match.
    """
    target = root / CANARY_FILE
    temp = root / f"{CANARY_FILE}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, value.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ComponentError(f"cannot plant the canary in {root}: {exc.strerror or exc}") from exc
    return f"file {CANARY_FILE} at the root of {root}"


def read_file(root: Path) -> str | None:
    """The canary value in ``root``, or None when there is none (or it is not a regular file)."""
    try:
        fd = os.open(root / CANARY_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ComponentError(f"cannot read the canary in {root}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_CANARY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CANARY_BYTES:
        return None
    return data.decode("utf-8", errors="replace")
