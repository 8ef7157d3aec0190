"""A Redis Cluster restore empties the masters only once the cluster has taken one of the backup's keys.

A cluster has no spare database to stage a restore in, so its masters are emptied first.
Found by review (read in the code, as for `redis` without a spare, where it was
reproduced): a backup the cluster cannot read (a newer server's payloads) emptied every
master and then failed with a raw driver error. Now one key is restored under a private
name first; a refusal changes nothing, and a failure after the flush says what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.redis_cluster import RedisClusterComponent, RedisClusterParams
from engine.errors import ComponentError
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterComponent]:
    runtime = LocalRuntime(tmp_path / "work")
    try:
        comp = RedisClusterComponent("cache", RedisClusterParams(keys=200), runtime)
        comp.provision()
        comp.seed()
        yield comp
    finally:
        runtime.close()


def test_a_payload_the_cluster_refuses_changes_nothing(
    cluster: RedisClusterComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [cluster])
    recorded = manifest.component("cache").fingerprint
    assert recorded is not None
    cluster.client().set("user:live", b"written after the backup")
    live = cluster.fingerprint()
    # What a newer server's payload looks like to this one: a DUMP it cannot read.
    monkeypatch.setattr(RedisClusterComponent, "_first_record", lambda self, source: (0, b"\x00not a payload"))
    with pytest.raises(ComponentError, match=r"refuses the backup.s keys.*nothing was changed"):
        engine_backup.restore(repo, manifest, cluster)
    assert compare(live, cluster.fingerprint()) == []  # before: every master emptied
    monkeypatch.undo()
    engine_backup.restore(repo, manifest, cluster)  # quiet control: a readable backup restores whole
    assert compare(recorded, cluster.fingerprint()) == []
