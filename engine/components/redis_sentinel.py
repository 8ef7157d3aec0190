"""redis-sentinel: a Redis master with replicas, watched by Sentinels that fail it over.

A ``redis`` component in every other respect: seeded, backed up with DUMP, restored with
RESTORE and fingerprinted through the endpoint, which asks the Sentinels where the master
is; so a backup is taken from the current master and a restore goes into it (and on to
its replicas). What it adds is the topology: nodes, roles, the Sentinels, and what
failover faults and the ``failover`` step do to them.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.components.base import SeedParams
from engine.components.nodes import NodeViews
from engine.components.redis import RedisComponent, RedisParams
from engine.runtime.base import REPLICAS
from engine.runtime.topology import SentinelSpec, Topology


class RedisSentinelParams(RedisParams):
    replicas: int = Field(default=1, ge=1, le=5, description="Replicas of the master.")
    sentinels: int = Field(
        default=3, ge=1, le=7, description="Sentinels; a failover needs a majority of them to agree."
    )
    down_after_ms: int = Field(
        default=1000,
        ge=100,
        le=60_000,
        description="Milliseconds a master may not answer before a Sentinel calls it down "
        "(`down-after-milliseconds`; Redis's default is 30000).",
    )


class RedisSentinelComponent(RedisComponent, NodeViews):
    name: ClassVar[str] = "redis-sentinel"
    server: ClassVar[str | None] = "redis-sentinel"
    needs: ClassVar[frozenset[str]] = frozenset({REPLICAS})
    Params: ClassVar[type[SeedParams]] = RedisSentinelParams
    description: ClassVar[str] = (
        "A Redis master with replicas under Sentinel, which fails it over; backed up, restored and fingerprinted "
        "like `redis` through the master the Sentinels name."
    )

    params: RedisSentinelParams

    def provision(self) -> None:
        p = self.params
        spec = SentinelSpec(replicas=p.replicas, sentinels=p.sentinels, down_after_ms=p.down_after_ms)
        service = self.runtime.server(self.name, self.instance, spec)
        self.service = service
        self.topology: Topology = service

    def connection_env(self) -> dict[str, str]:
        """The master's address as the Sentinels give it now, and the Sentinels to ask after a failover."""
        env = super().connection_env()
        env["SENTINELS"] = ",".join(self.service.sentinel_addresses())  # type: ignore[attr-defined]
        env["MASTER_NAME"] = "drproof"
        return env
