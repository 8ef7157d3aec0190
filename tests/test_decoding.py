"""Stored artifacts read back with every check: no damaged content is ever handed out as proven.

The manifest entry is rewritten to match the damaged bytes in every case here (the
attack or accident that a stored digest alone cannot see), so what must catch the
damage is the decoding itself: the zstd frame walk, zstd's checksum, GCM tags and the
recorded content size.
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.crypto import SetCipher
from engine.decoding import FrameWalker, decoded, prove
from engine.errors import IntegrityError
from engine.streams import zstd_compressor

CONTENT = b"".join(os.urandom(1000) + b"ab" * 3000 for _ in range(200))  # compressible and not
KEY = bytes(range(32))


def _stored(content: bytes, encrypted: bool) -> bytes:
    out = io.BytesIO()
    sink = out if not encrypted else SetCipher(KEY).writer(out, "c/a")
    with zstd_compressor().stream_writer(sink, closefd=False) as z:  # type: ignore[arg-type]
        z.write(content)
    if encrypted:
        sink.close()
    return out.getvalue()


PLAIN = _stored(CONTENT, False)
SEALED = _stored(CONTENT, True)


def _read(stored: bytes, encrypted: bool, raw_size: int = len(CONTENT)) -> bytes:
    """Decode with a manifest entry that matches ``stored`` exactly (rehashed)."""
    with decoded(
        io.BytesIO(stored),
        what="artifact c/a",
        sha256=hashlib.sha256(stored).hexdigest(),
        size=len(stored),
        raw_size=raw_size,
        cipher=SetCipher(KEY) if encrypted else None,
        cipher_name="c/a",
    ) as content:
        return content.read()


@pytest.mark.parametrize("encrypted", [False, True])
def test_quiet_control_intact_artifacts_decode(encrypted: bool) -> None:
    assert _read(SEALED if encrypted else PLAIN, encrypted) == CONTENT


def test_empty_content_is_one_whole_frame() -> None:
    assert _read(_stored(b"", False), False, raw_size=0) == b""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), encrypted=st.booleans())
def test_damage_with_a_rehashed_manifest_never_yields_other_content(data: st.DataObject, encrypted: bool) -> None:
    stored = bytearray(SEALED if encrypted else PLAIN)
    offset = data.draw(st.integers(0, len(stored) - 1), label="offset")
    stored[offset] ^= data.draw(st.integers(1, 255), label="xor")
    try:
        out = _read(bytes(stored), encrypted)
    except IntegrityError:
        return
    assert out == CONTENT  # a harmless change (e.g. a larger window size) decodes to the same bytes


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(1, len(PLAIN) - 1), encrypted=st.booleans())
def test_truncation_is_refused_even_when_the_manifest_matches(cut: int, encrypted: bool) -> None:
    stored = (SEALED if encrypted else PLAIN)[:-cut]
    with pytest.raises(IntegrityError):
        _read(stored, encrypted)


@pytest.mark.parametrize("tail", [b"x", b"\x28\xb5\x2f\xfd", PLAIN])
def test_bytes_after_the_frame_are_refused(tail: bytes) -> None:
    with pytest.raises(IntegrityError, match="follow the end"):
        _read(PLAIN + tail, False)


def test_a_frame_without_checksum_is_refused() -> None:
    bare = zstandard.ZstdCompressor(write_checksum=False).compress(CONTENT)
    with pytest.raises(IntegrityError, match="no content checksum"):
        _read(bare, False)


def test_content_larger_than_recorded_is_refused_before_it_is_read_whole() -> None:
    bomb = _stored(b"\0" * (64 << 20), False)  # 64 MiB of zeros in a few KiB
    assert len(bomb) < 64 * 1024
    with pytest.raises(IntegrityError, match="more than the 1000 bytes"):
        _read(bomb, False, raw_size=1000)


def test_content_smaller_than_recorded_is_refused() -> None:
    with pytest.raises(IntegrityError, match="decompresses to"):
        _read(PLAIN, False, raw_size=len(CONTENT) + 1)


def test_a_consumer_that_stops_early_still_gets_every_check() -> None:
    stored = bytearray(PLAIN)
    stored[-2] ^= 0x40  # the checksum at the very end
    with (
        pytest.raises(IntegrityError),
        decoded(
            io.BytesIO(bytes(stored)),
            what="a",
            sha256=hashlib.sha256(stored).hexdigest(),
            size=len(stored),
            raw_size=len(CONTENT),
        ) as content,
    ):
        content.read(10)


def test_a_stale_stored_digest_is_named() -> None:
    with pytest.raises(IntegrityError, match="sha256 of the stored bytes differs"):
        prove(io.BytesIO(PLAIN), what="a", sha256="0" * 64, size=len(PLAIN), raw_size=len(CONTENT))


@pytest.mark.parametrize(
    ("head", "problem"),
    [(b"PK\x03\x04", "does not start with a zstd frame"), (b"\x50\x2a\x4d\x18", "does not start with a zstd frame")],
)
def test_frame_walker_refuses_what_is_not_one_zstd_frame(head: bytes, problem: str) -> None:
    walker = FrameWalker("a")
    with pytest.raises(IntegrityError, match=problem):
        walker.feed(head + b"\0" * 16)
