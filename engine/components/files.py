"""Shared machinery for components that are directories of files.

volumes, configuration and the FAISS vector store all live in directories, so their
backup is a streamed tar archive and their restore extracts into a staging directory
that is swapped in only once extraction succeeded: a failed restore leaves the current
contents exactly as they were.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

from engine.errors import ComponentError
from engine.fingerprint import Part, PartHasher
from engine.streams import CHUNK


def walk_files(root: Path) -> Iterator[Path]:
    """Every non-directory entry under root, sorted, without following symlinks."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                yield p


def file_part(path: Path) -> Part:
    """Digest of one entry: its type, mode bits and content (or link target)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return symlink_part(os.readlink(path))
    if not stat.S_ISREG(st.st_mode):
        return special_part(st.st_mode)  # opening a FIFO would wait for a writer forever
    with open(path, "rb") as fh:
        digest = ContentDigest(st.st_mode)
        while chunk := fh.read(CHUNK):
            digest.add(chunk)
    return digest.part()


def symlink_part(target: str) -> Part:
    h = PartHasher("bytes")
    h.add(b"symlink\0" + target.encode("utf-8", "surrogateescape"), count=0)
    return h.part()


def special_part(mode: int) -> Part:
    """A FIFO, socket or device: its type and mode bits (there is no content to read)."""
    h = PartHasher("bytes")
    h.add(b"special\0" + oct(stat.S_IFMT(mode)).encode() + b"\0" + oct(stat.S_IMODE(mode)).encode(), count=0)
    return h.part()


class ContentDigest:
    """A regular file's part, fed its content in pieces of any size.

    The part hashes content in CHUNK-sized records, so pieces are re-cut at CHUNK
    boundaries: the digest is the same whether the content came from ``file_part``'s
    reads or from tarfile's copy loop.
    """

    def __init__(self, mode: int) -> None:
        self._h = PartHasher("bytes")
        self._h.add(b"file\0" + oct(stat.S_IMODE(mode)).encode(), count=0)
        self._pending = bytearray()

    def add(self, data: bytes | memoryview) -> None:
        if not self._pending and len(data) == CHUNK:
            self._h.add(bytes(data) if isinstance(data, memoryview) else data, count=CHUNK)
            return
        self._pending += data
        while len(self._pending) >= CHUNK:
            self._h.add(bytes(self._pending[:CHUNK]), count=CHUNK)
            del self._pending[:CHUNK]

    def part(self) -> Part:
        if self._pending:
            self._h.add(bytes(self._pending), count=len(self._pending))
            self._pending.clear()
        return self._h.part()


class _Appender:
    """A write-only stream as tarfile's "w" mode wants it: it asks where it is, never seeks."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset


class _DigestingReader:
    """A file as tarfile reads it while archiving, digested on the way through."""

    def __init__(self, fh: IO[bytes], digest: ContentDigest) -> None:
        self._fh = fh
        self._digest = digest

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._digest.add(data)
        return data


def content_part(content: bytes, mode: int) -> Part:
    """The part ``file_part`` gives a regular file holding ``content`` with ``mode``."""
    digest = ContentDigest(mode)
    digest.add(content)
    return digest.part()


FILE = "file "  # fingerprint part names of files: "file <relative path>"


def tree_parts(root: Path, prefix: str = FILE) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    for p in walk_files(root):
        rel = p.relative_to(root).as_posix()
        try:
            parts[prefix + rel] = file_part(p)
        except OSError as exc:
            parts[prefix + rel] = Part(digest=f"unreadable: {exc.strerror}", count=0, unit="bytes")
    return parts


