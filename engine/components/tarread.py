"""Reading tar archives of the kind drproof writes, without tarfile's per-member machinery.

Why: restoring a volume of many small files, tarfile's header parsing was the largest
Python cost (issue 14: about 40 % of the restore profile). For every member tarfile
decodes all sixteen header fields through helper calls, checksums the header twice with
``struct``, builds a ``TarInfo`` and an ``ExFileObject`` and moves through the stream
with seeks. What drproof writes (:func:`engine.components.files.write_tar`: POSIX ustar
headers, pax extended headers for long or non-ASCII names and large numbers) needs a
fraction of that, so this reads exactly that and nothing else:

- a 512-byte ustar header with the POSIX magic, its checksum verified exactly (the sum
  of the bytes, computed from two Adler-32 sums of 256 bytes each, which cannot wrap);
- the types tarfile supports for extraction: regular files, directories, symbolic and
  hard links, FIFOs, and device nodes (which the writer refuses);
- a pax extended header before a member, with the keys tarfile applies (path, linkpath,
  size, mtime, atime, ctime, uid, gid, uname, gname).

Anything else (a GNU long name, a global or sparse header, a base-256 number, another
magic, a pax key outside that list, a signed checksum) is handed, from the first
header of that member on, to ``tarfile`` in stream mode, which reads the rest: nothing
is refused here that tarfile reads, and the archive's members go to the same
:class:`~engine.components.untar.TreeWriter`, whose checks (not this parser) keep a
hostile archive from writing outside its target. Where tarfile would quietly stop at
a damaged header after the first member, this raises ``tarfile.ReadError``: a damaged
archive is an error, never a shorter restore.

``strict=True`` is for archives another tool wrote, trusted no more than an attacker's
(``engine.foreign.trees``); drproof's own archives are also checked by their digest, so
they keep the lenient reading. Strict reading also: requires the end-of-archive marker
(two zero blocks; an archive cut at a member boundary looks whole otherwise); refuses a
pax or GNU long-name header over ``MAX_PAX`` (tarfile reads one whole, so a small
compressed file could claim gigabytes); seeks over content a seekable stream holds
instead of reading it; and makes tarfile, where it takes over, refuse a damaged header
at any offset and forget each member once read (it keeps every ``TarInfo`` otherwise).
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, Self

from engine.streams import CHUNK

BLOCK = 512
_ZERO = b"\0" * BLOCK
_MAGIC = b"ustar\x00"  # and "00": POSIX, as tarfile and pg_basebackup write it
_REGULAR = (b"0", b"\0", b"7")
_OTHER = (b"5", b"2", b"1", b"6", b"3", b"4")
# hdrcharset=BINARY (tarfile writes it before values that are not UTF-8) changes nothing
# here: every value is decoded with surrogates, as tarfile then decodes them.
_PAX_KEYS = frozenset(
    {"path", "linkpath", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "hdrcharset"}
)
_XATTR = "SCHILY.xattr."  # extended attributes (engine.components.xattrs), kept for the writer
_FFLAGS = "SCHILY.fflags"  # inode flags (engine.components.fflags), kept for the writer
MAX_PAX = 1 << 20  # a pax header drproof writes holds a path or two; larger ones go to tarfile
READ_SIZE = 1 << 20

Content = Iterable[bytes]


_NO_PAX: dict[str, str] = {}


class Member:
    """A member as ``TreeWriter`` needs it; the attribute and method names of ``tarfile.TarInfo``."""

    __slots__ = ("gid", "gname", "linkname", "mode", "mtime", "name", "pax_headers", "size", "type", "uid", "uname")

    def __init__(self, name: str, type: bytes, mode: int, mtime: float, size: int, linkname: str) -> None:
        self.name = name
        self.type = type
        self.mode = mode
        self.mtime = mtime
        self.size = size
        self.linkname = linkname
        self.uid = self.gid = 0
        self.uname = self.gname = ""
        # Only extended attributes' and inode flags' records, as tarfile names them.
        self.pax_headers: dict[str, str] = _NO_PAX

    def isreg(self) -> bool:
        return self.type in _REGULAR

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def isfifo(self) -> bool:
        return self.type == b"6"

    def ischr(self) -> bool:
        return self.type == b"3"

    def isblk(self) -> bool:
        return self.type == b"4"


class _Unsupported(Exception):
    """A header this reader leaves to tarfile."""


def members(stream: IO[bytes], strict: bool = False) -> Iterator[tuple[Any, Content | None]]:
    """(member, content) of every member: content (chunks) for regular files, else None.

    The content of one member must be read (or left) before asking for the next.
    ``strict``: an archive another tool wrote (see the module's docstring).
    """
    return _Reader(stream, strict).members()


def header_sum(block: bytes) -> int:
    """The sum of a 512-byte header's bytes, as tar's checksum counts them.

    From two Adler-32 sums: Adler-32's first sum is the byte sum plus one, modulo 65,521,
    which 256 bytes (at most 65,280) never reach; ``sum(block)`` took ten microseconds.
    """
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


def _check_sum(block: bytes) -> None:
    """Refuse a header whose checksum is wrong; leave one summed as signed bytes to tarfile."""
    actual = header_sum(block) - sum(block[148:156]) + 256
    try:
        if int(block[148:154], 8) == actual:  # "%06o\0 ", as tar writes it
            return
    except ValueError:
        pass
    recorded = _num(block[148:156])
    if recorded == actual:
        return
    if recorded in tarfile.calc_chksums(block):  # type: ignore[attr-defined]
        raise _Unsupported  # a signed checksum (old Sun tars): tarfile's
    raise tarfile.ReadError("bad checksum")


def _num(field: bytes) -> int:
    if field[-1] == 0:  # as tar writes them: octal digits and a NUL
        try:
            return int(field[:-1], 8)
        except ValueError:
            pass
    if field[0] & 0x80:
        raise _Unsupported  # base-256: tarfile reads it
    end = field.find(b"\0")
    try:
        return int((field if end < 0 else field[:end]).strip() or b"0", 8)
    except ValueError:
        raise tarfile.ReadError("invalid header: a number field is not octal") from None


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    """The records of a pax extended header: ``"%d %s=%s\\n" % (length, key, value)``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            if data[pos:].strip(b"\0"):
                raise _Unsupported
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _Unsupported from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise _Unsupported
        key, _, value = record[:-1].partition(b"=")
        name = key.decode("utf-8", "surrogateescape")
        if name not in _PAX_KEYS and name != _FFLAGS and not name.startswith(_XATTR):
            raise _Unsupported
        out[name] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _Reader:
    def __init__(self, stream: IO[bytes], strict: bool = False) -> None:
        self._stream = stream
        self._strict = strict
        self._seek = strict and _seekable(stream)
        self._buf = b""
        self._pos = 0
        self._mark = 0  # where the member being read began: tarfile takes over from here
        self._left = 0  # content of the last member not read by its consumer, and padding
        self._started = False

    def _fill(self, n: int) -> bool:
        """At least ``n`` bytes from the position on in the buffer; False at the end of the stream."""
        while len(self._buf) - self._pos < n:
            more = self._stream.read(max(READ_SIZE, n))
            if not more:
                return False
            self._buf = self._buf[self._mark :] + more
            self._pos -= self._mark
            self._mark = 0
        return True

    def _take(self, n: int) -> bytes:
        if not self._fill(n):
            raise tarfile.ReadError("unexpected end of data")
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def _skip(self, n: int) -> None:
        buffered = min(n, len(self._buf) - self._pos)
        self._pos += buffered
        n -= buffered
        if n and self._seek:
            self._stream.seek(n, io.SEEK_CUR)  # a short archive shows at the next header's read
            return
        while n:
            more = self._stream.read(min(n, READ_SIZE))
            if not more:
                raise tarfile.ReadError("unexpected end of data")
            n -= len(more)

    def members(self) -> Iterator[tuple[Any, Content | None]]:
        while True:
            if self._left:
                self._skip(self._left)
                self._left = 0
            self._mark = self._pos
            try:
                member = self._member()
            except _Unsupported:
                yield from self._tarfile()
                return
            if member is None:
                return
            if not member.isreg():
                yield member, None
                continue
            self._left = member.size + (-member.size % BLOCK)
            yield member, self._content(member.size)

    def _member(self) -> Member | None:
        pax: dict[str, str] | None = None
        while True:
            if not self._fill(BLOCK):
                if self._pos == len(self._buf) and pax is None and self._started:
                    if self._strict:
                        raise tarfile.ReadError(CUT_SHORT)
                    return None  # the stream ends where a member could start: the end, as for tarfile
                raise tarfile.ReadError("unexpected end of data" if self._started else "empty file")
            self._started = True
            block = self._take(BLOCK)
            if block == _ZERO:
                if pax is not None:
                    raise tarfile.ReadError("a pax header followed by the end of the archive")
                if self._strict and (not self._fill(BLOCK) or self._take(BLOCK) != _ZERO):
                    raise tarfile.ReadError(CUT_SHORT + " (a lone zero block)")
                return None
            _check_sum(block)
            if block[257:263] != _MAGIC:
                raise _Unsupported
            kind = block[156:157]
            if kind == b"x":
                size = _num(block[124:136])
                if self._strict and size > MAX_PAX:
                    raise tarfile.ReadError(_too_large("pax extended", size))
                if pax is not None or size > MAX_PAX:
                    raise _Unsupported
                pax = _pax(self._take(size + (-size % BLOCK))[:size])
                continue
            if kind not in _REGULAR and kind not in _OTHER:
                raise _Unsupported
            return _built(block, kind, pax)

    def _content(self, size: int) -> Iterator[bytes]:
        """The member's bytes: from the buffer, then straight from the stream in CHUNK pieces."""
        whole = size + (-size % BLOCK)
        if len(self._buf) - self._pos >= whole:  # most files: already in the buffer, padding too
            data = self._buf[self._pos : self._pos + size]
            self._pos += whole
            self._left = 0
            if data:
                yield data
            return
        left = size
        while left:
            if self._pos < len(self._buf):
                piece = self._buf[self._pos : self._pos + min(left, CHUNK)]
                self._pos += len(piece)
            else:
                piece = self._stream.read(min(CHUNK, left))
                if not piece:
                    raise tarfile.ReadError("unexpected end of data")
            left -= len(piece)
            self._left -= len(piece)
            yield piece
        # The padding is what is left (``_left``), skipped before the next member.

    def _tarfile(self) -> Iterator[tuple[Any, Content | None]]:
        """The rest of the archive through tarfile, from the first header of the current member."""
        rest = _Prefixed(self._buf[self._mark :], self._stream)
        kind = _StrictInfo if self._strict else tarfile.TarInfo
        with tarfile.open(fileobj=rest, mode="r|", tarinfo=kind) as tar:
            while (info := tar.next()) is not None:
                if self._strict:
                    tar.members.clear()  # type: ignore[attr-defined]  # stream mode needs none of them back; kept, they grow without bound
                data = tar.extractfile(info) if info.isreg() else None
                yield info, (_chunks(data) if data is not None else None)


def _built(block: bytes, kind: bytes, pax: dict[str, str] | None) -> Member:
    end = block.find(0, 0, 100)
    name = block[: 100 if end < 0 else end].decode("utf-8", "surrogateescape")
    if kind == b"\0" and name.endswith("/"):
        kind = b"5"  # an old tar's directory
    if kind == b"5":
        name = name.rstrip("/")
    if block[345]:
        name = _text(block[345:500]) + "/" + name
    if block[107] == block[135] == block[147] == 0:  # mode, size and mtime as tar writes them
        try:
            mode, size, mtime = int(block[100:107], 8), int(block[124:135], 8), int(block[136:147], 8)
        except ValueError:
            mode, size, mtime = _num(block[100:108]), _num(block[124:136]), _num(block[136:148])
    else:
        mode, size, mtime = _num(block[100:108]), _num(block[124:136]), _num(block[136:148])
    member = Member(name, kind, mode, mtime, size, _text(block[157:257]) if block[157] else "")
    _owner(member, block)
    if pax:
        try:
            if "path" in pax:
                member.name = pax["path"].rstrip("/")
            if "linkpath" in pax:
                member.linkname = pax["linkpath"]
            if "size" in pax:
                member.size = int(pax["size"])
            if "mtime" in pax:
                member.mtime = float(pax["mtime"])
            if "uid" in pax:
                member.uid = int(pax["uid"])
            if "gid" in pax:
                member.gid = int(pax["gid"])
            member.uname = pax.get("uname", member.uname)
            member.gname = pax.get("gname", member.gname)
            attrs = {k: v for k, v in pax.items() if k.startswith(_XATTR) or k == _FFLAGS}
            if attrs:
                member.pax_headers = attrs
        except ValueError:
            raise _Unsupported from None
    return member


def _owner(member: Member, block: bytes) -> None:
    """The owner fields of a ustar header: ids and, where recorded, names (restored by name, as tar does)."""
    member.uid, member.gid = _num(block[108:116]), _num(block[116:124])
    if block[265]:
        member.uname = _text(block[265:297])
    if block[297]:
        member.gname = _text(block[297:329])


CUT_SHORT = "cut short: no end-of-archive marker"


def _too_large(what: str, size: int) -> str:
    return f"a {what} header of {size} bytes (over {MAX_PAX}): refused, it would be read whole into memory"


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, OSError, ValueError):
        return False


