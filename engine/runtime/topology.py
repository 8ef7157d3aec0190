"""Topologies: several servers behind one documented endpoint, and what failover drills do to them.

A replicated PostgreSQL, a Redis watched by Sentinel or a Redis Cluster is still one
component to drproof: backed up, restored and fingerprinted through the endpoint clients
use (which reaches the current primary). Failover faults and recovery need more: which
node is primary now, and the operations an operator or a crash performs on one node.
Those are this interface, so faults and the ``failover`` step never need to know which
topology or runtime they act on.

Node names are stable for a run ("node0", "node1", ...); node0 starts as the primary.
In a Redis Cluster, "the primary" is the master of the shard the drill's workload writes
to (its keys share one hash slot), the one failover faults hit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["primary", "replica", "down", "no answer"]


@dataclass(frozen=True)
class ReplicatedSpec:
    """A PostgreSQL primary with streaming replicas, as a component asks for it."""

    replicas: int = 1
    synchronous: bool = False
    manager: str | None = None  # "patroni": Patroni with etcd decides and promotes


@dataclass(frozen=True)
class SentinelSpec:
    """A Redis master with replicas, watched by Sentinels that fail it over."""

    replicas: int = 1
    sentinels: int = 3
    down_after_ms: int = 1000


@dataclass(frozen=True)
class ClusterSpec:
    """A Redis Cluster: masters sharing the hash slots, each with replicas."""

    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = 1000


class Topology(ABC):
    """What failover faults and the ``failover`` step do to the servers behind one endpoint."""

    # Whether something in the topology (Patroni, Sentinel, the Cluster itself) promotes a
    # replica by itself when the primary fails.
    automatic: bool = False

    @abstractmethod
    def nodes(self) -> list[str]:
        """Every node of the topology (of the workload's shard, for a cluster), in start order."""

    @abstractmethod
    def role(self, node: str) -> Role:
        """What ``node`` answers now: primary, replica, down (no process), or no answer (paused, hung)."""

    @abstractmethod
    def primary(self) -> str | None:
        """The node the endpoint reaches as primary now, or None when none answers as one."""

    def node(self, name: str) -> Any:
        """The single server ``name`` (a ``PostgresService`` or ``RedisService``), to read it on its own."""
        raise NotImplementedError

    def replicas(self) -> list[str]:
        return [n for n in self.nodes() if self.role(n) == "replica"]

    @abstractmethod
    def address(self, node: str) -> str:
        """Where ``node`` listens (host:port), for reports and for telling writers' acknowledgements apart."""

    def node_at(self, address: str | None) -> str | None:
        """The node listening at ``address`` (as ``address`` gives it), or None."""
        return next((n for n in self.nodes() if self.address(n) == address), None)

    @abstractmethod
    def kill_node(self, node: str) -> dict[str, Any]:
        """SIGKILL the node's server (a crash); it stays down."""

    @abstractmethod
    def stop_node(self, node: str) -> dict[str, Any]:
        """Shut the node's server down cleanly (an operator or an orchestrator stopping it)."""

    @abstractmethod
    def pause_node(self, node: str) -> dict[str, Any]:
        """SIGSTOP the node's server: it keeps its sockets but answers nothing (a frozen VM, a long GC)."""

    @abstractmethod
    def resume_node(self, node: str) -> dict[str, Any]:
        """SIGCONT a paused node."""

    @abstractmethod
    def promote(self, failed: str) -> dict[str, Any]:
        """The manual runbook step: promote the most advanced replica other than ``failed``, repoint the rest."""

    @abstractmethod
    def rejoin(self, node: str) -> dict[str, Any]:
        """Bring ``node`` (a failed former primary) back as a replica of the current primary, caught up."""

    def rebuild(self, node: str) -> dict[str, Any]:
        """Re-clone ``node`` (down, or its data gone) from the current primary and start it as a replica.

        Only for topologies whose nodes can be cloned (replicated PostgreSQL); others refuse.
        """
        from engine.errors import RuntimeStartError

        raise RuntimeStartError(f"this topology cannot rebuild a node ({node})")

    def lag(self, node: str, how: str) -> dict[str, Any]:
        """Make replica ``node`` fall behind (``how`` is topology-specific); refused where it means nothing."""
        from engine.errors import FaultError

        raise FaultError(f"this topology cannot lag a replica ({how})")

    def caught_up(self, node: str) -> bool:
        """Whether replica ``node`` has everything the primary has written so far."""
        return self.role(node) == "replica"

    def manager_problems(self) -> list[str]:
        """Nodes whose server runs but whose manager (Patroni) does not: no automatic failover involves them."""
        return []

    def watchers(self) -> list[str]:
        """The processes that decide failovers (Sentinels), by name; none for most topologies."""
        return []

    def kill_watchers(self, names: list[str]) -> dict[str, Any]:
        from engine.errors import FaultError

        raise FaultError("this topology has no processes that decide failovers")

    def describe(self) -> str:
        """One line for reports: what runs, e.g. "primary node0 + 2 async replicas"."""
        return ", ".join(f"{n} ({self.address(n)})" for n in self.nodes())
