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
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from engine.components.untar import TreeWriter, member_parts
from engine.errors import ComponentError
from engine.streams import CHUNK

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

            with zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK) as reader:
                yield io.BufferedReader(reader, CHUNK)


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

    def count(self, info: tarfile.TarInfo) -> None:
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
        if isinstance(exc, tarfile.TarError | EOFError | OSError | lzma.LZMAError) or type(exc).__name__ == "ZstdError":
            raise ComponentError(f"{self.what}: cannot unpack: {type(exc).__name__}: {exc}") from None


def scan(path: Path, strip: int = 0) -> TreeStats:
    """Read every member header (refusing hostile names), without writing anything.

    An uncompressed archive is read by seeking from header to header; a compressed one
    must be decompressed to its end.
    """
    stats = TreeStats()
    with _Translate(str(path)):
        if compression(path) == "none":
            with tarfile.open(path, mode="r:") as tar:
                for info in tar:
                    _judge(info, strip, stats)
        else:
            with decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    _judge(info, strip, stats)
    if stats.entries == 0 and stats.skipped == 0:
        raise ComponentError(f"{path}: an empty archive (no member at all)")
    return stats


def _judge(info: tarfile.TarInfo, strip: int, stats: TreeStats) -> None:
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
    stops everything with ``HostileArchive``, an integrity error.
    """
    stats = TreeStats()
    with _Translate(str(path)), decompressed(path) as stream, TreeWriter(target) as writer:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
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
                writer.add(info, tar.extractfile(info) if info.isreg() else None)
                stats.count(info)
        writer.finish()
    return stats


def read_members(path: Path, names: set[str], limit: int = 1 << 20) -> dict[str, bytes]:
    """The content of the regular members ``names`` (small files), reading no further than needed.

    Stops as soon as all were found; a member over ``limit`` bytes is not read.
    """
    found: dict[str, bytes] = {}
    with _Translate(str(path)):
        if compression(path) == "none":
            with tarfile.open(path, mode="r:") as tar:
                _collect(tar, names, limit, found)
        else:
            with decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                _collect(tar, names, limit, found)
    return found


def _collect(tar: tarfile.TarFile, names: set[str], limit: int, found: dict[str, bytes]) -> None:
    for info in tar:
        name = stripped(info.name, 0)
        if name in names and info.isreg() and info.size <= limit:
            member = tar.extractfile(info)
            if member is not None:
                found[name] = member.read()
        if found.keys() >= names:
            return


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
        for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
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
                    with os.fdopen(fd, "rb") as fh:
                        writer.add(info, fh)
                else:
                    writer.add(info, None)
                stats.count(info)
        writer.finish()
    return stats


def newest_in_tree(source: Path) -> TreeStats:
    """Entries, bytes and the newest modification time below ``source``, without reading files."""
    stats = TreeStats()
    describer = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        for name in [*dirnames, *filenames]:
            info = describer.gettarinfo(os.path.join(dirpath, name), arcname=name)
            if info is None:
                stats.skipped += 1
            else:
                stats.count(info)
    return stats
