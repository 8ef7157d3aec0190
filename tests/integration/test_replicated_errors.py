"""A server error met by a failover operation is a FaultError, not a psycopg2 traceback.

Found by review: ``lag`` and ``promote`` let psycopg2 errors escape (a replica whose
configuration cannot be changed, a candidate that died meanwhile), and a drill ended as
an internal error. The error is made real here: postgresql.auto.conf that the server
cannot read, so ALTER SYSTEM fails on that node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.components.postgres_replicated import PostgresReplicatedComponent, PostgresReplicatedParams
from engine.errors import FaultError
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from engine.runtime.local_replicated import LocalReplicatedPostgres
from tests.integration.servers import require

pytestmark = [pytest.mark.integration]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[LocalReplicatedPostgres]:
    # Under CI=true a failure, never a skip (.ci/run runs as root).
    require(
        "root (the server, user drproof, must be unable to read a file root makes private)",
        processes.current_is_root(),
        "run the tests as root",
    )
    rt = LocalRuntime(tmp_path / "work")
    try:
        comp = PostgresReplicatedComponent("db", PostgresReplicatedParams(customers=5, replicas=2), rt)
        comp.provision()
        assert isinstance(comp.topology, LocalReplicatedPostgres)
        yield comp.topology
    finally:
        rt.close()


def _lock_auto_conf(topology: LocalReplicatedPostgres, node: str) -> None:
    conf = topology.node(node).data_dir() / "postgresql.auto.conf"
    os.chown(conf, 0, 0)
    conf.chmod(0o600)


def test_a_replica_whose_configuration_cannot_change_is_a_fault_error_when_lagged(
    topology: LocalReplicatedPostgres,
) -> None:
    _lock_auto_conf(topology, "node1")
    with pytest.raises(FaultError, match="could not be made to lag"):
        topology.lag("node1", "receive")


def test_a_replica_that_cannot_be_repointed_is_a_fault_error_of_the_promotion(
    topology: LocalReplicatedPostgres,
) -> None:
    topology.kill_node("node0")
    for node in ("node1", "node2"):  # whichever is promoted, the other cannot be repointed
        _lock_auto_conf(topology, node)
    with pytest.raises(FaultError, match=r"promotion runbook on 'db' failed \(primary now: node[12]\)"):
        topology.promote("node0")


def test_quiet_control_lag_and_promote_succeed(topology: LocalReplicatedPostgres) -> None:
    assert topology.lag("node1", "replay")["node"] == "node1"
    topology.kill_node("node0")
    promoted = topology.promote("node0")
    assert promoted["promoted"] in ("node1", "node2") and topology.primary() == promoted["promoted"]
