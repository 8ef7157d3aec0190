"""With a drill workload's vectors in the store, the fingerprint still reads the index file's own bytes.

Negative controls: header fields faiss acts on (the inner index's metric, ``is_trained``)
changed beside the workload's vectors are seen by the fingerprint and by health. Quiet
controls: the workload's vectors alone change nothing, and the index is never loaded
whole (the fingerprint's memory does not grow with the store).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import pytest

from drills.workload.vectors import VectorWriter
from engine.components.vectorstore import INDEX, VectorstoreComponent, VectorstoreParams
from engine.fingerprint import compare
from tests.conftest import DirsRuntime

INNER_TRAINED, INNER_METRIC = 69, 70  # offsets in an IndexIDMap2 over a flat index (37-byte outer header)


def _store_with_workload(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=500, dimension=16), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    writer = VectorWriter(comp)
    writer.open()
    for seq in (1, 2, 3):
        writer.write(seq)
    return comp


def _patch(comp: VectorstoreComponent, offset: int, data: bytes) -> None:
    with open(comp.path / INDEX, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@pytest.mark.parametrize(
    ("offset", "data", "finding"),
    [
        (
            INNER_METRIC,
            (0).to_bytes(4, "little"),
            "the index searches by inner product but its id map's header says l2",
        ),
        (INNER_TRAINED, b"\0", "its header says the index is not trained"),
    ],
    ids=["inner-metric", "inner-is-trained"],
)
def test_header_damage_beside_workload_vectors_is_seen(tmp_path: Path, offset: int, data: bytes, finding: str) -> None:
    comp = _store_with_workload(tmp_path)
    before = comp.fingerprint()
    _patch(comp, offset, data)
    changed = {d.part for d in compare(before, comp.fingerprint())}
    assert "file index.faiss" in changed
    health = comp.health()
    assert not health.ok and finding in health.detail, health.detail


def test_the_file_part_is_the_one_of_the_store_without_the_workload(tmp_path: Path) -> None:
    """Quiet control: the part equals the part of the same store that never had the workload's vectors."""
    comp = _store_with_workload(tmp_path / "a")
    plain = VectorstoreComponent("vec", VectorstoreParams(vectors=500, dimension=16), DirsRuntime(tmp_path / "b"))  # type: ignore[arg-type]
    plain.provision()
    plain.seed()
    assert not list(compare(plain.fingerprint(), comp.fingerprint()))
    assert comp.health().ok


def test_the_index_is_never_loaded_whole_with_workload_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = _store_with_workload(tmp_path)
    before = comp.fingerprint()

    def refuse(*_args: object) -> None:
        raise AssertionError("the fingerprint loaded the whole index")

    monkeypatch.setattr(faiss, "read_index", refuse)
    assert comp.fingerprint().digest == before.digest
