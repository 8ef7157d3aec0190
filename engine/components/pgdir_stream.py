"""A pg_dump directory archived while pg_dump writes it, and read back file by file.

Why: ``pg_dump --format=directory --jobs=N``, the only parallel dump, writes files into
a directory, not a stream. Archiving that directory once pg_dump has exited was a
second pass over every byte, after the dump (1.26x ``pg_dump -Fd -j2`` at pgbench scale
60). So the backup follows the directory while pg_dump writes it: a data file is
archived as soon as pg_dump closes it (inotify ``IN_CLOSE_WRITE``), and a file still
being written is archived in parts as it grows, so compressing and hashing run beside
pg_dump instead of after it.

The layout (artifact ``database.dir.data.tar``), a plain tar in the order the files were
completed:

- a file pg_dump had closed before any of it was archived: one member, its own name;
- a file archived while it grew: members ``<name>.part000001``, ``<name>.part000002``,
  ..., whose concatenation is the file (``cat 3358.dat.part* > 3358.dat`` by hand).

``toc.dat`` is not in it: it is its own artifact (``database.dir.toc``), since pg_restore
reads it before anything else. A listing (``database.dir.files.json``) names every data
file with its size, in the order the stream completes them, so a restore knows before
reading the stream what each file will hold and when it is whole
(``postgres_parallel``).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import struct
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from engine.errors import ComponentError, IntegrityError
from engine.streams import CHUNK

TOC = "toc.dat"
LISTING_FORMAT = 1
PART = 32 * 1024 * 1024  # a growing file is archived whenever this much more of it is there
_TICK = 0.05  # seconds between looks at the files still being written
# What pg_dump writes into a directory dump with --compress=0: data files, and large objects' TOCs and data.
_DATA_NAME = re.compile(r"^(?:\d+\.dat|blob_\d+\.dat|blobs(?:_\d+)?\.toc)$")
_PART_NAME = re.compile(r"^(.+)\.part(\d{6})$")

_IN_CLOSE_WRITE = 0x00000008
_IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")


class _CloseWatch:
    """The names of files closed after writing in one directory (Linux inotify, through libc).

    ``closed`` returns None once the kernel dropped events (queue overflow): from then
    on only pg_dump's exit says a file is complete.
    """

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CLOSE_WRITE) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch failed on {directory}")
        self.fd = fd
        self.lost = False

    @classmethod
    def open(cls, directory: Path) -> _CloseWatch | None:
        """A watch, or None where the system has no inotify (then files complete when pg_dump exits)."""
        try:
            return cls(directory)
        except (OSError, AttributeError):
            return None

    def closed(self, timeout: float) -> list[str] | None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        names: list[str] = []
        while ready:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & _IN_Q_OVERFLOW:
                    self.lost = True
                elif raw:
                    names.append(os.fsdecode(raw.rstrip(b"\0")))
        return None if self.lost else names

    def close(self) -> None:
        os.close(self.fd)


class _Reader:
    """``size`` bytes of an open file from ``offset``, as tarfile reads a member's data."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.left = fd, offset, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.pread(self.fd, n, self.offset)
        if len(data) < n:
            raise ComponentError("a file of the dump shrank while it was archived")
        self.offset += len(data)
        self.left -= len(data)
        return data


class _Followed:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.archived = 0
        self.parts = 0


