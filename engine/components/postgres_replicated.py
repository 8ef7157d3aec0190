"""postgres-replicated: a PostgreSQL primary with streaming replicas, optionally managed by Patroni.

It is a ``postgres`` component in every other respect: seeded, backed up with pg_dump,
restored and fingerprinted through the topology's endpoint, which reaches whichever node
is primary now. So a backup is always taken from the current primary, a restore goes
into it (and on to its replicas by replication), and every fault and check of the
``postgres`` kind works on it too. What it adds is the topology (``Topology``): nodes,
roles, and the operations failover faults and the ``failover`` step perform on one node.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from engine.components.base import SeedParams
from engine.components.connections import libpq_fields
from engine.components.nodes import NodeViews
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.base import REPLICAS
from engine.runtime.topology import ReplicatedSpec, Topology


class PostgresReplicatedParams(PostgresParams):
    replicas: int = Field(default=1, ge=1, le=5, description="Streaming replicas beside the primary.")
    synchronous: bool = Field(
        default=False,
        description="`true`: a commit returns only once a replica has flushed it (`synchronous_standby_names = "
        "'ANY 1 (*)'`; with Patroni, `synchronous_mode`), so a failover loses no acknowledged write. `false`: "
        "asynchronous replication, which may lose what the replicas had not received.",
    )
    manager: Literal["none", "patroni"] = Field(
        default="none",
        description="`none`: plain streaming replication; drproof is the operator who promotes a replica "
        "(`failover` strategy `promote`). `patroni`: Patroni with an etcd of its own, started by the runtime, "
        "elects and promotes a replica by itself (strategy `automatic`) and rewinds a returning old leader.",
    )


class PostgresReplicatedComponent(PostgresComponent, NodeViews):
    name: ClassVar[str] = "postgres-replicated"
    server: ClassVar[str | None] = "postgres-replicated"
    needs: ClassVar[frozenset[str]] = frozenset({REPLICAS})
    Params: ClassVar[type[SeedParams]] = PostgresReplicatedParams
    description: ClassVar[str] = (
        "A PostgreSQL primary with streaming replicas (synchronous or not), optionally managed by Patroni with "
        "etcd; backed up, restored and fingerprinted like `postgres` through the endpoint that reaches the "
        "current primary."
    )

    params: PostgresReplicatedParams

    def provision(self) -> None:
        p = self.params
        spec = ReplicatedSpec(
            replicas=p.replicas, synchronous=p.synchronous, manager=None if p.manager == "none" else p.manager
        )
        service = self.runtime.server(self.name, self.instance, spec)
        self.service = service
        self.topology: Topology = service

    def connection_env(self) -> dict[str, str]:
        """The endpoint as a multi-host URL (``HOST`` and ``PORT`` are libpq's comma lists)."""
        env = super().connection_env()
        f = libpq_fields(self.service.dsn(self.db))
        hosts = ",".join(f"{h}:{p}" for h, p in zip(f["host"].split(","), f["port"].split(","), strict=True))
        env["URL"] = f"postgresql://{quote(f['user'])}@{hosts}/{quote(self.db)}?target_session_attrs=read-write"
        return env
