"""The local repository is what a restore trusts: these tests pin that it returns exactly
what was written, that any damaged byte is detected and refused, and that nothing but a
committed set is ever listed."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BackupNotFound, IntegrityError, RepositoryError
from engine.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, ArtifactRecord, ComponentRecord, Manifest
from engine.repository.local import LocalRepository

FAST = settings(max_examples=40, deadline=None)

contents_strategy = st.lists(st.binary(max_size=4096), min_size=1, max_size=4)


@contextmanager
def _repo() -> Iterator[LocalRepository]:
    with tempfile.TemporaryDirectory() as d:
        yield LocalRepository(Path(d) / "repo")


def _write_set(repo: LocalRepository, contents: list[bytes], label: str | None = "test") -> Manifest:
    writer = repo.begin(label)
    for i, data in enumerate(contents):
        with writer.artifact(f"comp{i % 2}", f"art{i}") as sink:
            # Write in a few pieces so the streaming path (not one big write) is exercised.
            for start in range(0, len(data), 1000):
                sink.write(data[start : start + 1000])
    components = [
        ComponentRecord(name="comp0", kind="volumes", artifacts=[]),
        ComponentRecord(name="comp1", kind="configuration", artifacts=[]),
    ]
    return writer.commit(components, tools={"tar": "test"}, labels={"k": "v"})


def _read(repo: LocalRepository, manifest: Manifest, artifact: ArtifactRecord) -> bytes:
    with repo.open_artifact(manifest, artifact) as stream:
        out = b""
        while chunk := stream.read(65536):
            out += chunk
        return out


def _stored_file(repo: LocalRepository, manifest: Manifest, artifact: ArtifactRecord) -> Path:
    return repo.root / "sets" / manifest.id / artifact.path


def _edit_manifest(repo: LocalRepository, backup_id: str, edit: Callable[[dict[str, Any]], object]) -> None:
    """Change a stored manifest as someone with write access to the repository could."""
    path = repo.root / "sets" / backup_id / MANIFEST_NAME
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _damage_fingerprint(doc: dict[str, Any]) -> None:
    doc["components"][0]["fingerprint"] = {"parts": "not a fingerprint"}


# -- writing, listing, reading ---------------------------------------------------------------


@FAST
@given(contents_strategy)
def test_round_trip_returns_exact_bytes(contents: list[bytes]) -> None:
    with _repo() as repo:
        manifest = _write_set(repo, contents)
        assert [m.id for m in repo.list()] == [manifest.id]
        assert repo.get(manifest.id) == manifest
        assert len(manifest.artifacts) == len(contents)
        for i, (artifact, data) in enumerate(zip(manifest.artifacts, contents, strict=True)):
            assert artifact.key == f"comp{i % 2}/art{i}"
            assert artifact.raw_size == len(data)
            assert artifact.raw_sha256 is None  # not computed: the stored digest is what is checked
            stored = _stored_file(repo, manifest, artifact).read_bytes()
            assert artifact.size == len(stored) == repo.stored_size(manifest, artifact)
            assert artifact.sha256 == hashlib.sha256(stored).hexdigest()
            assert _read(repo, manifest, artifact) == data
        report = repo.verify(manifest.id)
        assert report.ok
        assert report.damaged == []
        assert [c.artifact for c in report.checks] == [a.key for a in manifest.artifacts]


def test_commit_fills_component_artifacts_and_metadata() -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"a", b"b", b"c"], label="nightly")
        assert manifest.label == "nightly"
        assert manifest.component("comp0").artifacts == ["art0", "art2"]
        assert manifest.component("comp1").artifacts == ["art1"]
        assert manifest.tools == {"tar": "test"}
        assert manifest.labels == {"k": "v"}
        assert manifest.completed_at >= manifest.created_at
        # A second repository object on the same root sees the same set.
        assert LocalRepository(repo.root).get(manifest.id) == manifest


def test_list_is_oldest_first() -> None:
    with _repo() as repo:
        ids = [_write_set(repo, [bytes([i])]).id for i in range(3)]
        listed = repo.list()
        assert sorted(m.id for m in listed) == sorted(ids)
        assert [m.created_at for m in listed] == sorted(m.created_at for m in listed)


def test_partial_read_still_verifies_whole_stream() -> None:
    with _repo() as repo:
        data = bytes(range(256)) * 100
        manifest = _write_set(repo, [data])
        with repo.open_artifact(manifest, manifest.artifacts[0]) as stream:
            assert stream.read(10) == data[:10]


def test_get_unknown_set_raises_backup_not_found() -> None:
    with _repo() as repo:
        with pytest.raises(BackupNotFound):
            repo.get("20250101T000000Z-abcdef")
        with pytest.raises(BackupNotFound):
            repo.verify("20250101T000000Z-abcdef")


# -- damage is detected ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(contents_strategy, st.data())
def test_any_inverted_byte_is_detected_and_refused(contents: list[bytes], data: st.DataObject) -> None:
    with _repo() as repo:
        manifest = _write_set(repo, contents)
        victim_index = data.draw(st.integers(0, len(manifest.artifacts) - 1), label="artifact")
        victim = manifest.artifacts[victim_index]
        size = repo.stored_size(manifest, victim)
        offset = data.draw(st.integers(0, size - 1), label="offset")
        original = repo.read_stored(manifest, victim, offset, 1)
        assert len(original) == 1
        repo.overwrite_stored(manifest, victim, offset, bytes([original[0] ^ 0xFF]))

        report = repo.verify(manifest.id)
        assert not report.ok
        assert report.damaged == [victim.key]
        bad = next(c for c in report.checks if not c.ok)
        assert bad.actual_size == bad.expected_size == size
        assert bad.actual_sha256 != bad.expected_sha256
        assert bad.problem == "sha256 differs from manifest"

        with pytest.raises(IntegrityError, match=victim.key), repo.open_artifact(manifest, victim) as stream:
            stream.read()
        for other, content in zip(manifest.artifacts, contents, strict=True):
            if other is not victim:
                assert _read(repo, manifest, other) == content


@FAST
@given(contents_strategy, st.data())
def test_truncated_stored_file_is_detected(contents: list[bytes], data: st.DataObject) -> None:
    with _repo() as repo:
        manifest = _write_set(repo, contents)
        victim = data.draw(st.sampled_from(manifest.artifacts), label="artifact")
        new_size = data.draw(st.integers(0, victim.size - 1), label="new size")
        with open(_stored_file(repo, manifest, victim), "r+b") as fh:
            fh.truncate(new_size)
        report = repo.verify(manifest.id)
        assert report.damaged == [victim.key]
        bad = next(c for c in report.checks if not c.ok)
        assert bad.actual_size == new_size
        assert bad.problem == f"size {new_size} bytes, manifest says {victim.size}"
        with pytest.raises(IntegrityError), repo.open_artifact(manifest, victim) as stream:
            stream.read()


def test_appended_bytes_are_detected() -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"hello" * 100])
        artifact = manifest.artifacts[0]
        with open(_stored_file(repo, manifest, artifact), "ab") as fh:
            fh.write(b"\0")
        report = repo.verify(manifest.id)
        assert report.damaged == [artifact.key]
        assert report.checks[0].actual_size == artifact.size + 1


def test_deleted_stored_file_is_reported_missing() -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"one", b"two", b"three"])
        victim = manifest.artifacts[1]
        _stored_file(repo, manifest, victim).unlink()
        report = repo.verify(manifest.id)
        assert not report.ok
        assert report.damaged == [victim.key]
        bad = report.checks[1]
        assert bad.problem == "missing"
        assert bad.actual_sha256 is None
        assert bad.actual_size is None
        with pytest.raises(IntegrityError, match="missing"), repo.open_artifact(manifest, victim):
            pass


def test_manifest_path_escaping_the_set_is_refused() -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"x"])
        escaping = manifest.model_copy(
            update={"artifacts": [manifest.artifacts[0].model_copy(update={"path": "../../outside.zst"})]}
        )
        with pytest.raises(IntegrityError, match="escapes"), repo.open_artifact(escaping, escaping.artifacts[0]):
            pass


# -- only committed sets are listed ------------------------------------------------------------


def test_exception_inside_artifact_then_abort_leaves_nothing() -> None:
    with _repo() as repo:
        writer = repo.begin("doomed")

        class Boom(Exception):
            pass

        with pytest.raises(Boom), writer.artifact("comp", "art") as sink:
            sink.write(b"partial data")
            raise Boom
        assert repo.list() == []
        with pytest.raises(BackupNotFound):
            repo.get(writer.id)
        writer.abort()
        assert repo.list() == []
        assert list((repo.root / ".staging").iterdir()) == []
        assert list((repo.root / "sets").iterdir()) == []


def test_failed_artifact_is_not_recorded() -> None:
    with _repo() as repo:
        writer = repo.begin()
        with pytest.raises(RuntimeError), writer.artifact("comp", "bad") as sink:
            sink.write(b"x")
            raise RuntimeError("tool died")
        with writer.artifact("comp", "good") as sink:
            sink.write(b"ok")
        manifest = writer.commit([ComponentRecord(name="comp", kind="volumes", artifacts=[])], {}, {})
        assert [a.name for a in manifest.artifacts] == ["good"]
        assert manifest.component("comp").artifacts == ["good"]


def test_abort_after_writing_leaves_no_set() -> None:
    with _repo() as repo:
        writer = repo.begin()
        with writer.artifact("comp", "art") as sink:
            sink.write(b"complete artifact")
        writer.abort()
        assert repo.list() == []
        assert not (repo.root / ".staging" / writer.id).exists()


def test_crash_before_commit_leaves_unlisted_staging() -> None:
    with _repo() as repo:
        done = _write_set(repo, [b"committed"])
        writer = repo.begin("crashed")
        with writer.artifact("comp", "art") as sink:
            sink.write(b"never committed")
        # Simulated crash: the process dies here. A fresh repository object must see
        # only the committed set.
        assert (repo.root / ".staging" / writer.id).is_dir()
        reopened = LocalRepository(repo.root)
        assert [m.id for m in reopened.list()] == [done.id]
        with pytest.raises(BackupNotFound):
            reopened.get(writer.id)


def test_set_directory_without_manifest_is_not_listed() -> None:
    with _repo() as repo:
        half = repo.root / "sets" / "20250101T000000Z-000000"
        (half / "comp").mkdir(parents=True)
        (half / "comp" / "art.zst").write_bytes(b"junk")
        assert repo.list() == []
        with pytest.raises(BackupNotFound):
            repo.get(half.name)


# -- hostile or broken manifests ---------------------------------------------------------------


def _plant_manifest(repo: LocalRepository, backup_id: str) -> Path:
    d = repo.root / "sets" / backup_id
    d.mkdir(parents=True)
    return d / MANIFEST_NAME


def test_oversized_manifest_is_refused() -> None:
    with _repo() as repo:
        path = _plant_manifest(repo, "big")
        with open(path, "wb") as fh:
            fh.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no 16 MiB actually written
        with pytest.raises(RepositoryError, match="over the"):
            repo.get("big")
        # One unreadable manifest must not hide the good sets: list() reports it aside.
        assert repo.list() == []
        assert "over the" in repo.broken["big"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"format": 1}',
        json.dumps(
            {
                "format": 2,
                "id": "x",
                "created_at": "2025-01-01T00:00:00Z",
                "completed_at": "2025-01-01T00:00:00Z",
                "components": [],
                "artifacts": [],
            }
        ).encode(),
    ],
    ids=["truncated", "empty", "binary", "list", "incomplete", "future-format"],
)
def test_malformed_manifest_raises_repository_error(content: bytes) -> None:
    with _repo() as repo:
        _plant_manifest(repo, "bad").write_bytes(content)
        with pytest.raises(RepositoryError, match="malformed manifest"):
            repo.get("bad")
        with pytest.raises(RepositoryError):
            repo.verify("bad")


def test_committed_manifest_tampered_into_bad_json_is_refused() -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"x"])
        path = repo.root / "sets" / manifest.id / MANIFEST_NAME
        path.write_text(path.read_text()[:-20])
        with pytest.raises(RepositoryError, match="malformed manifest"):
            repo.get(manifest.id)


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "name"),
    [
        ("comp", "a/b"),
        ("comp", ".."),
        ("comp", "."),
        ("comp", ""),
        ("a/b", "art"),
        ("..", "art"),
        ("comp", "a\\b"),
        ("comp", "a\0b"),
        ("comp", "../escape"),
    ],
)
def test_unsafe_artifact_names_are_refused(component: str, name: str) -> None:
    with _repo() as repo:
        writer = repo.begin()
        with pytest.raises(RepositoryError, match="invalid name"), writer.artifact(component, name):
            pass
        writer.abort()
        assert not (repo.root / "escape.zst").exists()


def test_same_artifact_twice_is_refused() -> None:
    with _repo() as repo:
        writer = repo.begin()
        with writer.artifact("comp", "art") as sink:
            sink.write(b"1")
        with pytest.raises(RepositoryError, match="twice"), writer.artifact("comp", "art"):
            pass
        writer.abort()


@pytest.mark.parametrize("backup_id", ["..", "../sets", "a/b", ""])
def test_unsafe_backup_ids_are_refused(backup_id: str) -> None:
    with _repo() as repo, pytest.raises(RepositoryError):
        repo.get(backup_id)


def test_a_manifest_too_large_to_read_back_is_never_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers refuse manifests over the limit; writing one would publish an unreadable set."""
    from engine import manifest as manifest_module
    from engine.errors import RepositoryError
    from engine.repository import LocalRepository

    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 200)
    repo = LocalRepository(tmp_path / "repo")
    writer = repo.begin("too-big")
    with writer.artifact("c", "a") as sink:
        sink.write(b"x")
    with pytest.raises(RepositoryError, match="not published"):
        writer.commit([ComponentRecord(name="c", kind="volumes", artifacts=[])], {}, {})
    writer.abort()
    assert repo.list() == []


