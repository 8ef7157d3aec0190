"""A redis-sentinel restore begun while the master is down keeps the keys its replicas hold.

Found by review (/work/notes/review-redistopo, finding 5): the restore first made sure a
master answered by restarting the dead one, empty (persistence is off), and telling the
Sentinels to monitor it; its replica, which held every key, resynchronised from it. A
restore refused after that ("the live data were not touched") had destroyed them, and the
Sentinels named an empty master. Now the Sentinels are given the time to fail over, else
the most advanced replica is promoted; only with no replica left is the master restarted
empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from engine import backup as engine_backup
from engine.components.redis import RedisComponent
from engine.components.redis_sentinel import RedisSentinelComponent, RedisSentinelParams
from engine.errors import ComponentError, DrproofError
from engine.faults import FaultContext, faults
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime

pytestmark = pytest.mark.integration



def _sentinel(runtime: LocalRuntime) -> RedisSentinelComponent:
    comp = RedisSentinelComponent("cache", RedisSentinelParams(keys=300, down_after_ms=1000), runtime)
    comp.provision()
    comp.seed()
    return comp


def _refuse(self: RedisComponent, source: object, stage: object) -> None:
    """What a backup from a newer server meets: RESTORE refuses its payloads."""
    raise redis.ResponseError("DUMP payload version or checksum are wrong")


def _refused_restore_keeps_the_keys(comp: RedisSentinelComponent, tmp_path: Path, mp: pytest.MonkeyPatch) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = manifest.component("cache").fingerprint
    assert recorded is not None
    comp.service.node("node0").kill()  # type: ignore[attr-defined]
    with mp.context() as m:
        m.setattr(RedisComponent, "_restore_keys", _refuse)
        with pytest.raises(ComponentError, match="the live data were not touched"):
            engine_backup.restore(repo, manifest, comp)
    # before: 0 keys, the Sentinels naming node0 restarted empty
    assert compare(recorded, comp.fingerprint()) == []
    assert comp.service.primary() == "node1"  # type: ignore[attr-defined]
    assert comp.service.role("node0") == "replica"  # type: ignore[attr-defined]


def test_a_refused_restore_with_the_master_down_keeps_the_keys(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused_restore_keeps_the_keys(_sentinel(runtime), tmp_path, monkeypatch)


def test_without_a_sentinel_majority_the_replica_is_promoted_not_emptied(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = _sentinel(runtime)
    fault = faults.get("kill_sentinel_majority")
    ctx = FaultContext(component=comp, repository=None, find_backup=lambda _: None, rng=None)  # type: ignore[arg-type]
    fault(fault.Params()).inject(ctx)
    _refused_restore_keeps_the_keys(comp, tmp_path, monkeypatch)


def test_a_restore_with_every_node_down_still_runs(runtime: LocalRuntime, tmp_path: Path) -> None:
    """Quiet control: nothing is left to keep, so the master is restarted empty and restored."""
    comp = _sentinel(runtime)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = manifest.component("cache").fingerprint
    assert recorded is not None
    for node in ("node0", "node1"):
        comp.service.node(node).kill()  # type: ignore[attr-defined]
    engine_backup.restore(repo, manifest, comp)
    assert compare(recorded, comp.fingerprint()) == []


def test_a_healthy_sentinel_round_trip_matches(runtime: LocalRuntime, tmp_path: Path) -> None:
    """Quiet control: the master up, a key lost, restored, the same fingerprint again."""
    comp = _sentinel(runtime)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = manifest.component("cache").fingerprint
    assert recorded is not None
    comp.client().delete("user:0")
    assert compare(recorded, comp.fingerprint()) != []
    engine_backup.restore(repo, manifest, comp)
    assert compare(recorded, comp.fingerprint()) == []
    assert comp.service.primary() == "node0"  # type: ignore[attr-defined]


def test_with_no_sentinel_left_a_restore_changes_nothing(runtime: LocalRuntime, tmp_path: Path) -> None:
    """Found by review: no Sentinel answering, node0 (the healthy master) was restarted empty."""
    comp = _sentinel(runtime)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    svc = comp.service
    svc.kill_watchers(svc.watchers())  # type: ignore[attr-defined]
    master = svc.node("node0")  # type: ignore[attr-defined]
    with pytest.raises(DrproofError, match=r"no Sentinel .* answers.*nothing was changed"):
        engine_backup.restore(repo, manifest, comp)
    assert redis.Redis(port=master.port, password=svc.password).dbsize() == 300  # before: 0