class _StrictInfo(tarfile.TarInfo):
    """tarfile's member for a strict reading: a damaged or missing header is an error at any offset.

    ``TarFile.next`` ends the archive quietly on a bad header after the first member; these
    errors are turned into ``ReadError``, which it lets through. The end-of-archive marker
    is two zero blocks: after the first, the second must follow.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            name = type(exc).__name__
            if name == "EOFHeaderError":
                if tarfile_.fileobj is None or tarfile_.fileobj.read(BLOCK) != _ZERO:
                    raise tarfile.ReadError(CUT_SHORT + " (a lone zero block)") from None
                raise
            if name in ("EmptyHeaderError", "TruncatedHeaderError"):
                raise tarfile.ReadError(CUT_SHORT) from None
            raise tarfile.ReadError(f"damaged header: {exc}") from None

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_PAX:
            raise tarfile.ReadError(_too_large("GNU long-name", self.size))
        return super()._proc_gnulong(tarfile_)  # type: ignore[misc, no-any-return]

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_PAX:
            raise tarfile.ReadError(_too_large("pax extended", self.size))
        return super()._proc_pax(tarfile_)  # type: ignore[misc, no-any-return]


def _chunks(data: IO[bytes]) -> Iterator[bytes]:
    while chunk := data.read(CHUNK):
        yield chunk


class _Prefixed(io.RawIOBase):
    """``head`` and then the rest of ``stream``: tarfile reading from where this reader stopped."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)
