"""Signed and chained manifests (issue 17): every forgery a repository writer can make is named.

Each detector has its negative control (the forgery is made, the audit and the restore
path must name it and refuse) and the quiet controls say a healthy signed chain is
clean: no finding, no warning, every set usable, in the order it was taken.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import selection
from engine.chain import effective_times, missing_against
from engine.errors import BackupNotFound, ChainBroken, IntegrityError, UntrustedSet
from engine.manifest import MANIFEST_NAME, ComponentRecord, Manifest
from engine.repository.base import Repository
from engine.repository.local import LocalRepository
from engine.retention import Policy, plan
from engine.signing import SIGNATURE_NAME, ManifestSigner, RepositoryTrust, TrustedKeys
from tests.integration.servers import require


def _trust(key: Ed25519PrivateKey | None = None, *also: Ed25519PublicKey) -> RepositoryTrust:
    key = key or Ed25519PrivateKey.generate()
    return RepositoryTrust(ManifestSigner(key, "test key"), TrustedKeys([key.public_key(), *also]))


@contextmanager
def _repo(trust: RepositoryTrust | None = None) -> Iterator[LocalRepository]:
    with tempfile.TemporaryDirectory() as d:
        yield LocalRepository(Path(d) / "repo", trust=trust if trust is not None else _trust())


def _write(repo: Repository, payload: bytes = b"data", label: str = "t") -> Manifest:
    writer = repo.begin(label)
    with writer.artifact("files", "files.tar") as sink:
        sink.write(payload)
    return writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})


def _set_dir(repo: LocalRepository, backup_id: str) -> Path:
    return repo.root / "sets" / backup_id


def _kinds(repo: Repository) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in repo.chain_audit().findings:
        out.setdefault(f.backup_id, set()).add(f.kind)
    return out


# -- quiet controls ---------------------------------------------------------------------------


def test_a_healthy_signed_chain_is_clean_and_ordered() -> None:
    with _repo() as repo:
        sets = [_write(repo, bytes([i]) * 100) for i in range(4)]
        found = repo.chain_audit()
        assert found.findings == [] and found.notes == [] and found.clean
        assert found.order == [m.id for m in sets]
        assert [m.sequence for m in sets] == [1, 2, 3, 4]
        assert sets[0].previous_id is None
        for prev, m in itertools.pairwise(sets):
            stored = (_set_dir(repo, prev.id) / MANIFEST_NAME).read_bytes()
            assert m.previous_id == prev.id and m.previous_sha256 == hashlib.sha256(stored).hexdigest()
        assert all(st.signature is not None and st.signature.ok for st in found.sets.values())
        assert found.doubts_about_latest() == []
        assert selection.latest(repo).manifest.id == sets[-1].id
        assert [m.id for m in repo.list()] == [m.id for m in sets] and repo.broken == {}


def test_an_unsigned_repository_still_chains_and_reads() -> None:
    with tempfile.TemporaryDirectory() as d:
        repo = LocalRepository(Path(d) / "repo")
        a, b = _write(repo), _write(repo)
        found = repo.chain_audit()
        assert not found.verifies and found.findings == []
        assert (a.sequence, b.sequence, b.previous_id) == (1, 2, a.id)
        assert not (_set_dir(repo, a.id) / SIGNATURE_NAME).exists()


def test_a_third_party_verifies_a_manifest_with_the_public_key_alone() -> None:
    """The documented procedure (docs/security.md): Ed25519 over the stored manifest bytes."""
    key = Ed25519PrivateKey.generate()
    with _repo(_trust(key)) as repo:
        m = _write(repo)
        data = (_set_dir(repo, m.id) / MANIFEST_NAME).read_bytes()
        sig = json.loads((_set_dir(repo, m.id) / SIGNATURE_NAME).read_text())
        key.public_key().verify(base64.b64decode(sig["signature"]), data)  # raises if not valid
        assert sig["manifest_sha256"] == hashlib.sha256(data).hexdigest()


def test_openssl_verifies_a_manifest_signature(tmp_path: Path) -> None:
    require("openssl", shutil.which("openssl") is not None, "apt-get install openssl")
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "repo.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with _repo(_trust(key)) as repo:
        m = _write(repo)
        manifest = _set_dir(repo, m.id) / MANIFEST_NAME
        raw = tmp_path / "manifest.sig.bin"
        raw.write_bytes(base64.b64decode(json.loads((_set_dir(repo, m.id) / SIGNATURE_NAME).read_text())["signature"]))
        argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in", str(manifest)]
        ok = subprocess.run([*argv, "-sigfile", str(raw)], capture_output=True, text=True)
        assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stderr
        manifest.write_bytes(manifest.read_bytes().replace(b'"label": "t"', b'"label": "x"'))
        bad = subprocess.run([*argv, "-sigfile", str(raw)], capture_output=True, text=True)
        assert bad.returncode != 0


# -- signatures ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_single_byte_change_to_a_signed_manifest_is_detected(data: st.DataObject) -> None:
    with _repo() as repo:
        m = _write(repo)
        path = _set_dir(repo, m.id) / MANIFEST_NAME
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
        path.write_bytes(bytes(raw))
        assert _kinds(repo).get(m.id, set()) & {"altered", "unreadable"}
        with pytest.raises(IntegrityError):
            repo.get(m.id)
        assert [s.id for s in repo.summaries()] == [] and m.id in repo.broken


def test_an_unsigned_set_in_a_signed_repository_is_named_and_refused() -> None:
    with _repo() as repo:
        old, new = _write(repo), _write(repo)
        (_set_dir(repo, new.id) / SIGNATURE_NAME).unlink()
        assert _kinds(repo) == {new.id: {"unsigned"}}
        with pytest.raises(UntrustedSet, match=f"{new.id} is not trusted: it has no signature"):
            repo.get(new.id)
        assert [m.id for m in repo.summaries()] == [old.id] and new.id in repo.broken
        with pytest.raises(
            ChainBroken, match=f"{new.id}: it has no signature.*newest set the chain vouches for is {old.id}"
        ):
            selection.latest(repo)
        assert selection.by_id(repo, old.id).manifest.id == old.id


def test_a_set_signed_by_another_key_is_named() -> None:
    with tempfile.TemporaryDirectory() as d:
        mine, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        _write(LocalRepository(Path(d) / "repo", trust=_trust(mine)))
        stranger = _write(LocalRepository(Path(d) / "repo", trust=RepositoryTrust(ManifestSigner(theirs, "x"), None)))
        repo = LocalRepository(Path(d) / "repo", trust=_trust(mine))
        assert _kinds(repo) == {stranger.id: {"unknown-key"}}
        with pytest.raises(UntrustedSet, match="which is not trusted here"):
            repo.get(stranger.id)


def test_key_rotation_keeps_older_sets_verifiable() -> None:
    with tempfile.TemporaryDirectory() as d:
        old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        first = _write(LocalRepository(Path(d) / "repo", trust=_trust(old_key)))
        rotated = LocalRepository(Path(d) / "repo", trust=_trust(new_key, old_key.public_key()))
        second = _write(rotated)
        assert rotated.chain_audit().findings == []
        assert second.previous_id == first.id
        only_new = LocalRepository(Path(d) / "repo", trust=_trust(new_key))
        assert _kinds(only_new) == {first.id: {"unknown-key"}}


def test_a_forged_artifact_with_its_manifest_entry_rewritten_is_caught_only_by_the_signature() -> None:
    """The attack of issue 17: the digest check alone is satisfied; the signature is not."""
    for signed in (True, False):
        with tempfile.TemporaryDirectory() as d:
            repo = LocalRepository(Path(d) / "repo", trust=_trust() if signed else None)
            m = _write(repo, b"the real content" * 50)
            forged_bytes = _write(LocalRepository(Path(d) / "other"), b"ransomware" * 50).artifacts[0]
            artifact = m.artifacts[0]
            other = Path(d) / "other" / "sets"
            stored = next(other.glob(f"*/{artifact.path}")).read_bytes()
            (_set_dir(repo, m.id) / artifact.path).write_bytes(stored)
            text = (_set_dir(repo, m.id) / MANIFEST_NAME).read_text()
            text = text.replace(artifact.sha256, forged_bytes.sha256).replace(
                f'"size": {artifact.size}', f'"size": {forged_bytes.size}'
            )
            (_set_dir(repo, m.id) / MANIFEST_NAME).write_text(text)
            if signed:
                assert _kinds(repo) == {m.id: {"altered"}}
                with pytest.raises(UntrustedSet, match="altered after signing"):
                    repo.get(m.id)
            else:
                forged = repo.get(m.id)
                assert repo.check_artifact(forged, forged.artifacts[0]).ok  # the forgery is consistent...
                assert _kinds(repo) == {}  # ...and nothing in an unsigned repository can tell


def test_a_replayed_older_set_under_a_newer_id_is_named() -> None:
    with _repo() as repo:
        old, new = _write(repo, b"old" * 100), _write(repo, b"new" * 100)
        fake_id = "29991231T000000Z-abcdef"
        shutil.copytree(_set_dir(repo, old.id), _set_dir(repo, fake_id))
        text = (_set_dir(repo, fake_id) / MANIFEST_NAME).read_text().replace(old.id, fake_id)
        (_set_dir(repo, fake_id) / MANIFEST_NAME).write_text(text)
        assert _kinds(repo) == {fake_id: {"altered"}}
        with pytest.raises(ChainBroken, match=fake_id):
            selection.latest(repo)
        assert selection.by_id(repo, new.id).manifest.id == new.id


def test_a_replay_in_an_unsigned_repository_shows_as_a_fork() -> None:
    with tempfile.TemporaryDirectory() as d:
        repo = LocalRepository(Path(d) / "repo")
        a, b = _write(repo), _write(repo)
        fake = "29991231T000000Z-abcdef"
        shutil.copytree(_set_dir(repo, a.id), _set_dir(repo, fake))
        path = _set_dir(repo, fake) / MANIFEST_NAME
        path.write_text(path.read_text().replace(a.id, fake))
        kinds = _kinds(repo)
        assert kinds[fake] == {"forked"} and kinds[a.id] == {"forked"} and b.id not in kinds


# -- the chain -------------------------------------------------------------------------------------


def test_a_deleted_newest_manifest_is_named_and_latest_is_refused() -> None:
    with _repo() as repo:
        older, newest = _write(repo), _write(repo)
        (_set_dir(repo, newest.id) / MANIFEST_NAME).unlink()
        assert _kinds(repo) == {newest.id: {"manifest-missing"}}
        with pytest.raises(ChainBroken, match=f"{newest.id}: its artifacts are stored but its manifest is gone"):
            selection.latest(repo)
        with pytest.raises(ChainBroken, match=f"backup {newest.id} cannot be used"):
            selection.by_id(repo, newest.id)
        assert selection.by_id(repo, older.id).manifest.id == older.id


def test_a_set_deleted_from_the_middle_is_named_unless_retention_recorded_it() -> None:
    with _repo() as repo:
        _a, b, c = _write(repo), _write(repo), _write(repo)
        shutil.rmtree(_set_dir(repo, b.id))
        found = repo.chain_audit()
        assert [(f.backup_id, f.kind) for f in found.findings] == [(b.id, "missing")]
        assert f"{c.id} follows it" in found.findings[0].detail
        assert found.doubts_about_latest() == []  # the newest is not in doubt
        assert selection.latest(repo).manifest.id == c.id
    with _repo() as repo:
        _a, b, _c = _write(repo), _write(repo), _write(repo)
        repo.record_deletion(b.id, "retention policy")
        repo.delete(b.id)
        assert repo.chain_audit().findings == []


def test_an_unsigned_tombstone_does_not_excuse_a_gap() -> None:
    with _repo() as repo:
        _write(repo), (b := _write(repo)), _write(repo)
        repo.record_deletion(b.id, "retention policy")
        repo.delete(b.id)
        (repo.root / "pruned" / f"{b.id}.sig").unlink()
        found = repo.chain_audit()
        assert [(f.backup_id, f.kind) for f in found.findings] == [(b.id, "missing")]
        assert "no signature" in found.findings[0].detail


def test_a_pruned_set_brought_back_is_a_replay() -> None:
    with _repo() as repo:
        a, _b = _write(repo), _write(repo)
        saved = Path(tempfile.mkdtemp())
        shutil.copytree(_set_dir(repo, a.id), saved / a.id)
        repo.record_deletion(a.id, "retention policy")
        repo.delete(a.id)
        shutil.copytree(saved / a.id, _set_dir(repo, a.id))
        shutil.rmtree(saved)
        assert _kinds(repo) == {a.id: {"replayed"}}
        with pytest.raises(ChainBroken, match="retention deleted this set"):
            selection.by_id(repo, a.id)


def test_the_oldest_sets_pruned_leave_a_note_not_a_finding() -> None:
    with _repo() as repo:
        a, _b, _c = _write(repo), _write(repo), _write(repo)
        shutil.rmtree(_set_dir(repo, a.id))  # as before tombstones were kept
        found = repo.chain_audit()
        assert found.findings == [] and len(found.notes) == 1 and a.id in found.notes[0]


def test_after_every_set_was_deleted_the_chain_continues_after_the_tombstones() -> None:
    with _repo() as repo:
        a, b = _write(repo), _write(repo)
        for m in (a, b):
            repo.record_deletion(m.id, "retention policy")
            repo.delete(m.id)
        c = _write(repo)
        assert (c.sequence, c.previous_id) == (3, b.id)
        assert repo.chain_audit().findings == []


def test_legacy_sets_are_an_unchained_prefix_the_chain_follows() -> None:
    with tempfile.TemporaryDirectory() as d:
        repo = LocalRepository(Path(d) / "repo")
        repo.keeps_witness = False  # no host kept a record of sets before head records existed
        legacy = [_write(repo), _write(repo)]
        for m in legacy:  # as drproof before issue 17 wrote them
            path = _set_dir(repo, m.id) / MANIFEST_NAME
            body = json.loads(path.read_text())
            for key in ("sequence", "previous_id", "previous_sha256"):
                body.pop(key)
            path.write_text(json.dumps(body, indent=2) + "\n")
        (repo.root / "head.json").unlink()  # nor a head record: it names a set whose manifest is another now
        new = _write(repo)
        assert new.sequence == 1 and new.previous_id == legacy[-1].id
        found = repo.chain_audit()
        assert found.order == [*(m.id for m in legacy), new.id]
        assert [f.kind for f in found.findings] == ["legacy"] and found.legacy == [m.id for m in legacy]
        assert "written before sets were chained" in found.findings[0].detail


# -- the clock ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.skew = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skew


def test_a_backup_taken_with_the_clock_a_year_ahead_never_displaces_the_newest() -> None:
    with _repo() as repo:
        clock = _Clock()
        repo.clock = clock
        first = _write(repo, b"first" * 100)
        clock.skew = timedelta(days=365)
        skewed = _write(repo, b"skewed" * 100)
        clock.skew = timedelta(0)
        newest = _write(repo, b"newest" * 100)
        assert skewed.created_at > newest.created_at  # what the wall clock would have believed
        found = repo.chain_audit()
        assert found.order == [first.id, skewed.id, newest.id]
        assert _kinds(repo) == {skewed.id: {"future-dated"}}
        decisions = plan(repo.summaries(), Policy(keep_last=1), set(), now=datetime.now(UTC))
        assert [d.backup_id for d in decisions if d.keep] == [newest.id]
        assert selection.latest(repo).manifest.id == newest.id
        daily = plan(repo.summaries(), Policy(daily=1), set(), now=datetime.now(UTC))
        assert [d.backup_id for d in daily if d.keep] == [newest.id]


def test_effective_times_never_run_ahead_of_a_successor() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    sets = [
        Manifest(id=f"s{i}", created_at=base + delta, completed_at=base, components=[], artifacts=[], sequence=i + 1)
        for i, delta in enumerate([timedelta(0), timedelta(days=400), timedelta(hours=1)])
    ]
    when = effective_times(list(reversed(sets)), now=base + timedelta(hours=2))
    assert when == {"s2": base + timedelta(hours=1), "s1": base + timedelta(hours=1), "s0": base}


# -- copies -------------------------------------------------------------------------------------


def test_an_offsite_copy_carries_the_same_signed_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRPROOF_STATE_DIR", "")  # this host's own record is tested in test_witness.py
    from engine.backup import copy_set

    trust = _trust()
    with tempfile.TemporaryDirectory() as d:
        primary = LocalRepository(Path(d) / "primary", trust=trust)
        offsite = LocalRepository(Path(d) / "offsite", trust=trust)
        sets = [_write(primary) for _ in range(3)]
        for m in sets:
            copy_set(primary, offsite, m)
        for m in sets:
            for name in (MANIFEST_NAME, SIGNATURE_NAME):
                assert (_set_dir(offsite, m.id) / name).read_bytes() == (_set_dir(primary, m.id) / name).read_bytes()
        assert offsite.chain_audit().findings == [] and offsite.chain_audit().order == [m.id for m in sets]
        # The newest deleted whole from the primary: its signed head record names it, and once a
        # writer deletes that record too, only the copy elsewhere shows it.
        shutil.rmtree(_set_dir(primary, sets[-1].id))
        assert [(f.backup_id, f.kind) for f in primary.chain_audit().findings] == [(sets[-1].id, "missing")]
        (primary.root / "head.json").unlink()
        assert primary.chain_audit().findings == []
        missing = missing_against(primary.chain_audit(), offsite.chain_audit())
        assert [(f.backup_id, f.kind) for f in missing] == [(sets[-1].id, "missing")]


def test_an_untrusted_set_is_never_copied() -> None:
    from engine.backup import copy_set

    trust = _trust()
    with tempfile.TemporaryDirectory() as d:
        primary = LocalRepository(Path(d) / "primary", trust=trust)
        offsite = LocalRepository(Path(d) / "offsite", trust=trust)
        m = _write(primary)
        (_set_dir(primary, m.id) / SIGNATURE_NAME).unlink()
        with pytest.raises(UntrustedSet, match="not copied"):
            copy_set(primary, offsite, m)
        assert not _set_dir(offsite, m.id).exists()
        with pytest.raises(BackupNotFound):
            offsite.get(m.id)
