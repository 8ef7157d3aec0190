"""Temporary directories that a killed drproof does not leave behind for ever.

Found by review: ``pg_dump -j`` writes a full, uncompressed copy of the database into a
temporary directory while the backup streams it into the repository; a backup killed
(SIGKILL, the OOM killer, a reboot of the job runner) left that copy in ``/tmp`` for
ever: 6.6 MB for a 300,000-row table, the size of the database for a real one, and
every killed run one more. A directory made here carries its owner's pid and the
process's start time in its name, and making one removes the same kind left by
processes of this host that are gone (or whose pid another process now uses).

The same holds for the directories a run's servers live in (a PostgreSQL data directory
restored from a production backup in a restore test, an RDB file being checked): a run
SIGKILLed mid-drill took its servers with it (PR_SET_PDEATHSIG) but left their files in
``/tmp`` (found: four per killed drill). ``owned_dir`` names them the same way, and
``drproof clean`` lists and removes the ones whose run is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.procinfo import pid_namespace, processes_visible
from engine.procinfo import start_ticks as _process_start

# The whole rest of the name: a prefix that is itself a prefix of another's ("drproof-a-"
# and "drproof-a-1-") must not read the other's numbers as an owner. ``n<namespace>_``
# (the owner's pid namespace) is absent from the names of older drproofs.
_OWNED = re.compile(r"(\d+)-(\d+)-(?:n(\d+)_)?[a-z0-9_]+")


def owner_of(prefix: str, entry: Path) -> int | None:
    """The pid in ``entry``'s name if it is ``<prefix><pid>-<start>-*`` and that process is gone.

    One of another pid namespace is never gone: a drproof in a container that shares this
    /tmp (a bind mount, a pod's shared volume) names its directories by its pid there, 1
    or 7, which here is another process or none; its live run's directories were removed
    as a dead one's (found by review).
    """
    if not entry.name.startswith(prefix):
        return None
    owned = _OWNED.fullmatch(entry.name[len(prefix) :])
    if owned is None or (owned[3] is not None and owned[3] != pid_namespace()):
        return None
    if not processes_visible() or _process_start(int(owned[1])) == owned[2]:
        return None
    return int(owned[1])


def _own_name(prefix: str) -> str:
    """``<prefix><pid>-<start>-n<pid namespace>_``: what ``owner_of`` reads back."""
    pid = os.getpid()
    return f"{prefix}{pid}-{_process_start(pid)}-n{pid_namespace()}_"


def stale(prefix: str, where: Path | None = None, owners: Collection[int] = ()) -> list[Path]:
    """Directories ``<prefix><pid>-<start>-*`` of this user (or of ``owners``) whose process is gone."""
    base = Path(where or tempfile.gettempdir())
    uids = {os.geteuid(), *owners}
    found = []
    for entry in base.glob(f"{prefix}*"):
        try:
            mine = entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid in uids
        except OSError:
            continue
        if mine and owner_of(prefix, entry) is not None:
            found.append(entry)
    return sorted(found)


def owned_dir(prefix: str, where: Path | None = None, owners: Collection[int] = ()) -> Path:
    """A new private directory named for this process (see the module), after removing stale ones of ``prefix``."""
    for leftover in stale(prefix, where, owners):
        remove_tree(leftover)
    return Path(tempfile.mkdtemp(prefix=_own_name(prefix), dir=where))


def remove_tree(path: Path, attempts: int = 3) -> str | None:
    """Remove ``path`` and everything under it; None once gone, else what stayed and why.

    Why not ``rmtree(ignore_errors=True)``: a server that is still shutting down writes
    its statistics or one more WAL segment while the tree goes, the removal loses the race
    and nothing says so (found: partial server directories left after normal runs). A few
    tries a moment apart win it; what still stays is named, never silently kept.
    """
    problems: list[str] = []

    def note(_func: object, where: str, info: tuple[type[BaseException], BaseException, object]) -> None:
        exc = info[1]
        problems.append(f"{where}: {exc.strerror if isinstance(exc, OSError) else exc}")

    for attempt in range(attempts):
        if not os.path.lexists(path):
            return None
        problems.clear()
        shutil.rmtree(path, onerror=note)  # ``onexc`` from Python 3.12 on
        if not os.path.lexists(path):
            return None
        time.sleep(0.2 * (attempt + 1))
    return "; ".join(problems[:3]) or "still there"


def kept_dir(prefix: str, where: Path | None = None) -> Path:
    """A new directory that no run ever removes (a ``--keep-workdir`` or ``--work-dir`` one): ``<prefix>kept-*``.

    Why the word: ``mkdtemp(prefix)`` alone gave ``drproof-upgrade-15-17-x8k2j1ab`` for a
    kept run of scenario ``upgrade-15-17``, and the next run of scenario ``upgrade`` read
    that as the directory of a dead process 15 and removed it (found by review: a kept
    work directory, restored database and all, gone; ``drproof clean`` did the same to a
    kept ``pg-15-18`` as a server directory of "local pid 15"). A run directory is
    ``<pid>-<start>-<one word>`` after its prefix; here a word that is not a number always
    comes before the last dash, so no prefix, of any scenario, can read it as one.
    """
    return Path(tempfile.mkdtemp(prefix=f"{prefix}kept-", dir=where))


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A private temporary directory (as ``tempfile.TemporaryDirectory``), after removing stale ones of ``prefix``."""
    for leftover in stale(prefix):
        shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=_own_name(prefix)) as tmp:
        yield tmp
