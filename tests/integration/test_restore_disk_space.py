"""A restore never makes things worse: disk space (files kinds, on a real small tmpfs).

A restore builds a whole copy beside the live tree, on the same filesystem. These tests put
the live volume on a tmpfs of a few MiB, beside "another application's" file, and check
that a set which does not fit is refused before a byte is written (free space and live
files untouched), that an artifact expanding beyond its recorded ``raw_size`` is stopped,
that a disk filled by someone else during the restore stops it with the staged copy
removed, and that a set which fits restores as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine import backup as engine_backup
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.files import room_for
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.diskspace import free_bytes, free_inodes, reserve_for
from engine.errors import InsufficientSpace, IntegrityError
from engine.manifest import Manifest
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime
from tests.integration.helpers import mounted_tmpfs

pytestmark = [pytest.mark.integration]

MiB = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB filesystem for the live data."""
    with mounted_tmpfs(tmp_path / "disk", "20m", "0755") as mountpoint:
        yield mountpoint


@pytest.fixture
def big_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem for the live data."""
    with mounted_tmpfs(tmp_path / "disk", "64m", "0755") as mountpoint:
        yield mountpoint


def _volume(disk: Path, files: int, size: int) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=size), DirsRuntime(disk))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _occupy(disk: Path, size: int, name: str = "other-application.wal") -> Path:
    """Another application's data on the same filesystem: ``size`` bytes really allocated."""
    path = disk / name
    with open(path, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)
    return path


def _backed_up_then_changed(tmp_path: Path, comp: VolumesComponent) -> tuple[LocalRepository, Manifest]:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    first = next(p for p in sorted(comp.path.rglob("*")) if p.is_file())
    first.write_bytes(b"changed after the backup")  # so a restore has something to undo
    return repo, manifest


def _allocated(root: Path) -> int:
    """Bytes the tree's files take on disk."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def _untouched(comp: VolumesComponent, before: dict[str, bytes]) -> None:
    assert _contents(comp.path) == before
    assert not [p.name for p in comp.path.parent.iterdir() if ".drproof-" in p.name]


def test_a_set_bigger_than_the_free_space_is_refused_before_anything_is_written(tmp_path: Path, disk: Path) -> None:
    comp = _volume(disk, files=12, size=512 * 1024)  # 6 MiB live, and 6 MiB in the set
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    _occupy(disk, 10 * MiB)  # leaves about 4 MiB: the copy cannot fit beside the live tree
    before, free = _contents(comp.path), free_bytes(disk)
    with pytest.raises(InsufficientSpace) as caught:
        engine_backup.restore(repo, manifest, comp)
    message = str(caught.value)
    for needle in (str(disk), "free", "needs", "--to", "nothing was changed"):
        assert needle in message, (needle, message)
    assert free_bytes(disk) == free
    _untouched(comp, before)


def test_a_set_that_fits_restores_and_matches(tmp_path: Path, disk: Path) -> None:
    comp = _volume(disk, files=8, size=512 * 1024)  # 4 MiB
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    _occupy(disk, 4 * MiB)
    free, held = free_bytes(disk), _allocated(comp.path)
    engine_backup.restore(repo, manifest, comp)
    assert comp.fingerprint() == engine_backup.recorded_fingerprint(repo, manifest, "files")
    # The replaced tree is gone: the disk holds the restored tree once, no second copy.
    assert free_bytes(disk) == free - (_allocated(comp.path) - held)


@pytest.fixture
def few_inodes(tmp_path: Path) -> Iterator[Path]:
    """A roomy filesystem (20 MiB) with 600 inodes: small files run out of inodes, not bytes."""
    with mounted_tmpfs(tmp_path / "inodes", "20m", "0755", inodes=600) as mountpoint:
        yield mountpoint


def test_a_tree_with_more_entries_than_free_inodes_is_refused_before_anything_is_written(
    tmp_path: Path, few_inodes: Path
) -> None:
    """Bytes to spare, inodes not: before, nothing counted inodes, so the staged copy took all but a
    few of them here (with fewer, all of them, then ENOSPC); an application there that cannot create
    a file fails with "No space left on device" while ``df`` shows room."""
    comp = _volume(few_inodes, files=150, size=100)
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    other = few_inodes / "other-application"
    other.mkdir()
    for i in range(275):
        (other / f"{i}.log").touch()
    before, inodes, free = _contents(comp.path), free_inodes(few_inodes), free_bytes(few_inodes)
    assert inodes is not None and 155 < inodes < 180  # room for the tree's files, not with the reserve
    with pytest.raises(InsufficientSpace) as caught:
        engine_backup.restore(repo, manifest, comp)
    message = str(caught.value)
    for needle in (str(few_inodes), "inodes", "nothing was changed"):
        assert needle in message, (needle, message)
    assert (free_inodes(few_inodes), free_bytes(few_inodes)) == (inodes, free)
    _untouched(comp, before)


def test_a_tree_that_fits_the_free_inodes_restores(tmp_path: Path, few_inodes: Path) -> None:
    """Quiet control: the same tree on the same filesystem, without the other application's files."""
    comp = _volume(few_inodes, files=150, size=100)
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    engine_backup.restore(repo, manifest, comp)
    assert comp.fingerprint() == engine_backup.recorded_fingerprint(repo, manifest, "files")


