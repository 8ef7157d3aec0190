"""A vector store's backup holds a fingerprint that can prove its restore, or it is refused.

Negative controls: stores drproof cannot read (other index types, damaged indexes) are
refused at backup with the reason and what to do, and nothing is published. Quiet
control: the supported layout, of either metric, is backed up and restored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from engine import backup as engine_backup
from engine.components import vectorstore
from engine.components.vectorstore import INDEX, VectorstoreComponent, VectorstoreParams
from engine.errors import ComponentError
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

D, N = 8, 300


def _store(root: Path, **params: Any) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=N, dimension=D, **params), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _rewrite(comp: VectorstoreComponent, build: Callable[[], Any]) -> None:
    """Replace the store's index with ``build()`` holding the same vectors and ids."""
    vectors = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    ids = np.arange(1, N + 1, dtype=np.int64) * 7
    index = build()
    if not index.is_trained:
        index.train(vectors)
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(comp.path / INDEX))


def _truncate(comp: VectorstoreComponent) -> None:
    path = comp.path / INDEX
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES: list[tuple[str, Callable[[VectorstoreComponent], None], str]] = [
    (
        "idmap-flat",
        lambda c: _rewrite(c, lambda: faiss.IndexIDMap(faiss.IndexFlatL2(D))),
        "index.faiss is IndexIDMap over IndexFlatL2, not an IndexIDMap2 over a flat index",
    ),
    (
        "ivf",
        lambda c: _rewrite(c, lambda: faiss.IndexIVFFlat(faiss.IndexFlatL2(D), D, 4)),
        "index.faiss is IndexIVFFlat, not an IndexIDMap2",
    ),
    (
        "idmap2-hnsw",
        lambda c: _rewrite(c, lambda: faiss.IndexIDMap2(faiss.IndexHNSWFlat(D, 8))),
        "index.faiss is an IndexIDMap2 over IndexHNSWFlat, not over a flat index",
    ),
    (
        "idmap2-sq8",
        lambda c: _rewrite(c, lambda: faiss.IndexIDMap2(faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_8bit))),
        "index.faiss is an IndexIDMap2 over IndexScalarQuantizer",
    ),
    ("truncated", _truncate, "the live store is damaged, and a backup of it would preserve the damage"),
]


@pytest.mark.parametrize(("damage", "reason"), [(d, r) for _, d, r in CASES], ids=[c[0] for c in CASES])
def test_a_store_drproof_cannot_read_is_refused_at_backup(tmp_path: Path, damage: Any, reason: str) -> None:
    comp = _store(tmp_path)
    damage(comp)
    repo = LocalRepository(tmp_path / "repo")
    with pytest.raises(ComponentError, match="cannot back up") as exc:
        engine_backup.backup(repo, [comp])
    assert reason in str(exc.value) and "nothing was published" in str(exc.value)
    assert repo.list() == []


def test_an_unsupported_layout_says_what_to_do(tmp_path: Path) -> None:
    comp = _store(tmp_path)
    _rewrite(comp, lambda: faiss.IndexIDMap(faiss.IndexFlatL2(D)))
    with pytest.raises(ComponentError) as exc:
        engine_backup.backup(LocalRepository(tmp_path / "repo"), [comp])
    assert "convert the store to that layout, or back the directory up as a `volumes` component" in str(exc.value)


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_a_supported_store_is_backed_up_and_restored(tmp_path: Path, metric: str) -> None:
    """Quiet control: the layout drproof reads, of either metric."""
    comp = _store(tmp_path, metric=metric)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    assert [m.id for m in repo.list()] == [manifest.id]
    assert not any(p.digest.startswith("unreadable") for p in manifest.component("vec").fingerprint.parts.values())
    (comp.path / INDEX).unlink()
    engine_backup.restore(repo, manifest, comp)
    assert comp.health().ok


