"""engine.diskspace and the room a tree restore asks for, on the real filesystem of tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine import diskspace
from engine.components.files import room_for
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.diskspace import SpaceGuard, free_bytes, mount_of, require_free, reserve_for, size_text
from engine.errors import InsufficientSpace
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def test_nothing_to_write_fits_and_more_than_the_free_space_is_refused_naming_the_filesystem(tmp_path: Path) -> None:
    require_free(tmp_path, 0, "nothing")
    with pytest.raises(InsufficientSpace) as caught:
        require_free(tmp_path, free_bytes(tmp_path) + 1, "the restored copy of files")
    message = str(caught.value)
    for needle in (mount_of(tmp_path), "the restored copy of files", "--to", "nothing was changed"):
        assert needle in message, (needle, message)


def test_the_reserve_is_five_percent_and_at_most_one_gib(tmp_path: Path) -> None:
    assert 0 < reserve_for(tmp_path) <= 1 << 30
    assert size_text(3 << 20) == "3.0 MiB" and size_text(512) == "512 B"


@pytest.mark.parametrize(("files", "size"), [(600, 1), (50, 70_000), (0, 0)], ids=["tiny-files", "larger", "empty"])
def test_the_room_counted_from_the_manifest_bounds_what_the_restored_tree_takes(
    tmp_path: Path, files: int, size: int
) -> None:
    """Tiny files take a whole block each on disk, four times their archive: the room counts it."""
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=size), DirsRuntime(tmp_path / "live"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    room = room_for([engine_backup._source(repo, manifest, "files")], "files.tar")
    (comp.path / "changed").write_text("x")
    engine_backup.restore(repo, manifest, comp)
    taken = sum(p.lstat().st_blocks * 512 for p in comp.path.rglob("*")) + comp.path.stat().st_blocks * 512
    assert taken <= room.bytes_on(comp.path.parent), (taken, room)


class _Statvfs:
    """``os.statvfs`` of a 1 GiB filesystem with ``files`` inodes, ``avail`` of them free."""

    def __init__(self, files: int, avail: int) -> None:
        self.f_frsize, self.f_blocks, self.f_bavail = 4096, 1 << 18, 1 << 17
        self.f_files, self.f_favail = files, avail


def _statvfs(monkeypatch: pytest.MonkeyPatch, files: int, avail: int) -> None:
    fake = _Statvfs(files, avail)
    monkeypatch.setattr(os, "statvfs", lambda path: fake)


def test_entries_beyond_the_free_inodes_and_their_reserve_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _statvfs(monkeypatch, files=100_000, avail=6_000)  # reserve: 5 % = 5,000
    require_free("/data", 1000, "a tree", entries=1_000)  # quiet control: 1,000 + 5,000 fit in 6,000
    with pytest.raises(InsufficientSpace, match="inodes"):
        require_free("/data", 1000, "a tree", entries=1_001)


def test_a_filesystem_without_an_inode_count_is_not_limited_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """btrfs reports no inode count (``f_files`` 0): nothing to refuse on, and the guard does not look."""
    _statvfs(monkeypatch, files=0, avail=0)
    require_free("/data", 1000, "a tree", entries=10_000_000)
    guard = SpaceGuard("/data", "a tree")
    assert guard.inode_reserve is None
    guard.check()


def test_the_guard_stops_when_another_writer_takes_the_inodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """It looks often enough (every half inode reserve of 512-byte headers) that the reserve cannot be
    used up between two looks; it fires once the free inodes fall below the reserve."""
    stat: dict[str, Any] = {"fake": _Statvfs(1_000_000, 50_000)}  # reserve: the 10,000 cap
    monkeypatch.setattr(os, "statvfs", lambda path: stat["fake"])
    guard = SpaceGuard("/data", "a tree")
    assert guard.inode_reserve == diskspace.INODE_RESERVE_CAP
    assert guard.every <= guard.inode_reserve * diskspace.ENTRY_BYTES // 2
    guard.check()  # quiet control
    stat["fake"] = _Statvfs(1_000_000, 9_999)
    with pytest.raises(InsufficientSpace, match="inodes"):
        guard.passed(guard.every)


def test_a_guard_started_short_of_inodes_lets_the_write_take_half_of_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A physical restore counts no entries first: on a filesystem already below the inode reserve it is
    not stopped at its first look, but before it takes the last inodes."""
    stat: dict[str, Any] = {"fake": _Statvfs(1_000_000, 4_000)}
    monkeypatch.setattr(os, "statvfs", lambda path: stat["fake"])
    guard = SpaceGuard("/data", "a cluster")
    assert guard.inode_reserve == 2_000
    guard.check()
    stat["fake"] = _Statvfs(1_000_000, 1_999)
    with pytest.raises(InsufficientSpace, match="inodes"):
        guard.check()