def test_a_restore_to_another_place_is_checked_against_that_places_filesystem(tmp_path: Path, disk: Path) -> None:
    """``--to``: the set comes from a roomy disk, the new place is the small one."""
    source = _volume(tmp_path / "source", files=12, size=512 * 1024)  # 6 MiB, on the large filesystem
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [source])
    _occupy(disk, 14 * MiB)  # leaves about 6 MiB: not the 6 MiB and the reserve
    elsewhere = VolumesComponent("files", VolumesParams(files=0), DirsRuntime(disk))  # type: ignore[arg-type]
    elsewhere.provision()
    free = free_bytes(disk)
    with pytest.raises(InsufficientSpace, match=str(disk)):
        engine_backup.restore(repo, manifest, elsewhere)
    assert free_bytes(disk) == free and not list(elsewhere.path.iterdir())
    _untouched(elsewhere, {})


def test_a_chain_of_incrementals_of_one_changing_file_is_counted_as_its_tree_not_its_archives(
    tmp_path: Path, disk: Path
) -> None:
    """Found by review: the archives of a chain were added up; this chain's are 28 MiB, its tree 4 MiB.

    A 4 MiB file that changes between backups (a database file, an image) is archived
    whole by each incremental. The staged tree only ever holds one copy of it (a layer
    removes what it replaces), so the restore fits on a 20 MiB disk with 16 MiB free. It
    was refused ("needs 28.0 MiB"): the worst day, a healthy restore refused.
    """
    comp = _volume(disk, files=1, size=4 * MiB)
    big = next(p for p in comp.path.rglob("*") if p.is_file() and p.stat().st_size == 4 * MiB)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp], fingerprints={"files": comp.fingerprint()})
    for _ in range(6):
        big.write_bytes(os.urandom(4 * MiB))
        manifest = engine_backup.backup(repo, [comp], fingerprints={"files": comp.fingerprint()}, parent=manifest)
    archived = sum(r.raw_size for m in repo.list() for r in m.artifacts_of("files") if r.name == "files.tar")
    assert archived > free_bytes(disk), (archived, free_bytes(disk))  # the archives alone would not fit
    big.write_bytes(b"damaged")
    engine_backup.restore(repo, manifest, comp)
    assert comp.fingerprint() == engine_backup.recorded_fingerprint(repo, manifest, "files")


