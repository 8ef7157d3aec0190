"""Faults on replicated topologies: what makes (or hinders) a failover.

They act on one node of a topology (``engine.runtime.topology``): the primary (killed,
stopped, paused), a replica (killed, made to lag), or the Sentinels that decide. The
workload keeps writing through the degradations (``keeps_workload``): what a later
failover loses is what the drill measures. The primary's faults start a ``failover``
step, which keeps it writing too and recovers by the scenario's strategy; in a
``disaster`` step they end the workload like any disaster, and a ``restore`` step
recovers from the backup instead.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Literal

from pydantic import Field

from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams
from engine.runtime.base import REPLICAS
from engine.runtime.topology import Topology

TOPOLOGIES = frozenset({"postgres-replicated", "redis-sentinel", "redis-cluster"})


def topology_of(ctx: FaultContext, fault: str) -> Topology:
    topology = getattr(ctx.component, "topology", None)
    if not isinstance(topology, Topology):
        raise FaultError(f"{fault} needs a replicated component (kinds: {', '.join(sorted(TOPOLOGIES))})")
    return topology


def primary_of(topology: Topology, fault: str) -> str:
    primary = topology.primary()
    if primary is None:
        raise FaultError(f"{fault}: no node answers as primary, so there is no primary to hit")
    return primary


class _OnTopology(Fault):
    targets: ClassVar[frozenset[str]] = TOPOLOGIES
    needs: ClassVar[frozenset[str]] = frozenset({REPLICAS})
    keeps_workload: ClassVar[bool] = True


class KillPrimary(_OnTopology):
    name: ClassVar[str] = "kill_primary"
    hits_primary: ClassVar[bool] = True
    keeps_workload: ClassVar[bool] = False  # in a disaster step; a failover step keeps it anyway
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = (
        "SIGKILL the primary's server (with Patroni, the whole node: Patroni and its PostgreSQL): a crashed host."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        topology = topology_of(ctx, self.name)
        return {"primary": True, **topology.kill_node(primary_of(topology, self.name))}


class StopPrimary(_OnTopology):
    name: ClassVar[str] = "stop_primary"
    hits_primary: ClassVar[bool] = True
    keeps_workload: ClassVar[bool] = False  # in a disaster step; a failover step keeps it anyway
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = (
        "Shut the primary down cleanly (PostgreSQL fast shutdown, Redis SHUTDOWN): a planned stop nobody failed over for."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        topology = topology_of(ctx, self.name)
        return {"primary": True, **topology.stop_node(primary_of(topology, self.name))}


class PauseParams(FaultParams):
    seconds: float = Field(
        default=5.0, gt=0, le=600, description="How long the primary stays frozen before it is resumed (SIGCONT)."
    )


class PausePrimary(_OnTopology):
    """A primary that freezes (a stalled VM, a long garbage collection, a hung disk) and comes back.

    Every process of the server is stopped with SIGSTOP: connections stay open and
    accept bytes, but nothing answers. After ``seconds`` it is resumed and believes it is
    still the primary, which is how a split brain begins if a replica was promoted
    meanwhile and nobody fenced the old one.
    """

    name: ClassVar[str] = "pause_primary"
    hits_primary: ClassVar[bool] = True
    keeps_workload: ClassVar[bool] = False  # in a disaster step; a failover step keeps it anyway
    Params: ClassVar[type[FaultParams]] = PauseParams
    description: ClassVar[str] = (
        "SIGSTOP the primary's server for `seconds`, then SIGCONT: a frozen host that comes back."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, PauseParams)
        topology = topology_of(ctx, self.name)
        node = primary_of(topology, self.name)
        effect = topology.pause_node(node)
        timer = threading.Timer(p.seconds, topology.resume_node, args=(node,))
        timer.daemon = True
        timer.start()
        return {"primary": True, **effect, "resumes_after_seconds": p.seconds}


class ReplicaParams(FaultParams):
    replica: int = Field(
        default=1,
        ge=1,
        description="Which replica: the n-th node that is a replica when the fault hits, in node order.",
    )


def _replica(topology: Topology, n: int, fault: str) -> str:
    replicas = topology.replicas()
    if len(replicas) < n:
        raise FaultError(f"{fault}: replica {n} was asked for, but {len(replicas)} replica(s) answer: {replicas}")
    return replicas[n - 1]


class KillReplica(_OnTopology):
    name: ClassVar[str] = "kill_replica"
    Params: ClassVar[type[FaultParams]] = ReplicaParams
    description: ClassVar[str] = "SIGKILL one replica's server: the topology runs on with one copy fewer."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ReplicaParams)
        topology = topology_of(ctx, self.name)
        return {"replica": True, **topology.kill_node(_replica(topology, p.replica, self.name))}


class LagParams(ReplicaParams):
    how: Literal["receive", "replay"] = Field(
        default="receive",
        description="`receive`: the replica stops receiving WAL (its WAL receiver is stopped by clearing "
        "`primary_conninfo`), as behind a congested link: an asynchronous primary goes on acknowledging writes "
        "the replica never gets, a synchronous one stops acknowledging. `replay`: WAL is still received but not "
        "applied (`pg_wal_replay_pause()`): reads on the replica are stale, and a promotion still applies it.",
    )


class LagReplica(_OnTopology):
    name: ClassVar[str] = "lag_replica"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres-replicated"})
    Params: ClassVar[type[FaultParams]] = LagParams
    description: ClassVar[str] = (
        "Make a PostgreSQL replica fall behind: stop it receiving WAL (`how: receive`) or applying it "
        "(`how: replay`, `pg_wal_replay_pause()`)."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, LagParams)
        topology = topology_of(ctx, self.name)
        return {"replica": True, **topology.lag(_replica(topology, p.replica, self.name), p.how)}


class KillSentinelMajority(_OnTopology):
    """Sentinels that cannot agree: a majority of them gone, so no failover is authorised.

    A Sentinel fails a master over only when a majority of all Sentinels elects it to;
    with most of them dead, the master's death is noticed but nobody may act on it, and
    the drill shows what the runbook then does by hand.
    """

    name: ClassVar[str] = "kill_sentinel_majority"
    targets: ClassVar[frozenset[str]] = frozenset({"redis-sentinel"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "SIGKILL a majority of the Sentinels: the rest can no longer authorise a failover."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        topology = topology_of(ctx, self.name)
        watchers = topology.watchers()
        majority = len(watchers) // 2 + 1
        return topology.kill_watchers(watchers[:majority])
