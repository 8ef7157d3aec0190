"""What every workload writer does: write record N, and later say which N survived."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from engine.components import component_kinds
from engine.components.base import WORKLOAD_MARK, Component
from engine.registry import Registry


@dataclass(frozen=True)
class Ack:
    """One write the component acknowledged: its number, when (drill clock, seconds), and by which node.

    ``node`` is set by writers to replicated topologies (the server that acknowledged),
    so a failover's first write on the new primary and writes taken by two primaries at
    once can be told apart.
    """

    seq: int
    offset: float
    node: str | None = None


class Writer(ABC):
    """Writes numbered records into one component; one writer per thread."""

    name: ClassVar[str]  # the component kind it writes to (variants of that kind too)

    def __init__(self, component: Component) -> None:
        self.component = component

    @classmethod
    def accepts(cls, component: Component) -> bool:
        """Whether this component, of the writer's kind, takes a workload (e.g. has endpoints for it)."""
        return True

    @abstractmethod
    def open(self) -> None:
        """Prepare (connect, create the table or directory); called in the writing thread."""

    @abstractmethod
    def write(self, seq: int) -> str | None:
        """Write record ``seq`` durably; return only once the component acknowledged it.

        Returns the node that acknowledged it where the writer can tell (a replicated
        topology), else None.
        """

    @abstractmethod
    def survivors(self) -> set[int]:
        """The record numbers present now (after a restore); an unreachable store has none."""

    def close(self) -> None:
        """Release connections."""
        return None


writer_kinds: Registry[type[Writer]] = Registry("workload writer")


def writer_for(component: Component) -> type[Writer] | None:
    """The writer for a component's kind or the kind it is built on, if there is one."""
    for cls in type(component).__mro__:
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name in writer_kinds and name in component_kinds:
            writer = writer_kinds.get(name)
            return writer if writer.accepts(component) else None
    return None


__all__ = ["WORKLOAD_MARK", "Ack", "Writer", "writer_for", "writer_kinds"]
