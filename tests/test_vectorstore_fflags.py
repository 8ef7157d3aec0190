"""Inode flags of a vector store's files (``chattr +i`` on the index, ``+a`` ...): compared (vectorstore/4).

Found by review (s32): the store's archive carried the flags and a restore gave them
back, but its fingerprint (vectorstore/3) did not compare them, so a restore that lost
``chattr +i`` on ``index.faiss`` reported a match. Negative controls: a restore that cannot
give a flag back, and a flag dropped afterwards, are differences naming the file; quiet
controls: a healthy round trip (a drill workload's vectors too) matches.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components import fflags
from engine.components.files import DIR, FILE, FLAGS_NOT_RECORDED
from engine.components.vectorstore import IDS, INDEX, ROOT_PART, VectorstoreComponent, VectorstoreParams
from engine.fingerprint import compare
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime
from tests.test_restored_flags import _chattr, refuse_flags
from tests.test_restored_flags import flags_of as _flags
from tests.test_restored_flags import lost as _lost
from tests.test_restored_flags import recorded as _recorded
from tests.test_restored_flags import unflag as _unflag
from tests.test_restored_owners import needs_root

IMMUTABLE, APPEND_ONLY = 0x10, 0x20


def _new_store(tmp_path: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("emb", VectorstoreParams(vectors=50, dimension=8), DirsRuntime(tmp_path / "rt"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorstoreComponent]:
    """A seeded store: its index immutable, its id map append-only, a sub-directory append-only."""
    comp = _new_store(tmp_path)
    (comp.path / "shards").mkdir()
    (comp.path / "shards" / "notes.txt").write_bytes(b"kept\n")
    try:
        _chattr("+i", comp.path / INDEX)
        _chattr("+a", comp.path / IDS)
        _chattr("+a", comp.path / "shards")
        yield comp
    finally:
        _unflag(tmp_path)


@needs_root
def test_quiet_control_a_round_trip_gives_the_flags_back_and_matches(store: VectorstoreComponent, tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [store])
    recorded = _recorded(manifest, store)
    assert recorded.scheme == "vectorstore/5"
    assert recorded.parts[FILE + INDEX].digest.endswith(" fflags:schg"), recorded.parts[FILE + INDEX]
    assert compare(recorded, store.fingerprint()) == []
    assert store.comparison_notes(manifest.component(store.instance).details) == []
    _lost(store)
    engine_backup.restore(repo, manifest, store)
    assert _flags(store.path / INDEX) == IMMUTABLE
    assert _flags(store.path / IDS) == APPEND_ONLY
    assert _flags(store.path / "shards") == APPEND_ONLY
    assert store.health().ok
    assert compare(recorded, store.fingerprint()) == []


@needs_root
def test_a_restore_that_cannot_give_the_flags_back_is_a_difference_naming_each_file(
    store: VectorstoreComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As a restore by anyone but root (+i and +a need CAP_LINUX_IMMUTABLE): it goes on, fidelity names the loss."""
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [store])
    _lost(store)
    refuse_flags(monkeypatch, (IMMUTABLE | APPEND_ONLY))
    with caplog.at_level(logging.WARNING, logger="engine.components.untar"):
        engine_backup.restore(repo, manifest, store)
    monkeypatch.undo()
    assert "3 entr(y/ies) could not be given the inode flags" in caplog.text, caplog.text
    assert _flags(store.path / INDEX) == 0
    assert compare(_recorded(manifest, store), store.fingerprint()).describe() == [
        f"{DIR}shards: inode flags differ (lost append-only (+a)); content and mode as backed up",
        f"{FILE}{IDS}: inode flags differ (lost append-only (+a)); content and mode as backed up",
        f"{FILE}{INDEX}: inode flags differ (lost immutable (+i)); content and mode as backed up",
    ]


@needs_root
def test_a_flag_dropped_after_a_restore_is_named_with_the_file(store: VectorstoreComponent, tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [store])
    _lost(store)
    engine_backup.restore(repo, manifest, store)
    subprocess.run(["chattr", "-i", str(store.path / INDEX)], check=True)
    assert compare(_recorded(manifest, store), store.fingerprint()).describe() == [
        f"{FILE}{INDEX}: inode flags differ (lost immutable (+i)); content and mode as backed up"
    ]


@needs_root
def test_quiet_control_a_store_with_workload_vectors_round_trips_in_scheme_4(tmp_path: Path) -> None:
    """The index and id map parts left without the workload's rows keep the mode apart and the flags."""
    from tests.test_vectorstore_workload_fingerprint import _store_with_workload

    comp = _store_with_workload(tmp_path / "rt")
    try:
        _chattr("+d", comp.path / INDEX)
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        assert recorded.parts[FILE + INDEX].digest.endswith(" mode:0644 fflags:nodump"), recorded.parts[FILE + INDEX]
        _lost(comp)
        engine_backup.restore(repo, manifest, comp)
        assert compare(recorded, comp.fingerprint()) == []
    finally:
        _unflag(tmp_path)


