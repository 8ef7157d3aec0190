"""The vector store's health check reads the files, not a loaded index, and still sees damage.

Quiet controls: healthy stores of either metric, across the probe's block boundary,
answer "ok", and the probe names the id faiss's own search names. Negative controls:
each inconsistency the check exists for makes it fail.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from engine.components import vectorstore
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from tests.conftest import DirsRuntime


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _store(root: Path, **params: Any) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(**params), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _write(comp: VectorstoreComponent, vectors: np.ndarray, ids: np.ndarray, metric: int) -> None:
    index = faiss.IndexIDMap2(faiss.IndexFlat(vectors.shape[1], metric))
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(comp.path / vectorstore.INDEX))
    meta = json.loads((comp.path / vectorstore.META).read_text())
    (comp.path / vectorstore.META).write_text(json.dumps({**meta, "count": len(ids)}))  # health compares it


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
@pytest.mark.parametrize("vectors", [1, 5, vectorstore._PROBE_ROWS + 3])
def test_a_healthy_store_is_healthy(root: Path, metric: str, vectors: int) -> None:
    comp = _store(root, vectors=vectors, dimension=8, metric=metric)
    health = comp.health()
    assert health.ok, health.detail
    assert f"{vectors} vectors, dim 8, {metric}" in health.detail


@pytest.mark.parametrize("seed", range(6))
def test_an_unnormalised_inner_product_store_is_healthy(root: Path, seed: int) -> None:
    """Quiet control: maximum-inner-product data, where the first vector is often not its own best match."""
    comp = _store(root, vectors=50, dimension=4, metric="inner_product")
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((50, 4)) * rng.uniform(0.1, 3, (50, 1))).astype(np.float32)
    ids = np.arange(50, dtype=np.int64) * 7 + 7
    _write(comp, vectors, ids, faiss.METRIC_INNER_PRODUCT)
    assert vectorstore._probe(comp.path / vectorstore.INDEX, 4, 50) is None
    health = comp.health()
    assert health.ok, health.detail


def _near_duplicate(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A normalised vector and a renormalised copy with 1e-7 noise that float32 ranks above it."""
    x = rng.standard_normal((1, 384)).astype(np.float32)
    faiss.normalize_L2(x)
    for _ in range(2000):
        y = (x + rng.standard_normal((1, 384)).astype(np.float32) * 1e-7).astype(np.float32)
        faiss.normalize_L2(y)
        if float((y @ x.T)[0, 0]) > float((x @ x.T)[0, 0]):
            return x, y
    raise AssertionError("no near-duplicate that outranks its original")


def test_a_normalised_store_with_a_near_duplicate_is_healthy(root: Path) -> None:
    """Quiet control: the same document embedded twice (cosine similarity), as real stores hold."""
    comp = _store(root, vectors=3, dimension=384, metric="inner_product")
    rng = np.random.default_rng(0)
    x, y = _near_duplicate(rng)
    z = rng.standard_normal((1, 384)).astype(np.float32)
    faiss.normalize_L2(z)
    _write(comp, np.vstack([x, y, z]), np.array([7, 14, 21], dtype=np.int64), faiss.METRIC_INNER_PRODUCT)
    _, found = faiss.read_index(str(comp.path / vectorstore.INDEX)).search(x, 1)
    assert int(found[0][0]) == 14  # faiss's own search ranks the duplicate first: the case is real
    health = comp.health()
    assert health.ok, health.detail


def test_the_index_is_never_loaded_whole(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = _store(root, vectors=100, dimension=8)

    def refuse(*_args: object) -> None:
        raise AssertionError("health loaded the whole index")

    monkeypatch.setattr(faiss, "read_index", refuse)
    assert comp.health().ok


def _meta(comp: VectorstoreComponent, **changes: Any) -> None:
    path = comp.path / vectorstore.META
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "finding"),
    [
        (lambda c: _meta(c, dimension=16), "index dimension 8 but metadata says 16"),
        (lambda c: _meta(c, metric="inner_product"), "index metric l2 but metadata says inner_product"),
        (
            lambda c: (c.path / vectorstore.IDS).write_text(
                "".join((c.path / vectorstore.IDS).read_text().splitlines(keepends=True)[:-1])
            ),
            "index holds 30 vectors but the id map has 29",
        ),
        (lambda c: (c.path / vectorstore.IDS).write_text("{not json\n"), "cannot load the store"),
        (
            lambda c: (c.path / vectorstore.INDEX).write_bytes((c.path / vectorstore.INDEX).read_bytes()[:-5]),
            "cannot load the store",
        ),
        (lambda c: (c.path / vectorstore.META).unlink(), "cannot load the store"),
        (
            lambda c: (c.path / vectorstore.META).write_text('[{"id": 7, "title": "doc"}]'),
            "metadata.json holds a JSON array, not an object with model, dimension and metric",
        ),
        (lambda c: (c.path / vectorstore.META).write_text("null"), "metadata.json holds a JSON null"),
    ],
    ids=[
        "dimension",
        "metric",
        "id-map-short",
        "id-map-garbage",
        "index-truncated",
        "no-metadata",
        "metadata-array",
        "metadata-null",
    ],
)
def test_damage_is_seen(root: Path, damage: Any, finding: str) -> None:
    comp = _store(root, vectors=30, dimension=8)
    damage(comp)
    health = comp.health()
    assert not health.ok and finding in health.detail


