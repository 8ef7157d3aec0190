"""Foreign archives and directory trees, unpacked or copied into a sandbox directory safely.

A tar another tool wrote is trusted no more than one an attacker wrote: every member goes
through ``engine.components.untar.TreeWriter``, which refuses absolute names, ``..``,
paths through a link the archive made, device nodes and the like, and writes relative to
open directory descriptors so nothing can land outside the target. A directory tree is
copied the same way, entry by entry through the same writer: links are copied as links,
never followed, and a device node refuses the copy as it refuses an archive.

Archives may be compressed (gzip, zstd, bzip2, xz); the compression is recognised by the
file's first bytes, not its name. GNU tar writes the archive's root as ``./``; that
entry is skipped (the target is the root), every other member is judged by its full name
before ``strip_components`` removes leading directories, so stripping cannot hide a
``..``.

Archives are read by drproof's strict tar reader (``engine.components.tarread``,
``strict=True``): a damaged header at any offset, a missing end-of-archive marker, a pax
or long-name header too large to hold, or a compressed stream cut short is an error, never
a shorter restore. A backup that restores nothing (no member, or only the root or members
``strip_components`` removes) is refused: an empty restore proves nothing.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from engine.components.tarread import members
from engine.components.untar import TreeWriter, member_parts
from engine.errors import ComponentError
from engine.streams import CHUNK

NOTHING = "the backup holds nothing to restore"

_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}


def compression(path: Path) -> str:
    """How the file is compressed, from its first bytes: none, gzip, zstd, bzip2 or xz."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), "none")


@contextlib.contextmanager
def decompressed(path: Path) -> Iterator[IO[bytes]]:
    """The file's content, decompressed as its first bytes say, as a stream read once."""
    kind = compression(path)
    with open(path, "rb") as raw:
        if kind == "none":
            yield raw
        elif kind == "gzip":
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream  # type: ignore[misc]  # a GzipFile reads bytes like any IO[bytes]
        elif kind == "bzip2":
            with bz2.BZ2File(raw) as stream:
                yield stream
        elif kind == "xz":
            with lzma.LZMAFile(raw) as stream:
                yield stream
        else:
            import zstandard

            zstd_frames_whole(path)
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, read_across_frames=True)
            with reader:
                yield io.BufferedReader(reader, CHUNK)


_ZSTD_MAGIC = 0xFD2FB528


def zstd_frames_whole(path: Path) -> None:
    """Refuse a zstd file whose last frame does not end, or that ends inside one.

    python-zstandard's ``stream_reader`` returns end-of-file where the input ends, finished
    frame or not, so a cut-short ``.tar.zst`` would read as a shorter archive. This walks
    the frames' block headers (seeking over block contents, so it reads a few bytes per
    128 KiB block) and checks the file ends exactly where its last frame does.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            pos = _zstd_frame(fh, pos, size, path)


def _zstd_frame(fh: IO[bytes], pos: int, size: int, path: Path) -> int:
    """Where the frame starting at ``pos`` ends (a zstd or a skippable frame)."""
    cursor = _Cursor(fh, pos, size, path)
    magic = int.from_bytes(cursor.take(4), "little")
    if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its length, then that many bytes
        cursor.skip(int.from_bytes(cursor.take(4), "little"))
        return cursor.pos
    if magic != _ZSTD_MAGIC:
        raise ComponentError(f"{path}: cannot unpack: data after the zstd stream is not a zstd frame")
    descriptor = cursor.take(1)[0]
    fcs_flag, single, checksum, did_flag = descriptor >> 6, descriptor >> 5 & 1, descriptor >> 2 & 1, descriptor & 3
    cursor.skip((0 if single else 1) + (0, 1, 2, 4)[did_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag])
    while True:
        header = int.from_bytes(cursor.take(3), "little")
        last, kind, length = header & 1, header >> 1 & 3, header >> 3
        if kind == 3:
            raise ComponentError(f"{path}: cannot unpack: a zstd block of the reserved type (the file is damaged)")
        cursor.skip(1 if kind == 1 else length)  # an RLE block holds one byte
        if last:
            break
    cursor.skip(4 if checksum else 0)
    return cursor.pos


class _Cursor:
    """A position in a file whose every move is checked against the file's end."""

    def __init__(self, fh: IO[bytes], pos: int, size: int, path: Path) -> None:
        self.fh, self.pos, self.size, self.path = fh, pos, size, path

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise ComponentError(f"{self.path}: cannot unpack: the zstd stream is cut short (a frame does not end)")
        self.pos += n

    def take(self, n: int) -> bytes:
        start = self.pos
        self.skip(n)
        self.fh.seek(start)
        return self.fh.read(n)