def write_tar(
    root: Path, sink: IO[bytes], only: Sequence[str] | None = None, parts: dict[str, Part] | None = None
) -> int:
    """Stream root's contents (not root itself) as a tar; return the number of entries.

    ``only`` limits the archive to these relative paths (an incremental backup's changes).
    ``parts`` receives the fingerprint part of every entry archived, digested from the
    very bytes written, so fingerprinting costs no second read of the tree.
    """
    if not root.is_dir():
        # An empty archive of a missing directory would be a backup of nothing that looks fine.
        raise ComponentError(f"{root} is not a directory: nothing to back up (check the configured path)")
    count = 0
    # Mode "w" (not the stream mode "w|") writes straight through: "w|" re-buffers every
    # write into 10 KiB records by slicing a bytes object, which copies each MiB about a
    # hundred times (2.4 s of a 925 MB backup, profiled). tarfile copies file data in
    # 16 KiB pieces by default; CHUNK-sized pieces cut the Python calls per byte by 64
    # and match the fingerprint's record size.
    with tarfile.TarFile(fileobj=_Appender(sink), mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # an attribute typeshed omits
        if only is not None:
            for rel in sorted(only):
                count += _add(tar, root / rel, rel, parts)
            return count
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in [*sorted(dirnames), *sorted(filenames)]:
                p = Path(dirpath) / name
                count += _add(tar, p, p.relative_to(root).as_posix(), parts)
    return count


def _add(tar: tarfile.TarFile, path: Path, arcname: str, parts: dict[str, Part] | None) -> int:
    """Archive one entry and record its fingerprint part (unless ``parts`` is None); 0 if it vanished.

    A live directory keeps changing while it is archived (an application renaming its
    temporary files): an entry gone by the time it is opened was not there to back up.
    The file is opened before its header is written, so a vanished one leaves no trace.
    """
    # tarfile remembers every member it wrote (``members``) and the inode of every file
    # (``inodes``, to spot hard links): about 2 KB per file, which made a backup's memory
    # grow with the file count (measured: +100 MB at 50,000 files). Only inodes with
    # more than one name can be linked to again, so only those are kept.
    tar.members.clear()  # type: ignore[attr-defined]  # attributes typeshed omits
    try:
        info = tar.gettarinfo(str(path), arcname)
        if info is None:  # a socket: tar archives none
            return 0
        # Whole seconds, as GNU tar keeps them: a fractional mtime costs a pax header
        # (1 KiB and a slow path in tarfile) for every file, and fidelity ignores mtimes.
        info.mtime = int(info.mtime)
        if info.isreg():
            st = os.lstat(path)
            if st.st_nlink == 1:
                tar.inodes.pop((st.st_ino, st.st_dev), None)  # type: ignore[attr-defined]
            with open(path, "rb") as fh:
                if parts is None:
                    tar.addfile(info, fh)
                    return 1
                digest = ContentDigest(info.mode)
                tar.addfile(info, _DigestingReader(fh, digest))
            parts[FILE + arcname] = digest.part()
            return 1
    except FileNotFoundError:
        return 0
    tar.addfile(info)
    if parts is None:
        return 1
    if info.issym():
        parts[FILE + arcname] = symlink_part(info.linkname)
    elif info.islnk():  # a second name of a file already archived: same content and mode
        parts[FILE + arcname] = parts.get(FILE + info.linkname) or file_part(path)
    elif not info.isdir():
        parts[FILE + arcname] = special_part(info.mode)
    return 1


def _restore_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """The ``data`` filter's safety checks, but keeping the file's permission bits.

    ``data`` also clears group/other write bits, so a restored file would differ from the
    backed-up one. Set-id and sticky bits are still dropped: restoring them from a backup
    is a privilege decision a drill should not take silently (fidelity then reports it).
    """
    safe = tarfile.data_filter(member, dest)
    if safe is not None and member.isreg():
        safe = safe.replace(mode=member.mode & 0o777, deep=False)
    return safe


Layer = tuple[Callable[[], AbstractContextManager[IO[bytes]]], list[str]]


def extract_tar(stream: IO[bytes], target: Path, check: Callable[[Path], None] | None = None) -> None:
    """Replace target's contents with the archive's, atomically from a reader's view.

    The ``data`` filter's checks refuse ``..`` members, links that escape the target and
    device files, and strip a leading ``/`` so absolute members land inside the target: a
    hostile archive cannot write outside it.
    """

    @contextmanager
    def opened() -> Iterator[IO[bytes]]:
        yield stream

    extract_layers([(opened, [])], target, check)


def _remove_inside(root: Path, rel: str) -> None:
    """Remove the entry ``rel`` itself (never what a symlink points to), only inside ``root``."""
    entry = root / rel
    parent = entry.parent.resolve()
    if entry.name in ("", ".", "..") or not parent.is_relative_to(root.resolve()) or Path(rel).is_absolute():
        raise ComponentError(f"refusing to remove {rel!r}: outside the restored tree")
    if entry.is_symlink() or entry.is_file():
        entry.unlink()
    elif entry.is_dir():
        shutil.rmtree(entry)


def extract_layers(layers: Sequence[Layer], target: Path, check: Callable[[Path], None] | None = None) -> None:
    """Rebuild a tree from a full archive and the incremental layers on top of it.

    Each layer first removes the paths it lists (deleted or changed since its parent), then
    extracts its archive. Everything happens in a staging directory that replaces the
    target only when every layer applied and ``check`` accepted the result.
    """
    target = target.resolve()
    staging = target.with_name(target.name + ".drproof-restoring")
    replaced = target.with_name(target.name + ".drproof-replaced")
    for leftover in (staging, replaced):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir(mode=0o700)
    try:
        for open_stream, removals in layers:
            for rel in removals:
                _remove_inside(staging, rel)
            with open_stream() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(staging, filter=_restore_filter)
        if check is not None:
            # Judge the restored content before it replaces anything live.
            check(staging)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ComponentError(f"cannot extract archive into {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        staging.chmod(stat.S_IMODE(target.stat().st_mode))
        os.rename(target, replaced)
    os.rename(staging, target)
    shutil.rmtree(replaced, ignore_errors=True)
