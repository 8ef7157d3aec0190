"""Replicated topologies and failover faults against real servers: each detector fires on damage
(negative control) and stays quiet on health (quiet control)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from drills.loader import load_scenario
from drills.runner import DrillRunner
from drills.steps.failover import _rejoin_fidelity
from drills.workload.postgres import PostgresWriter
from drills.workload.run import Stream
from engine.components.postgres_replicated import PostgresReplicatedComponent, PostgresReplicatedParams
from engine.components.redis_cluster import RedisClusterComponent, RedisClusterParams
from engine.faults import FaultContext, faults
from engine.fingerprint import compare
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.servers import require_patroni

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]



def _postgres(runtime: LocalRuntime, **params: Any) -> PostgresReplicatedComponent:
    comp = PostgresReplicatedComponent("db", PostgresReplicatedParams(customers=20, **params), runtime)
    comp.provision()
    comp.seed()
    return comp


def _inject(name: str, comp: Any, **params: Any) -> dict[str, Any]:
    fault = faults.get(name)
    ctx = FaultContext(component=comp, repository=None, find_backup=lambda _: None, rng=random.Random(1))  # type: ignore[arg-type]
    return fault(fault.Params(**params)).inject(ctx)


def _rows(comp: PostgresReplicatedComponent, node: str) -> int:
    conn = comp.on_node(node).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM marks")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _write(comp: PostgresReplicatedComponent, n: int) -> None:
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS marks (n int)")
            for i in range(n):
                cur.execute("INSERT INTO marks VALUES (%s)", (i,))
    finally:
        conn.close()


def test_a_stopped_wal_receiver_loses_writes_a_paused_replay_does_not(runtime: LocalRuntime) -> None:
    comp = _postgres(runtime, replicas=2)
    _write(comp, 1)
    topology = comp.topology
    assert processes.wait_until(lambda: all(topology.caught_up(n) for n in ("node1", "node2")), timeout=30)
    replay = _inject("lag_replica", comp, replica=1, how="replay")
    receive = _inject("lag_replica", comp, replica=2, how="receive")
    assert (replay["node"], receive["node"]) == ("node1", "node2")
    _write(comp, 50)  # acknowledged by the asynchronous primary
    time.sleep(0.5)
    assert _rows(comp, "node1") == 1, "a paused replay shows none of the new rows"
    assert _rows(comp, "node2") == 1, "a stopped receiver has none of them"
    assert _inject("kill_primary", comp)["node"] == "node0"
    promotion = topology.promote("node0")
    assert promotion["promoted"] == "node1", promotion  # the most WAL received
    assert _rows(comp, "node1") == 51, "the promotion applied everything received: nothing lost (quiet control)"


def test_lost_async_writes_and_a_diverged_old_primary_are_seen(runtime: LocalRuntime) -> None:
    """The rejoin check fires on an old primary that kept its lost writes, and is quiet after pg_rewind."""
    comp = _postgres(runtime, replicas=1)
    writer = PostgresWriter(comp)
    writer.open()
    for seq in range(1, 11):
        writer.write(seq)
    assert processes.wait_until(lambda: comp.topology.caught_up("node1"), timeout=30)
    _inject("lag_replica", comp)
    for seq in range(11, 31):
        writer.write(seq)  # acknowledged, never received by node1
    writer.close()
    _inject("kill_primary", comp)
    comp.topology.promote("node0")
    assert writer.survivors() == set(range(1, 11)), "the promoted replica lacks the 20 lagged writes"
    stream = Stream(writer=writer, rate=1.0)
    old = comp.topology.node("node0")
    old.ensure_running()  # back on its own, not rewound: a second primary with the old history
    diverged = _rejoin_fidelity(comp, stream, "node0")
    assert diverged["old_timeline_writes"] == 20, diverged  # negative control
    result = comp.topology.rejoin("node0")
    assert result["timeline"] == result["primary_timeline"] == 2
    clean = _rejoin_fidelity(comp, stream, "node0")
    assert clean["old_timeline_writes"] == 0 and clean["content_equal"], clean  # quiet control


def test_kill_replica_and_stop_primary(runtime: LocalRuntime) -> None:
    comp = _postgres(runtime, replicas=2)
    topology = comp.topology
    effect = _inject("kill_replica", comp, replica=2)
    assert effect["node"] == "node2" and topology.role("node2") == "down"
    assert topology.primary() == "node0"
    _write(comp, 30)  # the primary keeps serving with one replica fewer
    stopped = _inject("stop_primary", comp)
    assert stopped["node"] == "node0" and topology.role("node0") == "down"
    assert topology.promote("node0")["promoted"] == "node1"
    assert _rows(comp, "node1") == 30, "a clean shutdown sent every WAL record to the replica first"


def _drill(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "drill.yaml"
    path.write_text(text)
    return DrillRunner(load_scenario(path), work_root=tmp_path / "runs").run()


PAUSE = """
name: pause
description: pause the primary
objectives: {{rto: 30s}}
stack:
  components:
    db: {{kind: postgres-replicated, seed: {{customers: 20}}}}
