"""Encrypted artifacts: every kind of tampering is detected, and the key never leaks."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto import CHUNK, MAGIC, Encryption, fingerprint, parse_key
from engine.errors import ConfigError, IntegrityError, WrongKey
from engine.repository import LocalRepository

KEY = bytes(range(32))


def _seal(data: bytes, name: str = "c/a", key: bytes = KEY) -> tuple[bytes, dict[str, object], Encryption]:
    enc = Encryption(key=key, source="test")
    cipher, info = enc.for_new_set()
    buf = io.BytesIO()
    w = cipher.writer(buf, name)
    w.write(data)
    w.close()
    return buf.getvalue(), info, enc


def _open(sealed: bytes, info: dict[str, object], enc: Encryption, name: str = "c/a") -> bytes:
    return enc.for_manifest("b", info).reader(io.BytesIO(sealed), name).read()  # type: ignore[arg-type]


@given(st.binary(max_size=3000))
def test_round_trip(data: bytes) -> None:
    sealed, info, enc = _seal(data)
    assert _open(sealed, info, enc) == data
    assert sealed.startswith(MAGIC)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.data())
def test_any_flipped_byte_is_detected(data: bytes, pick: st.DataObject) -> None:
    sealed, info, enc = _seal(data)
    pos = pick.draw(st.integers(0, len(sealed) - 1))
    damaged = bytearray(sealed)
    damaged[pos] ^= 1 << pick.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError):
        _open(bytes(damaged), info, enc)


def test_truncation_at_a_chunk_boundary_and_reordering_are_detected() -> None:
    data = os.urandom(CHUNK * 2 + 10)
    sealed, info, enc = _seal(data)
    frame = 4 + CHUNK + 16
    header = len(MAGIC) + 8
    first, second, last = (sealed[header + i * frame : header + (i + 1) * frame] for i in range(3))
    with pytest.raises(IntegrityError):
        _open(sealed[:header] + first + second, info, enc)  # the final chunk dropped
    with pytest.raises(IntegrityError):
        _open(sealed[:header] + second + first + last, info, enc)  # reordered
    with pytest.raises(IntegrityError):
        _open(sealed + b"x", info, enc)  # appended


def test_chunk_moved_from_another_artifact_is_detected() -> None:
    sealed, info, enc = _seal(b"secret payload", name="c/a")
    with pytest.raises(IntegrityError):
        _open(sealed, info, enc, name="c/b")


def test_wrong_key_is_refused_up_front_with_both_fingerprints() -> None:
    _, info, _ = _seal(b"x")
    other = os.urandom(32)
    with pytest.raises(WrongKey, match="wrong key") as exc:
        Encryption(key=other, source="env K").for_manifest("b", info)
    assert exc.value.exit_code == 1  # a refusal, like a damaged artifact
    assert fingerprint(other) in str(exc.value) and KEY.hex() not in str(exc.value)


def test_passphrase_uses_scrypt_with_a_salt_per_set() -> None:
    enc = Encryption(passphrase=b"correct horse", source="env P")
    (_, a), (_, b) = enc.for_new_set(), enc.for_new_set()
    assert a["kdf"] == "scrypt" and a["salt"] != b["salt"] and a["key_fingerprint"] != b["key_fingerprint"]
    enc.for_manifest("b", a)
    with pytest.raises(WrongKey, match="wrong key"):
        Encryption(passphrase=b"wrong", source="env P").for_manifest("b", a)


@pytest.mark.parametrize("text", [KEY, KEY.hex().encode(), b"  " + KEY.hex().encode() + b"\n"])
def test_keys_are_accepted_raw_hex_or_base64(text: bytes) -> None:
    assert parse_key(text, "k") == KEY
    import base64

    assert parse_key(base64.b64encode(KEY), "k") == KEY


def test_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a 32-byte key"):
        parse_key(b"abc", "env K")


def test_encrypted_repository_round_trip_and_verify_without_key() -> None:
    with tempfile.TemporaryDirectory() as d:
        repo = LocalRepository(Path(d), Encryption(key=KEY, source="test"))
        writer = repo.begin("x")
        payload = os.urandom(200_000)
        with writer.artifact("c", "a") as fh:
            fh.write(payload)
        manifest = writer.commit([], {}, {})
        assert manifest.encryption and manifest.encryption["key_fingerprint"] == fingerprint(KEY)
        assert KEY.hex() not in manifest.to_json()
        stored = (Path(d) / "sets" / manifest.id / "c" / "a.zst").read_bytes()
        assert payload[:64] not in stored
        # Integrity can be checked by anyone; reading needs the key.
        assert LocalRepository(Path(d)).verify(manifest.id).ok
        with (
            pytest.raises(ConfigError, match="is encrypted"),
            LocalRepository(Path(d)).open_artifact(manifest, manifest.artifacts[0]),
        ):
            pass
        with repo.open_artifact(manifest, manifest.artifacts[0]) as fh:
            assert fh.read() == payload


def test_sets_are_bound_to_their_id_and_v1_sets_still_read() -> None:
    enc = Encryption(key=KEY, source="test")
    cipher, info = enc.for_new_set("set-a")
    assert info["scheme"] == "aes-256-gcm-chunked-v2"
    buf = io.BytesIO()
    with cipher.writer(buf, "c/a") as w:
        w.write(b"payload")
    assert enc.for_manifest("set-a", info).reader(io.BytesIO(buf.getvalue()), "c/a").read() == b"payload"
    with pytest.raises(IntegrityError, match="another backup set"):
        enc.for_manifest("set-b", info).reader(io.BytesIO(buf.getvalue()), "c/a").read()
    sealed, v1, _ = _seal(b"old format")  # written without a set id: format v1
    assert v1["scheme"] == "aes-256-gcm-chunked-v1"
    assert _open(sealed, v1, enc) == b"old format"


def test_an_older_sets_artifact_replayed_into_a_newer_set_is_refused() -> None:
    """The attack v2 closes: copy an artifact across sets and rewrite the manifest's digest."""
    import json

    with tempfile.TemporaryDirectory() as d:
        repo = LocalRepository(Path(d), Encryption(key=KEY, source="test"))
        made = []
        for payload in (b"old rows" * 1000, b"new rows" * 1000):
            writer = repo.begin("x")
            with writer.artifact("c", "a") as fh:
                fh.write(payload)
            made.append(writer.commit([], {}, {}))
        old, new = made
        old_file = Path(d) / "sets" / old.id / "c" / "a.zst"
        new_file = Path(d) / "sets" / new.id / "c" / "a.zst"
        new_file.write_bytes(old_file.read_bytes())
        manifest_path = Path(d) / "sets" / new.id / "manifest.json"
        doc = json.loads(manifest_path.read_text())
        old_doc = json.loads((Path(d) / "sets" / old.id / "manifest.json").read_text())
        doc["artifacts"] = old_doc["artifacts"]  # digests and sizes of the replayed file
        manifest_path.write_text(json.dumps(doc))
        forged = repo.get(new.id)
        with pytest.raises(IntegrityError), repo.open_artifact(forged, forged.artifacts[0]) as fh:
            fh.read()
