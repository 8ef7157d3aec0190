"""What directory and vector fingerprints must see (scheme 2), each with a negative and a quiet control."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.files import DIR
from engine.components.vectorstore import (
    IDS,
    INDEX,
    WORKLOAD_FILE,
    WORKLOAD_HEADER,
    WORKLOAD_IDS,
    VectorstoreComponent,
    VectorstoreParams,
)
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.errors import ComponentError
from engine.fingerprint import compare
from tests.conftest import DirsRuntime


def _volume(root: Path) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=6, file_size=100), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def test_volumes_see_empty_directories_and_directory_modes(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    (comp.path / "empty" / "deeper").mkdir(parents=True)
    before = comp.fingerprint()
    assert comp.fingerprint() == before  # quiet control
    assert f"{DIR}empty/deeper" in before.parts
    (comp.path / "empty" / "deeper").rmdir()
    assert {d.part for d in compare(before, comp.fingerprint())} == {f"{DIR}empty/deeper"}
    (comp.path / "empty" / "deeper").mkdir()
    os.chmod(comp.path / "dir000", 0o700)
    assert {d.part for d in compare(before, comp.fingerprint())} == {f"{DIR}dir000"}


def test_a_scheme_1_fingerprint_of_a_volume_leaves_directories_out(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    old = comp.legacy_fingerprint("1")
    assert old is not None and old.scheme == "1" and not any(p.startswith(DIR) for p in old.parts)
    assert compare(old, comp.fingerprint_like(old)) == []


def test_configuration_sees_directories_too(tmp_path: Path) -> None:
    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    before = comp.fingerprint()
    assert f"{DIR}nginx" in before.parts
    os.chmod(comp.path / "nginx", 0o750)
    assert f"{DIR}nginx" in {d.part for d in compare(before, comp.fingerprint())}


def _store_with_ids(root: Path, ids: list[int]) -> VectorstoreComponent:
    comp = VectorstoreComponent("emb", VectorstoreParams(vectors=1, dimension=4), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    rng = np.random.default_rng(7)
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(4))
    index.add_with_ids(rng.standard_normal((len(ids), 4), dtype=np.float32), np.array(ids, dtype=np.int64))
    faiss.write_index(index, str(comp.path / INDEX))
    (comp.path / IDS).write_text("".join(json.dumps({"id": i, "document": f"doc-{i}"}) + "\n" for i in ids))
    return comp


# 63-bit hashed document ids, as stores keyed by a hash of the document hold them.
HASHED = [(0x7FFF_0000_0000_0000 + i * 7919) for i in range(50)] + [3, 1 << 50]


def test_a_store_with_63_bit_ids_is_fingerprinted_whole(tmp_path: Path) -> None:
    comp = _store_with_ids(tmp_path, HASHED)
    fp = comp.fingerprint()
    assert sum(p.count for n, p in fp.parts.items() if n.startswith("vectors #")) == len(HASHED)
    assert comp.fingerprint() == fp  # quiet control
    # A flipped float of a vector whose id is far above 2**48:
    index = faiss.read_index(str(comp.path / INDEX))
    vectors = index.index.reconstruct_n(0, index.ntotal)
    vectors[10][2] += 0.5
    changed = faiss.IndexIDMap2(faiss.IndexFlatL2(4))
    changed.add_with_ids(vectors, np.array(HASHED, dtype=np.int64))
    faiss.write_index(changed, str(comp.path / INDEX))
    assert any(d.part.startswith("vectors #") for d in compare(fp, comp.fingerprint()))


def test_two_swapped_document_ids_are_seen(tmp_path: Path) -> None:
    comp = _store_with_ids(tmp_path, HASHED)
    fp = comp.fingerprint()
    swapped = list(HASHED)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    index = faiss.read_index(str(comp.path / INDEX))
    vectors = index.index.reconstruct_n(0, index.ntotal)
    other = faiss.IndexIDMap2(faiss.IndexFlatL2(4))
    other.add_with_ids(vectors, np.array(swapped, dtype=np.int64))
    faiss.write_index(other, str(comp.path / INDEX))
    assert any(d.part.startswith("vectors #") for d in compare(fp, comp.fingerprint()))


def test_only_recorded_workload_vectors_are_left_out(tmp_path: Path) -> None:
    comp = _store_with_ids(tmp_path, [*HASHED, WORKLOAD_IDS + 1, WORKLOAD_IDS + 2])
    before = comp.fingerprint()
    assert sum(p.count for n, p in before.parts.items() if n.startswith("vectors #")) == len(HASHED) + 2
    (comp.path / WORKLOAD_FILE).write_text(f"{WORKLOAD_HEADER}{WORKLOAD_IDS + 1}\n{WORKLOAD_IDS + 2}\n")
    workload = comp.fingerprint()
    assert sum(p.count for n, p in workload.parts.items() if n.startswith("vectors #")) == len(HASHED)
    assert not any(WORKLOAD_FILE in n for n in workload.parts)


def test_a_fingerprint_that_would_leave_vectors_out_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = _store_with_ids(tmp_path, HASHED)
    monkeypatch.setattr(VectorstoreComponent, "_checked", VectorstoreComponent._checked)  # the real one
    fp_parts = comp.fingerprint().parts
    with pytest.raises(ComponentError, match="covers 0 of 52 vectors"):
        comp._checked(
            {k: v for k, v in fp_parts.items() if not k.startswith("vectors #")}, len(HASHED), "vectorstore/2"
        )