def _base(raw: int, details: dict[str, Any]) -> Any:
    from engine.components.base import ArtifactSource
    from engine.manifest import ArtifactRecord

    record = ArtifactRecord(
        component="db", name="base.tar", path="db/base.tar.zst", size=1, sha256="0" * 64, raw_size=raw
    )
    return ArtifactSource({"base.tar": record}, opener=None, details=details)


def test_a_physical_chain_counts_its_newest_cluster_and_an_old_chain_without_the_record_its_sum() -> None:
    from engine.components.postgres_physical import _on_disk, combined_bound

    full, incr = _base(100 << 20, {"cluster_bytes": 90 << 20}), _base(20 << 20, {"cluster_bytes": 95 << 20})
    unpacked = _on_disk(120 << 20)
    assert combined_bound([full], _on_disk(100 << 20)) == _on_disk(100 << 20)  # one base: its archive
    assert combined_bound([full, incr], unpacked) == _on_disk(115 << 20)  # newest databases and its archive
    old = _base(20 << 20, {})  # written before cluster_bytes was recorded
    assert combined_bound([full, old], unpacked) == unpacked
    odd = _base(20 << 20, {"cluster_bytes": "95"})  # not a number: not trusted
    assert combined_bound([full, odd], unpacked) == unpacked


def test_a_chain_whose_newest_set_records_true_as_its_cluster_size_keeps_the_sum() -> None:
    """Found by review: ``isinstance(True, int)`` holds, so a manifest's ``"cluster_bytes": true`` bounded the
    combined cluster at its newest archive plus one byte; the room check passed a chain that did not fit."""
    from engine.components.postgres_physical import _on_disk, combined_bound

    full = _base(100 << 20, {"cluster_bytes": 90 << 20})
    unpacked = _on_disk(120 << 20)
    for odd in (True, False, -1):
        assert combined_bound([full, _base(20 << 20, {"cluster_bytes": odd})], unpacked) == unpacked, odd
    assert combined_bound([full, _base(20 << 20, {"cluster_bytes": 0})], unpacked) == _on_disk(20 << 20)  # control


def test_a_vector_stores_buckets_of_vectors_are_no_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: a vector store's fingerprint has a ``vectors #`` part per 1,000 vectors, and
    each counted as a file to create: 50 "files" for a store of a few, a false refusal on a
    filesystem short of inodes. Counted now: no more than the store's files and directories."""
    from engine.components import vectorstore

    params = vectorstore.VectorstoreParams(vectors=50_000, dimension=2)
    comp = vectorstore.VectorstoreComponent("vec", params, DirsRuntime(tmp_path / "rt"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    rooms: list[Any] = []
    extract = vectorstore.extract_tar

    def spy(*args: Any) -> None:
        rooms.append(args[5])
        extract(*args)

    monkeypatch.setattr(vectorstore, "extract_tar", spy)
    engine_backup.restore(repo, manifest, comp)
    entries = sum(1 for _ in comp.path.rglob("*")) + 1  # and the directory itself
    fp = manifest.component("vec").fingerprint
    assert fp is not None and fp.part_count > 50
    assert 0 < rooms[0].entries <= entries, (rooms, entries)
