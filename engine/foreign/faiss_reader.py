"""Reading a FAISS index another program wrote: run in a child process by ``faiss_index``.

Why a child: faiss trusts the lengths stored in an index file. A damaged or hostile one
can make it allocate without bound or crash with a segmentation fault; in drproof's own
process that would end the run without a report and leave its sandbox servers running.
In a child it ends the child, and the parent reports a failed read. A child shares the
host's memory, though: a 93-byte index claiming a 2 GiB vector made it allocate 2 GiB, and
the kernel's OOM killer may then pick any process. So the child bounds its own data size
(``RLIMIT_DATA``) to a multiple of the files' size plus a floor for faiss and numpy
themselves: a claim beyond it fails as an allocation error, reported as a failed read.

Two commands, each printing one JSON object on stdout (``{"error": ...}`` and exit 1 on a
refusal): ``inspect INDEX`` describes the index; ``convert INDEX OUT MODEL [DOCUMENTS]``
writes drproof's vector store layout into the empty directory OUT: ``index.faiss`` (an
IndexIDMap2 over a flat index holding the same vectors under the same ids, in id order),
``ids.jsonl`` and ``metadata.json``.

Only index types that keep the vectors themselves can be converted: flat indexes, an
HNSW graph over a flat storage, and IVF with flat lists, alone or under an id map.
Product or scalar quantizers keep lossy codes: the vectors they were built from are gone,
and the refusal says so, naming the type.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

_LOSSY = ("PQ", "SQ", "ScalarQuantizer", "LSH", "Residual", "Lattice", "AdditiveQuantizer", "RaBitQ")
METRICS = {0: "inner_product", 1: "l2"}


class Refused(Exception):
    """The index cannot be turned into drproof's layout; the message says why."""


def _faiss() -> Any:
    import faiss

    return faiss


def describe(index: Any) -> str:
    """The index's type as a chain of faiss class names: "IndexIDMap2 over IndexIVFFlat (nlist 16)"."""
    faiss = _faiss()
    names = []
    current = faiss.downcast_index(index)
    while current is not None:
        label = type(current).__name__
        if isinstance(current, faiss.IndexIVF):
            label += f" (nlist {current.nlist})"
        names.append(label)
        inner = getattr(current, "index", None) if isinstance(current, faiss.IndexIDMap) else None
        current = faiss.downcast_index(inner) if inner is not None else None
    return " over ".join(names)


def _refusal(name: str, chain: str) -> Refused:
    if any(mark in name for mark in _LOSSY):
        return Refused(
            f"the index is {chain}: {name} keeps lossy codes, from which the vectors it was built from cannot be "
            "reconstructed; restore-test the vectors' source instead, or keep a flat copy of them"
        )
    return Refused(
        f"the index is {chain}: drproof reads vectors from Flat, HNSWFlat and IVFFlat indexes (alone or under "
        f"IDMap/IDMap2), not from {name}"
    )


def vectors(index: Any) -> tuple[Any, Any]:
    """(ids, vectors) of every vector the index holds: int64 ids, float32 rows."""
    import numpy as np

    faiss = _faiss()
    outer = faiss.downcast_index(index)
    chain = describe(index)
    id_map = None
    inner = outer
    if isinstance(outer, faiss.IndexIDMap):
        id_map = faiss.vector_to_array(outer.id_map).astype(np.int64)
        inner = faiss.downcast_index(outer.index)
    ids, rows = _inner_vectors(inner, chain)
    if id_map is not None:
        if len(ids) and (ids.min() < 0 or ids.max() >= len(id_map)):
            raise Refused(f"the index is {chain}: its id map has {len(id_map)} entries for positions up to {ids.max()}")
        ids = id_map[ids]
    return ids, rows


