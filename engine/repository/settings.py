"""How a repository backend is configured and opened: one contract for drills and the standalone engine.

A backend is one module holding a :class:`~engine.repository.base.Repository` subclass
with a ``Settings`` model (the keys of a ``repository:`` mapping besides ``type``) and an
``open`` class method, plus one ``register`` line in :mod:`engine.repository`. The
scenario schema, backup-config.yaml, the drill runner and the standalone engine all build
their repository from the registry, so a new backend is valid YAML, documented and
opened everywhere with no edit elsewhere. The format layer (encoding, verification,
manifests) is :mod:`engine.repository.base`, shared by every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engine.crypto import Encryption

if TYPE_CHECKING:
    from engine.repository.base import Repository
    from engine.signing import RepositoryTrust  # an annotation only: engine.signing brings cryptography


class BackendSettings(BaseModel):
    """The keys one backend takes in a ``repository:`` mapping (``type`` selects the backend)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    def describe(self) -> dict[str, str]:
        """Where the repository is, for reports and the audit log (never credentials)."""
        raise NotImplementedError

    def secret_variables(self) -> list[str]:
        """Names of the environment variables holding this repository's secrets."""
        return []

    def resolve_paths(self, base: Path) -> None:
        """Make paths written in the file relative to the file's directory ``base``."""


@dataclass(frozen=True)
class OpenContext:
    """What the caller adds to the settings when it opens a repository.

    ``create=False`` is for readers that must write nothing (a restore test, a dry run).
    ``trust``: the signing keys (engine.signing); None for an unsigned repository.
    A drill passes ``run_dir``, its private directory for this repository (where a backend
    that stores files keeps the run's sets when no place is configured), and ``run_name``,
    unique to the run (under which a remote backend keeps the run's objects apart from
    other runs').
    """

    encryption: Encryption | None = None
    create: bool = True
    run_dir: Path | None = None
    run_name: str | None = None
    trust: RepositoryTrust | None = None  # how sets are signed and which signatures are accepted


class Backend(Protocol):
    """A registered backend class: its ``type:`` name, settings model and opener."""

    name: ClassVar[str]
    Settings: ClassVar[type[BackendSettings]]

    @classmethod
    def open(cls, settings: Any, ctx: OpenContext) -> Repository: ...
