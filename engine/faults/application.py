"""Faults on an application component: its process (or container) dies or is stopped."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.components.application import ApplicationComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams


def _app(ctx: FaultContext, fault: str) -> ApplicationComponent:
    if not isinstance(ctx.component, ApplicationComponent):
        raise FaultError(f"{fault} needs an application component")
    if not ctx.component.is_running():
        raise FaultError(f"{fault}: application {ctx.component.instance!r} is not running")
    return ctx.component


class KillProcess(Fault):
    name: ClassVar[str] = "kill_process"
    targets: ClassVar[frozenset[str]] = frozenset({"application"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "SIGKILL the application's process (or container), as a crash or the OOM killer would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        app = _app(ctx, self.name)
        what = app.identity()
        app.kill()
        return {**what, "signal": "SIGKILL", "running": app.is_running()}


class StopProcess(Fault):
    name: ClassVar[str] = "stop_process"
    targets: ClassVar[frozenset[str]] = frozenset({"application"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Stop the application's process (or container): SIGTERM, SIGKILL after 10 s, an unplanned shutdown."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        app = _app(ctx, self.name)
        what = app.identity()
        app.stop()
        return {**what, "signal": "SIGTERM", "running": app.is_running()}