steps:
  - workload: {{rate: 40}}
  - wait: 1s
  - failover: {{target: db, fault: pause_primary, seconds: 3, strategy: promote, fence: {fence}, settle: 5s}}
assertions:
  - failover_outcome
"""


@pytest.mark.slow
@pytest.mark.parametrize("fence", [True, False])
def test_split_brain_is_found_only_without_fencing(tmp_path: Path, fence: bool) -> None:
    results = _drill(tmp_path, PAUSE.format(fence=str(fence).lower()))
    [check] = [a for a in results.assertions if a.name == "failover_outcome"]
    if fence:  # quiet control: the old primary was killed before the promotion
        assert check.status == "pass", check.findings
        assert check.evidence["split_brain"] == [] and check.evidence["promotion"]["fenced"]["signal"] == "SIGKILL"
    else:  # negative control: it woke up as a second primary and took writes
        assert check.status == "fail"
        assert any(f.startswith("split brain: node0 and node1") for f in check.findings), check.findings


QUORUM = """
name: quorum
description: sentinels without a majority
objectives: {rto: 30s}
stack:
  components:
    cache: {kind: redis-sentinel, seed: {keys: 100, replicas: 1}}
steps:
  - workload: {rate: 20}
  - disaster: {target: cache, fault: kill_sentinel_majority}
  - failover: {target: cache, fault: kill_primary, strategy: automatic, timeout: 6s}
assertions:
  - failover_outcome
"""


def test_without_a_sentinel_majority_no_failover_happens(tmp_path: Path) -> None:
    results = _drill(tmp_path, QUORUM)
    [killed] = [d for d in results.disasters if d.fault == "kill_sentinel_majority"]
    assert killed.effect["sentinels_killed"] == ["sentinel0", "sentinel1"]
    [check] = [a for a in results.assertions if a.name == "failover_outcome"]
    assert check.status == "fail"
    assert "no node other than node0 acknowledged a write within 6 s" in check.findings[0]


def _cluster_ok(comp: RedisClusterComponent) -> bool:
    """The Cluster reads in full: a Cluster down gives a placeholder fingerprint, not a reading."""
    return comp.fingerprint().unmeasured() is None


def test_a_cluster_fingerprint_follows_keys_not_masters(runtime: LocalRuntime) -> None:
    comp = RedisClusterComponent("cache", RedisClusterParams(keys=300), runtime)
    comp.provision()
    comp.seed()
    before = comp.fingerprint()
    assert comp.fingerprint().digest == before.digest  # quiet control: a second read
    assert comp.health().ok
    old = comp.topology.primary()
    _inject("kill_primary", comp)
    assert processes.wait_until(lambda: comp.topology.primary() not in (None, old), timeout=30)
    # The replica calls itself master a moment before the Cluster is "ok" again (reads get
    # CLUSTERDOWN until then: 1 failure in 2 runs here); a drill's failover step likewise waits for
    # the first acknowledged write through the endpoint.
    assert processes.wait_until(lambda: _cluster_ok(comp), timeout=30)
    assert comp.fingerprint().digest == before.digest, "the promoted replica holds the same keys"
    client = comp.client()
    client.set("user:7", b"changed")
    assert comp.fingerprint().digest != before.digest  # negative control: one key of one shard


@pytest.mark.slow
def test_clean_finds_patroni_postgres_left_by_a_killed_drproof(tmp_path: Path) -> None:
    """Patroni starts PostgreSQL in a session of its own: it outlives a SIGKILLed drproof; clean ends it."""
    require_patroni()
    script = (
        "import os, sys; from pathlib import Path; from engine.runtime.local import LocalRuntime\n"
        "from engine.runtime.topology import ReplicatedSpec\n"
        f"rt = LocalRuntime(Path({str(tmp_path / 'w')!r}))\n"
        "svc = rt.server('postgres-replicated', 'db', ReplicatedSpec(replicas=1, manager='patroni'))\n"
        "print(svc.primary(), flush=True)\n"
        "os._exit(0)  # no cleanup, as after SIGKILL\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as killed:
        stdout, stderr = killed.communicate(timeout=300)
    assert stdout.strip() == "node0", stderr[-2000:]
    owner = f"local pid {killed.pid}"  # the gone drproof's run; before, found by "postgres" in a cut command line
    found = processes.leftovers()
    assert any(item.split(" (", 1)[1].startswith("postgres") for item in found.get(owner, [])), found
    gone = processes.remove_leftovers(owner)
    assert any("postgres" in g for g in gone)
    assert processes.wait_until(lambda: owner not in processes.leftovers(), timeout=15)


RESTORE = """
name: restore-instead
description: no failover, restore from the backup
objectives: {rto: 60s, rpo: 30s}
stack:
  components:
    db: {kind: postgres-replicated, seed: {customers: 50, replicas: 1}}
