"""What a writer of a signed repository (without the private key) can forge, and what refuses it.

Review "an unforgeable repository": each attack is made on a real repository (the engine's
local backend, or ``drproof backup`` through the CLI), and the detector must name it; a
healthy repository next to it stays quiet.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.manifest import VERIFIED_NAME, VERIFIED_SIGNATURE, ComponentRecord, Manifest
from engine.repository.base import Repository, VerifyReport
from engine.repository.local import LocalRepository
from engine.signing import ManifestSigner, RepositoryTrust, TrustedKeys


def _trust(key: Ed25519PrivateKey | None = None, signer: bool = True) -> RepositoryTrust:
    key = key or Ed25519PrivateKey.generate()
    return RepositoryTrust(ManifestSigner(key, "test key") if signer else None, TrustedKeys([key.public_key()]))


@contextmanager
def _repo(trust: RepositoryTrust | None) -> Iterator[LocalRepository]:
    with tempfile.TemporaryDirectory() as d:
        yield LocalRepository(Path(d) / "repo", trust=trust)


def _write(repo: Repository, payload: bytes = b"data") -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("files", "files.tar") as sink:
        sink.write(payload)
    return writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})


def _verified(repo: Repository, m: Manifest) -> None:
    report = repo.verify(m.id)
    assert report.ok
    repo.record_verification(report)


def _failed(repo: Repository, m: Manifest) -> None:
    """What a verification that found the set damaged records."""
    repo.record_verification(VerifyReport(backup_id=m.id, ok=False, findings=["fingerprint parts differ"]))


# -- b. verified.json ----------------------------------------------------------------------------


def test_a_healthy_signed_repository_counts_its_own_verifications() -> None:
    with _repo(_trust()) as repo:
        sets = [_write(repo, bytes([i]) * 50) for i in range(3)]
        for m in sets:
            _verified(repo, m)
        assert repo.verified_ids() == {m.id for m in sets}
        assert (repo.root / "sets" / sets[0].id / VERIFIED_SIGNATURE).is_file()
        _failed(repo, sets[1])  # a later failed verification takes the mark away
        assert repo.verified_ids() == {sets[0].id, sets[2].id}


def test_an_unsigned_repository_keeps_taking_the_marks_word() -> None:
    with _repo(None) as repo:
        m = _write(repo)
        _verified(repo, m)
        assert repo.verified_ids() == {m.id}


def test_a_planted_verification_mark_does_not_make_a_failed_set_verified() -> None:
    with _repo(_trust()) as repo:
        good, bad = _write(repo, b"good"), _write(repo, b"bad")
        _verified(repo, good)
        _failed(repo, bad)
        mark = repo.root / "sets" / bad.id / VERIFIED_NAME
        mark.write_text(json.dumps({"ok": True, "at": "2099-01-01T00:00:00+00:00", "damaged": []}) + "\n")
        assert repo.verified_ids() == {good.id}


def test_a_sound_sets_signed_mark_copied_to_another_set_does_not_count_there() -> None:
    with _repo(_trust()) as repo:
        good, bad = _write(repo, b"good"), _write(repo, b"bad")
        _verified(repo, good)
        _failed(repo, bad)
        for name in (VERIFIED_NAME, VERIFIED_SIGNATURE):
            shutil.copyfile(repo.root / "sets" / good.id / name, repo.root / "sets" / bad.id / name)
        assert repo.verified_ids() == {good.id}


def test_a_mark_written_without_the_private_key_does_not_count_where_signatures_are_checked() -> None:
    key = Ed25519PrivateKey.generate()
    with _repo(_trust(key)) as repo:
        m = _write(repo)
        reader = LocalRepository(repo.root, trust=_trust(key, signer=False))
        _verified(reader, m)  # a restore-only host holds public keys only: its mark is unsigned
        assert reader.verified_ids() == set() and repo.verified_ids() == set()
        _verified(repo, m)
        assert reader.verified_ids() == {m.id}

