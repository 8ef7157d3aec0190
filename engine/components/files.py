"""Shared machinery for components that are directories of files.

volumes, configuration and the FAISS vector store all live in directories, so their
backup is a streamed tar archive and their restore extracts into a staging directory
that is swapped in only once extraction succeeded: a failed restore leaves the current
contents exactly as they were.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import logging
import os
import pwd
import shutil
import stat
import tarfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from engine.components import fflags, xattrs
from engine.components.livechanges import LiveChanges
from engine.components.tarread import header_sum, members
from engine.components.untar import OWNER_NOT_GIVEN, TarMember, TreeWriter, member_parts
from engine.diskspace import SpaceGuard, block_size, require_free
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint, Part, PartHasher
from engine.privatedir import make_private
from engine.streams import CHUNK, ZSTD_FEED

if TYPE_CHECKING:
    from engine.components.base import ArtifactSource

log = logging.getLogger(__name__)


def walk_files(root: Path) -> Iterator[Path]:
    """Every non-directory entry under root, without following symlinks.

    A directory that cannot be listed is an error (``sorted_tree``), never a silent gap:
    ``os.walk`` skipped it, so a fault, health check or file list missed what was below.
    """
    for path, _rel, kind in sorted_tree(str(root)):
        if kind != DIRECTORY:
            yield Path(path)


# What a directory listing says an entry is (its d_type, without a stat): ``sorted_tree``'s kinds.
OTHER, DIRECTORY, REGULAR = 0, 1, 2


def _listing(path: str, rel: str, changes: LiveChanges | None = None) -> list[tuple[str, int]]:
    """(name, kind) of the entries of ``path``, in the order ``sorted_tree`` visits them.

    A directory sorts as its name followed by "/", so that visiting each one right where
    it sorts gives every path below in the order of its string: "a.txt" < "a/x" < "a0".
    A link to a directory is not one here. A directory gone since its parent was listed
    (a live tree) has no entries, noted in ``changes``; any other failure to list one
    (a path over the system's limit, no permission) is an error: a walk that skipped it
    would back up, or fingerprint, less than the tree and say nothing.
    """
    try:
        with os.scandir(path) as it:
            entries = [
                (
                    e.name,
                    DIRECTORY
                    if e.is_dir(follow_symlinks=False)
                    else REGULAR
                    if e.is_file(follow_symlinks=False)
                    else OTHER,
                )
                for e in it
            ]
    except (FileNotFoundError, NotADirectoryError):
        if changes is not None and rel:
            changes.note(rel + "/", "directory vanished or was replaced while archived; nothing below it stored")
        return []
    except OSError as exc:
        raise unlistable(path, rel, exc) from exc
    entries.sort(key=lambda e: e[0] + "/" if e[1] == DIRECTORY else e[0])
    return entries


def unreadable_entry(root: Path, rel: str, exc: OSError) -> ComponentError:
    """The error for an entry that could not be archived: the backup stops, naming it."""
    if exc.errno == errno.ENAMETOOLONG:
        return unlistable(str(root / rel), rel, exc)
    return ComponentError(
        f"cannot archive {rel or root!r}: {exc.strerror or exc}; the backup was not completed (nothing is published)"
    )


class _DeviceNode(Exception):
    """Raised where a device node is met while archiving; ``write_tar`` names it (``device_refused``)."""

    def __init__(self, mode: int) -> None:
        super().__init__(mode)
        self.mode = mode


def device_refused(root: Path, rel: str, mode: int) -> ComponentError:
    """The error for a device node in a tree to back up: the backup stops before anything is published.

    Why refuse, not archive: no restore creates a device node (an archive holding one is
    refused as hostile, see ``untar``), so a set holding one was published, verified and
    then could never be restored. A device is not data either: it is access to hardware.
    """
    kind = "character" if stat.S_ISCHR(mode) else "block"
    return ComponentError(
        f"cannot back up {rel!r} in {root}: it is a {kind} device node, which drproof does not back up because "
        "no restore may create one; move it out of the directory (or point the component at a directory that "
        "holds only data); the backup was not completed (nothing is published)"
    )


def unlistable(path: str, rel: str, exc: OSError) -> ComponentError:
    """The error for a directory of a tree that cannot be read, with what to do about it."""
    where = f"directory {rel!r}" if rel else f"directory {path}"
    if exc.errno == errno.ENAMETOOLONG:
        return ComponentError(
            f"cannot read {where}: its path is {len(os.fsencode(path))} bytes, over this system's limit "
            f"({os.pathconf('/', 'PC_PATH_MAX')} bytes): drproof cannot back up or check a tree this deep; "
            "shorten or move the deepest directories"
        )
    return ComponentError(f"cannot read {where}: {exc.strerror}; nothing below it could be backed up or checked")


def sorted_tree(top: str, changes: LiveChanges | None = None) -> Iterator[tuple[str, str, int]]:
    """(path, path relative to ``top``, kind) of every entry below ``top``.

    Depth first, each directory right before what it holds, and in an order that gives
    fingerprint parts in the order of their names (see ``_listing``): the part stream of
    an archive or a walk then needs no sorting (:mod:`engine.partstream`). Nothing is
    followed through a link; strings, not Paths, because this runs once per file. The
    kind is what the listing said (``DIRECTORY``, ``REGULAR`` or ``OTHER``): whoever
    opens the entry checks again.
    """
    stack = [(top, "", iter(_listing(top, "", changes)))]
    while stack:
        path, rel, entries = stack[-1]
        for name, kind in entries:
            child, child_rel = f"{path}/{name}", f"{rel}/{name}" if rel else name
            yield child, child_rel, kind
            if kind == DIRECTORY and not os.path.islink(child):  # replaced by a link since it was listed: not followed
                stack.append((child, child_rel, iter(_listing(child, child_rel, changes))))
                break
        else:
            stack.pop()


def count_entries(top: str) -> int:
    """How many entries below ``top`` are not directories (as ``sorted_tree`` sees them), unsorted.

    For a health check that only counts: no order, no entry handed out one at a time. A
    directory that cannot be listed raises, as in ``sorted_tree``.
    """
    count, stack = 0, [top]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        count += 1
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise unlistable(path, os.path.relpath(path, top), exc) from exc
    return count


def file_part(path: Path | str, owners: bool = False, apart: bool = False) -> Part:
    """Digest of one entry: its type, mode bits and content (or link target); with ``owners``, its owner and
    extended attributes too; with ``apart`` (scheme 4), the mode bits after the digest (``mode_token``)."""
    st = os.lstat(path)
    if apart:
        part, token = _apart(path, st)
        return owned(part, st.st_uid, st.st_gid, token + xattrs.token(xattrs.read(str(path))))
    part = _entry_part(path, st)
    if not owners:
        return part
    return owned(part, st.st_uid, st.st_gid, xattrs.token(xattrs.read(str(path))))


def _apart(path: Path | str, st: os.stat_result, flags: list[fflags.Flags] | None = None) -> tuple[Part, str]:
    """An entry's part in scheme 4: digested without its permission bits, and the token that says them.

    ``flags`` receives a regular file's inode flags (``_entry_part``).
    """
    if stat.S_ISLNK(st.st_mode):  # a symlink's mode means nothing (and no restore sets it)
        return _entry_part(path, st), ""
    return _entry_part(path, st, stat.S_IFMT(st.st_mode), flags), mode_token(st.st_mode)


def _entry_part(
    path: Path | str, st: os.stat_result, mode: int | None = None, flags: list[fflags.Flags] | None = None
) -> Part:
    """The part of an entry, digested with ``mode`` (by default its own; scheme 4 leaves permission bits out).

    ``flags``: where given, a regular file's inode flags are appended to it, read on the
    descriptor opened for the content (one ioctl, no second open).
    """
    if mode is None:
        mode = st.st_mode
    if stat.S_ISLNK(st.st_mode):
        return symlink_part(os.readlink(path))
    if not stat.S_ISREG(st.st_mode):
        return special_part(mode)  # opening a FIFO would wait for a writer forever
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if flags is not None:
            flags.append(fflags.read(fd))
        data = os.read(fd, CHUNK)
        if len(data) < CHUNK and st.st_size < CHUNK:  # most files: one read, no chunking
            return small_file_part(mode, data)
        digest = ContentDigest(mode)
        while data:
            digest.add(data)
            data = os.read(fd, CHUNK)
    finally:
        os.close(fd)
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
    reads or from an archive's pieces. A file that arrives whole and smaller than a
    record (most files of a volume of many) costs one ``small_file_part`` and no hasher.
    """

    __slots__ = ("_h", "_mode", "_pending")

    def __init__(self, mode: int) -> None:
        self._mode = mode
        self._h: PartHasher | None = None
        self._pending: bytes | bytearray = b""

    def _hasher(self) -> PartHasher:
        if self._h is None:
            self._h = PartHasher("bytes")
            self._h.add(b"file\0" + oct(stat.S_IMODE(self._mode)).encode(), count=0)
        return self._h

    def add(self, data: bytes | memoryview) -> None:
        if not self._pending:
            if len(data) == CHUNK:
                self._hasher().add(bytes(data), count=CHUNK)
                return
            if len(data) < CHUNK:
                self._pending = bytes(data)
                return
        pending = self._pending if isinstance(self._pending, bytearray) else bytearray(self._pending)
        pending += data
        while len(pending) >= CHUNK:
            self._hasher().add(bytes(pending[:CHUNK]), count=CHUNK)
            del pending[:CHUNK]
        self._pending = pending

    def part(self) -> Part:
        if self._h is None:
            return small_file_part(self._mode, bytes(self._pending))
        if self._pending:
            self._h.add(bytes(self._pending), count=len(self._pending))
            self._pending = b""
        return self._h.part()


_MODE_RECORDS: dict[int, bytes] = {}


def small_file_part(mode: int, data: bytes) -> Part:
    """``ContentDigest(mode)`` fed ``data`` (at most CHUNK bytes) in one piece, without its machinery.

    The same records hashed the same way (a test holds the two equal); written out
    because the general path costs more per small file than archiving it does.
    """
    head = _MODE_RECORDS.get(mode)
    if head is None:
        record = b"file\0" + oct(stat.S_IMODE(mode)).encode()
        head = _MODE_RECORDS.setdefault(mode, len(record).to_bytes(8, "big") + record)
    if not data:
        return Part(hashlib.sha256(head).hexdigest(), 0, "bytes")
    return Part(hashlib.sha256(b"".join((head, len(data).to_bytes(8, "big"), data))).hexdigest(), len(data), "bytes")


class _Appender:
    """A write-only stream as tarfile's "w" mode wants it: it asks where it is, never seeks.

    Small writes (a small file's header, content and padding) are gathered into pieces
    of ``ZSTD_FEED``: one call down the sink's stack of writers per file cost more than
    archiving the file did. :meth:`flush` when done.
    """

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._offset = 0
        self._pending = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if n >= ZSTD_FEED:
            self.flush()
            self._sink.write(data)
        else:
            self._pending += data
            if len(self._pending) >= ZSTD_FEED:
                self.flush()
        self._offset += n
        return n

    def flush(self) -> None:
        if self._pending:
            self._sink.write(self._pending)
            self._pending = bytearray()

    def tell(self) -> int:
        return self._offset


class _AnnouncedReader:
    """A file as tarfile reads it while archiving: digested on the way, zero-filled if it shrank.

    tarfile copies exactly the size its header announced and raises on a short read,
    which was a traceback for a log truncated while it was archived. Zeros past the end
    keep the archive readable (as GNU tar does); ``stored`` says how much was real.
    """

    def __init__(self, fh: IO[bytes], size: int, digest: ContentDigest | _Kept | None) -> None:
        self._fh = fh
        self._left = size
        self._digest = digest
        self._ended = False  # the file ran out: no more reads, whatever it holds later
        self.stored = 0

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = b"" if self._ended else self._fh.read(want)
        self.stored += len(data)
        if len(data) < want:
            self._ended = True
            data += bytes(want - len(data))
        self._left -= len(data)
        if self._digest is not None:
            self._digest.add(data)
        return data


def content_part(content: bytes, mode: int) -> Part:
    """The part ``file_part`` gives a regular file holding ``content`` with ``mode``."""
    digest = ContentDigest(mode)
    digest.add(content)
    return digest.part()


# Whether write_tar writes the headers of plain entries itself (``ustar_header``); the
# tests switch it off to hold both ways to the same bytes.
FAST_HEADERS = True

FILE = "file "  # fingerprint part names of files: "file <relative path>"
DIR = "dir "  # and of directories below the root (scheme 2): "dir <relative path>"


def dir_part(mode: int) -> Part:
    """A directory: that it exists (empty or not) and its mode bits."""
    h = PartHasher("directories")
    h.add(b"dir\0" + oct(stat.S_IMODE(mode)).encode())
    return h.part()


class PartSink(Protocol):
    """Where parts go as they are taken: a dict, or a :class:`~engine.partstream.PartSpool`.

    A sink whose ``owners`` attribute is true takes parts that say who owns each entry
    (:func:`owned`); a dict, or a spool for an older scheme, takes them without.
    """

    def __setitem__(self, name: str, part: Part) -> None: ...


# -- owners ------------------------------------------------------------------------------
# From scheme 3 of volumes and configuration, a file's or directory's part ends with its
# owner: "<digest> <user>#<uid>:<group>#<gid>", each name empty where the system has none
# for the id (as tar records a name and the number). Why in the digest: a
# restore that gives an application's files to root (or to nobody) leaves every byte
# equal and the application unable to open its own data; the owner is as much what the
# backup captured as the mode is. Why as readable text after the digest, not hashed into
# it: a finding can then say "owner differs (app#1001:app#1001 → root#0:root#0)"
# instead of "differs". Compared as a restore gives owners (``Part.matches``): by name
# where both sides name one (the same user may have another id on another host), else
# by number (a sandbox host without the application's user gets its files by number).
OWNERS_NOT_RECORDED = (
    "the backup's fingerprint (scheme 2, from an earlier drproof) recorded no owners and no extended attributes: "
    "who owns each file and directory, its extended attributes (ACLs, capabilities, user.*) and which names share "
    "one file (hard links) are not compared (content, modes, symbolic links and directories are)"
)
# -- hard links --------------------------------------------------------------------------
# From scheme 4 of volumes and configuration, the part of every name of a regular file
# that the tree holds under more than one name, but the first in the order of names,
# ends with " link:<that first name>" (percent-encoded: no space, any bytes). The first
# name carries nothing, so the token is known when the name is met (no second pass) and a
# tree that has no hard links has the parts it had. Why: a restore that gives two
# independent copies of a file the application shares between names (a write through
# one seen through the other, a deduplicated store, a `current` link) leaves every byte
# equal; only which names share a file tells it. The first name in order of names, not
# an inode number, so the same tree gives the same parts on any host.
LINKS_NOT_RECORDED = (
    "the backup's fingerprint (scheme 3, from an earlier drproof) recorded no hard links: which names share "
    "one file is not compared (content, modes, owners and attributes are)"
)
LINK = " link:"
# From scheme 5 of volumes, an entry's inode flags follow its attributes, before a link:
# " fflags:schg,sappnd" (``engine.components.fflags``; "?" where its file system cannot say).
FLAGS_NOT_RECORDED = (
    "the backup's fingerprint (an earlier drproof's scheme) recorded no inode flags: whether a file or "
    "directory is immutable, append-only or no-dump (chattr +i/+a/+d ...) is not compared (content, modes, "
    "owners, attributes and hard links are)"
)

ROOT_NOT_RECORDED = (
    "the backup's fingerprint (an earlier drproof's scheme) did not record the directory's own owner and inode "
    "flags (chattr +a/+i on the backed-up directory itself): a restore that lost them is not seen"
)


def link_token(first: str) -> str:
    """What the part of a further name of a hard-linked file ends with: the link to ``first``."""
    return LINK + urllib.parse.quote(first, safe="/", errors="surrogateescape")


# Also from scheme 4, the permission bits of a file, directory or FIFO are not hashed with
# its content but written after the owner, " mode:0644" (a symlink has none): a finding
# then says "mode differs (0644 → 0600); content as backed up" where scheme 3 could only
# say that the content's digest differed (found by review: an operator hunted for
# corruption that was a chmod). Sinks whose ``links`` is true take parts of scheme 4.
_MODE_TOKENS: dict[int, str] = {}


def mode_token(mode: int) -> str:
    """What follows the owner in a scheme-4 part: " mode:<permission bits in octal>" (remembered by mode)."""
    token = _MODE_TOKENS.get(mode)
    if token is None:
        token = _MODE_TOKENS[mode] = f" mode:{stat.S_IMODE(mode):04o}"
    return token


def _bits(mode: int, apart: bool) -> int:
    """The mode a part is digested with: its type alone where the permission bits are kept apart."""
    return stat.S_IFMT(mode) if apart else mode


# Names of the files met with more than one link, by (device, inode): what a walk keeps to
# know a later name of one (only files of nlink > 1 are kept).
LinkGroups = dict[tuple[int, int], list[str]]

_TOKENS: dict[tuple[int, int], str] = {}
_SYSTEM_NAMES: dict[tuple[str, int], str] = {}


def _system_name(kind: str, number: int) -> str:
    """``<name>#<id>`` of a user ("u") or group id, or ``#<id>`` where the system has no name for it."""
    key = (kind, number)
    name = _SYSTEM_NAMES.get(key)
    if name is None:
        try:
            name = pwd.getpwuid(number).pw_name if kind == "u" else grp.getgrgid(number).gr_name
        except KeyError:
            name = ""
        name = _SYSTEM_NAMES[key] = f"{name}#{number}"
    return name


def owner_token(uid: int, gid: int) -> str:
    """What a part of an entry owned by ``uid``:``gid`` ends with (" user#uid:group#gid")."""
    token = _TOKENS.get((uid, gid))
    if token is None:
        token = _TOKENS[(uid, gid)] = f" {_system_name('u', uid)}:{_system_name('g', gid)}"
    return token


def member_token(member: TarMember, apart: bool = False) -> str:
    """The owner and attribute tokens of an archive member, from the names (else the ids) and the
    extended attributes its header records; with ``apart`` (scheme 4), its mode too (not a symlink's)."""
    owner = f" {member.uname}#{member.uid}:{member.gname}#{member.gid}"
    if apart and not member.issym():
        owner += mode_token(member.mode)
    return owner + xattrs.token(xattrs.from_pax(getattr(member, "pax_headers", None)))


def owned(part: Part, uid: int, gid: int, xattr_token: str = "") -> Part:
    """``part`` saying that ``uid``:``gid`` owns the entry, and what extended attributes it has
    (``xattrs.token``); placeholders stay as they are."""
    if not part.measured:
        return part
    return Part(part.digest + owner_token(uid, gid) + xattr_token, part.count, part.unit)


def _with_token(part: Part, token: str) -> Part:
    return Part(part.digest + token, part.count, part.unit) if token else part


def _put(
    parts: PartSink, name: str, part: Part, uid: int, gid: int, xattr_token: str = "", mode: int | None = None
) -> Part:
    """Add ``part`` to ``parts``, with its owner and attributes where the sink takes them; the part as added.

    ``mode``: the entry's, written after the owner where the sink's scheme keeps it apart (``mode_token``);
    the part was then digested without it (``_bits``).
    """
    if getattr(parts, "owners", False):
        if mode is not None and getattr(parts, "links", False):
            xattr_token = mode_token(mode) + xattr_token
        part = owned(part, uid, gid, xattr_token)
    parts[name] = part
    return part


class ContentTap(Protocol):
    """Who reads more than a digest from the files archived: the configuration kind its settings.

    ``take`` gets the whole content of every regular file of at most ``limit`` bytes, as
    stored in the archive (a hard link's second name gets its file's), so whatever is
    derived from it describes the archived bytes, not a later read of a live file.
    """

    limit: int

    def take(self, rel: str, data: bytes) -> None: ...


class _Kept:
    """A file's digest that also keeps the bytes it is fed, for a :class:`ContentTap`."""

    __slots__ = ("data", "digest")

    def __init__(self, digest: ContentDigest) -> None:
        self.digest = digest
        self.data = bytearray()

    def add(self, data: bytes | memoryview) -> None:
        self.digest.add(data)
        self.data += data


def _feed(mode: int, size: int, parts: PartSink | None, tap: ContentTap | None) -> ContentDigest | _Kept | None:
    """What a file's archived bytes are fed to: its digest, kept whole when ``tap`` takes it."""
    mode = _bits(mode, getattr(parts, "links", False))
    if tap is not None and size <= tap.limit:
        return _Kept(ContentDigest(mode))
    return ContentDigest(mode) if parts is not None else None


def _fed(feed: ContentDigest | _Kept, rel: str, tap: ContentTap | None) -> tuple[Part, bytes | None]:
    """The part of what ``feed`` was given, and the bytes, handed to ``tap`` when it kept them."""
    if isinstance(feed, _Kept):
        data = bytes(feed.data)
        if tap is not None:
            tap.take(rel, data)
        return feed.digest.part(), data
    return feed.part(), None


def tree_parts_into(
    root: Path, sink: PartSink, groups: LinkGroups | None = None, changes: LiveChanges | None = None
) -> None:
    """A part per entry below ``root``: files, links and special files, and every directory.

    Directories are parts of their own because a restore can lose an empty one or its
    mode without any file changing; the root is not one (its mode is the target's).
    Parts arrive in the order of their names (files and directories each), so a spool
    of a million of them sorts nothing. A socket has no part: no backup archives one (as
    tar, ``write_tar``), so a server's socket in a live tree is not a difference.
    Where the sink's scheme records hard links (its ``links``), ``groups`` receives the
    names of every regular file with more than one link (an incremental backup archives
    all of them when one changed), and ``changes`` hears of every symbolic link or FIFO
    with more than one name (``LiveChanges.shared_inode``: links of those are not kept).
    """
    owners = bool(getattr(sink, "owners", False))
    if getattr(sink, "links", False):
        _linked_tree_parts_into(root, sink, {} if groups is None else groups, changes)
        return
    for path, rel, kind in sorted_tree(str(root)):
        if kind == OTHER and _is_socket(path):
            continue
        if kind == DIRECTORY:
            try:
                st = os.lstat(path)
                part = dir_part(st.st_mode)
                if owners:
                    part = owned(part, st.st_uid, st.st_gid, xattrs.token(xattrs.read(path)))
                sink[DIR + rel] = part
            except OSError as exc:
                sink[DIR + rel] = Part(digest=f"unreadable: {exc.strerror}", count=0, unit="directories")
            continue
        try:
            sink[FILE + rel] = file_part(path, owners)
        except OSError as exc:
            sink[FILE + rel] = Part(digest=f"unreadable: {exc.strerror}", count=0, unit="bytes")


def _linked_tree_parts_into(root: Path, sink: PartSink, groups: LinkGroups, changes: LiveChanges | None) -> None:
    """``tree_parts_into`` for a scheme that records hard links (see ``link_token``): owners too, and
    inode flags where the sink's ``fflags`` says its scheme records them (``fflags.token``)."""
    with_flags = bool(getattr(sink, "fflags", False))
    for path, rel, kind in sorted_tree(str(root)):
        if kind == OTHER and _is_socket(path):
            continue
        if kind == DIRECTORY:
            try:
                st = os.lstat(path)
                token = mode_token(st.st_mode) + xattrs.token(xattrs.read(path))
                if with_flags:
                    flags = fflags.read_path(path, directory=True)
                    token += fflags.token(flags)
                    if flags is None and changes is not None:
                        changes.flags_unreadable(rel)
                sink[DIR + rel] = owned(dir_part(0), st.st_uid, st.st_gid, token)
            except OSError as exc:
                sink[DIR + rel] = Part(digest=f"unreadable: {exc.strerror}", count=0, unit="directories")
            continue
        try:
            st = os.lstat(path)
            found: list[fflags.Flags] | None = [] if with_flags else None
            part, token = _apart(path, st, found)
            token += xattrs.token(xattrs.read(path))
            if found:
                token += fflags.token(found[0])
                if found[0] is None and changes is not None:
                    changes.flags_unreadable(rel)
            part = owned(part, st.st_uid, st.st_gid, token)
            if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):  # rare: a dict only for these
                names = groups.setdefault((st.st_dev, st.st_ino), [])
                if names:
                    part = _with_token(part, link_token(names[0]))
                names.append(rel)
            elif st.st_nlink > 1 and changes is not None and (stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                changes.shared_inode(rel, st)
            sink[FILE + rel] = part
        except OSError as exc:
            sink[FILE + rel] = Part(digest=f"unreadable: {exc.strerror}", count=0, unit="bytes")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False  # gone or unreadable: file_part says which


class OwnedParts(dict[str, Part]):
    """A dict of parts that takes owners (:class:`PartSink`): a small tree's, in a scheme that records them."""

    owners = True


class LinkedParts(OwnedParts):
    """A dict of parts that takes owners and hard links (``link_token``)."""

    links = True


class FlaggedParts(LinkedParts):
    """A dict of parts that takes owners, hard links and inode flags (``fflags.token``)."""

    fflags = True


def tree_parts(root: Path, owners: bool = False, links: bool = False, flags: bool = False) -> dict[str, Part]:
    """``tree_parts_into`` a dict: for small trees and tests; components use a spool."""
    parts: dict[str, Part] = FlaggedParts() if flags else LinkedParts() if links else OwnedParts() if owners else {}
    tree_parts_into(root, parts)
    return parts


def without_owner(part: Part) -> Part:
    """``part`` as a scheme without owners has it."""
    if not part.measured or " " not in part.digest:
        return part
    return Part(part.digest.partition(" ")[0], part.count, part.unit)


def with_owner_of(part: Part, like: Part) -> Part:
    """``part`` with the owner ``like`` records (a part recomputed from the same file)."""
    owner = like.digest.partition(" ")[2] if like.measured else ""
    return _with_token(part, f" {owner}" if owner else "")


def without_directories(parts: dict[str, Part]) -> dict[str, Part]:
    """The parts as scheme 1 had them: files only, for backups taken before directories counted."""
    return {k: v for k, v in parts.items() if not k.startswith(DIR)}


def write_tar(
    root: Path,
    sink: IO[bytes],
    only: Iterable[str] | None = None,
    parts: PartSink | None = None,
    changes: LiveChanges | None = None,
    tap: ContentTap | None = None,
) -> int:
    """Stream root's contents (not root itself) as a tar; return the number of entries.

    ``only`` limits the archive to these relative paths, in the order given (an
    incremental backup's changes). ``parts`` receives the fingerprint part of every
    entry archived, digested from the very bytes written, so fingerprinting costs no
    second read of the tree; they arrive in the order of their names (``sorted_tree``).
    ``changes`` hears of every entry that changed, shrank or vanished while archived
    (:mod:`engine.components.livechanges`); the archive stays consistent either way.
    ``tap`` receives the archived content of small regular files (:class:`ContentTap`).
    """
    aside = interrupted_swap(root)
    if not root.is_dir():
        # An empty archive of a missing directory would be a backup of nothing that looks fine.
        found = f"; {aside}" if aside else ""
        raise ComponentError(f"{root} is not a directory: nothing to back up (check the configured path){found}")
    if aside:
        raise ComponentError(f"refusing to back up {root}: {aside}; nothing was backed up")
    count = 0
    # Parts of files with more than one name, which a hard link later in the archive may
    # name: the link's part is the content archived for its target.
    linked: dict[str, tuple[Part, bytes | None]] = {}
    # Mode "w" (not the stream mode "w|") writes straight through: "w|" re-buffers every
    # write into 10 KiB records by slicing a bytes object, which copies each MiB about a
    # hundred times (2.4 s of a 925 MB backup, profiled). tarfile copies file data in
    # 16 KiB pieces by default; CHUNK-sized pieces cut the Python calls per byte by 64
    # and match the fingerprint's record size.
    out = _Appender(sink)
    live = changes if changes is not None else LiveChanges()
    with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # an attribute typeshed omits
        rel = ""
        try:
            if only is not None:
                for rel in only:
                    count += _add(tar, str(root / rel), rel, parts, linked, OTHER, live, tap)
            else:
                # Plain strings, not Paths: building and relativising three Path objects per
                # entry was the largest cost left per small file (profiled, 100,000 files).
                for path, rel, kind in sorted_tree(str(root), live):
                    # A file the listing says is regular is opened at once (and checked on
                    # the open descriptor): no lstat, and no tarfile, for most files.
                    done = _fast_file(tar, path, rel, parts, live, tap) if kind == REGULAR and FAST_HEADERS else None
                    count += done if done is not None else _add(tar, path, rel, parts, linked, kind, live, tap)
        except OSError as exc:  # not a vanished entry (noted above): one that cannot be read
            raise unreadable_entry(root, rel, exc) from exc
        except _DeviceNode as exc:
            raise device_refused(root, rel, exc.mode) from None
    out.flush()
    return count


_NUL8 = b"\0" * 8
_MAX_ID = 8**7  # what an 8-byte octal field holds
_MAX_NUM = 8**11  # and a 12-byte one
_NAMES: dict[tuple[str, int], bytes | None] = {}


def _owner_name(kind: str, number: int) -> bytes | None:
    """The user or group name tar records, remembered: tarfile asks the system for every file."""
    key = (kind, number)
    if key not in _NAMES:
        try:
            name = pwd.getpwuid(number).pw_name if kind == "u" else grp.getgrgid(number).gr_name
        except KeyError:
            name = ""
        try:
            _NAMES[key] = name.encode("ascii") if len(name) <= 32 else None
        except UnicodeEncodeError:
            _NAMES[key] = None
    return _NAMES[key]


def _octal(n: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, n)


def ustar_header(name: str, st: os.stat_result, typeflag: bytes, size: int, linkname: str = "") -> bytes | None:
    """The 512-byte header tarfile writes for this entry in a pax archive; None where it would add more.

    Why drproof writes it: building a header through tarfile costs a ``TarInfo``, two
    ``copy`` calls, user and group lookups and a pax check per member, about ten times
    tar's own CPU per small file (issue 14). This covers the common case only (ASCII
    names of up to 100 bytes, numbers that fit their fields, user and group names that
    fit); tarfile writes every other entry, so a header is always the one tarfile would
    write (a test holds the bytes equal).
    """
    mtime = int(st.st_mtime)
    owner = _OWNERS.get((st.st_uid, st.st_gid))  # known owners without a call
    if owner is None:
        owner = _owner_fields(st.st_uid, st.st_gid)
    try:
        raw_name, raw_link = name.encode("ascii"), linkname.encode("ascii")
    except UnicodeEncodeError:
        return None
    if (
        owner is None
        or len(raw_name) > 100
        or len(raw_link) > 100
        or not (0 <= size < _MAX_NUM and 0 <= mtime < _MAX_NUM)
    ):
        return None
    ids, names = owner
    head = b"".join(
        (
            raw_name.ljust(100, b"\0"),
            b"%07o\0" % stat.S_IMODE(st.st_mode),
            ids,
            b"%011o\0%011o\0        " % (size, mtime),  # the checksum field counts as spaces
            typeflag,
            raw_link.ljust(100, b"\0") if raw_link else _NUL100,
            names,
            _TAIL,
        )
    )
    return b"%s%06o\0 %s" % (head[:148], header_sum(head), head[156:])


_NUL100 = b"\0" * 100
_TAIL = b"\0" * 167  # after the device fields (byte 345) to the end of the block


_OWNERS: dict[tuple[int, int], tuple[bytes, bytes] | None] = {}


def _owner_fields(uid: int, gid: int) -> tuple[bytes, bytes] | None:
    """The uid and gid fields, and magic to device fields, of a header: the same for most files."""
    key = (uid, gid)
    if key not in _OWNERS:
        uname, gname = _owner_name("u", uid), _owner_name("g", gid)
        if uname is None or gname is None or not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID):
            _OWNERS[key] = None
        else:
            ids = _octal(uid, 8) + _octal(gid, 8)
            _OWNERS[key] = (ids, tarfile.POSIX_MAGIC + uname.ljust(32, b"\0") + gname.ljust(32, b"\0") + _NUL8 * 2)
    return _OWNERS[key]


