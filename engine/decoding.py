"""Reading a stored artifact back, with every check its bytes carry.

A stored artifact is ``zstd(content)``, optionally sealed in AES-256-GCM chunks, and its
manifest entry records the SHA-256 and size of the stored bytes and the size of the
content. A restore must never act on content that fails any of these, and each check
alone has a hole:

- the stored SHA-256 is only as good as the manifest it is read from; whoever can
  rewrite an artifact can rewrite its digest too;
- zstd's content checksum covers the content, but python-zstandard's readers return a
  *truncated* frame as if it had ended (measured: a frame cut 1,000 bytes short reads
  back as 1.9 of 3 MB with no error, one cut 4 bytes short as complete), and they stop
  quietly at the end of the first frame;
- GCM tags prove each chunk, and nothing else.

So :func:`decoded` runs all of them over one read: the stored digest and size, every
GCM tag (the decrypting reader), a walk over the zstd frame's block headers that proves
the frame is one, whole, checksummed and followed by nothing (:class:`FrameWalker`),
zstd's own checksum, and the content size the manifest recorded. A consumer that
stops early still gets every check: the rest is read and discarded before the context
exits. Any failure is an :class:`~engine.errors.IntegrityError`, never a
``ZstdError`` traceback.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import zstandard

from engine.errors import IntegrityError
from engine.streams import CHUNK, HashingReader, TapReader

_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
_BLOCK_MAX = 128 * 1024


class FrameWalker:
    """Follows one zstd frame's structure as its bytes pass, without decompressing.

    Frame header, then blocks (a 3-byte header each: last-block bit, type, size), then
    the 4-byte content checksum (RFC 8878, section 3.1.1). drproof writes exactly one
    frame with a checksum per artifact; anything else is damage or forgery: a frame
    that stops before its last block, has no checksum, or is followed by more bytes.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._buf = bytearray()  # bytes of a header not complete yet
        self._skip = 0  # content bytes of the current block still to pass
        self._state = "magic"
        self.done = False

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                if not self._skip and self._state == "checksum":
                    self._state, self.done = "end", True
                continue
            if self._state == "end":
                raise self._damage(f"{len(view)} or more bytes follow the end of the compressed frame")
            need = self._needed()
            take = min(need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == need:
                self._advance(bytes(self._buf))
                self._buf.clear()

    def _needed(self) -> int:
        if self._state == "magic":
            return 4
        if self._state == "descriptor":
            return 1
        if self._state == "header-rest":
            return self._rest
        return 3  # a block header

    def _advance(self, chunk: bytes) -> None:
        if self._state == "magic":
            if int.from_bytes(chunk, "little") in _SKIPPABLE or chunk != _MAGIC:
                raise self._damage("it does not start with a zstd frame")
            self._state = "descriptor"
        elif self._state == "descriptor":
            self._header(chunk[0])
        elif self._state == "header-rest":
            self._state = "block"
        else:
            self._block(int.from_bytes(chunk, "little"))

    def _header(self, descriptor: int) -> None:
        fcs_flag, single, reserved = descriptor >> 6, (descriptor >> 5) & 1, (descriptor >> 3) & 1
        self._checksum = bool((descriptor >> 2) & 1)
        if reserved:
            raise self._damage("its frame header has the reserved bit set")
        if not self._checksum:
            raise self._damage("its frame carries no content checksum (drproof always writes one)")
        window = 0 if single else 1
        dictionary = (0, 1, 2, 4)[descriptor & 3]
        content_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        self._rest = window + dictionary + content_size
        self._state = "header-rest" if self._rest else "block"

    def _block(self, header: int) -> None:
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise self._damage("it holds a block of the reserved type")
        if size > _BLOCK_MAX:
            raise self._damage(f"it holds a block of {size} bytes, over zstd's limit")
        self._skip = 1 if kind == 1 else size  # an RLE block stores one byte
        if last:
            self._state = "checksum"
            self._skip += 4

    def finish(self) -> None:
        """Raise unless the frame ended, checksum included, exactly at the end of the input."""
        if not self.done:
            raise self._damage("its compressed frame is cut short (truncated)")

    def _damage(self, problem: str) -> IntegrityError:
        return IntegrityError(f"{self.what} is damaged: {problem}")


class _Bounded(io.RawIOBase):
    """The decompressed content, refused as soon as it outgrows what the manifest recorded."""

    def __init__(self, source: IO[bytes], limit: int, what: str) -> None:
        self._source = source
        self.limit = limit
        self.what = what
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._source.read(len(view))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{self.what} is damaged: its compressed data do not decode ({exc})") from None
        n = len(data)
        self.size += n
        if self.size > self.limit:
            raise IntegrityError(
                f"{self.what} is damaged: it decompresses to more than the {self.limit} bytes its manifest records"
            )
        view[:n] = data
        return n


@contextmanager
def decoded(
    body: IO[bytes],
    *,
    what: str,
    sha256: str,
    size: int,
    raw_size: int,
    cipher: Any = None,
    cipher_name: str = "",
    whole: bool = True,
) -> Iterator[IO[bytes]]:
    """The content of one stored artifact; every check of the module docstring on exit.

    ``what`` names the artifact in messages ("backup X: artifact db/database.dump").
    The checks that need the whole stream run when the context exits cleanly, so a
    consumer must treat what it read as unproven until then. ``whole=False`` skips them
    (and the rest of the stream), for a head read of an artifact proven before.
    """
    stored = HashingReader(body)
    source: Any = stored if cipher is None else cipher.reader(stored, cipher_name)
    walker = FrameWalker(what)
    watched = TapReader(source, walker.feed)
    reader = zstandard.ZstdDecompressor().stream_reader(watched, read_size=CHUNK, closefd=False)  # type: ignore[arg-type]
    content = _Bounded(reader, raw_size, what)
    try:
        yield io.BufferedReader(content, CHUNK)
        if not whole:
            return
        while content.read(CHUNK):
            pass
        while watched.read(CHUNK):  # what zstd left unread: must be nothing
            pass
        walker.finish()
    except IntegrityError as exc:
        # The stored bytes' own digest, when it disagrees, is the plainest account of the
        # damage ("size N bytes, manifest says M"): the decoding error follows from it.
        stored.drain()
        _check_stored(stored, sha256, size, what, exc)
        raise
    finally:
        reader.close()  # type: ignore[no-untyped-call]
    stored.drain()
    _check_stored(stored, sha256, size, what)
    if content.size != raw_size:
        raise IntegrityError(
            f"{what} is damaged: it decompresses to {content.size} bytes, its manifest records {raw_size}"
        )


def _check_stored(stored: HashingReader, sha256: str, size: int, what: str, cause: BaseException | None = None) -> None:
    if stored.size != size:
        raise IntegrityError(f"{what}: size {stored.size} bytes, manifest says {size}") from cause
    if stored.hexdigest() != sha256:
        raise IntegrityError(
            f"{what}: sha256 of the stored bytes differs from the manifest (damaged, or changed while being read)"
        ) from cause


def prove(body: IO[bytes], **kwargs: Any) -> int:
    """Read a stored artifact to the end with every check; return its content size."""
    with decoded(body, **kwargs) as content:
        total = 0
        while chunk := content.read(CHUNK):
            total += len(chunk)
    return total
