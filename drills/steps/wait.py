"""wait: let time pass (for example between a backup and a disaster)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from drills.durations import Duration
from drills.steps.base import StepKind
from drills.strict import Strict

if TYPE_CHECKING:
    from drills.runner import DrillRunner


class WaitStep(Strict):
    """Let time pass (for example between a backup and a disaster)."""

    wait: Duration


class Wait(StepKind):
    name: ClassVar[str] = "wait"
    model: ClassVar[type[Strict]] = WaitStep

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        with run.phase(f"wait {spec:g}s", "wait", step=index + 1):
            time.sleep(spec)
