"""Service containers: an application run from an image, on a runtime that has containers.

The application kind's image form asks its runtime for a :class:`ServiceContainer`; only a
runtime with a container engine and a private network for the run (docker) gives one.
The others refuse with a message naming the runtime that can (``Runtime.service_container``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ContainerSpec:
    """What to run: the image, its argv, its environment, its port and read-only mounts.

    ``env`` may hold passwords: it is handed to the engine as the container's environment
    only, never put in an argument, a label, a name or a log line.
    """

    image: str
    command: list[str] | None
    env: dict[str, str]
    port: int
    mounts: dict[Path, str] = field(default_factory=dict)  # host directory -> path in the container


class ServiceContainer(ABC):
    """One service container, recreated fresh by each ``start``."""

    name: str  # the current container's name, for fault records and messages
    host_port: int | None  # where ``port`` is published on 127.0.0.1 while it runs

    @abstractmethod
    def start(self) -> None:
        """Remove any earlier container and start a fresh one from the spec."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after a grace period)."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL it, as a crash would."""

    @abstractmethod
    def remove(self) -> None:
        """Remove the container, running or not (a replacement is about to start)."""

    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def exit_code(self) -> int | None:
        """The exit code of a container that stopped, or None."""

    @abstractmethod
    def logs(self) -> str:
        """The last lines of its output, as a hint in an error message."""

    @abstractmethod
    def exec(self, argv: list[str], timeout: float) -> int:
        """Run ``argv`` inside it (its own environment); the exit code."""
