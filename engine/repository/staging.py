"""Who is writing each set in a local repository's ``.staging``, and which are leftovers.

A backup builds its set in ``.staging/<id>`` and renames it into ``sets/`` when complete.
A backup that was killed (SIGKILL, a power loss) leaves its half-written set there
forever: never listed, never restored, but holding disk. Each set being written has an
owner note beside it (``.staging/<id>.owner``: host, pid, the process's start time and
its pid namespace), so the next backup and ``drproof clean`` can tell a live writer from
a dead one. A set whose owner is a process of this host that no longer exists (or is
another process now using the pid) is stale; one of another host (or pid namespace: a
container) is left alone unless it is older than a week; one without a note (an older
drproof, or killed before writing it) after a day.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from engine.procinfo import pid_namespace, processes_visible
from engine.procinfo import start_ticks as _process_start

OTHER_HOST_STALE_S = 7 * 86400
NO_NOTE_STALE_S = 86400


def write_owner(staging: Path) -> None:
    note = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _process_start(os.getpid()),
        "pidns": pid_namespace(),
    }
    staging.with_name(staging.name + ".owner").write_text(json.dumps(note), encoding="utf-8")


def remove_owner(staging: Path) -> None:
    staging.with_name(staging.name + ".owner").unlink(missing_ok=True)


def is_stale(staging: Path, now: float | None = None) -> bool:
    """Whether nobody is writing ``staging`` any more (see the module's rules)."""
    now = time.time() if now is None else now
    note_path = staging.with_name(staging.name + ".owner")
    try:
        age = now - staging.stat().st_mtime
        note = json.loads(note_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return age > NO_NOTE_STALE_S if staging.exists() else False
    except (OSError, ValueError):
        return False  # unreadable: not ours to judge
    if note.get("host") != socket.gethostname() or note.get("pidns", "") not in ("", pid_namespace()):
        return age > OTHER_HOST_STALE_S  # its writer cannot be seen from here
    pid = note.get("pid")
    if not processes_visible():
        return False
    return not isinstance(pid, int) or _process_start(pid) != note.get("start")


def empty_trash(root: Path, dry_run: bool = False) -> list[str]:
    """Remove (or, with ``dry_run``, list) what deleted sets left in ``root/.trash``; their names.

    Why: a set is deleted by renaming it out of ``sets/`` into ``.trash`` and then removing
    its files; a prune killed while removing them left the rest there for ever, hidden and
    never counted, and neither the next prune nor ``drproof clean`` freed it: on a
    repository disk that was full (why one prunes), the space never came back. Everything
    in ``.trash`` is a set already unlisted, so it is always safe to remove.
    """
    trash = root / ".trash"
    if not trash.is_dir() or trash.is_symlink():
        return []
    gone = []
    for entry in sorted(trash.iterdir()):
        gone.append(entry.name)
        if not dry_run:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    return gone


# What drproof names a set being written: its id (``new_backup_id``), or a copy of one.
_SET_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9A-Za-z_-]+(\.copy-[0-9a-f]+)?$")


def _ours(entry: Path) -> bool:
    """A set drproof writes: it has an owner note, or it bears a set's name (one killed before its note).

    Found by review: in a directory that only looks like a repository (``sets/`` and
    ``.staging/``), every directory older than a day without a note was removed.
    """
    return entry.with_name(entry.name + ".owner").exists() or bool(_SET_NAME.match(entry.name))


def clean(root: Path, dry_run: bool = False) -> list[str]:
    """Remove (or, with ``dry_run``, list) the stale sets in ``root/.staging``; their ids.

    A ``.staging`` that is a symbolic link is not judged, as ``.trash`` is not: pointing at
    a scratch disk, it made every directory there older than a day and without an owner
    note "a set killed before writing its note", and the next backup or `drproof clean`
    removed another user's directory (found by review).
    """
    staging_dir = root / ".staging"
    if not staging_dir.is_dir() or staging_dir.is_symlink():
        return []
    gone = []
    for entry in sorted(staging_dir.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and _ours(entry) and is_stale(entry):
            gone.append(entry.name)
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True)
                remove_owner(entry)
    return gone