def _fast_add(
    tar: tarfile.TarFile, path: str, arcname: str, parts: PartSink | None, changes: LiveChanges, tap: ContentTap | None
) -> int | None:
    """Archive a plain file, directory or symlink without tarfile's per-member machinery.

    None when the entry is not one this covers (a hard link, a FIFO, a long or non-ASCII
    name...): the caller hands it to tarfile. 0 when it vanished before it was opened.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        changes.gone(arcname)
        return 0
    if (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)) and xattrs.read(path):
        return None  # its attributes go in a pax header: tarfile's
    if stat.S_ISDIR(st.st_mode) and fflags.read_path(path, directory=True) != 0:
        return None  # its inode flags (or that they cannot be read) go in a pax header: tarfile's
    if stat.S_ISDIR(st.st_mode):
        header = ustar_header(arcname + "/", st, tarfile.DIRTYPE, 0)
        if header is None:
            return None
        _emit(tar, header)
        if parts is not None:
            apart = getattr(parts, "links", False)
            _put(parts, DIR + arcname, dir_part(_bits(st.st_mode, apart)), st.st_uid, st.st_gid, mode=st.st_mode)
        return 1
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        header = ustar_header(arcname, st, tarfile.SYMTYPE, 0, target)
        if header is None:
            return None
        _emit(tar, header)
        if st.st_nlink > 1:
            changes.shared_inode(arcname, st)
        if parts is not None:
            _put(parts, FILE + arcname, symlink_part(target), st.st_uid, st.st_gid)
        return 1
    if not stat.S_ISREG(st.st_mode):
        return None
    return _fast_file(tar, path, arcname, parts, changes, tap)


def _fast_file(
    tar: tarfile.TarFile, path: str, arcname: str, parts: PartSink | None, changes: LiveChanges, tap: ContentTap | None
) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        changes.gone(arcname)
        return 0
    except OSError:
        return None  # replaced by a link or something else since the walk: tarfile judges it
    st = os.fstat(fd)  # the size of what is read, not of what the walk saw
    # A hard link (or no file), or a file with extended attributes or inode flags (a pax header): tarfile's.
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or fflags.read(fd) != 0 or xattrs.read(fd):
        os.close(fd)
        return None
    if st.st_size <= CHUNK:
        return _small_file(tar, fd, st, arcname, parts, changes, tap)
    with os.fdopen(fd, "rb") as fh:
        header = ustar_header(arcname, st, tarfile.REGTYPE, st.st_size)
        if header is None:
            return None
        digest = _feed(st.st_mode, st.st_size, parts, tap)
        _emit(tar, header)
        stored = _copy_announced(tar, fh, st.st_size, digest)
        if stored < st.st_size:
            changes.note(
                arcname,
                f"shrank from {st.st_size} to {stored} bytes while archived; stored zero-filled to {st.st_size} bytes",
            )
        else:
            changes.after_read(arcname, fd, st, st.st_size)
    if digest is not None:
        part = _fed(digest, arcname, tap)[0]
        if parts is not None:
            _put(parts, FILE + arcname, part, st.st_uid, st.st_gid, mode=st.st_mode)
    return 1


def _small_file(
    tar: tarfile.TarFile,
    fd: int,
    st: os.stat_result,
    arcname: str,
    parts: PartSink | None,
    changes: LiveChanges,
    tap: ContentTap | None,
) -> int | None:
    """Most files: one read, and header, content and padding in one write.

    The header is written after the read, so a file that shrank meanwhile is stored as
    read, with the size it had; a later change is noted (``after_read``).
    """
    try:
        data = os.read(fd, st.st_size)
        if len(data) < st.st_size:
            changes.note(arcname, f"shrank from {st.st_size} to {len(data)} bytes while archived; stored as read")
        else:
            changes.after_read(arcname, fd, st, len(data))
    finally:
        os.close(fd)
    header = ustar_header(arcname, st, tarfile.REGTYPE, len(data))
    if header is None:
        return None
    padding = -len(data) % tarfile.BLOCKSIZE
    tar.fileobj.write(b"".join((header, data, b"\0" * padding)))
    tar.offset += len(header) + len(data) + padding
    if parts is not None:
        part = small_file_part(stat.S_IFREG if getattr(parts, "links", False) else st.st_mode, data)
        _put(parts, FILE + arcname, part, st.st_uid, st.st_gid, mode=st.st_mode)
    if tap is not None and len(data) <= tap.limit:
        tap.take(arcname, data)
    return 1


def _copy_announced(tar: tarfile.TarFile, fh: IO[bytes], size: int, digest: ContentDigest | _Kept | None) -> int:
    """Copy the ``size`` bytes a header announced; return how many the file still had.

    A file that shrank after its header was written is zero-filled to the announced size
    (as GNU tar does), so the archive stays readable and its digest is of what is stored.
    """
    remaining, stored = size, 0
    while remaining:
        chunk = fh.read(min(CHUNK, remaining))
        if not chunk:
            break
        stored += len(chunk)
        tar.fileobj.write(chunk)
        if digest is not None:
            digest.add(chunk)
        remaining -= len(chunk)
    while remaining:
        zeros = bytes(min(CHUNK, remaining))
        tar.fileobj.write(zeros)
        if digest is not None:
            digest.add(zeros)
        remaining -= len(zeros)
    padding = -size % tarfile.BLOCKSIZE
    if padding:
        tar.fileobj.write(b"\0" * padding)
    tar.offset += size + padding  # tarfile's own count, kept true
    return stored


def _emit(tar: tarfile.TarFile, header: bytes) -> None:
    tar.fileobj.write(header)
    tar.offset += len(header)


def _add(
    tar: tarfile.TarFile,
    path: str,
    arcname: str,
    parts: PartSink | None,
    linked: dict[str, tuple[Part, bytes | None]],
    kind: int,
    changes: LiveChanges,
    tap: ContentTap | None,
) -> int:
    """Archive one entry and record its fingerprint part (unless ``parts`` is None); 0 if it vanished.

    A live directory keeps changing while it is archived (an application renaming its
    temporary files): an entry gone by the time it is opened was not there to back up.
    The file is opened before its header is written, so a vanished one leaves no trace.
    """
    # tarfile remembers every member it wrote (``members``) and the inode of every file
    # (``inodes``, to spot hard links): about 2 KB per file, which made a backup's memory
    # grow with the file count (measured: +100 MB at 50,000 files). Only inodes with
    # more than one name can be linked to again, so only those are kept.
    if FAST_HEADERS and kind != REGULAR:  # a regular file was tried by the caller
        done = _fast_add(tar, path, arcname, parts, changes, tap)
        if done is not None:
            return done
    tar.members.clear()  # type: ignore[attr-defined]  # attributes typeshed omits
    try:
        info = tar.gettarinfo(str(path), arcname)
        if info is None:  # a socket: tar archives none, and fingerprints leave it out (tree_parts_into)
            return 0
        if info.ischr() or info.isblk():
            raise _DeviceNode(stat.S_IFCHR if info.ischr() else stat.S_IFBLK)
        # Whole seconds, as GNU tar keeps them: a fractional mtime costs a pax header
        # (1 KiB and a slow path in tarfile) for every file, and fidelity ignores mtimes.
        info.mtime = int(info.mtime)
        found = xattrs.read(str(path))
        flags = _flags_of(path, info)
        if flags is None:
            changes.flags_unreadable(arcname)
        if found or flags != 0:  # None: "not readable", recorded as such
            info.pax_headers = {**xattrs.to_pax(found), **fflags.to_pax(flags)}
        if info.isreg():
            return _add_regular(tar, path, info, parts, linked, changes, tap)
    except FileNotFoundError:
        changes.gone(arcname)
        return 0
    tar.addfile(info)
    if info.issym() or info.isfifo():
        with contextlib.suppress(OSError):  # archived already; only the note would be lost
            if (st := os.lstat(path)).st_nlink > 1:
                changes.shared_inode(arcname, st)
    if info.islnk():  # a second name of a file already archived: same content, mode and owner
        _add_link(arcname, info.linkname, path, parts, linked, tap)
        return 1
    if parts is None:
        return 1
    xt, apart = xattrs.token(found) + _flags_token(parts, flags), getattr(parts, "links", False)
    if info.issym():
        _put(parts, FILE + arcname, symlink_part(info.linkname), info.uid, info.gid, xt)
    elif info.isdir():
        _put(parts, DIR + arcname, dir_part(_bits(info.mode, apart)), info.uid, info.gid, xt, info.mode)
    else:
        _put(parts, FILE + arcname, special_part(_bits(info.mode, apart)), info.uid, info.gid, xt, info.mode)
    return 1


def _flags_of(path: str, info: tarfile.TarInfo) -> fflags.Flags:
    """The inode flags of a file (any of its names) or directory being archived; 0 for other entries."""
    if not (info.isreg() or info.islnk() or info.isdir()):
        return 0  # chattr sets none on a link or a FIFO
    return fflags.read_path(path, directory=info.isdir())


def _flags_token(parts: PartSink | None, flags: fflags.Flags) -> str:
    """The inode flags' token where the sink's scheme records them (its ``fflags``), else nothing."""
    return fflags.token(flags) if getattr(parts, "fflags", False) else ""


def _add_regular(
    tar: tarfile.TarFile,
    path: str,
    info: tarfile.TarInfo,
    parts: PartSink | None,
    linked: dict[str, tuple[Part, bytes | None]],
    changes: LiveChanges,
    tap: ContentTap | None,
) -> int:
    """A regular file through tarfile (a hard link's first name, a long or non-ASCII name)."""
    st = os.lstat(path)
    if st.st_nlink == 1:
        tar.inodes.pop((st.st_ino, st.st_dev), None)  # type: ignore[attr-defined]
    with open(path, "rb") as fh:
        digest = _feed(info.mode, info.size, parts, tap)
        reader = _AnnouncedReader(fh, info.size, digest)
        tar.addfile(info, reader)
        if reader.stored < info.size:
            changes.note(
                info.name,
                f"shrank from {info.size} to {reader.stored} bytes while archived; stored zero-filled to {info.size} bytes",
            )
        else:
            changes.after_read(info.name, fh.fileno(), st, info.size)
    if digest is None:
        return 1
    part, data = _fed(digest, info.name, tap)
    if parts is not None:
        xt = xattrs.token(xattrs.from_pax(info.pax_headers))
        xt += _flags_token(parts, fflags.from_pax(info.pax_headers))
        part = _put(parts, FILE + info.name, part, st.st_uid, st.st_gid, xt, info.mode)
    if st.st_nlink > 1:
        linked[info.name] = (part, data)
    return 1


def _add_link(
    arcname: str,
    target: str,
    path: str,
    parts: PartSink | None,
    linked: dict[str, tuple[Part, bytes | None]],
    tap: ContentTap | None,
) -> None:
    """A hard link's part and content: those archived for the file it names.

    No content was kept when that file was over the tap's limit: the restored link is
    as large, so the tap would not have been given it either.
    """
    part, data = linked.get(target) or (None, None)
    if parts is not None:
        if part is None:  # not a regular file archived here (restores refuse such a link anyway)
            parts[FILE + arcname] = file_part(
                path, bool(getattr(parts, "owners", False)), bool(getattr(parts, "links", False))
            )
        else:  # the archive links it to the first name archived: the first in order of names
            parts[FILE + arcname] = _with_token(part, link_token(target)) if getattr(parts, "links", False) else part
    if tap is not None and data is not None:
        tap.take(arcname, data)


Opener = Callable[[], AbstractContextManager[IO[bytes]]]
Layer = tuple[Opener, list[str]]
# ``check(staging)``: judge the staged tree before it replaces anything; the parts of
# every entry, digested while it was written, are in the sink given to extract_layers.
Check = Callable[[Path], None]
TAR_BLOCK = 512


class Room(NamedTuple):
    """What a staged tree can take at most: the archives' bytes, and how many entries they hold.

    Why both: on disk every file and directory takes whole blocks, so a tree of small
    files takes more than its archive (a 1-byte file: 1 KiB archived, 4 KiB on ext4).
    Each entry is given one block on top of its archived bytes (``bytes_on``).
    """

    archived: int
    entries: int
    # Whether ``entries`` was counted by fingerprints (a set without one bounds it by its
    # archive's 512-byte headers: fine for bytes, but as inodes a false refusal of a large
    # file's restore on a filesystem with few inodes, so then only the guard watches them).
    counted: bool = True

    def bytes_on(self, path: Path) -> int:
        """The bytes the tree may take on the filesystem of ``path``."""
        return self.archived + self.entries * block_size(path)


def room_for(
    sources: Sequence[ArtifactSource],
    artifact: str,
    tree_bytes: bool = False,
    other_parts: Callable[[dict[str, int]], int] | None = None,
) -> Room:
    """The room a restore of ``artifact`` from this chain of sets (full first) takes, from their manifests.

    An upper bound, counted from what is signed, before a byte is read: after each layer
    the staged tree holds at most what it held before plus that layer's archive
    (``raw_size``: its bytes before compression), and, with ``tree_bytes`` (a volume,
    whose fingerprint's ``bytes`` are its files' sizes), never more than the tree that
    set's fingerprint measured. The room is the largest of these over the chain: a layer
    first removes what it replaces, so the staged tree is never more than the larger of
    the trees before and after it. Found by review: the archives were added up, so a
    chain of six incrementals of one 4 MiB file that changes daily "needed" 28 MiB
    for a 4 MiB tree, and a restore that fitted was refused. Entries alike: at most the
    fingerprint's count, never more than the archives can hold (a 512-byte header
    each). ``other_parts``: how many of a fingerprint's parts, from its totals, are
    no file or directory (a configuration's settings, a vector store's buckets of
    vectors); found by review: counted as entries, one 500 KiB settings file "created
    up to 960 files" and its restore was refused on a filesystem with 597 free inodes.
    A manifest that understates ``raw_size`` is stopped at it while reading
    (``engine.decoding``); a fingerprint that understates the tree is caught by the
    guard (``engine.diskspace.SpaceGuard``) and then by the proof of the staged tree.
    """
    held = entries = peak = peak_entries = 0
    counted = True
    for source in sources:
        raw = source.record(artifact).raw_size
        held += raw
        entries += raw // TAR_BLOCK
        fp = source.fingerprint
        counted = counted and fp is not None
        if fp is not None:
            entries = min(entries, _entries(fp, raw, other_parts))
            if tree_bytes and "bytes" in fp.totals():
                held = min(held, fp.totals()["bytes"])
        peak, peak_entries = max(peak, held), max(peak_entries, entries)
    return Room(peak, peak_entries, counted)


def _entries(fp: Fingerprint | None, raw: int, other_parts: Callable[[dict[str, int]], int] | None = None) -> int:
    """The entries a set's fingerprint counts (the archive's bound where it has none): its parts
    less those ``other_parts`` says are no file or directory."""
    if fp is None:
        return raw // TAR_BLOCK
    others = other_parts(fp.totals()) if other_parts is not None else 0
    return max(0, fp.part_count - others)


def root_details(root: Path) -> dict[str, Any]:
    """The directory's own mode and owner, for a backup's details: what a restore gives the
    directory when the disaster took it whole (``extract_layers``)."""
    st = root.stat()
    details: dict[str, Any] = {
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": (_owner_name("u", st.st_uid) or b"").decode(),
        "group": (_owner_name("g", st.st_gid) or b"").decode(),
    }
    found = xattrs.read(str(root), follow_symlinks=True)
    if found:  # a default ACL on a shared directory, most often: values in hexadecimal
        details["xattrs"] = {name: value.hex() for name, value in found.items()}
    return details


ROOT_PART = "dir ."  # the directory itself (volumes/7, configuration/7, vectorstore/4): its owner and inode flags


def root_flags(root: Path) -> fflags.Flags:
    """The inode flags of the directory ``root`` itself (through a link, as the backup reads it); None: unreadable."""
    return fflags.read_path(os.path.realpath(root), directory=True)


def root_part(root: Path) -> Part:
    """The part of the directory itself: its owner and inode flags ("?" where they cannot be read).

    Why: the directory is the restore's target, not a member of the archive, and a restore
    builds a new one: a directory kept ``chattr +a``/``+i`` came back without the flag when
    the disaster took it whole, and matched (found in s32). Its mode is not compared: a
    restore keeps the live directory's (``_give_root``).
    """
    try:
        st = os.stat(root)
        return owned(dir_part(0), st.st_uid, st.st_gid, fflags.token(root_flags(root)))
    except OSError as exc:  # gone, or not a directory: a difference, never a match
        return Part(digest=f"unreadable: {exc.strerror}", count=0, unit="directories")


def flagged_root_details(root: Path, changes: LiveChanges) -> dict[str, Any]:
    """``root_details`` and the directory's own inode flags (``fflags``), which a restore gives after the swap.

    Flags that cannot be read are noted in ``changes`` (the set's ``FLAGS_NOT_READABLE`` note).
    """
    details = root_details(root)
    flags = root_flags(root)
    if flags is None:
        changes.flags_unreadable(".")
    if flags:
        details["fflags"] = fflags.text(flags)
    return details


def expected_root_part(expected: Fingerprint | None) -> Part | None:
    """The ``ROOT_PART`` a backup recorded, if any: found by name in its sorted parts, which are read only up to it.

    Why: a staged copy is proven before the swap, when its directory does not yet have the
    flags it is given after (``give_root_flags``): the proof takes the recorded part, and
    the fidelity check reads the restored directory.
    """
    if expected is None:
        return None
    with expected.open_parts() as parts:
        for name, part in parts:
            if name == ROOT_PART:
                return part
            if name > ROOT_PART:
                return None
    return None


def give_root_flags(target: Path, recorded: object, what: str) -> None:
    """Give the restored directory the inode flags the backup recorded for it (``flagged_root_details``).

    After the swap, because an immutable or append-only directory cannot be renamed. The
    live directory's own flags cannot be kept: a restore over such a directory is refused
    before anything changes (``_protected``). One not given (``+i`` and ``+a`` need root)
    is a warning, and the fidelity check names it.
    """
    flags_text = recorded.get("fflags") if isinstance(recorded, dict) else None
    flags = fflags.from_pax({fflags.PAX_KEY: flags_text}) if isinstance(flags_text, str) else 0
    if not flags:  # none recorded, or "not readable" at the backup: nothing known to give
        return
    fd = os.open(os.path.realpath(target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        given = fflags.give(fd, flags)
    finally:
        os.close(fd)
    if not given:
        log.warning(
            "%s: %s could not be given the inode flags the backup records for it (%s; chattr +i and +a need root): "
            "the fidelity check names it",
            what,
            target,
            fflags.described(fflags.text(flags)),
        )


def _give_root(staging: Path, target: Path, recorded: dict[str, Any] | None) -> None:
    """Give the staged directory the live one's mode and owner, or, where it is gone, the backup's.

    Found by review: a restore of a directory the disaster deleted came back mode 0700 and
    owned by whoever ran drproof, and one run as root over a live directory another user
    owned left it root's: in both, an application running as that user could no longer
    open its own files. The owner is set only by root (nobody else may). Its extended
    attributes likewise (a default ACL on a shared directory: files created in it after the
    restore inherit it; without it, the swap dropped it).
    """
    live = target.exists()
    if live:
        st = target.stat()
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        found = xattrs.read(str(target), follow_symlinks=True)
    elif recorded:
        mode = int(str(recorded.get("mode", "0o700")), 8)
        uid, gid = _recorded_id(recorded, "user", "uid"), _recorded_id(recorded, "group", "gid")
        found = _recorded_xattrs(recorded)
    else:
        return
    staging.chmod(mode)
    if os.geteuid() == 0 and uid >= 0 and gid >= 0:
        try:
            os.chown(staging, uid, gid)
        except OSError as exc:  # not mapped in this user namespace, or root squashed: left the restorer's
            if exc.errno not in OWNER_NOT_GIVEN:
                raise
    if found:  # the live directory's own attributes all carry over; a backup's record only as an archive's do
        xattrs.give(str(staging), found, host_own=live, where=str(target))
        staging.chmod(mode)  # an ACL set sets the group bits to its mask: the mode is the directory's


def _recorded_xattrs(recorded: dict[str, Any]) -> xattrs.Xattrs:
    """The root's attributes a backup recorded (``root_details``); none from a set that recorded none."""
    found = recorded.get("xattrs")
    if not isinstance(found, dict):
        return {}
    try:
        return {str(name): bytes.fromhex(str(value)) for name, value in found.items()}
    except ValueError:
        return {}  # not hexadecimal: recorded by nothing drproof wrote


def _recorded_id(recorded: dict[str, Any], name_key: str, id_key: str) -> int:
    """The id of the recorded user or group on this host: by name where it exists here, as tar does."""
    name = recorded.get(name_key)
    try:
        if name:
            return pwd.getpwnam(name).pw_uid if name_key == "user" else grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    value = recorded.get(id_key)
    return value if isinstance(value, int) else -1


def extract_tar(
    open_stream: Opener,
    target: Path,
    check: Check | None = None,
    parts: PartSink | None = None,
    root: dict[str, Any] | None = None,
    room: Room | None = None,
) -> None:
    """Replace target's contents with the archive's, atomically from a reader's view.

    ``open_stream`` is opened (and closed, which runs the stream's integrity checks)
    inside the staging step, so damage found at the end of the stream stops the restore
    before the swap. Members are written by :class:`engine.components.untar.TreeWriter`:
    a hostile archive cannot write outside the target.
    """
    extract_layers([(open_stream, [])], target, check, parts, root, room)


class _Tracker:
    """Fingerprint parts of a tree being extracted, kept current across layers' removals."""

    def __init__(self, parts: PartSink) -> None:
        self.parts = parts
        self._owners = bool(getattr(parts, "owners", False))
        self._links = bool(getattr(parts, "links", False))
        self._fflags = bool(getattr(parts, "fflags", False))
        self._pending: tuple[str, ContentDigest, str] | None = None

    def on_entry(self, rel: str, member: TarMember) -> Callable[[bytes], None] | None:
        # The owner the archive records (by name where it has one), as the backup's part
        # has it: the staged proof is of the archive; whether the owner could be given
        # back is the fidelity check's to say, from the restored tree.
        apart = self._links  # scheme 4: the mode after the owner, not in the digest
        token = member_token(member, apart) if self._owners else ""
        if self._fflags:
            token += fflags.token(fflags.from_pax(getattr(member, "pax_headers", None)))
        mode = 0 if apart else member.mode
        if member.isreg() or member.islnk():
            if apart and not member.isreg():  # the link, as the archive has it (TreeWriter made it)
                token += link_token("/".join(member_parts(member.linkname, "hard link target")))
            # A hard link's content is read back from the file it now shares (TreeWriter).
            digest = ContentDigest(mode)  # the archived mode, as the backup digested it
            self._pending = (rel, digest, token)
            return digest.add
        if member.issym():
            self.parts[FILE + rel] = _with_token(symlink_part(member.linkname), token)
        elif member.isfifo():
            self.parts[FILE + rel] = _with_token(special_part(stat.S_IFIFO | mode), token)
        elif member.isdir():
            self.parts[DIR + rel] = _with_token(dir_part(mode), token)
        return None

    def settle(self) -> None:
        if self._pending is not None:
            rel, digest, token = self._pending
            self.parts[FILE + rel] = _with_token(digest.part(), token)
            self._pending = None

    def removed(self, rels: list[str]) -> None:
        """Forget the parts of a layer's removals and of everything below them."""
        if not rels:
            return
        gone = {"/".join(member_parts(rel, "removal")) for rel in rels}
        drop = getattr(self.parts, "drop", None)
        if drop is not None:
            drop(lambda name: _under(name, gone))
            return
        assert isinstance(self.parts, dict)
        for name in [n for n in self.parts if _under(n, gone)]:
            del self.parts[name]


def _under(name: str, gone: set[str]) -> bool:
    """Whether the part ``name`` ("file a/b", "dir a") is one of ``gone`` or below one."""
    rel = name.partition(" ")[2]
    if rel in gone:
        return True
    cut = rel.rfind("/")
    while cut > 0:
        rel = rel[:cut]
        if rel in gone:
            return True
        cut = rel.rfind("/")
    return False


def extract_layers(
    layers: Sequence[Layer],
    target: Path,
    check: Check | None = None,
    parts: PartSink | None = None,
    root: dict[str, Any] | None = None,
    room: Room | None = None,
) -> None:
    """Rebuild a tree from a full archive and the incremental layers on top of it.

    Each layer first removes the paths it lists (deleted or changed since its parent), then
    extracts its archive. Everything happens in a staging directory that replaces the
    target only when every layer applied, every stream passed its checks and ``check``
    accepted the result. The replaced contents are removed only after the swap.
    ``parts`` (a dict or a spool) receives the fingerprint part of every entry of the
    result, digested as it was written: what ``check`` proves the staged tree with.
    ``root`` is the backed-up directory's own mode and owner (``root_details``).
    ``room`` (``room_for``) is checked against the free space beside the target before
    anything is written, and the free space is watched while writing (``engine.diskspace``).
    """
    target = target.absolute()
    if target.is_symlink():
        # Found by review: a target that is a link (``vol -> /mnt/disk/vol``) was renamed
        # aside and replaced by a directory, the data it points to left as they were,
        # and the restore said "match". The backup read through the link: so does this.
        target = Path(os.path.realpath(target))
    if os.path.ismount(target):
        raise ComponentError(
            f"cannot restore into {target}: it is a mount point, which a restore cannot replace (it builds the "
            "copy beside the target and renames it into place); point the component at a directory inside the "
            "mount, or restore elsewhere with --to; nothing was changed"
        )
    if not target.parent.is_dir():
        raise ComponentError(
            f"cannot restore into {target}: its parent directory {target.parent} does not exist; create it "
            "(with the owner and mode the application expects) and run the restore again"
        )
    staging, replaced, note = _swap_names(target)
    _settle_interrupted_swap(target, replaced, note)
    if staging.is_dir() and not staging.is_symlink():
        _discard_staging(staging)  # drproof's own copy (a restore killed before its swap): flags it gave too
    _remove_leftover(staging)  # a staged copy is never live data
    what = f"the restored copy of {target.name}"
    if room is not None:
        require_free(target.parent, room.bytes_on(target.parent), what, entries=room.entries if room.counted else 0)
    guard = SpaceGuard(target.parent, what)
    staging.mkdir(mode=0o700)
    tracker = _Tracker(parts) if parts is not None else None
    try:
        _private(staging)
        with TreeWriter(staging, on_entry=tracker.on_entry if tracker is not None else None) as writer:
            for open_stream, removals in layers:
                for rel in removals:
                    writer.remove(rel)
                if tracker is not None:
                    tracker.removed(removals)
                with open_stream() as stream:
                    _extract_stream(guard.reading(stream), writer, tracker)
            writer.finish()
            if check is not None:
                # Judge the restored content before it replaces anything live.
                check(staging)
            writer.give_flags()  # last: an immutable entry takes no further change
    except (tarfile.TarError, OSError) as exc:
        _discard_staging(staging)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Found by review: said as "[Errno 28] ..." alone, with no word of what was kept or what to do.
            raise ComponentError(
                f"cannot restore into {target}: a disk is full ({exc.strerror}) while building the restored copy "
                f"in {staging.name} beside it, which needs room for a whole second copy on that filesystem (and "
                "temporary space); free space and run again; nothing was changed"
            ) from exc
        raise ComponentError(f"cannot extract archive into {target}: {exc}") from exc
    except BaseException:
        _discard_staging(staging)
        raise
    try:
        _give_root(staging, target, root)
        _write_swap_note(note, staging)
        if target.exists():
            os.rename(target, replaced)
    except OSError as exc:
        _discard_staging(staging)
        note.unlink(missing_ok=True)
        raise ComponentError(
            f"cannot set {target} aside to swap the restored copy in: {exc}{_protected(target, exc)}; nothing was changed"
        ) from exc
    try:
        os.rename(staging, target)
    except OSError as exc:
        if replaced.exists() and not target.exists():
            os.rename(replaced, target)  # the live data back where they were
        _discard_staging(staging)
        note.unlink(missing_ok=True)
        raise ComponentError(f"cannot move the restored copy into {target}: {exc}; nothing was changed") from exc
    if _discard_replaced(replaced):
        note.unlink(missing_ok=True)  # kept otherwise: the next restore knows the leftover is garbage


def _protected(target: Path, exc: OSError) -> str:
    """Why the directory ``target`` could not be renamed, where its own inode flags forbid it; else "".

    Found by review (s32): a store directory made immutable or append-only (``chattr +i``/``+a``)
    refused every restore over it with a bare "Operation not permitted": the restore replaces
    the directory itself, and those flags forbid renaming it.
    """
    if exc.errno != errno.EPERM:
        return ""
    try:
        flags = fflags.read_path(str(target), directory=True)
    except OSError:
        return ""
    held = (flags or 0) & fflags.NO_RENAME
    if not held:
        return ""
    return (
        f" (the directory itself is {fflags.described(fflags.text(held))}, which forbids renaming it, and a restore "
        f"replaces the directory: clear the flag with `chattr -i -a {target}` to restore over it, and set it again "
        "after)"
    )


def _discard_staging(staging: Path) -> None:
    """Remove drproof's own staging copy after a failed restore, clearing the inode flags it gave first.

    The copy is drproof's, not the operator's: flags it set from the archive (an immutable
    file) must not leave it behind for the next restore to refuse.
    """
    shutil.rmtree(staging, ignore_errors=True)
    if staging.exists() and not staging.is_symlink():
        fflags.clear_tree(str(staging))
        shutil.rmtree(staging, ignore_errors=True)


def _remove_leftover(leftover: Path) -> None:
    """Remove what an earlier restore left beside the target; refuse, naming it, where that is not allowed.

    Found by review: a file made immutable or append-only (``chattr +i``/``+a``) cannot be
    deleted, even by root, so the copy set aside by a restore of such a tree stayed, and
    the next restore died with a bare ``PermissionError`` traceback. Nothing is changed yet.
    """
    try:
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink()
        elif leftover.exists():
            shutil.rmtree(leftover)
    except OSError as exc:
        raise ComponentError(
            f"cannot remove {leftover}, left by an earlier restore: {exc}. A file in it may be immutable or "
            f"append-only (see lsattr -R {leftover}; chattr -R -i -a {leftover} clears that): remove it and run "
            "the restore again; nothing was changed"
        ) from None


def _discard_replaced(replaced: Path) -> bool:
    """Delete the live contents a restore replaced; where some cannot be, say so instead of leaving them silently.

    The restore is complete either way: the restored tree is in place. Returns whether all
    of it went, so that the swap's note stays beside a leftover that proves it garbage.
    Nothing to do where there was no live tree to set aside (the disaster took it whole).
    """
    if not replaced.exists() and not replaced.is_symlink():
        return True
    failures: list[str] = []
    shutil.rmtree(replaced, onerror=lambda _fn, path, exc: failures.append(f"{path}: {exc[1]}"))
    if failures:
        log.warning(
            "the restore is in place, but %d entr%s of the replaced contents could not be removed and remain in %s "
            "(e.g. %s); a file may be immutable or append-only (chattr -R -i -a %s, then remove it)",
            len(failures),
            "y" if len(failures) == 1 else "ies",
            replaced,
            failures[0],
            replaced,
        )
    return not failures


def _swap_names(target: Path) -> tuple[Path, Path, Path]:
    """The staged copy, the live tree set aside during the swap, and the note of the swap, beside ``target``."""
    return (
        target.with_name(target.name + ".drproof-restoring"),
        target.with_name(target.name + ".drproof-replaced"),
        target.with_name(target.name + ".drproof-swap"),
    )


def _write_swap_note(note: Path, staging: Path) -> None:
    """Record which directory the swap moves into place (its inode), on disk before the first rename.

    Why: after a kill, a tree at the target and one set aside beside it are either a
    finished swap (the target is the staged copy, the one aside is garbage) or an
    unfinished one whose target someone made since (an application or ``docker -v``
    recreating an empty directory): there the one aside is the only copy of the live
    data. The inode, which a rename keeps, tells them apart.
    """
    tmp = note.with_name(note.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{os.stat(staging).st_ino}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, note)


def _swapped_in(target: Path, note: Path) -> bool:
    """Whether ``target`` is the very directory the swap recorded in ``note`` moved into place."""
    try:
        recorded = int(note.read_text(encoding="utf-8").strip())
        return target.is_dir() and not target.is_symlink() and os.stat(target).st_ino == recorded
    except (OSError, ValueError):
        return False


def _settle_interrupted_swap(target: Path, replaced: Path, note: Path) -> None:
    """Deal with what a restore killed during its swap left, before this one touches anything.

    Found by review: a restore killed between its two renames left the live data aside; if
    the application recreated the (empty) directory before the next restore, that restore
    deleted the data set aside as a leftover, then was refused, saying "the live data were
    not touched": the only copy of them was gone. Data aside are now removed only when the
    note proves the swap finished; otherwise the restore is refused, naming both.
    """
    if replaced.is_symlink() or replaced.is_file():
        replaced.unlink()  # drproof sets aside only directories: not live data of its making
    elif replaced.exists():
        if not target.exists() and not target.is_symlink():
            # Killed between the two renames: what it set aside is still the live data.
            # Put it back before anything else, so a refusal now leaves it in place.
            os.rename(replaced, target)
        elif _swapped_in(target, note):
            _remove_leftover(replaced)  # what a finished swap replaced (killed, or immutable files in it)
        else:
            raise ComponentError(
                f"cannot restore into {target}: an earlier restore was interrupted while swapping it, and the data "
                f"it set aside are still in {replaced}, while {target} was made since (by the application?). "
                f"Keep the one you want: move {replaced.name} back to {target.name} (or delete it if {target} is "
                "right), then run again; nothing was changed"
            )
    note.unlink(missing_ok=True)
    note.with_name(note.name + ".tmp").unlink(missing_ok=True)


def interrupted_swap(target: Path) -> str:
    """A sentence about live data a killed restore left aside beside ``target``, or "" if there are none.

    Why: such data are the live data (or, where the directory was made since, the only
    copy of them); a backup that said only "not a directory", or that archived the empty
    directory an application recreated, hid where they were until retention pruned the
    sets that still held them. Data aside after a finished swap (the note proves it) are
    garbage, not live data: "".
    """
    target = Path(os.path.realpath(target))
    _staging, replaced, note = _swap_names(target)
    if not replaced.is_dir() or replaced.is_symlink() or _swapped_in(target, note):
        return ""
    return (
        f"a restore of {target} was interrupted while swapping it, and the live data it set aside are in "
        f"{replaced}: move that back to {target.name} (or run the restore again, which does when {target.name} "
        "is absent)"
    )


def _private(staging: Path) -> None:
    """Make the fresh staging directory the restorer's own, mode 0700, with no ACL, before anything is written.

    Found by review: created beside the target, it inherited the parent's group (a set-group-ID
    parent such as ``/srv/shared``) and default ACL, and so did every entry written into it;
    the restored tree's groups and ACLs were not the archive's, and a vector store there was
    never restorable (its proof reads the staged tree). Its recorded mode, owner and
    attributes are given at the end (``_give_root``), as before.
    """
    make_private(staging)


def _extract_stream(stream: IO[bytes], writer: TreeWriter, tracker: _Tracker | None) -> None:
    for member, content in members(stream):
        writer.add(member, content)
        if tracker is not None:
            tracker.settle()
