"""A backup of a source that fails its health check is kept, and is a finding of its set.

Found by review (review-vector, "not fixed"): a vector store holding a NaN vector, or whose
metadata.json disagrees with its index, was backed up without a word; restoring that set
faithfully swapped the damage in, and only then was it "restored but not healthy". The set
is kept (it is the truth of the moment), its manifest records the failure, and ``limits``
(what ``drproof backup`` exits 1 with, ``recovery list`` marks, a drill's backup step fails
on) names it. Quiet control: a healthy store backs up with no finding.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components import vectorstore
from engine.components.base import UNHEALTHY_AT_BACKUP, Health
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.vectorstore import IDS, INDEX, META, VectorstoreComponent, VectorstoreParams
from engine.manifest import Manifest
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

D, N = 8, 300


def _store(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=N, dimension=D), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _nan(comp: VectorstoreComponent, row: int = 10) -> None:
    with open(comp.path / INDEX, "r+b") as fh:
        fh.seek(vectorstore._HEADER.size + row * D * 4 + 12)
        fh.write(struct.pack("<f", float("nan")))


def _inf(comp: VectorstoreComponent) -> None:
    with open(comp.path / INDEX, "r+b") as fh:
        fh.seek(vectorstore._HEADER.size + (N - 1) * D * 4)
        fh.write(struct.pack("<f", float("-inf")))


def _meta(**changes: object) -> Callable[[VectorstoreComponent], None]:
    def change(comp: VectorstoreComponent) -> None:
        meta = json.loads((comp.path / META).read_text())
        (comp.path / META).write_text(json.dumps({**meta, **changes}))

    return change


def _stray_id(comp: VectorstoreComponent) -> None:
    lines = (comp.path / IDS).read_text().splitlines()
    lines[5] = json.dumps({"id": 999_999, "document": "doc-stray"})
    (comp.path / IDS).write_text("\n".join(lines) + "\n")


CASES: list[tuple[str, Callable[[VectorstoreComponent], None], str]] = [
    ("nan", _nan, "1 stored vector(s) hold NaN or infinity (e.g. the one with id 77)"),
    ("inf", _inf, f"1 stored vector(s) hold NaN or infinity (e.g. the one with id {N * 7})"),
    ("dimension", _meta(dimension=16), "index dimension 8 but metadata says 16"),
    ("metric", _meta(metric="inner_product"), "index metric l2 but metadata says inner_product"),
    ("count", _meta(count=N + 1), f"index holds {N} vectors but metadata says count {N + 1}"),
    ("id map", _stray_id, "the id map names 1 ids the index does not hold, and none for 1 of the index's ids"),
]


def _backup(tmp_path: Path, comp: object) -> tuple[LocalRepository, Manifest]:
    repo = LocalRepository(tmp_path / "repo")
    return repo, engine_backup.backup(repo, [comp])  # type: ignore[list-item]


@pytest.mark.parametrize(("damage", "said"), [(d, s) for _, d, s in CASES], ids=[c[0] for c in CASES])
def test_a_backup_of_an_unhealthy_store_is_kept_with_a_finding(
    tmp_path: Path, damage: Callable[[VectorstoreComponent], None], said: str
) -> None:
    comp = _store(tmp_path / "src")
    damage(comp)
    assert not comp.health().ok, "the damage is one health sees"

    repo, manifest = _backup(tmp_path, comp)

    assert [m.id for m in repo.list()] == [manifest.id], "the set is kept: it may be all there is"
    recorded = manifest.component("vec").details[UNHEALTHY_AT_BACKUP]
    assert said in recorded, recorded
    [finding] = engine_backup.limits(manifest)
    assert finding.startswith("vec: the source failed its health check when it was backed up (") and said in finding
    assert "a restore of it brings the damage back" in finding
    # The inventory says the same from the manifest's summary, without reading fingerprints.
    [summary] = repo.summaries()
    assert engine_backup.limits(summary) == [finding]


def test_a_healthy_store_is_backed_up_with_no_finding(tmp_path: Path) -> None:
    """Quiet control."""
    comp = _store(tmp_path / "src")
    repo, manifest = _backup(tmp_path, comp)
    assert UNHEALTHY_AT_BACKUP not in manifest.component("vec").details
    assert engine_backup.limits(manifest) == [] and engine_backup.limits(repo.summaries()[0]) == []


def test_the_backup_judges_the_store_without_reading_the_index_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The health check's probe reads every row; the backup's fingerprint just read them all."""
    comp = _store(tmp_path / "src")
    _nan(comp)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index was read a second time to judge the backup")

    monkeypatch.setattr(VectorstoreComponent, "health", refused)
    monkeypatch.setattr(vectorstore, "_probe", refused)
    monkeypatch.setattr(vectorstore, "_stored_ids", refused)
    _, manifest = _backup(tmp_path, comp)
    assert "hold NaN or infinity" in manifest.component("vec").details[UNHEALTHY_AT_BACKUP]


