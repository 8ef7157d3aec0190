"""Room on a filesystem for what a restore writes: checked before it starts, and while it writes.

Why: a restore builds a whole second copy beside the live data (same filesystem) and
swaps it in. Nothing looked at free space, so a set larger than the room left filled
that disk to 100 % before failing with ENOSPC; meanwhile every application writing
there (a database's WAL, logs) had its writes fail, and PostgreSQL PANICs when it cannot
write WAL. The restore failed anyway: a restore that made things worse.

So a restore asks :func:`require_free` for the bytes it will write, plus a reserve left
to the live applications, before it writes anything; and a :class:`SpaceGuard` stops it
when the free space falls below that reserve while it writes (another process filled the
disk meanwhile). Free space is ``f_bavail`` (what an unprivileged process may still
use), never ``f_bfree``: the blocks a filesystem keeps for root are for root's own
emergencies, not for drproof's copy.

The reserve is 5 % of the filesystem, at most 1 GiB. Why not more: it must never by
itself make a small filesystem unrestorable (a 500 MiB configuration partition keeps
25 MiB), and on a large one 1 GiB is 64 WAL segments of 16 MiB, minutes of a busy
database's writes, on top of the root reserve the filesystem keeps anyway.

Files take inodes as well as bytes: a tree of many small files can use up a
filesystem's inodes with most of its bytes free, and then every application there fails
to create a file (ENOSPC, with ``df`` showing room). So a restore of a tree also asks for
its entries' inodes (``entries``), with a reserve of 5 % of the filesystem's inodes, at
most 10,000, and the guard looks at both. A filesystem that reports no inode count
(btrfs, some network filesystems allocate them on demand) is not limited by one.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.errors import InsufficientSpace
from engine.streams import TapReader

RESERVE_FRACTION = 0.05
RESERVE_CAP = 1 << 30
# How many bytes a guard lets pass between two looks at the free space, at most. A look
# (statvfs) costs microseconds; a guard looks at least every half reserve, so a restore
# alone can never eat the reserve between two looks.
CHECK_EVERY = 64 << 20
INODE_RESERVE_CAP = 10_000
# The fewest bytes a tar stream spends on one entry (its header block): a guard counting
# bytes knows from it how many entries can at most have been made since its last look.
ENTRY_BYTES = 512


@dataclass(frozen=True)
class Filesystem:
    """One filesystem as ``statvfs`` saw it at one moment, by a path on it: what a plan compares."""

    path: Path
    device: int
    size: int
    free: int  # f_bavail: what an unprivileged writer (a server) may still use


def filesystem(path: Path) -> Filesystem:
    """A :class:`Filesystem` reading of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return Filesystem(path, os.stat(path).st_dev, st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


def free_bytes(path: Path | str) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def block_size(path: Path | str) -> int:
    """The filesystem's allocation unit: what one small file or directory takes at least."""
    return os.statvfs(path).f_frsize or 4096


def reserve_for(path: Path | str) -> int:
    """The free space a restore leaves to the applications on the filesystem of ``path``."""
    st = os.statvfs(path)
    return min(RESERVE_CAP, int(st.f_blocks * st.f_frsize * RESERVE_FRACTION))


def free_inodes(path: Path | str) -> int | None:
    """Inodes an unprivileged process may still take on the filesystem of ``path``; None if it has no fixed count."""
    st = os.statvfs(path)
    return None if st.f_files == 0 else st.f_favail


def inode_reserve_for(path: Path | str) -> int:
    """The free inodes a restore leaves to the applications on the filesystem of ``path``."""
    return min(INODE_RESERVE_CAP, int(os.statvfs(path).f_files * RESERVE_FRACTION))


def mount_of(path: Path | str) -> str:
    """The mount point of the filesystem holding ``path``: what a message names."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        current = os.path.dirname(current)
    return current


def size_text(n: int) -> str:
    """Bytes as people read them: 1.5 GiB, 12.0 MiB, 512 B."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


TO_ELSEWHERE = "Free space there, or restore elsewhere with --to"


def fits(path: Path | str, needed: int) -> bool:
    """Whether ``needed`` more bytes leave the filesystem of ``path`` its reserve: for a step that can be skipped."""
    return needed + reserve_for(path) <= free_bytes(path)


def require_free(path: Path | str, needed: int, what: str, ways_out: str = TO_ELSEWHERE, entries: int = 0) -> None:
    """Refuse, before anything is written, ``needed`` bytes (and ``entries`` inodes) the filesystem cannot take.

    ``what`` says what would be written ("the restored copy of volume 'files'"). The
    refusal names the filesystem, what is needed, what is free and the reserve kept,
    and the ways out (``ways_out``: a scratch directory is moved with TMPDIR, not --to);
    it is raised before anything is written, so nothing was changed.
    """
    free, reserve = free_bytes(path), reserve_for(path)
    if needed + reserve <= free:
        _require_inodes(path, entries, what, ways_out)
        return
    raise InsufficientSpace(
        f"refusing to write {what} into {path}: the filesystem there ({mount_of(path)}) has {size_text(free)} free, "
        f"and this needs {size_text(needed)} plus {size_text(reserve)} kept free for the applications writing there "
        f"(short by {size_text(needed + reserve - free)}). {ways_out}; nothing was changed"
    )


def _require_inodes(path: Path | str, entries: int, what: str, ways_out: str) -> None:
    """The inode half of :func:`require_free`."""
    free = free_inodes(path)
    if entries <= 0 or free is None:
        return
    reserve = inode_reserve_for(path)
    if entries + reserve <= free:
        return
    raise InsufficientSpace(
        f"refusing to write {what} into {path}: the filesystem there ({mount_of(path)}) has {free} inodes (file "
        f"slots) free, and this creates up to {entries} files and directories plus {reserve} inodes kept free for "
        f"the applications there (short by {entries + reserve - free}); its bytes would fit. {ways_out}; "
        "nothing was changed"
    )


def require_all(needs: list[tuple[Path, int]], what: str) -> None:
    """:func:`require_free` for writes to several places: the bytes bound for one filesystem are added up.

    Why: a restore may write in two places (a data directory, a scratch directory for
    WAL) that are one filesystem or two; checked apart, two writes that each fit could
    together fill a shared one.
    """
    by_device: dict[int, tuple[Path, int]] = {}
    for path, needed in needs:
        device = os.stat(path).st_dev
        first, total = by_device.get(device, (path, 0))
        by_device[device] = (first, total + needed)
    for path, needed in by_device.values():
        require_free(path, needed, what)


class SpaceGuard:
    """Stops a write when the free space of its filesystem falls below the reserve.

    Why: the check before the write sees the disk as it was; another process may fill it
    meanwhile. Bytes are counted as they pass (:meth:`passed`, or a stream from
    :meth:`reading`), and the free space is looked at every ``every`` bytes, never per
    file. The caller removes what it wrote when this raises.
    """

    def __init__(self, path: Path | str, what: str, every: int = CHECK_EVERY, ways_out: str = TO_ELSEWHERE) -> None:
        self.path = str(path)
        self.what = what
        self.ways_out = ways_out
        self.reserve = reserve_for(path)
        # Inodes: the floor is the reserve, or half of what was free at the start when that is
        # less than twice the reserve. Why: the writes that watch inodes without counting them
        # first (a cluster, an RDB) must not be stopped at their first look on a filesystem that
        # was already short of inodes; they are stopped before they take the last of them.
        at_start = free_inodes(path)
        self.inode_reserve = None if at_start is None else min(inode_reserve_for(path), at_start // 2)
        # Look often enough that neither half of the reserve can be eaten between two looks.
        by_inodes = self.inode_reserve * ENTRY_BYTES // 2 if self.inode_reserve is not None else every
        self.every = max(1, min(every, self.reserve // 2, by_inodes))
        self._since = 0

    def passed(self, n: int) -> None:
        """Count ``n`` bytes about to be written; look at the free space when enough have passed."""
        self._since += n
        if self._since >= self.every:
            self._since = 0
            self.check()

    def check(self) -> None:
        """Raise :class:`InsufficientSpace` if the free space is below the reserve now."""
        free = free_bytes(self.path)
        if free < self.reserve:
            raise InsufficientSpace(
                f"stopped writing {self.what} into {self.path}: the free space of its filesystem "
                f"({mount_of(self.path)}) fell to {size_text(free)}, below the {size_text(self.reserve)} kept free "
                f"for the applications writing there (something else is filling it). {self.ways_out}; what was "
                "written was removed and nothing was changed"
            )
        inodes = free_inodes(self.path) if self.inode_reserve is not None else None
        if inodes is not None and self.inode_reserve is not None and inodes < self.inode_reserve:
            raise InsufficientSpace(
                f"stopped writing {self.what} into {self.path}: the free inodes of its filesystem "
                f"({mount_of(self.path)}) fell to {inodes}, below the {self.inode_reserve} kept free for the "
                f"applications there (something else is creating files). {self.ways_out}; what was written was "
                "removed and nothing was changed"
            )

    def reading(self, stream: IO[bytes]) -> IO[bytes]:
        """``stream``, counting what is read from it: what is read is what gets written."""
        return io.BufferedReader(TapReader(stream, lambda data: self.passed(len(data))), 1 << 16)
