"""A vector store leaves out only the ids the drill workload MARKED as its own (vectorstore/5).

Found in s32: schemes 2 to 4 took any root file named ``drproof_workload.ids`` as the
workload's record, leaving it out and every vector it listed, so a store of its own with
such a file (no workload ever ran) lost or changed it, or those vectors, and matched. Now
the workload's record opens with ``WORKLOAD_HEADER`` (``drills/workload/vectors.py``), as
volumes/6, redis/5 and postgres/7 leave out only what the workload marked, and only ids of
the workload's range are left out. Negative controls: the store's own file and the vectors
it lists are compared; quiet controls: the workload writing around a real backup and
restore stays unseen. Sets of scheme 4 are compared by their own rule, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from drills.workload.vectors import VectorWriter
from engine import backup as engine_backup
from engine.components.vectorstore import (
    IDS,
    INDEX,
    WORKLOAD_FILE,
    WORKLOAD_HEADER,
    WORKLOAD_IDS,
    VectorstoreComponent,
    VectorstoreParams,
    workload_marked,
)
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

OWN = f"file {WORKLOAD_FILE}"


def _store(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("emb", VectorstoreParams(vectors=50, dimension=8), DirsRuntime(root / "rt"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _own_ids_file(comp: VectorstoreComponent, big: bool = False) -> list[int]:
    """The store's own ``drproof_workload.ids`` (no workload ever ran): it names some of the store's vectors.

    ``big``: the store holds two vectors of the workload's id range too, its own (63-bit document hashes).
    """
    import faiss

    index: Any = faiss.read_index(str(comp.path / INDEX))
    listed = [int(i) for i in faiss.vector_to_array(index.id_map)[:2]]
    if big:
        extra = np.array([WORKLOAD_IDS + 5, WORKLOAD_IDS + 6], dtype=np.int64)
        index.add_with_ids(np.ones((2, index.d), dtype=np.float32), extra)
        faiss.write_index(index, str(comp.path / INDEX))
        with open(comp.path / IDS, "a") as fh:
            fh.writelines(json.dumps({"id": int(i), "document": f"doc-{i}"}) + "\n" for i in extra)
        listed += [int(i) for i in extra]
    (comp.path / WORKLOAD_FILE).write_text("".join(f"{i}\n" for i in listed))
    return listed


def _vector_count(fp: Fingerprint) -> int:
    return sum(p.count for n, p in fp.parts.items() if n.startswith("vectors #"))


def test_a_stores_own_file_named_like_the_record_and_its_vectors_are_compared(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    _own_ids_file(comp, big=True)
    assert not workload_marked(comp.path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = manifest.component(comp.instance).fingerprint
    assert recorded is not None and recorded.scheme == "vectorstore/5"
    assert OWN in recorded.parts
    assert _vector_count(recorded) == 52  # every vector, those the file lists too
    engine_backup.restore(repo, manifest, comp)
    assert compare(recorded, comp.fingerprint()) == []  # quiet control: a healthy round trip
    (comp.path / WORKLOAD_FILE).write_text("rewritten\n")
    assert [d.part for d in compare(recorded, comp.fingerprint())] == [OWN]  # negative control: named


def test_a_restore_that_changed_a_vector_the_stores_own_file_lists_is_named(tmp_path: Path) -> None:
    import faiss

    comp = _store(tmp_path)
    _own_ids_file(comp, big=True)
    before = comp.fingerprint()
    index: Any = faiss.read_index(str(comp.path / INDEX))
    index.remove_ids(np.array([WORKLOAD_IDS + 5], dtype=np.int64))
    index.add_with_ids(np.zeros((1, index.d), dtype=np.float32), np.array([WORKLOAD_IDS + 5], dtype=np.int64))
    faiss.write_index(index, str(comp.path / INDEX))
    names = {d.part for d in compare(before, comp.fingerprint())}
    assert f"file {INDEX}" in names and any(n.startswith("vectors #") for n in names), names


def test_the_workload_writing_around_a_backup_and_restore_is_quiet(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    writer = VectorWriter(comp)
    writer.open()
    writer.write(1)
    assert workload_marked(comp.path)
    assert (comp.path / WORKLOAD_FILE).read_text().startswith(WORKLOAD_HEADER)
    taken = comp.fingerprint()
    assert OWN not in taken.parts and _vector_count(taken) == 50
    repo = LocalRepository(tmp_path / "repo")
    writer.write(2)
    manifest = engine_backup.backup(repo, [comp], fingerprints={comp.instance: taken})
    writer.write(3)
    engine_backup.restore(repo, manifest, comp)  # its staged copy is proven against ``taken`` first
    writer.write(4)
    assert compare(taken, comp.fingerprint()) == []
    assert writer.survivors() >= {1, 2, 4}


def test_a_scheme_4_set_compares_by_its_own_rule_and_says_so(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    _own_ids_file(comp)
    old = comp.legacy_fingerprint("vectorstore/4")
    assert old is not None and old.scheme == "vectorstore/4"
    assert OWN not in old.parts and _vector_count(old) == 48  # its rule: any file of that name, by name
    assert WORKLOAD_FILE in (comp.blind_spot("vectorstore/4") or "")
    assert comp.blind_spot("vectorstore/5") is None
    (comp.path / WORKLOAD_FILE).write_text("rewritten\n")  # what scheme 4 cannot see
    current = comp.fingerprint_like(old)
    assert current is not None and compare(old, current) != []  # "rewritten" is no id list: unreadable there


def test_a_marked_record_read_by_an_older_scheme_skips_the_mark(tmp_path: Path) -> None:
    """A store a new workload wrote, compared with a scheme-4 set: the header is no id (it would be unreadable)."""
    comp = _store(tmp_path)
    writer = VectorWriter(comp)
    writer.open()
    writer.write(1)
    old = comp.legacy_fingerprint("vectorstore/4")
    assert old is not None and _vector_count(old) == 50 and "vectors" not in old.parts
