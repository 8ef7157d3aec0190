"""Extracting a tar archive into a fresh directory, trusting nothing in the archive.

Why not ``tarfile.extractall(filter="data")``: the filter decides on *paths*, with
``os.path.realpath``, and the Python 3.11.7 these machines run predates the fix for
CVE-2025-4517, where a chain of symlinks longer than PATH_MAX makes ``realpath`` give up
and the filter approve a member that is then written through those links, outside the
target. Its cost shows too: ``realpath`` per member was 27% of a volume restore.

So drproof writes every member itself, relative to open directory descriptors:

- A name must be relative, without ``.``, ``..`` or empty components, at most 255
  bytes per component and 4,095 in all; anything else refuses the whole archive.
- Each parent directory is opened with ``O_DIRECTORY | O_NOFOLLOW`` from the one above
  it, starting at the staging root: a member whose path passes through a symlink (or a
  file) the archive created is refused, whatever that link points to and however
  long the chain. Nothing is ever resolved by path, so no realpath can be fooled.
- Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``; an entry already there
  (an earlier member of the same name) makes that fail, and is then unlinked (never a
  directory) and the file created again: nothing is ever written through.
- Hard links must name a regular file already extracted, reached the same way.
- An owner id outside 0 to 2**32 - 2, a NUL byte in an owner's name, or an extended
  attribute no file system holds refuses the whole archive (``_check_header``).
- Device nodes are refused. Set-user-ID and set-group-ID bits of files are dropped:
  the files belong to whoever runs the restore (often root), so keeping them would turn
  an archive into a privilege. Directories keep set-group-ID and sticky bits.
- Owners: run as root, every entry gets the owner its header records, by name where
  this host knows the name, else by number (as GNU tar restores as root), so an
  application finds its files its own after a restore. Run as anyone else, entries
  belong to whoever runs the restore (nobody else may give files away); the fidelity
  check then names every owner that differs. Set-user-ID bits stay dropped either way:
  an owner given back does not make a forged archive's set-user-ID file a safe one.
- Symlinks are created as they were archived, pointing wherever they pointed (a
  tablespace link in a base backup, ``current -> /srv/releases/42`` in a volume):
  drproof never follows one while restoring, and refusing them would make such backups
  impossible to restore.

``remove`` applies an incremental layer's removal list the same way: the entry itself
is unlinked (or its directory removed with ``shutil.rmtree(dir_fd=...)``), never what a
link points to.
"""

from __future__ import annotations

import errno
import grp
import logging
import math
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Protocol

from engine.components import fflags, xattrs
from engine.components.tarread import members
from engine.errors import IntegrityError
from engine.streams import CHUNK

log = logging.getLogger(__name__)

NAME_MAX = 255
PATH_MAX = 4095
MAX_OPEN_DIRS = 256  # directory descriptors kept open between members
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# Modification times a restore sets: finite and within about ±3,000 years of 1970.
# Infinity, NaN or 1e400 in a pax header raised a traceback from os.utime (review).
MAX_MTIME = 1e11


def _timestamp(member: TarMember) -> float:
    mtime = float(member.mtime)
    if not math.isfinite(mtime) or abs(mtime) > MAX_MTIME:
        raise HostileArchive(f"archive member {member.name!r} has a modification time no file can have ({mtime!r})")
    return mtime


# Owner ids a restore may give: 0 to 2**32 - 2. chown takes -1 and 2**32 - 1 as "leave the
# owner alone", and a negative or larger id raised OverflowError from os.chown (review).
MAX_ID = 2**32 - 2
# What chown answers root with where it cannot give an owner: an id not mapped in the user
# namespace a rootless container runs in (EINVAL), root squashed on an NFS export (EPERM).
# Found by review: the whole restore failed there. Now that entry stays the restorer's, as in
# a restore run by anyone but root, and the fidelity check names its owner.
OWNER_NOT_GIVEN = (errno.EINVAL, errno.EPERM)
XATTR_NAME_MAX = 255  # Linux's limits for an extended attribute: no file system holds more
XATTR_SIZE_MAX = 65536


