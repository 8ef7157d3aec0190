"""Faults that hit a Redis component."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from engine.components.redis import RedisComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")


def _redis(ctx: FaultContext) -> RedisComponent:
    assert isinstance(ctx.component, RedisComponent)
    return ctx.component


class FlushAll(Fault):
    name: ClassVar[str] = "flushall"
    targets: ClassVar[frozenset[str]] = frozenset({"redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "FLUSHALL: every key of every database deleted on a running server."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        comp = _redis(ctx)
        try:
            before = sum(comp.client(db).dbsize() for db in comp._dbs())
            comp.client().flushall()
        except redis.RedisError as exc:
            raise FaultError(f"flushall: redis {comp.instance!r} is not answering: {exc}") from exc
        return {"keys_deleted": before}


class Kill(Fault):
    name: ClassVar[str] = "kill"
    targets: ClassVar[frozenset[str]] = frozenset({"redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = (
        "SIGKILL the server. With persistence off (the drill default) every key is lost; the server stays down."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        comp = _redis(ctx)
        comp.service.kill()
        return {"server_running": comp.service.is_running(), "signal": "SIGKILL"}


class ExpireKeysParams(FaultParams):
    pattern: str = Field(default="*", description="Glob of the keys hit, as in `SCAN MATCH` (e.g. `session:*`).")
    fraction: float = Field(
        default=1.0, gt=0, le=1, description="Share of the matching keys hit (ignored if `count` is set)."
    )
    count: int | None = Field(default=None, ge=1, description="Exact number of matching keys hit.")
    ttl_ms: int = Field(default=1, ge=1, le=60_000, description="Time to live set on each key, in milliseconds.")


class ExpireKeys(Fault):
    """Keys that vanish on their own: a deploy that set the wrong TTL.

    No command deletes anything, so nothing in an audit log says "delete"; the server
    simply expires the keys. The fault waits until they are really gone, because a
    TTL that has not fired yet is no loss.
    """

    name: ClassVar[str] = "expire_keys"
    targets: ClassVar[frozenset[str]] = frozenset({"redis"})
    Params: ClassVar[type[FaultParams]] = ExpireKeysParams
    description: ClassVar[str] = "Set a tiny TTL on matching keys and wait until the server has expired them."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ExpireKeysParams)
        comp = _redis(ctx)
        try:
            matching = [
                (db, key)
                for db in comp._dbs()
                for key in sorted(comp.client(db).scan_iter(match=p.pattern, count=1000))
            ]
            if not matching:
                raise FaultError(f"{self.name}: no key of {comp.instance!r} matches {p.pattern!r}")
            n = p.count if p.count is not None else max(1, round(len(matching) * p.fraction))
            victims = sorted(ctx.rng.sample(matching, min(n, len(matching))))
            by_db: dict[int, list[bytes]] = {}
            for db, key in victims:
                by_db.setdefault(db, []).append(key)
            for db, keys in by_db.items():
                pipe = comp.client(db).pipeline(transaction=False)
                for key in keys:
                    pipe.pexpire(key, p.ttl_ms)
                pipe.execute()
            left = self._wait_gone(comp, by_db, deadline=time.monotonic() + p.ttl_ms / 1000 + 10)
            remaining = sum(comp.client(db).dbsize() for db in comp._dbs())
        except redis.RedisError as exc:
            raise FaultError(f"{self.name}: redis {comp.instance!r} is not answering: {exc}") from exc
        if left:
            raise FaultError(f"{self.name}: {left} of {len(victims)} keys still exist after their TTL ran out")
        return {
            "pattern": p.pattern,
            "keys_matched": len(matching),
            "keys_expired": len(victims),
            "ttl_ms": p.ttl_ms,
            "keys_left": remaining,
            "examples": [f"db{db} {key.decode('utf-8', 'backslashreplace')}" for db, key in victims[:10]],
        }

    @staticmethod
    def _wait_gone(comp: RedisComponent, by_db: dict[int, list[bytes]], deadline: float) -> int:
        """Poll until every key is gone; ``EXISTS`` also makes the server drop an expired key at once."""
        while True:
            left = 0
            for db, keys in by_db.items():
                pipe = comp.client(db).pipeline(transaction=False)
                for key in keys:
                    pipe.exists(key)
                left += sum(pipe.execute())
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.01)
