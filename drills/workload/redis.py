"""Workload keys ``drproof_workload:<n>``; each SET is acknowledged by the server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from drills.workload.base import WORKLOAD_MARK, Writer
from engine.components.redis import RedisComponent
from engine.components.redis_records import WORKLOAD_MARKER, WORKLOAD_MARKER_KEY
from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")


def mark(client: Any) -> None:
    """Mark the database written to as the workload's: fingerprints leave out its keys there, and only there."""
    client.set(WORKLOAD_MARKER_KEY, WORKLOAD_MARKER)


class RedisWriter(Writer):
    name: ClassVar[str] = "redis"

    def open(self) -> None:
        assert isinstance(self.component, RedisComponent)
        self.client = self.component.client()
        mark(self.client)

    def write(self, seq: int) -> str | None:
        self.client.set(f"{WORKLOAD_MARK}:{seq}", str(seq))
        return None

    def survivors(self) -> set[int]:
        assert isinstance(self.component, RedisComponent)
        try:
            keys = list(self.component.client().scan_iter(match=f"{WORKLOAD_MARK}:*", count=1000))
        except redis.RedisError as exc:  # unreachable is not "nothing survived": nothing was read
            raise ComponentError(f"redis {self.component.instance!r}: cannot read the workload's keys: {exc}") from None
        return {int(k.rsplit(b":", 1)[1]) for k in keys if k.rsplit(b":", 1)[1].isdigit()}

    def close(self) -> None:
        self.client.close()
