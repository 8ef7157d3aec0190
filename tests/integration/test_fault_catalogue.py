"""The newer faults really do their damage, say exactly what they broke, and refuse to pretend.

For each fault: the recorded effect matches what is found on disk, in the server or in
the repository afterwards; a fault that cannot do its damage raises FaultError; and the
detector meant to catch the damage (fidelity, health, verification, a refused restore)
fires when no restore undoes it. The shipped scenarios are the healthy counterparts.
Seeds are kept small: these tests start real servers.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ByteSize

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine import backup as engine_backup
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.postgres_physical import SEGMENT, PostgresPhysicalComponent
from engine.components.redis import RedisComponent, RedisParams
from engine.components.vectorstore import INDEX, META, VectorstoreComponent, VectorstoreParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.errors import ComponentError, FaultError, IntegrityError
from engine.faults import FaultContext, faults
from engine.faults.base import Fault
from engine.journal import Results
from engine.manifest import Manifest
from engine.repository import LocalRepository, S3Repository
from engine.repository.base import Repository
from engine.runtime.local import LocalRuntime
from tests.conftest import DirsRuntime

pytestmark = [pytest.mark.integration]


def _fault(name: str, **params: Any) -> Fault:
    cls = faults.get(name)
    return cls(cls.Params.model_validate(params))


def _inject(
    name: str,
    target: Any = None,
    repository: Repository | None = None,
    backups: dict[str | None, Manifest] | None = None,
    **params: Any,
) -> dict[str, Any]:
    def find(step: str | None) -> Manifest:
        assert backups is not None
        return backups[step]

    ctx = FaultContext(
        component=target,
        repository=repository or LocalRepository(Path("/nonexistent")),
        find_backup=find,
        rng=random.Random(params.get("random_seed", 1)),
    )
    return _fault(name, **params).inject(ctx)


def _query(comp: PostgresComponent, statement: str) -> Any:
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
    finally:
        conn.close()


def _run(tmp_path: Path, name: str, body: str) -> Results:
    """Run a drill written inline; the work directory stays short for PostgreSQL's socket path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + body, encoding="utf-8")
    return DrillRunner(load_scenario(path)).run()


# -- postgres: bad migrations ------------------------------------------------------------------


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresComponent]:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresComponent("db", PostgresParams(customers=60, orders_per_customer=3), runtime)
        comp.provision()
        comp.seed()
        yield comp


def test_delete_all_rows_records_the_rows_it_really_deleted(pg: PostgresComponent) -> None:
    with pytest.raises(FaultError, match=r"public\.no_such_table does not exist.*public\.orders"):
        _inject("delete_all_rows", pg, table="no_such_table")
    with pytest.raises(FaultError, match="foreign key"):
        _inject("delete_all_rows", pg, table="customers")
    assert _query(pg, "SELECT count(*) FROM customers") == 60, "a refused DELETE changed nothing"

    effect = _inject("delete_all_rows", pg, table="orders")

    assert effect == {"table": "public.orders", "rows_before": 180, "rows_deleted": 180, "rows_after": 0}
    assert _query(pg, "SELECT count(*) FROM orders") == 0
    assert _query(pg, "SELECT count(*) FROM customers") == 60
    assert pg.health().ok, "the schema survives: only the data are gone"
    with pytest.raises(FaultError, match="already empty"):
        _inject("delete_all_rows", pg, table="orders")


def test_truncate_table_cascade_records_every_table_it_emptied(pg: PostgresComponent) -> None:
    with pytest.raises(FaultError, match=r"truncate_table on public\.customers failed.*foreign key"):
        _inject("truncate_table", pg, table="customers")
    with pytest.raises(FaultError, match="does not exist"):
        _inject("truncate_table", pg, table="orders", schema="elsewhere")
    assert _query(pg, "SELECT count(*) FROM orders") == 180

    effect = _inject("truncate_table", pg, table="customers", cascade=True)

    assert effect == {
        "table": "public.customers",
        "rows_before": 60,
        "rows_after": 0,
        "also_emptied": {"public.orders": 180},
    }
    assert _query(pg, "SELECT count(*) FROM customers") + _query(pg, "SELECT count(*) FROM orders") == 0
    assert _query(pg, "SELECT last_value FROM orders_id_seq") == 180, "sequences survive a TRUNCATE"
    with pytest.raises(FaultError, match="already empty"):
        _inject("truncate_table", pg, table="orders")