@pytest.mark.parametrize("name", [INDEX, "metadata.json", "ids.jsonl"])
def test_a_symlinked_store_file_is_refused_at_backup_and_in_health(tmp_path: Path, name: str) -> None:
    """The archive would hold the link, so a fingerprint read through it claimed vectors the backup lacks."""
    comp = _store(tmp_path)
    elsewhere = tmp_path / "bigdisk"
    elsewhere.mkdir()
    (comp.path / name).rename(elsewhere / name)
    (comp.path / name).symlink_to(elsewhere / name)
    repo = LocalRepository(tmp_path / "repo")
    with pytest.raises(ComponentError, match=f"{name} is a symbolic link \\(to {elsewhere / name}\\)") as exc:
        engine_backup.backup(repo, [comp])
    assert "point the component at the directory that holds the files" in str(exc.value)
    assert repo.list() == []
    health = comp.health()
    assert not health.ok and f"{name} is a symbolic link" in health.detail
    assert comp.fingerprint().parts["vectors"].digest.startswith("unreadable")


def test_a_store_reached_through_a_linked_directory_is_backed_up(tmp_path: Path) -> None:
    """Quiet control: only the store's own files must not be links; its directory may be one."""
    comp = _store(tmp_path)
    link = tmp_path / "through-link"
    link.symlink_to(comp.path)
    comp.path = link
    manifest = engine_backup.backup(LocalRepository(tmp_path / "repo"), [comp])
    assert (
        sum(p.count for n, p in manifest.component("vec").fingerprint.parts.items() if n.startswith("vectors #")) == N
    )
    assert comp.health().ok


class _AppWriter:
    """An application adding documents the careful way: index to a temporary file, rename, id map line."""

    def __init__(self, comp: VectorstoreComponent) -> None:
        self.comp = comp
        self.index = faiss.read_index(str(comp.path / INDEX))
        self.writes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(9)
        while not self.stop.is_set():
            vid = 10_000_000 + self.writes
            self.index.add_with_ids(rng.standard_normal((1, D), dtype=np.float32), np.array([vid], dtype=np.int64))
            tmp = self.comp.path / ".index.tmp"
            faiss.write_index(self.index, str(tmp))
            os.replace(tmp, self.comp.path / INDEX)
            with open(self.comp.path / "ids.jsonl", "a") as fh:
                fh.write(json.dumps({"id": vid, "document": f"app-{vid}"}) + "\n")
            self.writes += 1
            time.sleep(0.001)

    def wait_for(self, writes: int) -> None:
        deadline = time.monotonic() + 10
        while self.writes < writes and time.monotonic() < deadline:
            time.sleep(0.001)


def test_a_store_written_during_its_backup_is_refused_not_published_unrestorable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application writes between the fingerprint's read and the archive's: refused, nothing published."""
    comp = _store(tmp_path)
    app = _AppWriter(comp)
    real_write_tar = vectorstore.write_tar

    def write_tar_after_a_write(*args: Any, **kwargs: Any) -> int:
        # The fingerprint was taken on a quiet store; the app writes twice, then the archive
        # reads. (Writing all along made the test depend on timing: under load the
        # fingerprint itself could catch the index and the id map from different writes.)
        app.thread.start()
        app.wait_for(2)
        app.stop.set()
        app.thread.join()
        return real_write_tar(*args, **kwargs)

    monkeypatch.setattr(vectorstore, "write_tar", write_tar_after_a_write)
    repo = LocalRepository(tmp_path / "repo")
    try:
        with pytest.raises(ComponentError, match=r"the store changed while it was archived \((index.faiss|ids.jsonl)"):
            engine_backup.backup(repo, [comp])
    finally:
        app.stop.set()
        if app.thread.is_alive():
            app.thread.join()
    assert app.writes >= 2
    assert repo.list() == []


def test_a_store_backed_up_while_quiet_restores(tmp_path: Path) -> None:
    """Quiet control: the same application, paused during the backup: published and restored elsewhere."""
    comp = _store(tmp_path)
    app = _AppWriter(comp)
    app.thread.start()
    app.wait_for(5)
    app.stop.set()
    app.thread.join()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    target = VectorstoreComponent("vec", VectorstoreParams(vectors=N, dimension=D), DirsRuntime(tmp_path / "other"))  # type: ignore[arg-type]
    target.provision()
    engine_backup.restore(repo, manifest, target)
    assert target.fingerprint().digest == manifest.component("vec").fingerprint.digest