steps:
  - workload: {rate: 20}
  - wait: 1s  # writes in the backup: with none, the RPO is only a lower bound, an error
  - backup: {name: nightly}
  - wait: 1s
  - disaster: {target: db, fault: kill_primary}
  - restore: {from: nightly}
assertions:
  - fidelity
  - rto
  - rpo
"""


def test_restore_from_backup_is_the_third_strategy(tmp_path: Path) -> None:
    """kill_primary in a disaster step ends the workload; the restore brings the old primary back and loads the dump."""
    results = _drill(tmp_path, RESTORE)
    assert results.verdict == "pass", [(a.id, a.findings) for a in results.assertions]
    [db] = results.components
    assert db.recovery_point is not None and db.recovery_point.lost_writes > 0  # the writes after the backup
    assert db.recovery_point.hole_count == 0
    assert [p.name for p in results.phases if p.name.startswith("stop workload")] == ["stop workload (disaster)"]


def test_cluster_rejoin_fidelity_compares_expiry_moments(runtime: LocalRuntime) -> None:
    """A node whose key lost its time to live, or holds another moment, differs from its master.

    Found by review: the node comparison read only DEBUG DIGEST-VALUE, so a replica that
    had lost a TTL read as holding the same content. Quiet control: a healthy replica
    (expiries replicated as absolute moments) compares equal.
    """
    comp = RedisClusterComponent("cache", RedisClusterParams(keys=50), runtime)
    comp.provision()
    comp.seed()
    primary = comp.topology.primary()
    assert primary is not None
    [replica] = comp.topology.replicas()
    password = comp.service.password
    master = redis.Redis(host="127.0.0.1", port=comp.topology.node(primary).port, password=password)
    ttl_keys = [k for k in master.scan_iter(count=1000) if not k.startswith(b"drproof_workload")][:2]
    assert len(ttl_keys) == 2, "the shard holds seeded keys"
    for k in ttl_keys:
        master.expire(k, 86400)
    master.wait(1, 5000)
    on_primary, on_node = comp.node_fingerprints(replica)
    assert not compare(on_primary, on_node), [d.describe() for d in compare(on_primary, on_node)]
    assert any(name.endswith(" expiry") for name in on_primary.parts)

    # A replica refuses writes in a Cluster: the master changes without replicating it
    # (what a node that missed writes holds, seen from the other side).
    unreplicated = "redis.set_repl(redis.REPL_NONE) return redis.call(unpack(ARGV))"
    moment = master.pexpiretime(ttl_keys[0])
    master.eval(unreplicated, 1, ttl_keys[0], "PERSIST", ttl_keys[0])
    on_primary, on_node = comp.node_fingerprints(replica)
    found = [d.describe() for d in compare(on_primary, on_node)]
    assert any(" expiry" in f for f in found), found

    master.eval(unreplicated, 1, ttl_keys[0], "PEXPIREAT", ttl_keys[0], moment)  # as the replica has it
    assert not compare(*comp.node_fingerprints(replica))
    master.eval(unreplicated, 1, ttl_keys[1], "PEXPIREAT", ttl_keys[1], master.pexpiretime(ttl_keys[1]) + 1)
    on_primary, on_node = comp.node_fingerprints(replica)
    found = [d.describe() for d in compare(on_primary, on_node)]
    assert any(" expiry" in f for f in found), found


def test_cluster_rejoin_fidelity_compares_hash_field_expiries_on_valkey(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose hash lost a field's time to live (HEXPIRE, Valkey 9) differs from its master.

    Found by review: DEBUG DIGEST-VALUE does not see a field's TTL, so such a node read as
    the same. Quiet control: a healthy replica of a hash with field expiries compares equal.
    """
    from engine.runtime import local_redis_ha
    from tests.integration.test_redis_fidelity import _binary

    monkeypatch.setattr(local_redis_ha, "cluster_server", lambda: _binary("valkey-9"))
    comp = RedisClusterComponent("cache", RedisClusterParams(keys=20), runtime)
    comp.provision()
    comp.seed()
    primary = comp.topology.primary()
    assert primary is not None
    [replica] = comp.topology.replicas()
    master = redis.Redis(host="127.0.0.1", port=comp.topology.node(primary).port, password=comp.service.password)
    assert master.info("server").get("server_name") == "valkey"
    served = next(k for k in master.scan_iter(count=1000) if not k.startswith(b"drproof_workload"))
    key, field = b"fields:{" + served + b"}", b"f1"  # the hash tag puts it in the shard's slots
    master.hset(key, mapping={field: "a", "f2": "b"})
    master.execute_command("HEXPIRE", key, 86400, "FIELDS", 1, field)
    master.wait(1, 5000)
    assert not compare(*comp.node_fingerprints(replica))  # quiet control

    unreplicated = "redis.set_repl(redis.REPL_NONE) return redis.call(unpack(ARGV))"
    master.eval(unreplicated, 1, key, "HPERSIST", key, "FIELDS", 1, field)
    found = [d.describe() for d in compare(*comp.node_fingerprints(replica))]
    assert any("values" in f for f in found), found


