"""The contract every fault fulfils.

A fault class names what it breaks (``targets``: component kinds, or ``repository``),
validates its parameters with ``Params``, and returns from ``inject`` a precise record
of the damage done, which becomes evidence in the report: an auditor must be able to
see that the disaster really happened.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from engine.components.base import Component
from engine.manifest import Manifest
from engine.repository.base import Repository

REPOSITORY_TARGET = "repository"


class FaultParams(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    random_seed: int = 1


@dataclass
class FaultContext:
    """What a fault may touch. The optional fields exist only in drills that configure them.

    ``offsite`` and ``replace_offsite`` are set when the drill has an offsite repository;
    ``lose_key`` when it encrypts: the key lives only in the runner's memory, so only the
    runner can lose it. Each returns the evidence of what it changed.
    """

    component: Component | None
    repository: Repository
    find_backup: Callable[[str | None], Manifest]
    rng: random.Random
    offsite: Repository | None = None
    replace_offsite: Callable[[Repository], None] | None = None
    lose_key: Callable[[], dict[str, str]] | None = None


class Fault(ABC):
    name: ClassVar[str]
    targets: ClassVar[frozenset[str]]
    # Runtime capabilities the fault needs (``engine.runtime.base.CAPABILITIES``); a drill
    # on a runtime that lacks one stops before anything starts, naming the ones that have it.
    needs: ClassVar[frozenset[str]] = frozenset()
    # Faults on one node of a replicated topology leave the workload writing: what the
    # failover that follows loses is what the drill measures. Every other fault ends it.
    keeps_workload: ClassVar[bool] = False
    # Faults that take the primary away: the ones a ``failover`` step starts with.
    hits_primary: ClassVar[bool] = False
    Params: ClassVar[type[FaultParams]]
    description: ClassVar[str]
    # A repository fault acts on a set taken earlier, except one that changes how the
    # next sets are taken (skew_clock): validation asks for an earlier backup step unless False.
    needs_backup: ClassVar[bool] = True

    def __init__(self, params: FaultParams) -> None:
        self.params = params

    @abstractmethod
    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Break the target; return what exactly was broken."""


def flip_bytes(data: bytes) -> bytes:
    """Every bit inverted: guaranteed to differ from the input at every position."""
    return bytes(b ^ 0xFF for b in data)
