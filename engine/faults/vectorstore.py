"""Faults that damage a FAISS vector store in ways bit flips and deletions do not."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.components.vectorstore import INDEX, META, VectorstoreComponent, check_index_layout, read_metadata
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams
from engine.lazy import lazy

faiss = lazy("faiss")  # loaded on first use: see engine/lazy.py
np = lazy("numpy")


def _store(ctx: FaultContext) -> Path:
    assert isinstance(ctx.component, VectorstoreComponent)
    return ctx.component.path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomically(path: Path, write: Any) -> None:
    """Write next to ``path`` and rename over it, as a rebuilding job would."""
    tmp = path.with_name(path.name + ".drproof-tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class TruncateIndexParams(FaultParams):
    keep: float = Field(
        default=0.5, ge=0, lt=1, description="Share of the index file's bytes that survive; 0 empties the file."
    )


class TruncateIndex(Fault):
    """An index write cut short: a full disk, or a copy killed halfway.

    The file keeps its name and a plausible header, which is what makes a truncated
    index dangerous: a naive loader trusts the lengths in the header and either fails
    deep inside faiss or allocates memory for vectors that are not there.
    """

    name: ClassVar[str] = "truncate_index"
    targets: ClassVar[frozenset[str]] = frozenset({VectorstoreComponent.name})
    Params: ClassVar[type[FaultParams]] = TruncateIndexParams
    description: ClassVar[str] = "Cut the FAISS index file to a share of its size, as an interrupted write would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, TruncateIndexParams)
        path = _store(ctx) / INDEX
        try:
            before = path.stat().st_size
        except FileNotFoundError:
            raise FaultError(f"{self.name}: {INDEX} does not exist in the store") from None
        if before == 0:
            raise FaultError(f"{self.name}: {INDEX} is already empty, so there is nothing to cut")
        target = int(before * p.keep)
        os.truncate(path, target)
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        after = path.stat().st_size
        if after != target:
            raise FaultError(f"{self.name}: {INDEX} is {after} bytes after truncating it to {target}")
        return {"file": INDEX, "bytes_before": before, "bytes_after": after, "bytes_cut": before - after}


class SwapModelParams(FaultParams):
    model: str = Field(
        default="intfloat/e5-small-v2", description="Embedding model the store is re-embedded with and then claims."
    )
    dimension: int | None = Field(
        default=None, ge=1, le=65536, description="Dimension of the new embeddings; default: the store's current one."
    )


class SwapModel(Fault):
    """Someone re-embeds the corpus with another model and overwrites the live store.

    The result is a perfectly healthy store: index, id map and metadata agree with each
    other, every probe query finds its vector. It is still wrong: queries embedded with
    the application's model now search vectors of another model and return confident
    nonsense. Only a comparison with what was backed up shows it, and only a restore of
    the original files undoes it.
    """

    name: ClassVar[str] = "swap_model"
    targets: ClassVar[frozenset[str]] = frozenset({VectorstoreComponent.name})
    Params: ClassVar[type[FaultParams]] = SwapModelParams
    description: ClassVar[str] = (
        "Re-embed every vector with another model (and optionally dimension) and record that model in the "
        "metadata: a consistent, healthy, wrong store."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, SwapModelParams)
        root = _store(ctx)
        index_path, meta_path = root / INDEX, root / META
        try:
            meta = read_metadata(root)  # an object, or a ValueError: found by review, a JSON list was a traceback
            check_index_layout(index_path)
            index: Any = faiss.read_index(str(index_path))  # an IndexIDMap2, whose id_map faiss's stubs omit
        except (OSError, ValueError, RuntimeError) as exc:
            raise FaultError(f"{self.name}: the store cannot be loaded, so it cannot be re-embedded: {exc}") from exc
        old_model, old_dimension = meta.get("model"), int(index.d)
        dimension = p.dimension or old_dimension
        if p.model == old_model and dimension == old_dimension:
            raise FaultError(
                f"{self.name}: the store already uses {old_model!r} with dimension {old_dimension}; "
                "name another model or dimension"
            )
        digests = {INDEX: _sha256(index_path), META: _sha256(meta_path)}
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        vectors = np.random.default_rng(ctx.rng.getrandbits(64)).standard_normal(
            (len(ids), dimension), dtype=np.float32
        )
        flat: Any
        if index.metric_type == faiss.METRIC_INNER_PRODUCT:
            faiss.normalize_L2(vectors)
            flat = faiss.IndexFlatIP(dimension)
        else:
            flat = faiss.IndexFlatL2(dimension)
        replacement = faiss.IndexIDMap2(flat)
        if len(ids):
            replacement.add_with_ids(vectors, ids)
        _write_atomically(index_path, lambda tmp: faiss.write_index(replacement, str(tmp)))
        meta.update(model=p.model, dimension=dimension)
        _write_atomically(
            meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        )
        self._verify(root, p.model, dimension, len(ids), digests)
        return {
            "model_before": old_model,
            "model_after": p.model,
            "dimension_before": old_dimension,
            "dimension_after": dimension,
            "vectors_reembedded": len(ids),
            "files_rewritten": [INDEX, META],
        }

    def _verify(self, root: Path, model: str, dimension: int, count: int, digests: dict[str, str]) -> None:
        """Read the store back: it must claim the new model and hold new vectors for every id."""
        meta = read_metadata(root)
        check_index_layout(root / INDEX)
        index = faiss.read_index(str(root / INDEX))
        problems = []
        if meta.get("model") != model or meta.get("dimension") != dimension:
            problems.append(f"metadata says {meta.get('model')!r}/{meta.get('dimension')}")
        if index.d != dimension or index.ntotal != count:
            problems.append(f"index holds {index.ntotal} vectors of dimension {index.d}")
        unchanged = [name for name, digest in digests.items() if _sha256(root / name) == digest]
        if unchanged:
            problems.append(f"unchanged: {', '.join(unchanged)}")
        if problems:
            raise FaultError(f"{self.name}: the store was not re-embedded as intended: {'; '.join(problems)}")