def stripped(name: str, strip: int, what: str = "member") -> str | None:
    """``name`` without its first ``strip`` components; None for the root or a member above it.

    The full name is judged first (``member_parts`` refuses absolute paths, ``..`` and
    empty components), so nothing hostile survives by being stripped.
    """
    if not name.startswith("/") and all(p in ("", ".") for p in name.split("/")):
        return None  # the archive's root, "./" as GNU tar writes it: the target itself
    parts = member_parts(name, what)
    return "/".join(parts[strip:]) if len(parts) > strip else None


@dataclass
class TreeStats:
    """What was unpacked or copied, for the report."""

    entries: int = 0
    files: int = 0
    bytes: int = 0
    newest: float | None = None  # newest modification time among the files and links
    skipped: int = 0  # the root entry, members above strip_components, sockets

    def count(self, info: Any) -> None:
        self.entries += 1
        if info.isreg():
            self.files += 1
            self.bytes += info.size
        # Files and links only: a directory's time is when an entry last changed in it,
        # which a copy (an S3 download creating it) resets; a file's is kept.
        if not info.isdir() and (self.newest is None or info.mtime > self.newest):
            self.newest = float(info.mtime)

    def newest_time(self) -> datetime | None:
        return datetime.fromtimestamp(self.newest, UTC) if self.newest is not None else None