# -- the inventory: summaries read no fingerprint ------------------------------------------------


def test_summaries_show_what_list_shows_oldest_first() -> None:
    from engine.manifest import ManifestSummary

    with _repo() as repo:
        for i in range(3):
            _write_set(repo, [bytes([i]), b"xy"], label=f"n{i}")
        assert repo.summaries() == [ManifestSummary.of(m) for m in repo.list()]
        assert [s.label for s in repo.summaries()] == ["n0", "n1", "n2"]


def test_a_set_whose_fingerprint_is_damaged_still_lists_but_never_loads() -> None:
    """The inventory skips fingerprints; get(), which restores use, still refuses the set."""
    with _repo() as repo:
        manifest = _write_set(repo, [b"a"])
        _edit_manifest(repo, manifest.id, _damage_fingerprint)
        assert [s.id for s in repo.summaries()] == [manifest.id] and repo.broken == {}
        with pytest.raises(RepositoryError, match="malformed manifest"):
            repo.get(manifest.id)


@pytest.mark.parametrize(
    "damage",
    [lambda d: d.update(id="someone-else"), lambda d: d.pop("created_at"), lambda d: d.update(format=2)],
    ids=["id-of-another-set", "no-created-at", "unknown-format"],
)
def test_a_set_the_inventory_cannot_read_is_named_broken(damage: Callable[[dict[str, Any]], object]) -> None:
    with _repo() as repo:
        good = _write_set(repo, [b"a"])
        bad = _write_set(repo, [b"b"])
        _edit_manifest(repo, bad.id, damage)
        assert [s.id for s in repo.summaries()] == [good.id]
        assert list(repo.broken) == [bad.id]