def _check_header(member: TarMember) -> None:
    """Refuse owners and attributes no file can have, naming the member, before anything is written.

    Why here, for every member: a pax header may say anything, and an id out of range, a
    NUL byte in a user name or an attribute name raised OverflowError or ValueError from
    ``os.chown``, ``pwd.getpwnam`` or ``os.setxattr`` (a traceback, found by review).
    """
    for what, number in (("user id", member.uid), ("group id", member.gid)):
        if not 0 <= number <= MAX_ID:
            raise HostileArchive(f"archive member {member.name!r} records {what} {number}, which no file can have")
    for what, text in (("user name", member.uname), ("group name", member.gname)):
        if "\0" in text:
            raise HostileArchive(f"archive member {member.name!r} records a {what} with a NUL byte ({text!r})")
    for name, value in xattrs.from_pax(getattr(member, "pax_headers", None)).items():
        size = len(name.encode("utf-8", "surrogateescape"))
        if "\0" in name or not 0 < size <= XATTR_NAME_MAX or len(value) > XATTR_SIZE_MAX:
            raise HostileArchive(
                f"archive member {member.name!r} records an extended attribute no file can have: name "
                f"{name[:80]!r} ({size} bytes), value of {len(value)} bytes (at most {XATTR_NAME_MAX} and "
                f"{XATTR_SIZE_MAX}, no NUL byte)"
            )


class HostileArchive(IntegrityError):
    """An archive member that would write outside the target, or that no backup of drproof holds."""


