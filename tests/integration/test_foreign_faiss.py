"""Restore tests of FAISS indexes drproof did not write: ``faiss.write_index`` files.

Flat, IDMap2 (inner product), IVFFlat (with ids of its own, and under an IDMap) and
HNSWFlat indexes restore into drproof's vector store layout; read back with faiss, the
sandbox holds exactly the original vectors under the original ids, answers a probe
query, and is healthy. A product-quantized index is refused naming its type (its
vectors cannot be reconstructed), a damaged file could not be tested, and an id map
that misses vectors fails the restore: never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import yaml

from engine.components.vectorstore import VectorstoreComponent
from engine.foreign.faiss_index import FaissIndex, FaissParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]

D, N = 24, 1500


def _data(normalized: bool = False) -> tuple[Any, Any]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N, D), dtype=np.float32)
    if normalized:
        faiss.normalize_L2(vectors)
    ids = rng.choice(10**12, size=N, replace=False).astype(np.int64)  # sparse, unordered
    return ids, vectors


def _index(shape: str) -> tuple[Any, Any, Any]:
    """(ids, vectors, index) for one kind of index a program might have written."""
    ids, vectors = _data(normalized=shape == "idmap2-ip")
    if shape == "flat":
        index = faiss.IndexFlatL2(D)
        index.add(vectors)
        return np.arange(N, dtype=np.int64), vectors, index
    if shape == "hnsw":
        index = faiss.IndexHNSWFlat(D, 16)
        index.add(vectors)
        return np.arange(N, dtype=np.int64), vectors, index
    if shape == "idmap2-ip":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
    elif shape == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 16)
        index.train(vectors)
    else:  # "idmap-ivf"
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 16)
        ivf.train(vectors)
        index = faiss.IndexIDMap(ivf)
    index.add_with_ids(vectors, ids)
    return ids, vectors, index


@pytest.mark.parametrize("shape", ["flat", "hnsw", "idmap2-ip", "ivf", "idmap-ivf"])
def test_the_sandbox_holds_the_original_vectors_under_their_ids(tmp_path: Path, shape: str) -> None:
    ids, vectors, index = _index(shape)
    path = tmp_path / f"{shape}.faiss"
    faiss.write_index(index, str(path))
    fmt = FaissIndex(FaissParams(path=str(path), model="e5-small"))
    facts = fmt.inspect(path)
    assert (facts.details["vectors"], facts.details["dimension"]) == (N, D)
    assert facts.details["metric"] == ("inner_product" if shape == "idmap2-ip" else "l2")
    with LocalRuntime(tmp_path / "rt") as rt:
        comp = VectorstoreComponent("vectors", fmt.component_params(VectorstoreComponent, facts), rt)
        comp.provision()
        done = fmt.restore(comp, path, facts)
        health = comp.health()
        assert health.ok and "probe query ok" in health.detail, health.detail
        store = faiss.read_index(str(comp.path / "index.faiss"))
        order = np.argsort(ids)
        assert np.array_equal(faiss.vector_to_array(store.id_map), ids[order])
        assert np.array_equal(store.index.reconstruct_n(0, store.ntotal), vectors[order])
        _, found = store.search(vectors[[3, 700]], 1)
        assert found[:, 0].tolist() == [int(ids[3]), int(ids[700])]
        meta = json.loads((comp.path / "metadata.json").read_text())
        assert meta["model"] == "e5-small" and meta["converted_from"] == done["converted_from"]
        assert comp.fingerprint().parts  # the store fingerprints (what a restore test records)


def _scenario(path: Path, backups: dict[str, dict[str, Any]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "faiss-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": ["fidelity", "rto"],
            }
        )
    )
    return path


def _run(tmp_path: Path, backups: dict[str, dict[str, Any]], name: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / name
    code = run_cli(["run", str(_scenario(tmp_path / f"{name}.yaml", backups)), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def _directory(tmp_path: Path, documents: int = N) -> Path:
    ids, _, index = _index("ivf")
    store = tmp_path / "store"
    store.mkdir(parents=True)
    faiss.write_index(index, str(store / "vectors.index"))
    lines = [json.dumps({"id": int(i), "document": f"doc {int(i)}"}) for i in ids[:documents]]
    (store / "ids.jsonl").write_text("\n".join(lines) + "\n")
    (store / "metadata.json").write_text(json.dumps({"model": "all-MiniLM-L6-v2"}))
    return store


def test_an_index_file_and_a_directory_restore_in_a_restore_test(tmp_path: Path) -> None:
    _, _, flat = _index("flat")
    faiss.write_index(flat, str(tmp_path / "flat.faiss"))
    backups = {
        "flat": {"format": "faiss", "path": str(tmp_path / "flat.faiss")},
        "docs": {"format": "faiss", "path": str(_directory(tmp_path))},
    }
    code, results = _run(tmp_path, backups, "ok")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")]
    fidelity = {a["id"]: a for a in results["assertions"] if a["name"] == "fidelity"}
    assert {a["status"] for a in fidelity.values()} == {"not_compared"}
    assert fidelity["fidelity[docs]"]["evidence"]["content_restored"]["vectors"] == N
    inspected = next(p for p in results["phases"] if p["name"] == "inspect the foreign backups")["data"]
    assert inspected["docs"]["index_type"] == "IndexIVFFlat (nlist 16)"
    assert inspected["docs"]["documents"] == "ids.jsonl" and inspected["docs"]["model"] == "all-MiniLM-L6-v2"


def test_lossy_damaged_and_mismatched_indexes_never_pass(tmp_path: Path) -> None:
    _, vectors = _data()
    pq = faiss.index_factory(D, "IVF8,PQ4x4")
    pq.train(vectors)
    pq.add(vectors)
    faiss.write_index(pq, str(tmp_path / "pq.faiss"))
    code, results = _run(tmp_path, {"v": {"format": "faiss", "path": str(tmp_path / "pq.faiss")}}, "pq")
    assert code == 2 and "IndexIVFPQ keeps lossy codes" in results["error"], results["error"]

    _, _, flat = _index("idmap2-ip")
    data = bytes(faiss.serialize_index(flat))
    (tmp_path / "cut.faiss").write_bytes(data[: len(data) // 3])
    code, results = _run(tmp_path, {"v": {"format": "faiss", "path": str(tmp_path / "cut.faiss")}}, "cut")
    assert code == 2 and "cut.faiss" in results["error"] and "faiss" in results["error"], results["error"]

    (tmp_path / "bogus.faiss").write_bytes(b"IxM2" + b"\xff" * 200)
    code, results = _run(tmp_path, {"v": {"format": "faiss", "path": str(tmp_path / "bogus.faiss")}}, "bogus")
    assert code == 2 and results["verdict"] == "error", results["error"]

    short = _directory(tmp_path / "short", documents=N - 10)
    code, results = _run(tmp_path, {"v": {"format": "faiss", "path": str(short)}}, "short")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert "10 vectors have no document" in restore["detail"], restore["detail"]