def test_a_store_of_a_drill_workload_is_not_a_count_finding(tmp_path: Path) -> None:
    """Control: the workload's vectors are not in metadata.json's count, and are not held against it."""
    import faiss
    import numpy as np

    comp = _store(tmp_path / "src")
    index = faiss.read_index(str(comp.path / INDEX))
    extra = np.arange(vectorstore.WORKLOAD_IDS, vectorstore.WORKLOAD_IDS + 3, dtype=np.int64)
    index.add_with_ids(np.ones((3, D), dtype=np.float32), extra)
    faiss.write_index(index, str(comp.path / INDEX))
    with open(comp.path / IDS, "a") as fh:
        fh.writelines(json.dumps({"id": int(i), "document": f"w-{i}"}) + "\n" for i in extra)
    (comp.path / vectorstore.WORKLOAD_FILE).write_text(vectorstore.WORKLOAD_HEADER + "".join(f"{i}\n" for i in extra))
    assert comp.health().ok
    _, manifest = _backup(tmp_path, comp)
    assert engine_backup.limits(manifest) == []


def test_any_kind_whose_health_fails_at_backup_gets_the_finding(tmp_path: Path) -> None:
    """Generic: the default ``health_at_backup`` asks the kind's own health check (configuration here)."""
    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path / "src"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    _, healthy = _backup(tmp_path / "a", comp)
    assert engine_backup.limits(healthy) == [], "quiet control"
    broken = sorted(p for p in comp.path.rglob("*.json") if p.is_file())[0]
    broken.write_text("{ not json")
    _, manifest = _backup(tmp_path / "b", comp)
    [finding] = engine_backup.limits(manifest)
    assert finding.startswith("conf: the source failed its health check") and broken.name in finding


def test_a_health_check_that_cannot_run_is_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Could not check" is never healthy."""
    comp = _store(tmp_path / "src")

    def broken(self: VectorstoreComponent, details: object) -> Health:
        raise OSError("disk went away")

    monkeypatch.setattr(VectorstoreComponent, "health_at_backup", broken)
    _, manifest = _backup(tmp_path, comp)
    [finding] = engine_backup.limits(manifest)
    assert "its health check could not run (OSError: disk went away)" in finding


def test_a_backup_given_its_fingerprint_asks_health_itself(tmp_path: Path) -> None:
    """A caller's fingerprint (benchmarks) skips the judging read: health is asked, never an older judgement."""
    comp = _store(tmp_path / "src")
    _backup(tmp_path / "a", comp)  # judged healthy on its own read
    comp._judged = Health(ok=True, detail="stale")  # as if a failed backup had left one behind
    _nan(comp)
    repo = LocalRepository(tmp_path / "b")
    manifest = engine_backup.backup(repo, [comp], fingerprints={"vec": comp.fingerprint()})
    assert "holds NaN or infinity" in manifest.component("vec").details[UNHEALTHY_AT_BACKUP]


@pytest.mark.parametrize("ascending", [True, False])
def test_every_row_holding_nan_is_counted_whatever_the_file_order(tmp_path: Path, ascending: bool) -> None:
    """Both read paths of the fingerprint (one block, or row by row for ids out of file order) judge the rows."""
    import faiss
    import numpy as np

    comp = _store(tmp_path / "src")
    vectors = np.random.default_rng(2).standard_normal((N, D)).astype(np.float32)
    vectors[[3, 200]] = np.inf
    ids = np.arange(1, N + 1, dtype=np.int64) * 7
    if not ascending:
        vectors, ids = vectors[::-1].copy(), ids[::-1].copy()
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(D))
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(comp.path / INDEX))
    _, manifest = _backup(tmp_path, comp)
    said = manifest.component("vec").details[UNHEALTHY_AT_BACKUP]
    assert "2 stored vector(s) hold NaN or infinity (e.g. the one with id 28)" in said, said
