"""Runtimes, by the name used in ``stack.runtime``, and the server kinds each provides.

A runtime offers server kinds (``Runtime.provide``) and has capabilities
(``Runtime.capabilities``); component kinds and faults name the server kind and the
capabilities they need, so a new topology or runtime is one module plus its
registration lines here.
"""

from engine.registry import Registry
from engine.runtime import local_redis_ha, local_replicated
from engine.runtime.base import CAPABILITIES, PostgresService, RedisService, Runtime, ServerKind
from engine.runtime.docker import DockerRuntime
from engine.runtime.external import ExternalRuntime
from engine.runtime.local import LocalRuntime

# Selectable with ``stack.runtime``; the external runtime is the standalone engine's
# (servers drproof did not start) and is named in messages only.
runtimes: Registry[type[Runtime]] = Registry("runtime")
runtimes.register(LocalRuntime)
runtimes.register(DockerRuntime)
KNOWN_RUNTIMES: tuple[type[Runtime], ...] = (LocalRuntime, DockerRuntime, ExternalRuntime)

LocalRuntime.provide(ServerKind("postgres", LocalRuntime.start_postgres, "a PostgreSQL server"))
LocalRuntime.provide(ServerKind("redis", LocalRuntime.start_redis, "a Redis server"))
LocalRuntime.provide(
    ServerKind("postgres-replicated", local_replicated.start, "a PostgreSQL primary with streaming replicas")
)
LocalRuntime.provide(ServerKind("redis-cluster", local_redis_ha.start_cluster, "a Redis Cluster"))
LocalRuntime.provide(
    ServerKind("redis-sentinel", local_redis_ha.start_sentinel, "a Redis master and replicas under Sentinel")
)
DockerRuntime.provide(ServerKind("postgres", DockerRuntime.start_postgres, "a PostgreSQL container"))
DockerRuntime.provide(ServerKind("redis", DockerRuntime.start_redis, "a Redis container"))
ExternalRuntime.provide(ServerKind("postgres", lambda rt, i, _: rt.postgres(i), "an existing PostgreSQL server"))
ExternalRuntime.provide(ServerKind("redis", lambda rt, i, _: rt.redis(i), "an existing Redis server"))


def supporting(needs: frozenset[str], server: str | None = None) -> list[str]:
    """The runtimes that have every capability in ``needs`` and provide ``server``."""
    return [r.name for r in KNOWN_RUNTIMES if not r.lacks(needs, server)]


def refusal(runtime: type[Runtime], needs: frozenset[str], server: str | None = None) -> str | None:
    """Why ``runtime`` cannot run something that needs ``needs`` and ``server``, or None if it can.

    Names what is missing and the runtimes that have it, e.g. "needs physical-access
    (runtimes that have it: local, external)".
    """
    missing = runtime.lacks(needs, server)
    if not missing:
        return None
    return f"needs {', '.join(missing)} (runtimes that have it: {', '.join(supporting(needs, server)) or 'none'})"


__all__ = [
    "CAPABILITIES",
    "KNOWN_RUNTIMES",
    "DockerRuntime",
    "ExternalRuntime",
    "LocalRuntime",
    "PostgresService",
    "RedisService",
    "Runtime",
    "ServerKind",
    "refusal",
    "runtimes",
    "supporting",
]