def member_parts(name: str, what: str = "member") -> list[str]:
    """The components of an archive path, or a refusal naming why it cannot be one."""
    if "\0" in name:
        raise HostileArchive(f"archive {what} {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise HostileArchive(f"archive {what} {name!r} is an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise HostileArchive(f"archive {what} name is {len(name)} characters long, over the path limit")
    parts = name.rstrip("/").split("/")
    while parts and parts[0] == ".":  # "./a" as some tars write it
        parts.pop(0)
    if len(name) <= NAME_MAX and name.isascii() and parts and not ("" in parts or "." in parts or ".." in parts):
        return parts  # most names: no component can be too long, and none is empty, "." or ".."
    for part in parts:
        if part in ("", ".", ".."):
            raise HostileArchive(f"archive {what} {name!r} has a {part or 'empty'!r} path component")
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise HostileArchive(f"archive {what} {name!r} has a component over {NAME_MAX} bytes")
    if not parts:
        raise HostileArchive(f"archive {what} {name!r} names no path")
    return parts


class TarMember(Protocol):
    """A member as the writer needs it: ``tarfile.TarInfo``, or :class:`~engine.components.tarread.Member`."""

    @property
    def name(self) -> str: ...
    @property
    def linkname(self) -> str: ...
    @property
    def mode(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def type(self) -> bytes: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def uname(self) -> str: ...
    @property
    def gname(self) -> str: ...
    def isreg(self) -> bool: ...
    def isdir(self) -> bool: ...
    def issym(self) -> bool: ...
    def islnk(self) -> bool: ...
    def isfifo(self) -> bool: ...
    def ischr(self) -> bool: ...
    def isblk(self) -> bool: ...


# Told of every entry written (its path below the root, its member); for a regular file
# or a hard link it may return a function that is then fed the content.
OnEntry = Callable[[str, TarMember], Callable[[bytes], None] | None]


class TreeWriter:
    """Writes archive members into ``root``, a directory that must be fresh and private.

    ``on_entry(rel, member)`` is told of every entry written; for a regular file (or a
    hard link) it may return a function that is then fed the content, so a caller can
    digest each file as it is written (a fingerprint at no extra read). Directory modes are
    applied by :meth:`finish`, deepest first, so a read-only directory does not stop
    its own contents from being written.
    """

    def __init__(self, root: Path, on_entry: OnEntry | None = None) -> None:
        self.root = root
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._dirs: dict[tuple[str, ...], int] = {}  # open descriptors of directories below root
        self._modes: dict[tuple[str, ...], int] = {}
        self._on_entry = on_entry
        self._umask = _umask()
        # Owners are given back only by root; a new entry is already (euid, egid)'s.
        self._chown = os.geteuid() == 0
        self._owners: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self.owners_kept = 0  # entries root could not give their owner (OWNER_NOT_GIVEN)
        self.xattrs_missed = 0  # extended attributes this restore could not set (not root, or no such namespace)
        self._dir_xattrs: dict[tuple[str, ...], xattrs.Xattrs] = {}
        # Inode flags to set once the tree is whole and proved (``give_flags``), by path.
        self._flags: dict[tuple[str, ...], int] = {}
        self.flags_missed = 0  # entries whose inode flags this restore could not set

    def close(self) -> None:
        self._close_dirs()
        os.close(self._root_fd)

    def _close_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _trim(self) -> None:
        """Close the cached directory descriptors once there are many; they reopen as needed.

        Why: one descriptor per directory of the archive ran into the open-files limit
        (1,024 by default) for a tree of that many directories. Only between members, so
        no descriptor in use is ever closed; reopening goes through the same checks.
        """
        if len(self._dirs) > MAX_OPEN_DIRS:
            self._close_dirs()

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- directories ----------------------------------------------------------------------
    def _dir(self, parts: tuple[str, ...], create: bool, member: str) -> int | None:
        """The descriptor of directory ``parts`` below root, never through a symlink."""
        if not parts:
            return self._root_fd
        if parts in self._dirs:
            return self._dirs[parts]
        parent = self._dir(parts[:-1], create, member)
        if parent is None:
            return None
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise HostileArchive(
                    f"archive member {member!r} passes through {'/'.join(parts)!r}, which is not a directory "
                    "(a symlink or file earlier in the archive): refused, nothing is written through links"
                ) from None
            raise
        self._dirs[parts] = fd
        return fd

    def _forget_dirs_under(self, parts: tuple[str, ...]) -> None:
        for key in [k for k in self._dirs if k[: len(parts)] == parts]:
            os.close(self._dirs.pop(key))
        for key in [k for k in self._modes if k[: len(parts)] == parts]:
            del self._modes[key]

    def _clear(self, parent: int, name: str, parts: tuple[str, ...], keep_dir: bool) -> bool:
        """Make room for a new entry ``name``; True if a directory already stands there (kept)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise HostileArchive(f"archive member {'/'.join(parts)!r} would replace a directory of the same name")
        os.unlink(name, dir_fd=parent)
        return False

    def _ids(self, member: TarMember) -> tuple[int, int]:
        """The uid and gid on this host of the owner ``member`` records: by name, else by number."""
        key = (member.uname, member.gname, member.uid, member.gid)
        ids = self._owners.get(key)
        if ids is None:
            ids = self._owners[key] = (_id_of("u", member.uname, member.uid), _id_of("g", member.gname, member.gid))
        return ids

    def _give(self, parent: int, name: str, member: TarMember) -> None:
        """Give the entry ``name`` (not what it may point to) its recorded owner, when run as root, and
        its extended attributes (after the owner: a change of owner clears a file capability).

        A directory's attributes wait for :meth:`finish`, as its mode does: a default ACL
        set now would be inherited by every file written into it afterwards.
        """
        if self._chown:  # always, even to root's own ids: a group may be inherited where it was created (review)
            ids = self._ids(member)
            try:
                os.chown(name, ids[0], ids[1], dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                self._owner_not_given(exc)
        found = xattrs.from_pax(getattr(member, "pax_headers", None))
        if member.isdir():  # a later layer's member of the same directory says what it has now
            key = tuple(member_parts(member.name))
            if found or key in self._dir_xattrs:
                self._dir_xattrs[key] = found
        elif found:  # by its name under the directory's descriptor, never through a link
            self.xattrs_missed += xattrs.give(f"/proc/self/fd/{parent}/{name}", found, where=member.name)

    def _owner_not_given(self, exc: OSError) -> None:
        """Count an owner chown could not give (see ``OWNER_NOT_GIVEN``); any other failure stops the restore."""
        if exc.errno not in OWNER_NOT_GIVEN:
            raise exc
        self.owners_kept += 1

    # -- members --------------------------------------------------------------------------
    def add(self, member: TarMember, content: Iterable[bytes] | None) -> None:
        """Write one member; ``content``: a regular file's bytes, in pieces."""
        self._trim()
        parts = tuple(member_parts(member.name))  # the member's path, checked once
        _check_header(member)
        parent = self._dir(parts[:-1], True, member.name)
        assert parent is not None
        name, rel = parts[-1], "/".join(parts)
        self._note_flags(parts, member)
        if member.isreg():
            self._write_file(parent, name, parts, rel, member, content)
        elif member.isdir():
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                if not self._clear(parent, name, parts, keep_dir=True):
                    os.mkdir(name, 0o700, dir_fd=parent)
            self._give(parent, name, member)  # an earlier layer's directory may have another owner
            self._modes[parts] = member.mode & 0o3777
            self._notify(rel, member)
        elif member.issym():
            if "\0" in member.linkname or len(member.linkname.encode("utf-8", "surrogateescape")) > PATH_MAX:
                raise HostileArchive(f"archive member {member.name!r} is a symlink with an impossible target")
            self._create(parent, name, parts, lambda: os.symlink(member.linkname, name, dir_fd=parent))
            self._give(parent, name, member)
            self._notify(rel, member)
        elif member.islnk():
            self._link(parent, name, parts, rel, member)
        elif member.isfifo():
            self._create(parent, name, parts, lambda: os.mkfifo(name, member.mode & 0o777, dir_fd=parent))
            self._give(parent, name, member)
            self._notify(rel, member)
        elif member.ischr() or member.isblk():
            raise HostileArchive(
                f"archive member {member.name!r} is a device node, which drproof never creates (its backups "
                "refuse device nodes; one in a drproof set was archived by an earlier version)"
            )
        else:
            raise HostileArchive(
                f"archive member {member.name!r} is of tar type {member.type!r}, which is not restored"
            )

    def _note_flags(self, parts: tuple[str, ...], member: TarMember) -> None:
        """Remember the inode flags a member records, for ``give_flags``; a later layer's member says what it has now."""
        flagged = member.isreg() or member.isdir() or member.islnk()
        flags = fflags.from_pax(getattr(member, "pax_headers", None)) if flagged else 0
        if flags:
            self._flags[parts] = flags
        elif parts in self._flags:
            del self._flags[parts]

    def give_flags(self) -> None:
        """Set the inode flags the archive records, deepest first: call last, once the tree is whole and proved.

        Last, because an immutable file can no longer be written, chowned or chmodded, and an
        immutable or append-only directory takes no new entry and loses none (an incremental
        layer's removals). Deepest first, so a directory's flags follow its contents'.
        A flag that cannot be set (``+i`` and ``+a`` need root; a file system without flags) is
        counted and named in a warning; the fidelity check names each entry that lacks it.
        """
        for parts in sorted(self._flags, key=len, reverse=True):
            self._trim()
            parent = self._dir(parts[:-1], False, "/".join(parts))
            if parent is None:
                continue
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                continue
            except PermissionError:  # not root, and the entry's mode keeps its owner out
                self.flags_missed += 1
                continue
            try:
                if not fflags.give(fd, self._flags[parts]):
                    self.flags_missed += 1
            finally:
                os.close(fd)
        if self.flags_missed:
            log.warning(
                "%d entr(y/ies) could not be given the inode flags the archive records (chattr +i and +a need "
                "root; some file systems keep no flags): the fidelity check names each entry that lacks them",
                self.flags_missed,
            )

    def _create(self, parent: int, name: str, parts: tuple[str, ...], make: Callable[[], object]) -> None:
        """``make()`` the entry; if something stands there already, clear it first (never a directory).

        Tried first and cleared only on failure: a fresh staging tree holds nothing to
        clear, so checking beforehand cost a failing stat per member.
        """
        try:
            make()
        except FileExistsError:
            self._clear(parent, name, parts, keep_dir=False)
            make()

    def _notify(self, rel: str, member: TarMember) -> Callable[[bytes], None] | None:
        return self._on_entry(rel, member) if self._on_entry else None

    def _write_file(
        self,
        parent: int,
        name: str,
        parts: tuple[str, ...],
        rel: str,
        member: TarMember,
        content: Iterable[bytes] | None,
    ) -> None:
        # Straight to the descriptor: a buffered file object per member (open, flush,
        # close) cost more than the write itself for small files.
        # Created with its mode (a file's owner may write it whatever the mode says): when
        # the umask takes nothing from it, no fchmod per file. The tree is private anyway
        # (staging is 0700) until it is swapped in.
        mode = member.mode & 0o777
        try:
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent)
        except FileExistsError:
            self._clear(parent, name, parts, keep_dir=False)
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent)
        try:
            digest = self._notify(rel, member)
            for chunk in content or ():
                written = os.write(fd, chunk)
                if written != len(chunk):  # a short write: the rest, and a full disk said plainly
                    _write_all(fd, memoryview(chunk)[written:])
                if digest is not None:
                    digest(chunk)
            if self._chown:  # always, as in _give
                ids = self._ids(member)
                try:
                    os.fchown(fd, ids[0], ids[1])
                except OSError as exc:
                    self._owner_not_given(exc)
            found = xattrs.from_pax(getattr(member, "pax_headers", None))
            if found:
                self.xattrs_missed += xattrs.give(fd, found, where=rel)
            if mode & self._umask:
                os.fchmod(fd, mode)
            mtime = _timestamp(member)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)

    def _link(self, parent: int, name: str, parts: tuple[str, ...], rel: str, member: TarMember) -> None:
        source = tuple(member_parts(member.linkname, "hard link target"))
        source_dir = self._dir(source[:-1], False, member.name)
        try:
            if source_dir is None:
                raise FileNotFoundError
            st = os.stat(source[-1], dir_fd=source_dir, follow_symlinks=False)
        except FileNotFoundError:
            raise HostileArchive(
                f"archive member {member.name!r} is a hard link to {member.linkname!r}, which the archive does not hold"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise HostileArchive(f"archive member {member.name!r} is a hard link to something that is not a file")
        self._create(
            parent,
            name,
            parts,
            lambda: os.link(source[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False),
        )
        digest = self._notify(rel, member)
        if digest is not None:  # the content the link now shares, read back for the caller's digest
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                while chunk := os.read(fd, CHUNK):
                    digest(chunk)
            finally:
                os.close(fd)

    def remove(self, rel: str) -> None:
        """Remove the entry ``rel`` itself (an incremental layer's removal list)."""
        self._trim()
        parts = tuple(member_parts(rel, "removal"))
        parent = self._dir(parts[:-1], False, rel)
        if parent is None:
            return
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        self._flags.pop(parts, None)
        if stat.S_ISDIR(st.st_mode):
            for below in [p for p in self._flags if p[: len(parts)] == parts]:
                del self._flags[below]
            self._forget_dirs_under(parts)
            shutil.rmtree(parts[-1], dir_fd=parent)
        else:
            os.unlink(parts[-1], dir_fd=parent)

    def finish(self) -> None:
        """Apply directory attributes and modes, deepest first; say how many attributes could not be set."""
        for parts in sorted(self._modes, key=len, reverse=True):
            self._trim()
            fd = self._dir(parts, False, "/".join(parts))
            if fd is not None:
                found = self._dir_xattrs.get(parts)
                if found:
                    self.xattrs_missed += xattrs.give(fd, found, where="/".join(parts))
                os.fchmod(fd, self._modes[parts])
        if self.owners_kept:
            log.warning(
                "%d entr(y/ies) could not be given the owner the archive records (ids not mapped in this user "
                "namespace, or root squashed by the file system): they belong to whoever runs the restore; the "
                "fidelity check names each owner that differs",
                self.owners_kept,
            )
        if self.xattrs_missed:
            log.warning(
                "%d extended attribute(s) of the archive were not set (only user.* attributes and POSIX ACLs "
                "are ever given back: security.* and trusted.* ones, like set-user-ID bits, would be a privilege "
                "an archive grants; the others need root, or a file system with their namespace and room for "
                "them); the fidelity check names each entry that lacks them",
                self.xattrs_missed,
            )


def _id_of(kind: str, name: str, number: int) -> int:
    """The id of user ("u") or group ``name`` on this host, or ``number`` where it has no such name."""
    if name:
        try:
            return pwd.getpwnam(name).pw_uid if kind == "u" else grp.getgrnam(name).gr_gid
        except KeyError:
            pass
    return number


def _umask() -> int:
    """The process's umask, read without changing it (Linux 4.7+); all bits when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError("the file system took none of the bytes written")
        view = view[written:]


def extract_into(stream: IO[bytes], writer: TreeWriter) -> int:
    """Every member of a tar stream through ``writer``; return how many."""
    count = 0
    for member, content in members(stream):
        writer.add(member, content)
        count += 1
    return count
