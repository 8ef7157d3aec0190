"""Faults that hit a Redis component."""

from __future__ import annotations

from typing import Any, ClassVar

import redis

from engine.components.redis import RedisComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams


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
