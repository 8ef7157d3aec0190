"""Only the drill workload's own entries are left out of tree fingerprints, not names that resemble them.

A volume left out every directory whose name merely started with ``drproof_workload``
(``drproof_workload_old/``), and a vector store every file whose path held the text
anywhere (found by review: both lost or rewritten were "match"). The negative controls
change such an entry; the quiet controls change the workload's own files, which must stay
unseen (they are written after the backup on purpose).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from drills.workload.files import VolumeWriter
from drills.workload.vectors import VectorWriter
from engine import backup as engine_backup
from engine.components.base import WORKLOAD_MARK
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _volume(root: Path) -> VolumesComponent:
    comp = VolumesComponent("uploads", VolumesParams(files=4, file_size=64), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def test_a_volume_sees_a_directory_named_like_the_workload(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    (comp.path / f"{WORKLOAD_MARK}_old" / "keep" / "empty").mkdir(parents=True)
    (comp.path / f"{WORKLOAD_MARK}.txt").write_text("kept by the application")
    before = comp.fingerprint()
    shutil.rmtree(comp.path / f"{WORKLOAD_MARK}_old" / "keep")
    (comp.path / f"{WORKLOAD_MARK}.txt").write_text("rewritten")
    names = {d.part for d in compare(before, comp.fingerprint())}
    assert names == {f"dir {WORKLOAD_MARK}_old/keep", f"dir {WORKLOAD_MARK}_old/keep/empty", f"file {WORKLOAD_MARK}.txt"}


def test_a_volume_leaves_the_workload_directory_itself_out(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    writer = VolumeWriter(comp)
    writer.open()  # marks its directory
    before = comp.fingerprint()
    writer.write(1)
    (comp.path / WORKLOAD_MARK / "sub").mkdir(parents=True)
    (comp.path / WORKLOAD_MARK / "sub" / "1").write_text("a write after the backup")
    assert compare(before, comp.fingerprint()) == []


def _backed_up_and_restored(comp: VolumesComponent, root: Path, writer: VolumeWriter | None) -> Fingerprint:
    """A real backup (tar) and restore of the volume; the workload, if any, writing all along."""
    taken = comp.fingerprint()
    repo = LocalRepository(root / "repo")
    if writer is not None:
        writer.write(2)
    manifest = engine_backup.backup(repo, [comp], fingerprints={comp.instance: taken})
    if writer is not None:
        writer.write(3)
    engine_backup.restore(repo, manifest, comp)  # its staged copy is proven against ``taken`` first
    if writer is not None:
        writer.write(4)
    return taken


def test_a_volumes_own_drproof_workload_directory_lost_by_a_restore_is_named(tmp_path: Path) -> None:
    """No workload ran on this volume: its ``drproof_workload/`` is the volume's own data (found by review)."""
    comp = _volume(tmp_path)
    (comp.path / WORKLOAD_MARK).mkdir()
    (comp.path / WORKLOAD_MARK / "ledger.csv").write_text("the application's own")
    taken = _backed_up_and_restored(comp, tmp_path, None)
    assert compare(taken, comp.fingerprint()) == []
    shutil.rmtree(comp.path / WORKLOAD_MARK)
    names = {d.part for d in compare(taken, comp.fingerprint())}
    assert names == {f"dir {WORKLOAD_MARK}", f"file {WORKLOAD_MARK}/ledger.csv"}
    assert taken.scheme == "volumes/7"


def test_the_workload_writing_around_a_volumes_backup_and_restore_is_quiet(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    writer = VolumeWriter(comp)
    writer.open()
    writer.write(1)
    taken = _backed_up_and_restored(comp, tmp_path, writer)
    assert not [p for p in taken.parts if WORKLOAD_MARK in p]
    assert compare(taken, comp.fingerprint()) == []


def test_a_scheme_5_backup_of_a_volume_compares_in_its_own_scheme_and_says_so(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    (comp.path / WORKLOAD_MARK).mkdir()
    (comp.path / WORKLOAD_MARK / "ledger.csv").write_text("the application's own")
    old = comp.legacy_fingerprint("volumes/5")
    assert old is not None and f"file {WORKLOAD_MARK}/ledger.csv" not in old.parts  # its rule, by name
    shutil.rmtree(comp.path / WORKLOAD_MARK)
    assert compare(old, comp.fingerprint_like(old)) == []
    assert WORKLOAD_MARK in (comp.blind_spot("volumes/5") or "")


def _store(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=50, dimension=4), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def test_a_vector_store_sees_a_file_whose_name_holds_the_mark(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    (comp.path / f"notes-on-{WORKLOAD_MARK}.txt").write_text("a file the application keeps")
    before = comp.fingerprint()
    (comp.path / f"notes-on-{WORKLOAD_MARK}.txt").write_text("changed entirely")
    assert [d.part for d in compare(before, comp.fingerprint())] == [f"file notes-on-{WORKLOAD_MARK}.txt"]


def test_a_vector_store_leaves_the_workload_record_out(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    before = comp.fingerprint()
    writer = VectorWriter(comp)
    writer.open()
    writer.write(1)
    assert (comp.path / f"{WORKLOAD_MARK}.ids").exists()
    assert compare(before, comp.fingerprint()) == []


def test_the_shop_service_marks_its_workload_table_as_drproof_leaves_it_out() -> None:
    """The full-system drill's service writes the workload's table itself: it must carry the same comment."""
    from engine.components.postgres_catalog import WORKLOAD_COMMENT

    shop = (Path(__file__).parent.parent / "scenarios" / "full-system" / "shop_app.py").read_text(encoding="utf-8")
    assert f'WORKLOAD_COMMENT = "{WORKLOAD_COMMENT}"' in shop
    assert "COMMENT ON TABLE {WORKLOAD} IS %s" in shop