# -- verifying a set just written: its manifest is compared, not parsed again ----------------------


def test_verify_of_a_set_just_written_uses_the_written_manifest_when_the_bytes_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _repo() as repo:
        manifest = _write_set(repo, [b"abc", b"de"])

        def no_parse(backup_id: str) -> Manifest:
            raise AssertionError("the manifest was parsed again")

        monkeypatch.setattr(repo, "get", no_parse)
        report = repo.verify(manifest.id, written=manifest)
        assert report.ok and len(report.checks) == 2


def test_verify_of_a_set_just_written_reads_a_changed_manifest_as_a_restore_would() -> None:
    """Bytes that differ from what was written: the stored manifest decides, and damage shows."""
    with _repo() as repo:
        manifest = _write_set(repo, [b"abc"])
        _edit_manifest(repo, manifest.id, _damage_fingerprint)
        with pytest.raises(RepositoryError, match="malformed manifest"):
            repo.verify(manifest.id, written=manifest)
        _edit_manifest(repo, manifest.id, lambda d: d.update(json.loads(manifest.to_json())))
        _edit_manifest(repo, manifest.id, lambda d: d["artifacts"][0].update(sha256="0" * 64))
        report = repo.verify(manifest.id, written=manifest)
        assert not report.ok and report.damaged == [manifest.artifacts[0].key]
