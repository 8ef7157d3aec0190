"""A paused (SIGSTOP'd) node of postgres-replicated is frozen whole, and health and the restore say so.

Found by review (measured with real servers): ``pause_node`` sent SIGSTOP to the postmaster's
process group, but every child of a postmaster leads a group of its own (``setsid``), so only
the postmaster stopped. The "paused" replica kept receiving, replaying and acknowledging
synchronous commits. Once it was frozen for real, a synchronous primary whose one standby was
paused took no write while health said ok (the standby stays listed as streaming until
``wal_sender_timeout``), and a restore into it hung on its first commit instead of being refused.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.components.postgres_replicated import PostgresReplicatedComponent
from engine.errors import ComponentError
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.servers import require_patroni
from tests.integration.test_replicated_restore import _backed_up, _restore

pytestmark = [pytest.mark.integration]


def _write(comp: PostgresReplicatedComponent) -> None:
    conn = comp.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE written_while_paused AS SELECT generate_series(1, 1000) AS i")
    finally:
        conn.close()


def _replay_behind(comp: PostgresReplicatedComponent) -> int:
    """Bytes of WAL the one replica has not replayed, as the primary's WAL sender last heard from it."""
    primary = comp.topology.primary()
    assert primary is not None
    row = comp._on(primary, "SELECT pg_current_wal_lsn() - replay_lsn FROM pg_stat_replication")
    return int(row[0])


@pytest.mark.parametrize("manager", ["none", "patroni"])
def test_a_paused_replica_replays_nothing_until_it_is_resumed(
    runtime: LocalRuntime, tmp_path: Path, manager: str
) -> None:
    """Before the fix its WAL receiver and startup process ran on: it caught up while 'paused'."""
    if manager == "patroni":
        require_patroni()
    comp, _ = _backed_up(runtime, tmp_path, replicas=1, manager=manager)
    comp.topology.pause_node("node1")
    try:
        _write(comp)
        time.sleep(3)  # the replica reports every second (wal_receiver_status_interval): three chances
        assert _replay_behind(comp) > 0
    finally:
        comp.topology.resume_node("node1")
    # Quiet control: resumed, it catches up and the cluster is healthy again.
    assert processes.wait_until(lambda: _replay_behind(comp) == 0, timeout=30, interval=0.2)
    health = comp.health()
    assert health.ok and "1 replica(s) streaming and caught up" in health.detail, health.detail


def test_a_synchronous_primary_whose_standby_is_paused_is_not_healthy_and_a_restore_is_refused(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """Its only synchronous standby frozen, the primary takes no write: health must not be green,
    and a restore must be refused with nothing touched, not hang on its first commit."""
    comp, backup_set = _backed_up(runtime, tmp_path, replicas=1, synchronous=True)
    live = comp.fingerprint()
    comp.topology.pause_node("node1")
    try:
        health = comp.health()
        assert not health.ok and "waits for a synchronous standby" in health.detail, health.detail
        started = time.monotonic()
        with pytest.raises(ComponentError, match="refusing to restore"):
            _restore(comp, backup_set, tmp_path)
        assert time.monotonic() - started < 60
    finally:
        comp.topology.resume_node("node1")
    assert comp.fingerprint() == live  # nothing was touched
    # Quiet control: resumed, the standby acknowledges again and the restore goes through.
    _restore(comp, backup_set, tmp_path)
    health = comp.health()
    assert health.ok, health.detail
    assert comp.fingerprint() == backup_set.component("db").fingerprint


@pytest.mark.parametrize("manager", ["none", "patroni"])
def test_a_node_paused_through_a_restore_is_named_red_then_green_once_resumed(
    runtime: LocalRuntime, tmp_path: Path, manager: str
) -> None:
    """A paused node is never re-cloned from under its running server; health names it and why,
    and it is green again only once the node is resumed and replays the restore."""
    if manager == "patroni":
        require_patroni()
    comp, backup_set = _backed_up(runtime, tmp_path, replicas=2, manager=manager)
    comp.topology.pause_node("node2")
    try:
        _restore(comp, backup_set, tmp_path)
        health = comp.health()
        assert not health.ok, health.detail
        assert (
            "(node2 no answer: not rebuilt: its server runs but answers nothing (paused or hung))" in health.detail
        ), health.detail
        assert comp.rebuilt == {}
    finally:
        comp.topology.resume_node("node2")
    assert processes.wait_until(lambda: comp.health().ok, timeout=60, interval=1), comp.health().detail
    assert comp.on_node("node2").fingerprint() == backup_set.component("db").fingerprint
