"""A vector store built for another model, dimension or metric is never restored over a live one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.errors import ComponentError
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _store(root: Path, name: str, **params: Any) -> VectorstoreComponent:
    comp = VectorstoreComponent(name, VectorstoreParams(vectors=200, **params), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    return comp


@pytest.mark.parametrize(
    ("live", "reason"),
    [
        ({"dimension": 16}, "dimension 8 (expected 16)"),
        (
            {"dimension": 8, "model": "other/model"},
            "model 'sentence-transformers/all-MiniLM-L6-v2' (expected 'other/model')",
        ),
        ({"dimension": 8, "metric": "inner_product"}, "metric 'l2' (expected 'inner_product')"),
    ],
)
def test_mismatched_store_is_refused_and_live_data_untouched(live: dict[str, Any], reason: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        source = _store(root / "a", "vec", dimension=8)
        source.seed()
        repo = LocalRepository(root / "repo")
        manifest = engine_backup.backup(repo, [source])
        target = _store(root / "b", "vec", **live)
        target.seed()
        before = target.fingerprint()
        with pytest.raises(ComponentError, match="refusing to restore") as exc:
            engine_backup.restore(repo, manifest, target)
        assert reason in str(exc.value)
        assert target.fingerprint() == before
        assert not list(target.path.parent.glob("*.drproof-restoring"))


def test_matching_store_restores() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        source = _store(root / "a", "vec", dimension=8)
        source.seed()
        repo = LocalRepository(root / "repo")
        manifest = engine_backup.backup(repo, [source])
        (source.path / "index.faiss").unlink()
        engine_backup.restore(repo, manifest, source)
        assert source.health().ok


def test_a_backup_whose_metadata_is_not_an_object_is_refused_by_name(tmp_path: Path) -> None:
    """A per-document list in metadata.json: a domain error naming the file, never an AttributeError."""
    target = _store(tmp_path / "live", "vec", dimension=8)
    target.seed()
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "metadata.json").write_text('[{"id": 7, "title": "doc"}]')
    with pytest.raises(ComponentError, match=r"staged/metadata.json holds a JSON array, not an object"):
        target._compatible(staged)
    (staged / "metadata.json").write_text(
        '{"model": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 8, "metric": "l2"}'
    )
    target._compatible(staged)  # quiet control: the same file as an object passes
