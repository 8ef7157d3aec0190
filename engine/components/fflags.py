"""Inode flags of tree entries (``chattr``/``lsattr``): archived, restored and fingerprinted.

Why: an audit log kept append-only (``chattr +a``) or a configuration pinned immutable
(``+i``) is protected by its flag, not by its bytes or mode. A restore that drops the flag
gives back every byte and says "match" while the protection is gone: the log can be
rewritten, the pinned file edited. Found by review (r03): the flags were neither archived
nor compared.

Which flags: those an operator sets on purpose and a restore can give back, ``COVERED``:
immutable (i), append-only (a), no dump (d), no atime (A), synchronous (S), synchronous
directory (D) and top of a directory hierarchy (T). The others are the file system's own
(extents, inline data, encrypted, verity, casefold: set by the file system or only on an
empty entry) or tuning that does not protect anything and that most file systems refuse
(compression, no copy-on-write): left out, so a restore onto another file system is not
a difference for them.

They travel as bsdtar does it, one pax record ``SCHILY.fflags`` per entry that has any,
with libarchive's names ("schg,sappnd"); an entry of a file system that cannot say
(``FS_IOC_GETFLAGS`` unsupported: NFS, FUSE, /proc) records ``?``: "not readable", never
"none", since a server behind NFS may keep flags its clients cannot see. Only regular
files and directories have them (``chattr`` sets none on a link or a FIFO).

Read with one ``ioctl`` on a descriptor the backup has open anyway (about 2 µs a file).
A restore sets them last (:func:`give`, after content, owner, attributes and mode, and
after the staged tree was proved): an immutable file cannot be written or chmodded, an
append-only directory loses no entries, so anything set earlier would stop the restore.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

PAX_KEY = "SCHILY.fflags"
UNREADABLE = "?"

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
_ZEROS = bytes(8)  # the buffer FS_IOC_GETFLAGS writes into (an int; 8 bytes whatever the kernel's width)

# (bit, libarchive's name, chattr's letter, what it protects), in lsattr's order.
_FLAGS = (
    (0x00000008, "sync", "S", "synchronous"),
    (0x00010000, "dirsync", "D", "synchronous directory"),
    (0x00000010, "schg", "i", "immutable"),
    (0x00000020, "sappnd", "a", "append-only"),
    (0x00000040, "nodump", "d", "no dump"),
    (0x00000080, "noatime", "A", "no atime"),
    (0x00020000, "topdir", "T", "top directory"),
)
COVERED = 0
for _bit, *_rest in _FLAGS:
    COVERED |= _bit
_BY_NAME = {name: bit for bit, name, _letter, _what in _FLAGS}
NO_RENAME = _BY_NAME["schg"] | _BY_NAME["sappnd"]  # immutable, append-only: the entry cannot be renamed or removed
_NAMES: dict[int, str] = {}

# What FS_IOC_GETFLAGS fails with on a file system that keeps no such flags (or will not say).
UNSUPPORTED = (errno.ENOTTY, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
# What setting them may fail with where this restore cannot: not root (i and a need
# CAP_LINUX_IMMUTABLE), or a file system without them. The restore goes on; fidelity names the entry.
NOT_GIVEN = (errno.EPERM, errno.EACCES, *UNSUPPORTED)

Flags = int | None  # None: not readable here


def read(fd: int) -> Flags:
    """The covered flags of the open entry ``fd``; None where its file system cannot say."""
    try:  # the kernel writes an int into the zeroed buffer: its other bytes stay zero
        return int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, _ZEROS), "little") & COVERED
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return None
        raise


def read_path(path: str, directory: bool = False) -> Flags:
    """:func:`read` of the entry at ``path`` (not followed), opened for it: for entries the caller has not open."""
    fd = os.open(
        path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    )
    try:
        return read(fd)
    finally:
        os.close(fd)


def text(flags: Flags) -> str:
    """The pax value (and fingerprint token) of ``flags``: names joined by commas, "" for none, "?" unreadable."""
    if flags is None:
        return UNREADABLE
    if not flags:
        return ""
    found = _NAMES.get(flags)
    if found is None:
        found = _NAMES[flags] = ",".join(name for bit, name, _l, _w in _FLAGS if flags & bit)
    return found


def token(flags: Flags) -> str:
    """What a part ends with for these flags: nothing for none, else `` fflags:<names>`` (``?``: not readable)."""
    shown = text(flags)
    return f" fflags:{shown}" if shown else ""


def to_pax(flags: Flags) -> dict[str, str]:
    shown = text(flags)
    return {PAX_KEY: shown} if shown else {}


def from_pax(pax: Mapping[str, str] | None) -> Flags:
    """The flags an archive member records: 0 without a record, None for "not readable"; unknown names ignored."""
    if not pax:
        return 0
    value = pax.get(PAX_KEY)
    if value is None:
        return 0
    if value == UNREADABLE:
        return None
    flags = 0
    for name in value.split(","):
        flags |= _BY_NAME.get(name.strip(), 0)
    return flags


def described(shown: str) -> str:
    """A token's names as a person reads them: "schg,sappnd" → "immutable (+i), append-only (+a)"."""
    if shown == UNREADABLE:
        return "not readable"
    if not shown:
        return "none"
    letters = {name: (letter, what) for _b, name, letter, what in _FLAGS}
    return ", ".join(f"{letters[n][1]} (+{letters[n][0]})" if n in letters else n for n in shown.split(","))


def give(fd: int, flags: int) -> bool:
    """Set the covered flags of the open entry ``fd`` to ``flags`` (its other flags kept); whether it was done."""
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0\0\0\0\0\0\0\0")
        current = int.from_bytes(raw[:4], "little")
        wanted = (current & ~COVERED) | flags
        if wanted != current:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, wanted.to_bytes(4, "little") + b"\0\0\0\0")
    except OSError as exc:
        if exc.errno not in NOT_GIVEN:
            raise
        return False
    return True


def clear_tree(top: str) -> None:
    """Clear the covered flags of every entry below and at ``top``: before a copy drproof made itself is removed.

    Only for drproof's own staging copy (never the live data a restore replaced: that is the
    operator's, see ``_discard_replaced``). Errors are ignored: the removal that follows says what is left.
    """
    for path, dirs, files in os.walk(top):
        for name in (*files, *dirs):
            entry = os.path.join(path, name)
            _clear(entry)
    _clear(top)


def _clear(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        give(fd, 0)
    except OSError:
        pass
    finally:
        os.close(fd)
