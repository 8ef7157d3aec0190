"""Streaming building blocks: every artifact passes through these and is never held whole.

Backups can be far larger than memory, so artifacts are compressed, hashed and counted
chunk by chunk as they flow between a tool's pipe and the repository.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

import zstandard

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to keep memory flat.


class HashingWriter(io.RawIOBase):
    """Write-through wrapper that hashes and counts the bytes it passes on."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        self._sink.write(view)
        return len(view)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# Largest piece handed to a multi-threaded zstd writer at once. Pieces above ~200 KiB
# make libzstd's job pool hold ~40 MB more (measured: 80 MB peak RSS feeding 128 KiB
# pieces, 122 MB feeding 1 MiB, same data and speed), so bigger writes are cut up.
ZSTD_FEED = 128 * 1024


class CountingWriter(io.RawIOBase):
    """Write-through wrapper that counts, for content whose digest nobody checks.

    It feeds its sink (a zstd writer) at most ``ZSTD_FEED`` bytes at a time, so memory
    does not depend on how large the pieces a component writes are.
    """

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        for start in range(0, n, ZSTD_FEED):
            self._sink.write(view[start : start + ZSTD_FEED])
        self.size += n
        return n


class TapReader(io.RawIOBase):
    """Read-through wrapper that hands every byte it passes on to ``tap`` as well."""

    def __init__(self, source: IO[bytes], tap: Callable[[bytes], object]) -> None:
        self._source = source
        self._tap = tap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        n = len(data)
        view[:n] = data
        self._tap(data)
        return n


class HashingReader(TapReader):
    """Read-through wrapper that hashes and counts the bytes it hands out."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__(source, self._count)
        self._hash = hashlib.sha256()
        self.size = 0

    def _count(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def drain(self) -> None:
        """Read to the end so the digest covers every byte, even those a consumer skipped."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sha256_file(path: str | bytes | Any) -> tuple[str, int]:
    """Digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def copy_stream(source: IO[bytes], sink: IO[bytes] | HashingWriter) -> int:
    total = 0
    while chunk := source.read(CHUNK):
        sink.write(chunk)
        total += len(chunk)
    return total


def iter_chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


# zstd's worker threads each hold their own buffers (~40 MB at level 3): one per core
# would let memory grow with the host's core count (273 MB measured at 16 threads for a
# 2 GB volume, bench/volume_rss.py). Two workers keep a backup's peak RSS bounded.
ZSTD_THREADS = min(2, os.cpu_count() or 1)


def zstd_compressor(level: int = 3) -> zstandard.ZstdCompressor:
    # Content checksums let zstd itself notice corruption even before the manifest
    # digest is compared.
    return zstandard.ZstdCompressor(level=level, threads=ZSTD_THREADS, write_checksum=True)


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor()