def test_cluster_rejoin_fidelity_compares_stream_groups_and_counters(runtime: LocalRuntime) -> None:
    """A node whose stream lost a consumer group's position, a pending entry's consumer or a counter differs.

    Found by review: DEBUG DIGEST-VALUE of a stream is its entries only (Redis 7.0 and
    Valkey 9). Quiet control: a healthy replica of a stream with a group compares equal.
    """
    comp = RedisClusterComponent("cache", RedisClusterParams(keys=20), runtime)
    comp.provision()
    comp.seed()
    primary = comp.topology.primary()
    assert primary is not None
    [replica] = comp.topology.replicas()
    master = redis.Redis(host="127.0.0.1", port=comp.topology.node(primary).port, password=comp.service.password)
    served = next(k for k in master.scan_iter(count=1000) if not k.startswith(b"drproof_workload"))
    key = b"events:{" + served + b"}"  # the hash tag puts it in the shard's slots

    def replicated_stream() -> None:
        master.delete(key)
        for i in range(1, 6):
            master.xadd(key, {"f": str(i)}, id=f"{i}-0")
        master.xdel(key, "2-0")
        master.xgroup_create(key, "workers", id="0")
        master.xreadgroup("workers", "alice", {key: ">"}, count=2)
        master.wait(1, 5000)
        assert not compare(*comp.node_fingerprints(replica))  # quiet control

    # Each changed on the master only (what a node that missed writes holds, seen from the
    # other side): the group's position, a pending entry, the counters.
    unreplicated = "redis.set_repl(redis.REPL_NONE) return redis.call(unpack(ARGV))"
    changes = [
        ("XGROUP", "SETID", key, "workers", "4-0"),
        ("XACK", key, "workers", "1-0"),
        ("XSETID", key, "5-0", "ENTRIESADDED", 50, "MAXDELETEDID", "2-0"),
    ]
    for change in changes:
        replicated_stream()
        master.eval(unreplicated, 1, key, *change)
        found = [d.describe() for d in compare(*comp.node_fingerprints(replica))]
        assert any("values" in f for f in found), (change, found)