@pytest.mark.parametrize("row", [0, 1, vectorstore._PROBE_ROWS + 1])
def test_a_vector_that_is_not_a_number_is_named(root: Path, row: int) -> None:
    """Negative control: faiss can never return such a vector, wherever it is stored."""
    n = vectorstore._PROBE_ROWS + 5
    comp = _store(root, vectors=n, dimension=8)
    vectors = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    vectors[row, 3] = np.nan
    _write(comp, vectors, np.arange(n, dtype=np.int64) * 7 + 7, faiss.METRIC_L2)
    health = comp.health()
    assert not health.ok
    assert f"the stored vector with id {row * 7 + 7} holds NaN or infinity" in health.detail, health.detail


def test_an_empty_store_says_no_probe_ran(root: Path) -> None:
    comp = _store(root, vectors=1, dimension=8)
    _write(comp, np.zeros((0, 8), dtype=np.float32), np.zeros(0, dtype=np.int64), faiss.METRIC_L2)
    (comp.path / vectorstore.IDS).write_text("")
    health = comp.health()
    assert health.ok and health.detail.endswith(
        "0 vectors, dim 8, l2, model sentence-transformers/all-MiniLM-L6-v2; no vectors to probe"
    )


def test_a_first_vector_outranked_by_another_is_healthy(root: Path) -> None:
    """Quiet control: a longer vector in the same direction wins every inner-product search."""
    comp = _store(root, vectors=30, dimension=8, metric="inner_product")
    vectors = np.random.default_rng(2).standard_normal((30, 8)).astype(np.float32)
    vectors[29] = vectors[0] * 10  # same direction, ten times as long: a larger inner product
    _write(comp, vectors, np.arange(30, dtype=np.int64) * 7 + 7, faiss.METRIC_INNER_PRODUCT)
    _, found = faiss.read_index(str(comp.path / vectorstore.INDEX)).search(vectors[:1], 1)
    assert int(found[0][0]) == 210
    health = comp.health()
    assert health.ok and "probe query ok" in health.detail, health.detail


@pytest.mark.parametrize("metric", [faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT])
def test_a_first_vector_that_is_infinite_fails_the_probe(root: Path, metric: int) -> None:
    """Negative control: a vector no search can return is damage under either metric."""
    name = "l2" if metric == faiss.METRIC_L2 else "inner_product"
    comp = _store(root, vectors=30, dimension=8, metric=name)
    vectors = np.random.default_rng(3).standard_normal((30, 8)).astype(np.float32)
    vectors[0, 5] = np.inf
    _write(comp, vectors, np.arange(30, dtype=np.int64) * 7 + 7, metric)
    health = comp.health()
    assert not health.ok and "id 7" in health.detail, health.detail


def _rename_first_id(comp: VectorstoreComponent) -> None:
    path = comp.path / vectorstore.IDS
    lines = path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[0])
    lines[0] = json.dumps({"id": entry["id"] + 1, "document": entry["document"]}) + "\n"
    path.write_text("".join(lines))


def _duplicate_an_id(comp: VectorstoreComponent) -> None:
    """Index and id map agree line for line, but id 14 is stored twice and id 7 not at all."""
    vectors = np.random.default_rng(2).standard_normal((30, 8), dtype=np.float32)
    ids = np.arange(1, 31, dtype=np.int64) * 7
    ids[0] = ids[1]
    _write(comp, vectors, ids, faiss.METRIC_L2)
    lines = [json.dumps({"id": int(i), "document": f"doc {int(i)}"}) + "\n" for i in ids]
    (comp.path / vectorstore.IDS).write_text("".join(lines))


@pytest.mark.parametrize(
    ("damage", "finding"),
    [
        (_rename_first_id, "the id map names 1 ids the index does not hold, and none for 1 of the index's ids"),
        (_duplicate_an_id, "index holds 30 vectors under only 29 distinct ids"),
    ],
    ids=["id-map-names-another-id", "index-id-twice"],
)
def test_an_id_map_that_does_not_name_the_index_ids_is_seen(root: Path, damage: Any, finding: str) -> None:
    """A search answers with index ids, looked up in the id map: health counted the map's lines only (review)."""
    comp = _store(root, vectors=30, dimension=8)
    assert comp.health().ok  # quiet control: the seeded store
    damage(comp)
    health = comp.health()
    assert not health.ok and finding in health.detail, health.detail
