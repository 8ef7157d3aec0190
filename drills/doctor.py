"""`drproof doctor`: can this machine run drills, and if not, what to do about it.

Each check is one line with a verdict and, when it fails, the fix. Every registered
runtime contributes its own checks (``Runtime.doctor``); the local runtime's decide the
exit code, the others' only when asked for (``--runtime docker``), because many users
never need a Docker engine.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.runtime.base import Check

MIN_FREE_BYTES = 1 << 30  # drills keep backups of seeded data in the work directory

__all__ = ["Check", "checks", "space_check"]


def checks(asked: str | None, work_dir: Path | None = None, images: dict[str, str] | None = None) -> Iterator[Check]:
    """Every runtime's checks, then the work directory's free space.

    ``asked`` is the runtime named with ``--runtime``: its checks decide the exit code,
    as the local runtime's always do.
    """
    from engine.runtime import runtimes

    for runtime in sorted(runtimes, key=lambda r: not r.doctor_required):
        yield from runtime.doctor(images or {}, required=runtime.doctor_required or runtime.name == asked)
    yield space_check(work_dir)


def space_check(work_dir: Path | None = None) -> Check:
    target = work_dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(target).free
    return Check(
        f"free space in {target}",
        free >= MIN_FREE_BYTES,
        f"{free / (1 << 30):.1f} GiB free",
        "free some space or pass --work-dir on a larger file system",
    )