class DumpFollower:
    """Archives the data files of a directory dump into a tar as pg_dump completes them.

    A file is finished when pg_dump closed it (or exited): its rest is archived, it is
    removed from the directory (so the dump never needs its whole size on local disk at
    once, except for a file still being written), and it joins ``order``. A name that
    shows up again after that means pg_dump wrote a file twice, which this layout cannot
    represent: the backup fails rather than store the wrong one.
    """

    def __init__(self, directory: Path, sink: IO[bytes], part: int = PART) -> None:
        self.directory = directory
        self.part = part
        self.tar = tarfile.TarFile(fileobj=_Appender(sink), mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
        self.tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # an attribute typeshed omits
        self.open: dict[str, _Followed] = {}
        self.order: list[tuple[str, int]] = []
        self.finished: set[str] = set()

    def scan(self) -> None:
        """Start following every data file pg_dump created since the last look."""
        for name in sorted(os.listdir(self.directory)):
            if name == TOC or name in self.open:
                continue
            if name in self.finished:
                raise ComponentError(f"pg_dump wrote {name} again after closing it; the dump cannot be archived")
            if not _DATA_NAME.match(name):
                raise ComponentError(f"pg_dump wrote {name!r}, which is not a file of a directory dump drproof knows")
            fd = os.open(self.directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self.open[name] = _Followed(fd)

    def grow(self) -> None:
        """Archive a part of every open file that grew by at least ``part`` bytes."""
        for name, f in self.open.items():
            size = os.fstat(f.fd).st_size
            if size - f.archived >= self.part:
                self._emit(name, f, size - f.archived, as_part=True)

    def finish(self, name: str) -> None:
        """pg_dump closed ``name``: archive the rest of it, drop it from disk, note its size."""
        f = self.open.pop(name, None)
        if f is None:
            return  # toc.dat, or a close already handled
        size = os.fstat(f.fd).st_size
        if not f.parts:
            self._emit(name, f, size, as_part=False)
        elif size > f.archived:
            self._emit(name, f, size - f.archived, as_part=True)
        os.close(f.fd)
        os.unlink(self.directory / name)
        self.finished.add(name)
        self.order.append((name, size))

    def finish_all(self) -> None:
        """pg_dump exited: every file left is complete."""
        self.scan()
        for name in sorted(self.open):
            self.finish(name)

    def close(self) -> None:
        for f in self.open.values():
            os.close(f.fd)
        self.open.clear()
        self.tar.close()

    def _emit(self, name: str, f: _Followed, size: int, as_part: bool) -> None:
        self.tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member otherwise
        if as_part:
            f.parts += 1
        info = tarfile.TarInfo(f"{name}.part{f.parts:06d}" if as_part else name)
        info.size, info.mode, info.mtime = size, 0o600, int(time.time())
        self.tar.addfile(info, _Reader(f.fd, f.archived, size))
        f.archived += size


class _Appender:
    """Write-only file object over the artifact sink (tarfile asks for ``tell``)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.offset = sink, 0

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset


def follow(
    directory: Path, proc: subprocess.Popen[bytes], sink: IO[bytes], part: int | None = None
) -> list[tuple[str, int]]:
    """Archive ``directory`` while ``proc`` (pg_dump) writes it; return its data files, in archive order."""
    watch = _CloseWatch.open(directory)
    follower = DumpFollower(directory, sink, PART if part is None else part)
    try:
        while True:
            exited = proc.poll() is not None
            closed = watch.closed(_TICK) if watch is not None else None
            if watch is None:
                time.sleep(_TICK)
            follower.scan()
            for name in closed or ():
                follower.finish(name)
            if exited:
                break
            follower.grow()
        follower.finish_all()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if watch is not None:
            watch.close()
        follower.close()
    return follower.order


def listing_json(order: list[tuple[str, int]]) -> bytes:
    return json.dumps({"format": LISTING_FORMAT, "files": [[n, s] for n, s in order]}).encode()


MAX_LISTING = 64 * 1024 * 1024  # a name and a size per file: about 30 bytes each


def read_listing(data: bytes) -> list[tuple[str, int]]:
    """The data files of a dump, in the order its stream completes them; refused if malformed."""
    try:
        doc: Any = json.loads(data)
        if doc["format"] != LISTING_FORMAT:
            raise ValueError(f"format {doc['format']!r}")
        order = [(str(name), int(size)) for name, size in doc["files"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise IntegrityError(f"the dump's file listing cannot be read ({exc}); it is not one drproof wrote") from None
    seen: set[str] = set()
    for name, size in order:
        if not _DATA_NAME.match(name) or name in seen or size < 0:
            raise IntegrityError(f"the dump's file listing names {name!r} ({size} bytes), which no dump holds")
        seen.add(name)
    return order


class StreamExtractor:
    """Writes the data stream into files made beforehand, and says which are whole, in order.

    Every file of the listing exists before this runs, already at its final size
    (sparse), so pg_restore can size its work by them. ``completed`` grows as files
    become whole; ``error`` is what stopped the stream (damage, a member the listing
    does not announce), and ``done`` is set at the end either way. Nothing here reads a
    file: the caller must let pg_restore read one only once it is in ``completed``.
    """

    def __init__(self, directory: Path, listing: list[tuple[str, int]]) -> None:
        self.directory = directory
        self.sizes = dict(listing)
        self.expected = [name for name, _ in listing]
        self.written: dict[str, int] = {}
        self.parts: dict[str, int] = {}
        self.completed: list[str] = []
        self.error: BaseException | None = None
        self.done = False
        self.cancelled = False
        self.changed = threading.Condition()

    def run(self, open_stream: Any) -> None:
        """Read the whole stream (``open_stream()`` proves it on exit), recording any failure."""
        try:
            with open_stream() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    self._member(member, tar.extractfile(member))
            missing = [n for n in self.expected if n not in self.completed]
            if missing:
                raise IntegrityError(f"the dump's data stream ends without {len(missing)} file(s), first {missing[0]}")
        except BaseException as exc:  # handed to the thread that waits, which raises it
            self.error = exc
        finally:
            with self.changed:
                self.done = True
                self.changed.notify_all()

    def _member(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        name, part = _split(member.name)
        size = self.sizes.get(name)
        if size is None or not member.isreg() or data is None:
            raise IntegrityError(f"the dump's data stream holds {member.name!r}, which its listing does not announce")
        in_order = part == self.parts.get(name, 0) + 1 and member.size > 0 if part else name not in self.written
        if not in_order:
            raise IntegrityError(f"the dump's data stream holds {member.name!r} out of order")
        offset = self.written.get(name, 0)
        if offset + member.size > size or (not part and member.size != size):
            raise IntegrityError(f"{member.name} in the dump's data stream is larger than its listing says")
        self._write(name, offset, member.size, data)
        self.parts[name] = part or 0
        self.written[name] = offset + member.size
        if self.written[name] == size:
            with self.changed:
                self.completed.append(name)
                self.changed.notify_all()

    def _write(self, name: str, offset: int, size: int, data: IO[bytes]) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            left = size
            while left:
                if self.cancelled:
                    raise ComponentError("the restore stopped reading the dump")
                chunk = data.read(min(CHUNK, left))
                if not chunk:
                    raise IntegrityError(f"{name} ends early in the dump's data stream")
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(fd, view, offset)
                    view, offset = view[n:], offset + n
                left -= len(chunk)
        finally:
            os.close(fd)


def _split(member: str) -> tuple[str, int]:
    """``3358.dat.part000002`` -> ("3358.dat", 2); a whole file -> (name, 0)."""
    m = _PART_NAME.match(member)
    return (m.group(1), int(m.group(2))) if m else (member, 0)
