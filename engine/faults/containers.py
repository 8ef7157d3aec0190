"""Faults on the containers and volumes of servers: only container runtimes have them.

They are offered for postgres and redis components. On a runtime without containers
(local) they refuse with a clear error instead of pretending: a drill that claims to have
removed a volume must really have removed one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams
from engine.runtime.base import ContainerOps


def _ops(ctx: FaultContext, fault: str) -> ContainerOps:
    service = getattr(ctx.component, "service", None)
    if not isinstance(service, ContainerOps):
        raise FaultError(
            f"{fault} needs a container runtime (run with --runtime docker); "
            f"{getattr(ctx.component, 'instance', '?')!r} does not run in a container here"
        )
    return service


class KillContainer(Fault):
    name: ClassVar[str] = "kill_container"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres", "redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "SIGKILL the server's container, as a crashed host or OOM killer would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return _ops(ctx, self.name).kill_container()


class StopContainer(Fault):
    name: ClassVar[str] = "stop_container"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres", "redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = (
        "Stop the server's container (SIGTERM, then SIGKILL after 15 s): an unplanned shutdown."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return _ops(ctx, self.name).stop_container()


class RemoveContainer(Fault):
    name: ClassVar[str] = "remove_container"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres", "redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Remove the server's container; its data volume survives."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return _ops(ctx, self.name).remove_container()


class RemoveVolume(Fault):
    name: ClassVar[str] = "remove_volume"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres", "redis"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Remove the container and its data volume: total loss of the server's data."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return _ops(ctx, self.name).remove_volume()
