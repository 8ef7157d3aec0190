"""Workload writers for Redis topologies: each write says which server acknowledged it.

Through Sentinel, a write goes to the master the Sentinels named when the connection was
made; through a Cluster client, to the master the client's slot map names for the key.
Either way the address is known only to the connection, so it is read there: a failover's
first write on the new master, and writes two masters took at once, are told apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from drills.workload.base import WORKLOAD_MARK
from drills.workload.redis import RedisWriter, mark
from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")


class SentinelWriter(RedisWriter):
    name: ClassVar[str] = "redis-sentinel"

    def write(self, seq: int) -> str | None:
        """SET on one connection of the pool: the connection knows the master it reached."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("SET", f"{WORKLOAD_MARK}:{seq}", str(seq))  # type: ignore[no-untyped-call]
            conn.read_response()
            return f"{conn.host}:{conn.port}"
        except redis.RedisError:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)


class ClusterWriter(RedisWriter):
    """Keys ``drproof_workload:{w}:<n>``: one hash slot, so one shard, the one failover faults hit."""

    name: ClassVar[str] = "redis-cluster"

    def open(self) -> None:
        self.client: Any = self.component.client()  # type: ignore[attr-defined]
        mark(self.client)

    def survivors(self) -> set[int]:
        """The workload's keys on every master (or on the one node a view of the component reads)."""
        found: set[int] = set()
        try:
            for client in self.component._masters():  # type: ignore[attr-defined]
                for key in client.scan_iter(match=f"{WORKLOAD_MARK}:*", count=1000):
                    tail = key.rsplit(b":", 1)[1]
                    if tail.isdigit():
                        found.add(int(tail))
        except redis.RedisError as exc:  # unreachable is not "nothing survived": nothing was read
            raise ComponentError(f"redis {self.component.instance!r}: cannot read the workload's keys: {exc}") from None
        return found

    def write(self, seq: int) -> str | None:
        key = f"{WORKLOAD_MARK}:{{w}}:{seq}"
        self.client.set(key, str(seq))
        node = self.client.get_node_from_key(key)
        return f"127.0.0.1:{node.port}" if node is not None else None