def test_a_scheme_3_set_is_restored_and_compared_without_flags_and_says_so(
    store: VectorstoreComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set an earlier drproof wrote (vectorstore/3): proven by reading the staged store, blind to flags, and said."""
    with monkeypatch.context() as earlier:
        earlier.setattr(VectorstoreComponent, "fingerprint_scheme", "vectorstore/3")
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [store])
    recorded = _recorded(manifest, store)
    assert recorded.scheme == "vectorstore/3"
    assert not any("fflags:" in p.digest for p in recorded.parts.values())
    _lost(store)
    engine_backup.restore(repo, manifest, store)  # the flags are archived all the same, and given back
    _unflag(store.path)  # a restore that lost every flag: scheme 3 cannot see it, and says so
    assert compare(recorded, store.fingerprint_like(recorded)) == []
    assert (store.blind_spot("vectorstore/3") or "").startswith(FLAGS_NOT_RECORDED)
    assert store.blind_spot("vectorstore/5") is None


def test_flags_a_file_system_cannot_say_are_not_readable_and_the_verdict_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = _new_store(tmp_path)
    repo = LocalRepository(tmp_path / "repo")

    def ioctl(*_args: object) -> bytes:  # NFS, FUSE: FS_IOC_GETFLAGS unsupported
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    with monkeypatch.context() as patched:
        patched.setattr(fflags.fcntl, "ioctl", ioctl)
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        assert recorded.parts[FILE + INDEX].digest.endswith(" fflags:?"), recorded.parts[FILE + INDEX]
        assert recorded.parts[ROOT_PART].digest.endswith(" fflags:?"), recorded.parts[ROOT_PART]
        (note,) = comp.comparison_notes(manifest.component(comp.instance).details)
        # the three files and the store's directory
        assert note.startswith("inode flags (chattr +i, +a ...) could not be read on 4 entr(y/ies)"), note
        shutil.rmtree(comp.path)
        engine_backup.restore(repo, manifest, comp)  # the staged proof: "?" as the archive records it
        assert compare(recorded, comp.fingerprint()) == []
    # Restored onto a file system that has flags: "not readable" is not "none", so it differs.
    lines = compare(recorded, comp.fingerprint()).describe()
    assert f"{FILE}{INDEX}: inode flags could not be compared (not readable → none)" in " ".join(lines), lines


@needs_root
@pytest.mark.parametrize(("flag", "said"), [("+i", "immutable (+i)"), ("+a", "append-only (+a)")])
def test_a_restore_over_a_store_directory_that_is_itself_protected_says_why_and_changes_nothing(
    tmp_path: Path, flag: str, said: str
) -> None:
    """The store directory's own flags are not in the fingerprint (like its mode); a restore over it cannot replace
    it, and the refusal says which flag forbids it and what to run (it said only "Operation not permitted")."""
    from engine.errors import ComponentError

    comp = _new_store(tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    before = {p.name: p.read_bytes() for p in comp.path.iterdir()}
    try:
        _chattr(flag, comp.path)
        with pytest.raises(ComponentError, match=rf"the directory itself is {re.escape(said)}.*chattr -i -a .*nothing"):
            engine_backup.restore(repo, manifest, comp)
        assert {p.name: p.read_bytes() for p in comp.path.iterdir()} == before
        assert not comp.path.with_name(comp.path.name + ".drproof-restoring").exists()
    finally:
        _unflag(tmp_path)
    engine_backup.restore(repo, manifest, comp)  # quiet control: without the flag, the same restore goes through
    assert compare(_recorded(manifest, comp), comp.fingerprint()) == []


@needs_root
def test_the_store_directorys_own_flag_is_given_back_after_the_swap_and_compared(tmp_path: Path) -> None:
    comp = _new_store(tmp_path)
    try:
        _chattr("+a", comp.path)  # append-only: vectors may be added, no file of the store removed or renamed
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        assert recorded.parts[ROOT_PART].digest.endswith(" fflags:sappnd"), recorded.parts[ROOT_PART]
        assert manifest.component(comp.instance).details["root"]["fflags"] == "sappnd"
        assert compare(recorded, comp.fingerprint()) == []
        _lost(comp)
        engine_backup.restore(repo, manifest, comp)
        assert _flags(comp.path) == APPEND_ONLY
        assert compare(recorded, comp.fingerprint()) == []  # quiet control
        subprocess.run(["chattr", "-a", str(comp.path)], check=True)
        assert compare(recorded, comp.fingerprint()).describe() == [
            f"{ROOT_PART}: inode flags differ (lost append-only (+a)); content and mode as backed up"
        ]
    finally:
        _unflag(tmp_path)


@needs_root
def test_a_store_directory_whose_flag_cannot_be_given_back_is_a_warning_and_a_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    comp = _new_store(tmp_path)
    try:
        _chattr("+i", comp.path)
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        _lost(comp)
        refuse_flags(monkeypatch, IMMUTABLE)
        with caplog.at_level(logging.WARNING, logger="engine.components.vectorstore"):
            engine_backup.restore(repo, manifest, comp)
        monkeypatch.undo()
        assert "could not be given the inode flags the backup records for it (immutable (+i)" in caplog.text
        assert compare(_recorded(manifest, comp), comp.fingerprint()).describe() == [
            f"{ROOT_PART}: inode flags differ (lost immutable (+i)); content and mode as backed up"
        ]
    finally:
        _unflag(tmp_path)
