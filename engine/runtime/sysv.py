"""System V shared memory segments that killed PostgreSQL servers leave behind.

A PostgreSQL server holds one small System V segment (56 bytes) besides its mmap'd
shared memory, and removes it at a clean shutdown. A server that is SIGKILLed (a drill's
``kill_primary``, a crashed run, a guard that ends a stuck server) leaves it: found when
this host reached the kernel's limit of 4096 segments (``kernel.shmmni``) and every new
PostgreSQL failed in initdb with "could not create shared memory segment: No space left
on device". Every drill that kills a server leaked one.

A segment is an orphan only when nothing is attached to it *and* the process that
created it is gone: a server between its ``shmget`` and ``shmat`` has none attached yet,
and must not lose it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from engine.runtime import processes

_TABLE = Path("/proc/sysvipc/shm")
_IPC_RMID = 0


@dataclass(frozen=True)
class Segment:
    shmid: int
    creator: int  # pid of the process that created it
    attached: int
    uid: int


def segments() -> list[Segment]:
    """The host's System V shared memory segments (Linux); none where the table cannot be read."""
    try:
        lines = _TABLE.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        f = line.split()
        if len(f) >= 8 and all(x.lstrip("-").isdigit() for x in (f[1], f[4], f[6], f[7])):
            found.append(Segment(shmid=int(f[1]), creator=int(f[4]), attached=int(f[6]), uid=int(f[7])))
    return found


_creators: set[int] = set()


def note_creator(pid: int) -> None:
    """Remember a server this process started: its segments are ours to remove once orphaned."""
    _creators.add(pid)


def orphans(uid: int, only_ours: bool = False) -> list[Segment]:
    """Segments of ``uid`` that nothing is attached to and whose creator is gone.

    ``only_ours``: and that a server this process started created. A run as a normal user
    shares its uid with the user's other programs, some of which keep a segment with
    nothing attached on purpose; a root run's servers have a system user of their own.
    """
    return [
        s
        for s in segments()
        if s.uid == uid and s.attached == 0 and not processes.pid_alive(s.creator) and (not only_ours or s.creator in _creators)
    ]


def remove(segment: Segment) -> bool:
    """Remove ``segment`` (IPC_RMID); whether it went (it may be gone already, or not ours to remove)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return bool(libc.shmctl(segment.shmid, _IPC_RMID, None) == 0)


def remove_orphans(uid: int, only_ours: bool = False) -> list[str]:
    """Remove ``uid``'s orphaned segments (see ``orphans``); a description of each that went."""
    return [f"shared memory segment {s.shmid}" for s in orphans(uid, only_ours) if remove(s)]
