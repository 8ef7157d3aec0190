"""Picking one member out of a tar stream while the stream passes through.

``pg_basebackup`` writes its ``backup_manifest`` as the last member of the tar it
streams. An incremental base backup needs the parent's manifest, so the physical
component keeps a copy as its own small artifact; sniffing it from the stream on its
way to the repository avoids both a second read of the whole backup and a temporary
copy of it on local disk.
"""

from __future__ import annotations

from typing import IO

BLOCK = 512
MAX_CAPTURE = 1 << 30  # a manifest is ~100 bytes per file; anything larger is not one


def _size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class TarSniffer:
    """A writer that forwards everything to ``sink`` and keeps one member's content."""

    def __init__(self, sink: IO[bytes], wanted: str) -> None:
        self.sink = sink
        self.wanted = wanted.encode()
        self.captured: bytes | None = None
        self._header = bytearray()
        self._remaining = 0  # bytes of member data (plus padding) still to pass
        self._data_left = 0  # of those, bytes that are content
        self._capture: bytearray | None = None
        self._ended = False

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        view = memoryview(data)
        while view and not self._ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                if self._capture is not None and self._data_left:
                    keep = min(take, self._data_left)
                    self._capture += view[:keep]
                    self._data_left -= keep
                elif self._data_left:
                    self._data_left -= min(take, self._data_left)
                self._remaining -= take
                view = view[take:]
                if not self._remaining and self._capture is not None:
                    self.captured = bytes(self._capture)
                    self._capture = None
                continue
            take = min(BLOCK - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == BLOCK:
                self._start_member(bytes(self._header))
                self._header.clear()
        return len(data)

    def _start_member(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            self._ended = True  # the two zero blocks that close an archive
            return
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        full = prefix + b"/" + name if prefix else name
        size = _size(header[124:136])
        self._data_left = size
        self._remaining = -(-size // BLOCK) * BLOCK
        if full == self.wanted and size <= MAX_CAPTURE:
            self._capture = bytearray()
            if size == 0:
                self.captured = b""
                self._capture = None
