"""What /proc says about a process: when it started, in which pid namespace, and whether /proc can be read.

Why a module of its own: the repository's staging notes and lock holders, the run
directories' names and the runtime's owner marks all tell a live process from a gone one
(or from another process that reuses its pid) the same way, and each had its copy.
"""

from __future__ import annotations

import os
from pathlib import Path


def start_ticks(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def processes_visible() -> bool:
    """Whether /proc shows processes here at all (it shows this one).

    Why: ``start_ticks`` is None both for a process that is gone and where /proc
    cannot be read (a chroot or sandbox without it). In the second case every owner
    looked gone, and a live run's directories and a live backup's set were removed as
    leftovers (found by review: ``drproof clean`` without /proc listed a live CI run's
    server directories). Where nothing can be told, nothing is judged gone.
    """
    return start_ticks(os.getpid()) is not None


def pid_namespace() -> str:
    """This process's pid namespace (the inode of /proc/self/ns/pid), or "" where it cannot be read.

    Why: a pid names a process only in its own namespace. A backup in a container that
    shares the host's name (``--network host``, or no UTS namespace of its own) is pid 1
    or 7 there; read on the host, that pid is another process or none, and its live set
    was removed as a dead one's (found by review).
    """
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return ""