def _inner_vectors(inner: Any, chain: str) -> tuple[Any, Any]:
    import numpy as np

    faiss = _faiss()
    name = type(inner).__name__
    if isinstance(inner, faiss.IndexFlat):
        return np.arange(inner.ntotal, dtype=np.int64), inner.reconstruct_n(0, inner.ntotal)
    if isinstance(inner, faiss.IndexHNSW):
        storage = faiss.downcast_index(inner.storage)
        if not isinstance(storage, faiss.IndexFlat):
            raise _refusal(f"{name} over {type(storage).__name__}", chain)
        return np.arange(storage.ntotal, dtype=np.int64), storage.reconstruct_n(0, storage.ntotal)
    if name == "IndexIVFFlat":  # not its subclasses: IVFFlatDedup keeps duplicates elsewhere
        return _ivf_lists(inner)
    raise _refusal(name, chain)


def _ivf_lists(ivf: Any) -> tuple[Any, Any]:
    """Every inverted list's ids and codes; a flat IVF's codes are the float32 vectors themselves."""
    import numpy as np

    faiss = _faiss()
    lists = ivf.invlists
    if lists.code_size != ivf.d * 4:
        raise Refused(f"IndexIVFFlat lists of {lists.code_size}-byte codes for dimension {ivf.d}: not float32 rows")
    all_ids, all_rows = [], []
    for number in range(ivf.nlist):
        n = lists.list_size(number)
        if n == 0:
            continue
        all_ids.append(faiss.rev_swig_ptr(lists.get_ids(number), n).astype(np.int64))
        codes = faiss.rev_swig_ptr(lists.get_codes(number), n * lists.code_size).copy()
        all_rows.append(codes.view(np.float32).reshape(n, ivf.d))
    if not all_ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, ivf.d), dtype=np.float32)
    return np.concatenate(all_ids), np.concatenate(all_rows)


def _layers(index: Any) -> list[Any]:
    """The index and those it searches through: an id map's inner index, an HNSW graph's storage."""
    faiss = _faiss()
    layers = [faiss.downcast_index(index)]
    while True:
        current = layers[-1]
        if isinstance(current, faiss.IndexIDMap):
            layers.append(faiss.downcast_index(current.index))
        elif isinstance(current, faiss.IndexHNSW) and current.storage is not None:
            layers.append(faiss.downcast_index(current.storage))
        else:
            return layers


def _same_throughout(index: Any, chain: str) -> None:
    """Refuse an index whose layers disagree on dimension or metric.

    Why: faiss searches with the innermost index's metric, and each header states its
    own. Found by review: an IndexIDMap2 over an IndexFlatIP whose id map's header said
    L2 (one changed field) was converted into an L2 store, healthy, and its restore test
    passed, although the original searched by inner product.
    """
    layers = _layers(index)
    dims = {int(layer.d) for layer in layers}
    metrics = {int(layer.metric_type) for layer in layers}
    if len(dims) > 1 or len(metrics) > 1:
        stated = ", ".join(f"{type(x).__name__} d={int(x.d)} metric {int(x.metric_type)}" for x in layers)
        raise Refused(f"the index is {chain}, whose layers disagree ({stated}): the file is damaged")


def _facts(index: Any) -> dict[str, Any]:
    chain = describe(index)
    _same_throughout(index, chain)
    metric = METRICS.get(int(index.metric_type))
    if metric is None:
        raise Refused(f"the index is {chain} with faiss metric {index.metric_type}; drproof stores L2 or inner product")
    return {"index_type": chain, "dimension": int(index.d), "vectors": int(index.ntotal), "metric": metric}


def _all_vectors(index: Any, facts: dict[str, Any]) -> tuple[Any, Any]:
    ids, rows = vectors(index)
    if len(ids) != facts["vectors"]:
        raise Refused(
            f"the index is {facts['index_type']}: it says it holds {facts['vectors']} vectors, {len(ids)} found"
        )
    return ids, rows


def inspect(path: Path) -> dict[str, Any]:
    """The index's type, dimension, size and metric; refused if its vectors cannot be read."""
    index = _faiss().read_index(str(path))
    facts = _facts(index)
    _all_vectors(index, facts)  # before any sandbox starts
    return facts


