"""Small private files replaced whole: readers see the old one or the new one, never half.

Shared by the local repository's records (identity, head, tombstones) and this host's own
record of each repository's newest set (engine/witness.py).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO

PRIVATE_MODE = 0o600


def create_private(path: Path) -> IO[bytes]:
    """A new file, owner-only; never an existing one, never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    return os.fdopen(fd, "wb")


def replace_with(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``path``, fsync it, and rename it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with create_private(tmp) as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