# -- postgres: corrupt_page --------------------------------------------------------------------


def test_corrupt_page_flips_exactly_the_recorded_bytes_and_the_server_notices(
    pg: PostgresComponent, tmp_path: Path
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    original = pg.fingerprint()
    manifest = engine_backup.backup(repo, [pg], fingerprints={"db": original})
    with pytest.raises(FaultError, match="does not exist"):
        _inject("corrupt_page", pg, table="nope")
    with pytest.raises(FaultError, match="block 999 does not exist"):
        _inject("corrupt_page", pg, table="orders", block=999)
    assert pg.service.is_running(), "a refused fault leaves the server as it was"
    # Frozen and checkpointed: no later hint-bit write can change the file besides the fault.
    _query(pg, "VACUUM (FREEZE) orders")
    _query(pg, "CHECKPOINT")
    relpath = _query(pg, "SELECT pg_relation_filepath('orders')")
    data_file = pg.service.data_dir() / relpath  # type: ignore[attr-defined]
    before = data_file.read_bytes()

    effect = _inject("corrupt_page", pg, bytes=12)  # default table: the largest, orders

    after = data_file.read_bytes()
    assert effect["table"] == "public.orders" and effect["file"] == str(data_file)
    assert effect["bytes_changed"] == 12 and len(effect["offsets"]) == 12
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed == effect["offsets"], "exactly the recorded bytes differ"
    assert all(after[i] == before[i] ^ 0xFF for i in changed)
    assert {i // 8192 for i in changed} == {effect["block"]}
    assert all(i % 8192 >= 24 for i in changed), "the page header is left alone"
    assert f"invalid page in block {effect['block']}" in effect["error"]
    assert effect["server_restarted"] is True and pg.service.is_running()

    # Detectors: the fingerprint cannot read the table, and a new dump fails loudly.
    with pytest.raises(ComponentError, match="invalid page"):
        pg.fingerprint()
    with pytest.raises(ComponentError, match="invalid page") as refused:
        engine_backup.backup(repo, [pg])  # the backup's own fingerprint reads the table first
    assert "stopped" not in str(refused.value)  # the server answers; the data are damaged
    with pytest.raises(ComponentError, match="pg_dump"):
        engine_backup.backup(repo, [pg], fingerprints={pg.instance: original})

    engine_backup.restore(repo, manifest, pg)
    assert pg.fingerprint().digest == original.digest

    # The first page of a table is what health reads.
    _inject("corrupt_page", pg, table="customers", block=0)
    health = pg.health()
    assert not health.ok and "invalid page in block 0" in health.detail


def test_corrupt_page_on_physical_kind_restores_and_without_restore_fidelity_errs(tmp_path: Path) -> None:
    stack = """
objectives: {rto: 1m}
stack:
  components:
    db: {kind: postgres-physical, seed: {customers: 60, orders_per_customer: 3}}
steps:
  - backup: {name: nightly}
  - disaster: {target: db, fault: corrupt_page, table: orders}
"""
    healed = _run(tmp_path, "cp-heal", stack + "  - restore: {from: nightly}\nassertions: [fidelity, rto]\n")
    assert healed.verdict == "pass", [(a.id, a.summary, a.findings) for a in healed.assertions]
    [disaster] = healed.disasters
    assert "invalid page in block" in disaster.effect["error"]

    broken = _run(tmp_path, "cp-leave", stack + "assertions: [fidelity]\n")
    [fid] = [a for a in broken.assertions if a.name == "fidelity"]
    # Damaged and never restored: a failed recovery, though the table could not be read
    # (marked unmeasured, so a negative control would not count it as a detection).
    assert broken.verdict == "fail" and fid.status == "fail" and fid.evidence["measured"] is False
    assert any("invalid page in block" in f for f in fid.findings), fid.findings


# -- postgres-physical: delete_wal_segments ----------------------------------------------------


@pytest.fixture
def physical(tmp_path: Path) -> Iterator[PostgresPhysicalComponent]:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresPhysicalComponent("db", PostgresParams(customers=60, orders_per_customer=3), runtime)
        comp.provision()
        comp.seed()
        yield comp


def _switch_and_archive(comp: PostgresPhysicalComponent) -> str:
    segment = str(_query(comp, "SELECT pg_walfile_name(pg_switch_wal())"))
    deadline = time.monotonic() + 60
    while str(_query(comp, "SELECT last_archived_wal FROM pg_stat_archiver")) < segment:
        assert time.monotonic() < deadline, f"{segment} was not archived"
        time.sleep(0.05)
    return segment


def test_delete_wal_segments_deletes_exactly_the_named_segments(physical: PostgresPhysicalComponent) -> None:
    archive = physical.physical.wal_archive()
    _switch_and_archive(physical)
    present = sorted(p.name for p in archive.iterdir() if SEGMENT.match(p.name))
    assert len(present) >= 2

    effect = _inject("delete_wal_segments", physical, count=2)

    left = sorted(p.name for p in archive.iterdir() if SEGMENT.match(p.name))
    assert effect["segments_deleted"] == 2 and len(effect["deleted"]) == 2
    assert sorted(set(present) - set(left)) == effect["deleted"]
    assert effect["segments_left"] == len(left) == len(present) - 2
    assert effect["wal_archive"] == str(archive)

    _inject("delete_wal_segments", physical)  # the rest
    assert not any(SEGMENT.match(p.name) for p in archive.iterdir())
    with pytest.raises(FaultError, match="holds no segments"):
        _inject("delete_wal_segments", physical)


def test_point_in_time_restore_into_deleted_wal_fails_and_keeps_the_cluster(
    physical: PostgresPhysicalComponent, tmp_path: Path
) -> None:
    """The negative control: WAL lost before any backup copied it makes those moments unreachable."""
    repo = LocalRepository(tmp_path / "repo")
    engine_backup.backup(repo, [physical])
    _query(physical, "CREATE TABLE marks AS SELECT 'lost' AS name")
    target = _query(physical, "SELECT clock_timestamp()")
    _switch_and_archive(physical)  # the segment with the write is archived, in no backup yet
    effect = _inject("delete_wal_segments", physical)
    assert effect["segments_deleted"] >= 1
    later = engine_backup.backup(repo, [physical])
    # The backup sees the hole in the segment numbers: it records it and starts a new
    # history rather than claiming to continue the old one.
    assert "missing from the WAL archive" in later.component("db").details["wal_gap"]
    assert later.component("db").details["wal_continues"] is None
    before = physical.fingerprint()

    with pytest.raises(IntegrityError, match="has a hole"):
        engine_backup.restore_to_time(repo, physical, target)

    assert physical.fingerprint().digest == before.digest, "refused before the cluster was touched"


# -- redis: expire_keys ------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RedisComponent]:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = RedisComponent("cache", RedisParams(keys=300, key_spaces=["session", "cart", "user"]), runtime)
        comp.provision()
        comp.seed()
        yield comp


def _keys(comp: RedisComponent, pattern: str) -> set[bytes]:
    return set(comp.client().scan_iter(match=pattern, count=1000))


def test_expire_keys_removes_exactly_the_recorded_share(cache: RedisComponent) -> None:
    sessions = _keys(cache, "session:*")
    others = _keys(cache, "*") - sessions
    with pytest.raises(FaultError, match=r"no key .* matches 'nothing:\*'"):
        _inject("expire_keys", cache, pattern="nothing:*")

    effect = _inject("expire_keys", cache, pattern="session:*", fraction=0.5, ttl_ms=5)

    gone = sessions - _keys(cache, "session:*")
    assert effect["keys_matched"] == len(sessions) == 100
    assert effect["keys_expired"] == len(gone) == 50
    assert effect["keys_left"] == cache.client().dbsize() == 250
    assert {f"db0 {k.decode()}" for k in gone} >= set(effect["examples"])
    assert _keys(cache, "*") - _keys(cache, "session:*") == others, "other key spaces are untouched"
    assert cache.health().ok

    effect = _inject("expire_keys", cache, pattern="cart:*", count=3)
    assert effect["keys_expired"] == 3 and len(_keys(cache, "cart:*")) == 97


# -- vectorstore: truncate_index and swap_model ------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent(
        "vec",
        VectorstoreParams(vectors=300, dimension=16),
        DirsRuntime(tmp_path / "dirs"),  # type: ignore[arg-type]
    )
    comp.provision()
    comp.seed()
    return comp


def test_truncate_index_cuts_the_file_to_the_recorded_size(store: VectorstoreComponent) -> None:
    index = store.path / INDEX
    size = index.stat().st_size

    effect = _inject("truncate_index", store, keep=0.25)

    assert effect == {"file": INDEX, "bytes_before": size, "bytes_after": size // 4, "bytes_cut": size - size // 4}
    assert index.stat().st_size == size // 4
    health = store.health()
    assert not health.ok and "describes" in health.detail

    _inject("truncate_index", store, keep=0)
    with pytest.raises(FaultError, match="already empty"):
        _inject("truncate_index", store)
    index.unlink()
    with pytest.raises(FaultError, match="does not exist"):
        _inject("truncate_index", store)


def test_swap_model_leaves_a_healthy_wrong_store_that_only_a_restore_undoes(
    store: VectorstoreComponent, tmp_path: Path
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    original = store.fingerprint()
    good = engine_backup.backup(repo, [store], fingerprints={"vec": original})
    with pytest.raises(FaultError, match="already uses"):
        _inject("swap_model", store, model=store.params.model)

    effect = _inject("swap_model", store, model="intfloat/e5-small-v2", dimension=24)

    meta = json.loads((store.path / META).read_text())
    assert effect["model_before"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert effect["model_after"] == meta["model"] == "intfloat/e5-small-v2"
    assert (effect["dimension_before"], effect["dimension_after"]) == (16, 24) and meta["dimension"] == 24
    assert effect["vectors_reembedded"] == meta["count"] == 300
    health = store.health()
    assert health.ok and "dim 24" in health.detail, "a consistent store: health cannot see the swap"
    changed = {d.part for d in _diff(original, store.fingerprint())}
    assert {f"file {INDEX}", f"file {META}"} <= changed
    assert any(p.startswith("vectors #") for p in changed)

    # A backup of the swapped store is refused at restore time; the good one brings it back.
    swapped = engine_backup.backup(repo, [store])
    with pytest.raises(ComponentError, match="refusing to restore a store built with model"):
        engine_backup.restore(repo, swapped, store)
    engine_backup.restore(repo, good, store)
    assert store.fingerprint().digest == original.digest

    (store.path / META).unlink()
    with pytest.raises(FaultError, match="cannot be loaded"):
        _inject("swap_model", store)


@pytest.mark.parametrize("text", ["[]", '"a model"', "null", "[" * 100_000])
def test_swap_model_of_a_store_whose_metadata_is_not_an_object_is_a_fault_error(
    store: VectorstoreComponent, text: str
) -> None:
    """Found by review: JSON that is not an object gave an AttributeError traceback from the fault."""
    (store.path / META).write_text(text)
    before = (store.path / INDEX).read_bytes()
    with pytest.raises(FaultError, match=r"the store cannot be loaded, so it cannot be re-embedded: .*metadata.json"):
        _inject("swap_model", store)
    assert (store.path / INDEX).read_bytes() == before, "nothing was rewritten"


def _diff(expected: Any, actual: Any) -> list[Any]:
    from engine.fingerprint import compare

    return compare(expected, actual)


def test_vectorstore_and_redis_detectors_fire_without_a_restore(tmp_path: Path) -> None:
    results = _run(
        tmp_path,
        "cat-kv",
        """
objectives: {rto: 1m}
stack:
  components:
    cache: {kind: redis, seed: {keys: 300}}
    cut: {kind: vectorstore, seed: {vectors: 300, dimension: 16}}
    swap: {kind: vectorstore, seed: {vectors: 300, dimension: 16}}
steps:
  - backup: {}
  - disaster: {target: cache, fault: expire_keys, pattern: "session:*"}
  - disaster: {target: cut, fault: truncate_index}
  - disaster: {target: swap, fault: swap_model}
assertions: [fidelity]
""",
    )
    by_id = {a.id: a for a in results.assertions}
    assert results.verdict == "fail"
    assert by_id["fidelity[cache]"].status == "fail"
    assert any(f.startswith("db0 keyspace session") for f in by_id["fidelity[cache]"].findings)
    assert not any("keyspace cart" in f for f in by_id["fidelity[cache]"].findings)
    assert any(f.startswith(f"file {INDEX}") for f in by_id["fidelity[cut]"].findings)
    swap = by_id["fidelity[swap]"]
    assert swap.status == "fail" and any(f.startswith(f"file {META}") for f in swap.findings)
    health = {c.name: c.healthy for c in results.components}
    assert health == {"cache": True, "cut": False, "swap": True}


# -- repository: truncate_artifact and delete_artifact -----------------------------------------


def _two_component_backup(tmp_path: Path, repo: Repository) -> tuple[VolumesComponent, Manifest]:
    runtime: Any = DirsRuntime(tmp_path / "dirs")
    vol = VolumesComponent("vol", VolumesParams(files=12, file_size=ByteSize(2048), directories=2), runtime)
    cfg = ConfigurationComponent("cfg", ConfigurationParams(), runtime)
    for comp in (vol, cfg):
        comp.provision()
        comp.seed()
    return vol, engine_backup.backup(repo, [vol, cfg])


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_repository_faults_damage_exactly_one_artifact_and_restore_is_refused(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    repo: Repository
    if backend == "s3":
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"drproof-catalogue-{random.randrange(1 << 30)}"
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        repo = S3Repository(bucket, endpoint_url=endpoint)
    else:
        repo = LocalRepository(tmp_path / "repo")
    vol, manifest = _two_component_backup(tmp_path, repo)
    backups: dict[str | None, Manifest] = {None: manifest}
    stored = {a.key: a for a in manifest.artifacts}
    with pytest.raises(FaultError, match=r"no artifact nope/\* to damage"):
        _inject("truncate_artifact", None, repo, backups, component="nope")
    with pytest.raises(FaultError, match="no artifact vol/nope"):
        _inject("delete_artifact", None, repo, backups, component="vol", artifact="nope")

    cut = _inject("truncate_artifact", None, repo, backups, component="vol", keep=0.3)

    artifact = stored["vol/files.tar"]
    assert cut["backup_id"] == manifest.id and cut["artifact"] == "vol/files.tar"
    assert cut["bytes_before"] == artifact.size and cut["bytes_after"] == int(artifact.size * 0.3)
    assert repo.stored_size(manifest, artifact) == cut["bytes_after"]
    assert cut["verification"] == f"size {cut['bytes_after']} bytes, manifest says {artifact.size}"
    with pytest.raises(IntegrityError, match=r"vol/files\.tar"):
        engine_backup.restore(repo, manifest, vol)

    gone = _inject("delete_artifact", None, repo, backups, component="cfg")

    assert gone["artifact"].startswith("cfg/") and gone["verification"] == "missing"
    assert gone["bytes"] == stored[gone["artifact"]].size
    report = repo.verify(manifest.id)
    assert sorted(report.damaged) == sorted(["vol/files.tar", gone["artifact"]])


def test_restores_from_damaged_artifacts_are_refused_in_a_drill(tmp_path: Path) -> None:
    results = _run(
        tmp_path,
        "cat-repo",
        """
objectives: {rto: 1m}
stack:
  components:
    vol: {kind: volumes, seed: {files: 12, file_size: 2KiB}}
    cfg: {kind: configuration}
steps:
  - backup: {name: only}
  - disaster: {target: repository, fault: truncate_artifact, component: vol}
  - disaster: {target: repository, fault: delete_artifact, component: cfg}
  - restore: {from: only, expect: refused}
assertions: [backup_integrity]
""",
    )
    restores = [p for p in results.phases if p.kind == "restore"]
    assert [p.status for p in restores] == ["refused", "refused"]
    assert "vol/files.tar size" in restores[0].detail and "missing" in restores[1].detail
    [integrity] = [a for a in results.assertions if a.name == "backup_integrity"]
    assert integrity.status == "pass", (integrity.summary, integrity.findings)
    assert results.verdict == "pass"


def test_bad_migrations_are_caught_by_fidelity_naming_the_tables(tmp_path: Path) -> None:
    results = _run(
        tmp_path,
        "cat-pg",
        """
objectives: {rto: 1m}
stack:
  components:
    rows: {kind: postgres, seed: {customers: 40, orders_per_customer: 2}}
    trunc: {kind: postgres, seed: {customers: 40, orders_per_customer: 2}}
steps:
  - backup: {}
  - disaster: {target: rows, fault: delete_all_rows, table: orders}
  - disaster: {target: trunc, fault: truncate_table, table: customers, cascade: true}
assertions: [fidelity]
""",
    )
    by_id = {a.id: a for a in results.assertions}
    rows, trunc = by_id["fidelity[rows]"], by_id["fidelity[trunc]"]
    assert rows.status == trunc.status == "fail"
    assert [f.split(":")[0] for f in rows.findings if f.startswith("table ")] == ["table public.orders"]
    assert {f.split(":")[0] for f in trunc.findings if f.startswith("table ")} == {
        "table public.customers",
        "table public.orders",
    }
    assert all(c.healthy for c in results.components), "bad migrations leave a healthy server"
