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

from drills.workload.vectors import VectorWriter
from engine.components.base import WORKLOAD_MARK
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.fingerprint import compare
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
    before = comp.fingerprint()
    (comp.path / WORKLOAD_MARK / "sub").mkdir(parents=True)
    (comp.path / WORKLOAD_MARK / "sub" / "1").write_text("a write after the backup")
    assert compare(before, comp.fingerprint()) == []


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
