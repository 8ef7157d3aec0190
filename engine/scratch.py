"""Temporary directories that a killed drproof does not leave behind for ever.

Found by review: ``pg_dump -j`` writes a full, uncompressed copy of the database into a
temporary directory while the backup streams it into the repository; a backup killed
(SIGKILL, the OOM killer, a reboot of the job runner) left that copy in ``/tmp`` for
ever: 6.6 MB for a 300,000-row table, the size of the database for a real one, and
every killed run one more. A directory made here carries its owner's pid and the
process's start time in its name, and making one removes the same kind left by
processes of this host that are gone (or whose pid another process now uses).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.repository.staging import _process_start

_OWNED = re.compile(r"(\d+)-(\d+)-")


def stale(prefix: str, where: Path | None = None) -> list[Path]:
    """Directories ``<prefix><pid>-<start>-*`` of this user whose process is gone."""
    base = Path(where or tempfile.gettempdir())
    found = []
    for entry in base.glob(f"{prefix}*"):
        owned = _OWNED.match(entry.name[len(prefix) :])
        try:
            mine = entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.geteuid()
        except OSError:
            continue
        if owned and mine and _process_start(int(owned[1])) != owned[2]:
            found.append(entry)
    return sorted(found)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A private temporary directory (as ``tempfile.TemporaryDirectory``), after removing stale ones of ``prefix``."""
    for leftover in stale(prefix):
        shutil.rmtree(leftover, ignore_errors=True)
    pid = os.getpid()
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{pid}-{_process_start(pid)}-") as tmp:
        yield tmp