class _Translate(contextlib.AbstractContextManager[None]):
    """A damaged or truncated archive becomes a ComponentError that names it."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        if (
            isinstance(exc, tarfile.TarError | EOFError | OSError | lzma.LZMAError | zlib.error)
            or type(exc).__name__ == "ZstdError"
        ):
            raise ComponentError(f"{self.what}: cannot unpack: {type(exc).__name__}: {exc}") from None


def scan(path: Path, strip: int = 0) -> TreeStats:
    """Read every member header (refusing hostile names), without writing anything.

    An uncompressed archive is read by seeking from header to header; a compressed one
    must be decompressed to its end. An archive that would restore nothing is refused.
    """
    stats = TreeStats()
    with _Translate(str(path)), decompressed(path) as stream:
        for info, _content in members(stream, strict=True):
            _judge(info, strip, stats)
    _require_entries(path, stats)
    return stats


def _require_entries(path: Path, stats: TreeStats) -> None:
    """An archive or tree that writes no entry is refused, whatever was skipped: an empty restore proves nothing."""
    if stats.entries:
        return
    if stats.skipped:
        raise ComponentError(
            f"{path}: {NOTHING}: its {stats.skipped} entr{'y is' if stats.skipped == 1 else 'ies are'} only the "
            "root, sockets, or members strip_components removes"
        )
    raise ComponentError(f"{path}: {NOTHING} (an empty archive or directory: no entry at all)")


def _judge(info: Any, strip: int, stats: TreeStats) -> None:
    name = stripped(info.name, strip)
    if info.islnk():
        stripped(info.linkname, strip, "hard link target")
    if name is None:
        stats.skipped += 1
    else:
        stats.count(info)


def unpack(path: Path, target: Path, strip: int = 0, accept: Callable[[str], bool] | None = None) -> TreeStats:
    """Extract the archive at ``path`` into ``target``, a fresh private directory.

    ``accept(name)`` (after stripping) may leave members out; a refused hostile member
    stops everything with ``HostileArchive``, an integrity error. Nothing written is
    refused as an empty backup.
    """
    stats = TreeStats()
    with _Translate(str(path)), decompressed(path) as stream, TreeWriter(target) as writer:
        for info, content in members(stream, strict=True):
            name = stripped(info.name, strip)
            if name is None or (accept is not None and not accept(name)):
                stats.skipped += 1
                continue
            info.name = name
            if info.islnk():
                link = stripped(info.linkname, strip, "hard link target")
                if link is None:
                    raise ComponentError(f"{path}: hard link {name!r} points at a member strip_components removes")
                info.linkname = link
            writer.add(info, content)
            stats.count(info)
        _require_entries(path, stats)
        writer.finish()
    return stats


def read_members(path: Path, names: set[str], limit: int = 1 << 20) -> dict[str, bytes]:
    """The content of the regular members ``names`` (small files), reading no further than needed.

    Stops as soon as all were found; a member over ``limit`` bytes is not read.
    """
    found: dict[str, bytes] = {}
    with _Translate(str(path)), decompressed(path) as stream:
        for info, content in members(stream, strict=True):
            name = stripped(info.name, 0)
            if name in names and content is not None and info.size <= limit:
                found[name] = b"".join(content)
            if found.keys() >= names:
                break
    return found


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _walk_error(error: OSError) -> None:
    """``os.walk`` leaves out a directory it cannot list; a copy or scan that did so would be partial."""
    raise ComponentError(f"cannot read the directory {error.filename!r} in the backup: {error.strerror or error}")


def copy_tree(source: Path, target: Path, skip: frozenset[str] = frozenset()) -> TreeStats:
    """Copy the tree below ``source`` into ``target`` (fresh and private), entry by entry.

    Each entry is described as tar would archive it (hard links recognised by inode) and
    written by the same ``TreeWriter`` as an archive member, so a link is copied, never
    followed, and a device node is refused. Sockets have no content to copy and are
    skipped (counted), as are the top-level entries named in ``skip``.
    """
    stats = TreeStats()
    describer = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")  # only for gettarinfo's link detection
    with _Translate(str(source)), TreeWriter(target) as writer:
        for dirpath, dirnames, filenames in os.walk(source, onerror=_walk_error, followlinks=False):
            dirnames.sort()
            below = Path(dirpath).relative_to(source)
            if below == Path("."):
                dirnames[:] = [d for d in dirnames if d not in skip]
                filenames = [f for f in filenames if f not in skip]
            for name in [*dirnames, *sorted(filenames)]:
                rel = (below / name).as_posix()
                info = describer.gettarinfo(os.path.join(dirpath, name), arcname=rel)
                if info is None:
                    stats.skipped += 1
                    continue
                if info.isreg():
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with os.fdopen(fd, "rb") as fh:  # in CHUNKs: iterating a file yields lines, held whole
                        writer.add(info, _chunks(fh))
                else:
                    writer.add(info, None)
                stats.count(info)
        _require_entries(source, stats)
        writer.finish()
    return stats


def newest_in_tree(source: Path) -> TreeStats:
    """Entries, bytes and the newest modification time below ``source``, without reading files.

    An empty tree is refused: a restore of it would prove nothing.
    """
    stats = TreeStats()
    describer = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")
    for dirpath, dirnames, filenames in os.walk(source, onerror=_walk_error, followlinks=False):
        for name in [*dirnames, *filenames]:
            info = describer.gettarinfo(os.path.join(dirpath, name), arcname=name)
            if info is None:
                stats.skipped += 1
            else:
                stats.count(info)
    _require_entries(source, stats)
    return stats
