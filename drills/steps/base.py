"""The contract every step kind fulfils.

A step kind is one class: its ``name`` is the YAML key of the step (``- backup: ...``),
its ``model`` validates the step, ``cross_check`` finds the references it makes that do
not hold (with file:line:col), ``preflight`` refuses before anything starts what the run
cannot do, and ``run`` executes it against the drill. A new step is one module plus one
registration line in ``drills/steps/__init__.py``; the scenario schema, validation, the
runner and the generated reference pick it up from the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from drills.crosscheck import CheckContext
from drills.strict import Strict
from engine.errors import DrproofError

if TYPE_CHECKING:
    from drills.runner import DrillRunner


class StepFailed(DrproofError):
    """A step that must succeed for the drill to continue did not."""


class StepKind(ABC):
    name: ClassVar[str]
    # The step as written: a mapping with exactly one key, ``name``.
    model: ClassVar[type[Strict]]

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        """Add to ``ctx`` the problems of this step's references (``spec`` is the raw mapping)."""
        return None

    def preflight(self, run: DrillRunner, index: int, spec: Any) -> list[str]:
        """Why this step cannot run on this run's setup, found before anything starts."""
        return []

    @abstractmethod
    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        """Execute the step (``spec`` is the validated inner model), recording what happened."""