def _forge(repo: LocalRepository, manifest: Manifest, stored: bytes, raw_size: int) -> Manifest:
    """Replace the set's files.tar artifact and rewrite its manifest entry to match (an unsigned repository)."""
    root = repo.root / "sets" / manifest.id
    (root / "files" / "files.tar.zst").write_bytes(stored)
    path = root / "manifest.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    for a in doc["artifacts"]:
        if a["name"] == "files.tar":
            a.update(sha256=hashlib.sha256(stored).hexdigest(), size=len(stored), raw_size=raw_size)
    path.write_text(json.dumps(doc))
    return repo.get(manifest.id)


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(size: int) -> bytes:
    """A zstd-compressed tar holding one file of ``size`` zero bytes: a few KiB that expand to ``size``."""
    out = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with (
        compressor.stream_writer(out, closefd=False) as z,
        tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return out.getvalue()


def test_an_artifact_expanding_beyond_its_recorded_size_is_stopped_at_it(tmp_path: Path, disk: Path) -> None:
    comp = _volume(disk, files=4, size=64 * 1024)
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    bomb = _bomb(200 * MiB)  # ten times the whole disk
    manifest = _forge(repo, manifest, bomb, raw_size=2 * MiB)  # the manifest says it fits
    before, free = _contents(comp.path), free_bytes(disk)
    with pytest.raises(IntegrityError, match=f"more than the {2 * MiB} bytes its manifest records"):
        engine_backup.restore(repo, manifest, comp)
    assert free_bytes(disk) == free
    _untouched(comp, before)


def test_an_artifact_claiming_more_than_the_disk_holds_is_refused_before_it_is_read(tmp_path: Path, disk: Path) -> None:
    comp = _volume(disk, files=4, size=64 * 1024)
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    bomb = _bomb(200 * MiB)
    manifest = _forge(repo, manifest, bomb, raw_size=200 * MiB + 3 * 512 + 20 * 512)
    before, free = _contents(comp.path), free_bytes(disk)
    with pytest.raises(InsufficientSpace, match="nothing was changed"):
        engine_backup.restore(repo, manifest, comp)
    assert free_bytes(disk) == free
    _untouched(comp, before)


def _fill_when_staging_appears(disk: Path, staging: Path, leave: int, done: list[int]) -> None:
    """Another process filling the disk once the restore has begun writing, down to ``leave`` bytes free."""
    deadline = time.monotonic() + 30
    while not staging.exists() and time.monotonic() < deadline:
        time.sleep(0.0005)
    _occupy(disk, max(0, free_bytes(disk) - leave), name="filled-meanwhile")
    done.append(free_bytes(disk))


def test_a_disk_filled_by_another_process_during_the_restore_stops_it_above_empty(
    tmp_path: Path, big_disk: Path
) -> None:
    disk = big_disk
    comp = _volume(disk, files=2000, size=4096)  # 8 MiB of small files: a restore that takes a while
    repo, manifest = _backed_up_then_changed(tmp_path, comp)
    before = _contents(comp.path)
    reserve = reserve_for(disk)
    # Just room enough for the check before the restore, so the filler's own allocation is quick.
    room = room_for([engine_backup._source(repo, manifest, "files")], "files.tar").bytes_on(disk)
    _occupy(disk, free_bytes(disk) - (room + reserve + 4 * MiB), name="before")
    staging = comp.path.with_name(comp.path.name + ".drproof-restoring")
    done: list[int] = []
    filler = threading.Thread(target=_fill_when_staging_appears, args=(disk, staging, reserve + 2 * MiB, done))
    filler.start()
    try:
        with pytest.raises(InsufficientSpace, match=r"fell to .* below the") as caught:
            engine_backup.restore(repo, manifest, comp)
    finally:
        filler.join()
    assert "nothing was changed" in str(caught.value)
    assert free_bytes(disk) >= done[0]  # the staged copy is gone
    _untouched(comp, before)


# --- postgres-physical: the new cluster is built beside the live one ----------------------------


@pytest.fixture
def pg_on_disk(tmp_path: Path) -> Iterator[tuple[Path, Any, LocalRepository]]:
    """A physical PostgreSQL cluster (data and WAL archive) on a 256 MiB tmpfs; the repository elsewhere."""
    from engine.components.postgres import PostgresParams
    from engine.components.postgres_physical import PostgresPhysicalComponent
    from engine.runtime.local import LocalRuntime

    # Outside tmp_path (mode 0700): the server's user must reach its data directory, or a
    # root run keeps it in the system's temporary directory, not on this filesystem.
    place = Path(tempfile.mkdtemp(prefix="drproof-test-disk-"))
    place.rmdir()
    with mounted_tmpfs(place, "256m", "0755") as mountpoint, LocalRuntime(mountpoint / "work") as runtime:
        comp = PostgresPhysicalComponent("db", PostgresParams(customers=300), runtime)
        comp.provision()
        comp.seed()
        assert comp.service.data_dir().is_relative_to(mountpoint)
        yield mountpoint, comp, LocalRepository(tmp_path / "repo")
    place.rmdir()


def _cluster_bytes(manifest: Manifest) -> int:
    return sum(a.raw_size for a in manifest.artifacts_of("db") if a.name == "base.tar")


def test_a_physical_restore_that_does_not_fit_is_refused_before_the_server_is_stopped(
    pg_on_disk: tuple[Path, Any, LocalRepository],
) -> None:
    from tests.integration.helpers import insert_mark, marks

    disk, comp, repo = pg_on_disk
    manifest = engine_backup.backup(repo, [comp])
    insert_mark(comp, "after-the-backup")
    # Leave less than the new cluster needs beside the live one (but plenty for its WAL).
    _occupy(disk, free_bytes(disk) - _cluster_bytes(manifest) // 2)
    data = comp.service.data_dir()
    started = (data / "postmaster.pid").read_text()
    with pytest.raises(InsufficientSpace, match="nothing was changed") as caught:
        engine_backup.restore(repo, manifest, comp)
    assert str(disk) in str(caught.value)
    assert (data / "postmaster.pid").read_text() == started  # never stopped
    assert marks(comp) == ["after-the-backup"] and comp.health().ok


def test_a_physical_restore_that_fits_restores_within_the_room_counted(
    pg_on_disk: tuple[Path, Any, LocalRepository],
) -> None:
    from engine.components.postgres_physical import _on_disk
    from tests.integration.helpers import insert_mark, marks

    _, comp, repo = pg_on_disk
    manifest = engine_backup.backup(repo, [comp])
    insert_mark(comp, "after-the-backup")
    engine_backup.restore(repo, manifest, comp)
    assert marks(comp) == [] and comp.health().ok
    data = comp.service.data_dir()
    taken = sum(p.lstat().st_blocks * 512 for p in data.rglob("*") if p.parent.name != "pg_wal")
    print("cluster on disk", taken, "archived", _cluster_bytes(manifest), "bound", _on_disk(_cluster_bytes(manifest)))
    assert taken <= _on_disk(_cluster_bytes(manifest)), (taken, _cluster_bytes(manifest))


def test_a_disk_filled_during_a_physical_restore_stops_it_and_puts_the_live_cluster_back(
    pg_on_disk: tuple[Path, Any, LocalRepository],
) -> None:
    from tests.integration.helpers import insert_mark, marks

    disk, comp, repo = pg_on_disk
    manifest = engine_backup.backup(repo, [comp])
    insert_mark(comp, "after-the-backup")
    # Just room enough for the check before the restore, so the filler's own allocation is quick.
    needed = sum(a.raw_size for a in manifest.artifacts_of("db") if a.name in ("base.tar", "wal.tar"))
    _occupy(disk, free_bytes(disk) - (needed + needed // 100 + reserve_for(disk) + 4 * MiB), name="before")
    aside = comp.service.data_dir().with_name("data.before-restore")  # the live cluster, set aside by the restore
    done: list[int] = []
    filler = threading.Thread(target=_fill_when_staging_appears, args=(disk, aside, reserve_for(disk) + 2 * MiB, done))
    filler.start()
    try:
        with pytest.raises(InsufficientSpace, match=r"fell to .* below the"):
            engine_backup.restore(repo, manifest, comp)
    finally:
        filler.join()
    assert marks(comp) == ["after-the-backup"] and comp.health().ok  # the live cluster, back and running


def test_a_physical_chain_is_counted_as_the_cluster_it_combines_into_not_the_sum_of_its_archives(
    pg_on_disk: tuple[Path, Any, LocalRepository],
) -> None:
    """Found in the disk-space review's notes: a full backup and three incrementals "needed" four clusters' room
    beside the live one, so a chain restore that fits was refused. The newest set records its databases' size
    (``cluster_bytes``); with free space between the new count and the sum, the chain restores (the old count
    refused it), and the combined cluster takes no more than counted."""
    from engine.components.postgres_physical import _on_disk, combined_bound
    from tests.integration.helpers import insert_mark, marks

    disk, comp, repo = pg_on_disk
    chain = [engine_backup.backup(repo, [comp])]
    for i in range(3):
        insert_mark(comp, f"after-{i}")
        chain.append(engine_backup.backup(repo, [comp], parent=chain[-1]))
    insert_mark(comp, "after-the-chain")
    newest = chain[-1]
    assert newest.component("db").details["incremental"] is True
    bases = [engine_backup._source(repo, m, "db") for m in chain]
    unpacked = sum(_on_disk(s.record("base.tar").raw_size) for s in bases)
    bound = combined_bound(bases, unpacked)
    wal = sum(a.raw_size for a in newest.artifacts_of("db") if a.name == "wal.tar")
    assert bound < unpacked * 3 // 4, (bound, unpacked)
    # Room for the staged archives, the WAL and the combined cluster as counted now, not for the sum.
    room = unpacked + wal + bound + reserve_for(disk)
    _occupy(disk, free_bytes(disk) - (room + (unpacked - bound) // 2))
    engine_backup.restore(repo, newest, comp)
    assert marks(comp) == ["after-0", "after-1", "after-2"] and comp.health().ok
    data = comp.service.data_dir()
    taken = sum(p.lstat().st_blocks * 512 for p in data.rglob("*") if p.parent.name != "pg_wal")
    print("combined cluster", taken, "bound", bound, "sum of the chain", unpacked)
    assert taken <= bound, (taken, bound)


def test_a_chain_whose_recorded_cluster_is_too_small_is_stopped_while_combining_not_written_to_the_last_byte(
    pg_on_disk: tuple[Path, Any, LocalRepository],
) -> None:
    """Found by review: the room check trusts the newest set's ``cluster_bytes``; a record too small (here 0: a
    manifest's ``true`` counted as 1 the same way) let the check pass and pg_combinebackup, which nothing
    watched, wrote the disk full and failed with "could not write to file ... wrote 16384 of 409600". Now the
    combine is watched like the extracts: stopped at the reserve with a domain error, the live cluster back."""
    from engine.components.postgres_physical import _on_disk, combined_bound
    from tests.integration.helpers import insert_mark, marks

    disk, comp, repo = pg_on_disk
    chain = [engine_backup.backup(repo, [comp])]
    insert_mark(comp, "after-0")
    chain.append(engine_backup.backup(repo, [comp], parent=chain[-1]))
    insert_mark(comp, "after-the-chain")
    newest = chain[-1]
    newest.component("db").details["cluster_bytes"] = 0  # wrong, as a database dropped before the measure
    bases = [engine_backup._source(repo, m, "db") for m in chain]
    unpacked = sum(_on_disk(s.record("base.tar").raw_size) for s in bases)
    bound = combined_bound(bases, unpacked)
    wal = sum(a.raw_size for a in newest.artifacts_of("db") if a.name == "wal.tar")
    room = unpacked + wal + bound + reserve_for(disk)
    _occupy(disk, free_bytes(disk) - (room + (2 << 20)))  # passes the check; the whole cluster does not fit
    with pytest.raises(InsufficientSpace, match="stopped writing the cluster pg_combinebackup combines"):
        engine_backup.restore(repo, newest, comp)
    assert marks(comp) == ["after-0", "after-the-chain"] and comp.health().ok  # the live cluster, back


def _configuration(disk: Path, files: dict[str, str]) -> ConfigurationComponent:
    comp = ConfigurationComponent("conf", ConfigurationParams(files=files), DirsRuntime(disk))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def test_a_settings_file_is_one_inode_not_one_per_setting(tmp_path: Path, few_inodes: Path) -> None:
    """Found by review: a configuration's fingerprint has a part per setting as well as per file, and
    all of them counted as entries: one 480 KiB JSON file of 30,000 settings "created up to 960 files"
    (its archive's bound) and its restore was refused on a filesystem with 597 inodes free."""
    comp = _configuration(few_inodes, {"app.json": json.dumps({f"k{i}": i for i in range(30_000)})})
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    (comp.path / "app.json").write_text('{"k": 1}')
    engine_backup.restore(repo, manifest, comp)
    assert comp.fingerprint() == engine_backup.recorded_fingerprint(repo, manifest, "conf")


def test_a_configuration_of_many_files_is_still_counted(tmp_path: Path, few_inodes: Path) -> None:
    """Control: the settings are left out of the count, the files are not."""
    comp = _configuration(few_inodes, {f"conf.d/{i}.ini": f"[s]\nk = {i}\n" for i in range(150)})
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    for i in range(275):
        (few_inodes / f"{i}.log").touch()
    before = _contents(comp.path)
    with pytest.raises(InsufficientSpace, match="inodes"):
        engine_backup.restore(repo, manifest, comp)
    assert _contents(comp.path) == before
