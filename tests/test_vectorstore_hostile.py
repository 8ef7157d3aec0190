"""A vector store's restore refuses what it cannot prove, before anything live changes (review of the kind).

Negative controls: a set whose metadata.json nests its JSON 200,000 deep is refused with a
domain error (it was a RecursionError traceback); a set whose metadata.json claims the
expected dimension and metric over an index of another is refused before the swap (it
replaced a healthy live store, found unhealthy only afterwards); a fingerprint that covers
none of the vectors a store holds is refused (a scheme 1 fingerprint of a store keyed by
63-bit hashes compared as a match whatever its vectors); a set holding one of the store's
files as a FIFO is refused (the restore waited for ever for a writer). Quiet controls: the
genuine set restores, and a store with hashed ids is fingerprinted whole by the current scheme.
"""

from __future__ import annotations

import contextlib
import grp
import io
import json
import os
import pwd
import tarfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from engine import backup as engine_backup
from engine.components.base import ArtifactSource
from engine.components.vectorstore import (
    IDS,
    INDEX,
    META,
    WORKLOAD_FILE,
    WORKLOAD_HEADER,
    VectorstoreComponent,
    VectorstoreParams,
)
from engine.errors import ComponentError, DrproofError
from engine.fingerprint import Fingerprint
from engine.manifest import ArtifactRecord
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _store(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=200, dimension=8), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _tree(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _set(files: Mapping[str, bytes | None], fingerprint: Fingerprint) -> ArtifactSource:
    """A backup set serving a store.tar of ``files`` (as a repository writer could have made it); None: a FIFO."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            # Owned as drproof's writer records them (by name too): a set of scheme 4 is proven
            # with the archive's owners, so a nameless owner would differ from the live files'.
            info.uid, info.gid = os.getuid(), os.getgid()
            info.uname, info.gname = pwd.getpwuid(info.uid).pw_name, grp.getgrgid(info.gid).gr_name
            if data is None:
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    @contextlib.contextmanager
    def opener(record: Any, whole: bool = True) -> Iterator[io.BytesIO]:
        yield io.BytesIO(buf.getvalue())

    raw = buf.getvalue()
    record = ArtifactRecord(
        component="vs", name="store.tar", path="vs/store.tar.zst", size=len(raw), sha256="0" * 64, raw_size=len(raw)
    )
    return ArtifactSource({"store.tar": record}, opener, fingerprint=fingerprint)


def test_a_set_whose_metadata_nests_too_deeply_is_refused_by_name(tmp_path: Path) -> None:
    live = _store(tmp_path)
    fp, genuine = live.fingerprint(), _tree(live.path)
    with pytest.raises(ComponentError, match=r"metadata.json nests its JSON too deeply.*live store was left untouched"):
        live.restore(_set({**genuine, META: b"[" * 200_000}, fp))
    assert _tree(live.path) == genuine
    assert [p.name for p in tmp_path.iterdir()] == ["vec"]  # no staging left behind
    live.restore(_set(genuine, fp))  # quiet control: the genuine files restore
    assert live.health().ok and _tree(live.path) == genuine


@pytest.mark.parametrize("name", [META, INDEX, IDS, WORKLOAD_FILE])
def test_a_set_holding_a_fifo_is_refused_without_waiting(tmp_path: Path, name: str) -> None:
    live = _store(tmp_path / "live")
    fp, genuine = live.fingerprint(), _tree(live.path)
    failed: list[BaseException] = []

    def restore() -> None:
        try:
            live.restore(_set({**genuine, name: None}, fp))
        except BaseException as exc:  # the thread's outcome, judged below
            failed.append(exc)

    worker = threading.Thread(target=restore, daemon=True)
    worker.start()
    worker.join(timeout=30)
    hung = worker.is_alive()
    if hung:  # release the reader the old code left waiting on the FIFO, so the test ends
        for fifo in tmp_path.rglob(name):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
    assert not hung, f"the restore waited on a FIFO {name} for a writer"
    assert len(failed) == 1 and isinstance(failed[0], DrproofError), failed
    assert _tree(live.path) == genuine


def _write_index(path: Path, dimension: int, flat: Any) -> None:
    index = faiss.IndexIDMap2(flat(dimension))
    vectors = np.random.default_rng(5).standard_normal((200, dimension), dtype=np.float32)
    index.add_with_ids(vectors, np.arange(1, 201, dtype=np.int64) * 7)
    faiss.write_index(index, str(path / INDEX))


@pytest.mark.parametrize(
    ("dimension", "flat", "reason"),
    [
        (16, faiss.IndexFlatL2, "an index of dimension 16 (expected 8)"),
        (8, faiss.IndexFlatIP, "an index of metric 'inner_product' (expected 'l2')"),
        (8, faiss.IndexFlatL2, None),  # quiet control: the index agrees with its metadata
    ],
)
def test_an_index_that_contradicts_the_expected_dimension_or_metric_is_refused_before_the_swap(
    tmp_path: Path, dimension: int, flat: Any, reason: str | None
) -> None:
    source = _store(tmp_path / "a")
    _write_index(source.path, dimension, flat)  # metadata.json still says dimension 8, l2
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [source])
    live = _store(tmp_path / "b")
    before = _tree(live.path)
    if reason is None:
        engine_backup.restore(repo, manifest, live)
        assert live.health().ok and _tree(live.path) == _tree(source.path)
        return
    with pytest.raises(ComponentError, match="refusing to restore") as exc:
        engine_backup.restore(repo, manifest, live)
    assert reason in str(exc.value) and "live store was left untouched" in str(exc.value)
    assert _tree(live.path) == before and live.health().ok


def _hashed_ids_store(root: Path) -> tuple[VectorstoreComponent, Any]:
    """A store keyed by 63-bit hashes of its documents, as many applications key theirs."""
    comp = _store(root)
    rng = np.random.default_rng(1)
    ids = np.sort(rng.integers(1 << 50, 1 << 62, size=200)).astype(np.int64)
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(8))
    index.add_with_ids(rng.standard_normal((200, 8), dtype=np.float32), ids)
    faiss.write_index(index, str(comp.path / INDEX))
    lines = [json.dumps({"id": int(i), "document": f"doc {int(i)}"}) for i in ids]
    (comp.path / IDS).write_text("\n".join(lines) + "\n")
    assert comp.health().ok
    return comp, ids


def test_a_fingerprint_covering_none_of_the_stored_vectors_is_refused(tmp_path: Path) -> None:
    comp, ids = _hashed_ids_store(tmp_path)
    current = comp.fingerprint()  # quiet control: the current scheme covers every vector
    assert sum(p.count for n, p in current.parts.items() if n.startswith("vectors #")) == 200
    with pytest.raises(ComponentError, match=r"covers none of the 200 vectors.*scheme 1"):
        comp.legacy_fingerprint("1")
    (comp.path / WORKLOAD_FILE).write_text(WORKLOAD_HEADER + "".join(f"{int(i)}\n" for i in ids))  # as marked
    with pytest.raises(ComponentError, match=rf"covers none of the 200 vectors.*{WORKLOAD_FILE} records every one"):
        comp.fingerprint()


def test_a_scheme_1_fingerprint_still_covers_the_ids_it_saw(tmp_path: Path) -> None:
    """Quiet control: a store with small ids keeps its scheme 1 fingerprint (what old backups compare with)."""
    comp = _store(tmp_path)
    legacy = comp.legacy_fingerprint("1")
    assert legacy is not None
    assert sum(p.count for n, p in legacy.parts.items() if n.startswith("vectors #")) == 200


def test_a_scheme_1_set_of_a_hashed_id_store_is_not_restored_unproven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the set's vectors all differ from those its scheme 1 fingerprint saw, and it was restored."""
    source, _ = _hashed_ids_store(tmp_path / "src")
    with monkeypatch.context() as m:  # the fingerprint as an earlier drproof recorded it
        m.setattr(
            VectorstoreComponent, "_checked", lambda self, parts, expected, scheme, held=0: self._fp(parts, scheme)
        )
        recorded = source._fingerprint(scheme="1")
    other = np.random.default_rng(9).standard_normal((200, 8), dtype=np.float32)
    index = faiss.read_index(str(source.path / INDEX))
    rewritten = faiss.IndexIDMap2(faiss.IndexFlatL2(8))
    rewritten.add_with_ids(other, faiss.vector_to_array(index.id_map).astype(np.int64))
    faiss.write_index(rewritten, str(source.path / INDEX))
    live = _store(tmp_path / "live")
    before = _tree(live.path)
    with pytest.raises(ComponentError, match="covers none of the 200 vectors"):
        live.restore(_set(_tree(source.path), recorded))
    assert _tree(live.path) == before