def convert(path: Path, out: Path, model: str, documents: Path | None) -> dict[str, Any]:
    """Write the index's vectors, under their ids, as drproof's store into ``out``."""
    import numpy as np

    faiss = _faiss()
    index = faiss.read_index(str(path))
    facts = _facts(index)
    ids, rows = _all_vectors(index, facts)
    order = np.argsort(ids, kind="stable")
    ids, rows = ids[order], np.ascontiguousarray(rows[order], dtype=np.float32)
    if len(ids) > 1 and bool((ids[1:] == ids[:-1]).any()):
        raise Refused(f"the index holds {len(ids)} vectors under only {len(np.unique(ids))} distinct ids")
    names = _documents(documents, ids)
    store = faiss.IndexIDMap2(faiss.IndexFlat(facts["dimension"], int(index.metric_type)))
    store.add_with_ids(rows, ids)
    faiss.write_index(store, str(out / "index.faiss"))
    with open(out / "ids.jsonl", "w", encoding="utf-8") as fh:
        for i in ids.tolist():
            fh.write(json.dumps({"id": i, "document": names.get(i, str(i))}) + "\n")
    meta = {
        "model": model,
        "dimension": facts["dimension"],
        "metric": facts["metric"],
        "count": len(ids),
        "index_type": "IDMap2,Flat",
        "converted_from": facts["index_type"],
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**facts, "documents": len(names)}


def _documents(path: Path | None, ids: Any) -> dict[int, str]:
    """The document of each id from a JSON-lines map ({"id": ..., "document": ...}); it must name exactly the ids."""
    if path is None:
        return {}
    names: dict[int, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key, document = int(entry["id"]), str(entry["document"])
            except (ValueError, KeyError, TypeError) as exc:
                raise Refused(f"{path.name} line {number}: not an id map entry ({exc})") from None
            if key in names:
                # Found by review: the last line won in silence, so which document a search
                # answer stands for was the map's order, not its content.
                raise Refused(
                    f"{path.name} line {number}: id {key} is named a second time; an id map names each id once, "
                    "so which document a search answer stands for is not left to the order of its lines"
                )
            names[key] = document
    held = {int(i) for i in ids.tolist()}
    missing, extra = held - set(names), set(names) - held
    if missing or extra:
        raise Refused(
            f"{path.name} names {len(names)} documents, the index {len(held)} vectors: {len(missing)} vectors have no "
            f"document and {len(extra)} documents no vector"
        )
    return names


MEMORY_FLOOR = 1 << 30  # faiss, numpy and their libraries, with room for a small index
MEMORY_PER_BYTE = 8  # the index read, its vectors reconstructed, the store written: a few copies


def bound_memory(files: list[Path]) -> int:
    """Limit this process's data size to what reading ``files`` can need; the limit set."""
    size = sum(p.stat().st_size for p in files if p.is_file())
    limit = MEMORY_FLOOR + MEMORY_PER_BYTE * size
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return limit


def main(argv: list[str]) -> int:
    try:
        bound_memory([Path(a) for a in (argv[1:2] + argv[4:5])])  # the index, and the id map of a convert
        if argv[:1] == ["inspect"] and len(argv) == 2:
            result = inspect(Path(argv[1]))
        elif argv[:1] == ["convert"] and len(argv) in (4, 5):
            result = convert(Path(argv[1]), Path(argv[2]), argv[3], Path(argv[4]) if len(argv) == 5 else None)
        else:
            print(json.dumps({"error": f"usage: inspect INDEX | convert INDEX OUT MODEL [DOCUMENTS], not {argv}"}))
            return 2
    except Refused as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except (RuntimeError, MemoryError, OSError) as exc:  # faiss reports a bad file as RuntimeError
        text = " ".join(str(exc).split())[:600]
        print(json.dumps({"error": f"faiss cannot read it: {type(exc).__name__}: {text}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
