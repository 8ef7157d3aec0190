"""The contract every component kind fulfils.

A component kind is one class: its ``name`` is the YAML ``kind:``, its ``Params`` model
validates the ``seed:`` section, and the methods below are everything a drill or the
standalone engine needs. Faults reach into a component only through its public methods
and its ``service``/``path``, so a fault never needs to know which runtime is in use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import IO, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from engine.fingerprint import Fingerprint
from engine.manifest import ArtifactRecord, ComponentRecord
from engine.repository.base import BackupSetWriter
from engine.runtime.base import Runtime

# Records of the drill's live workload carry this name (table, key prefix, directory).
# Fingerprints leave them out: the workload is judged by the recovery point it measures,
# and its writes after a backup must not make every restore look unfaithful.
WORKLOAD_MARK = "drproof_workload"


class SeedParams(BaseModel):
    """Base of every component's ``seed:`` model; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    random_seed: int = 42


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    detail: str


class ArtifactSource:
    """Opens the artifacts of one component in one backup set, verified."""

    def __init__(self, artifacts: dict[str, ArtifactRecord], opener: Any) -> None:
        self.artifacts = artifacts
        self._opener = opener

    def names(self) -> list[str]:
        return sorted(self.artifacts)

    def open(self, name: str) -> Any:
        """Context manager yielding a readable stream of the decompressed artifact."""
        return self._opener(self.artifacts[name])


class Component(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[SeedParams]]
    description: ClassVar[str]

    def __init__(self, instance: str, params: SeedParams, runtime: Runtime) -> None:
        self.instance = instance
        self.params = params
        self.runtime = runtime

    @abstractmethod
    def provision(self) -> None:
        """Ask the runtime for the server or directory; wait until it answers."""

    @abstractmethod
    def seed(self) -> dict[str, Any]:
        """Fill with deterministic data; return what was created (for the report)."""

    @abstractmethod
    def fingerprint(self) -> Fingerprint: ...

    @abstractmethod
    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        """Write full-backup artifacts; return details for the manifest."""

    @abstractmethod
    def restore(self, source: ArtifactSource) -> None:
        """Bring the component back to the backed-up state, replacing what is there."""

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """Back up and fingerprint what was backed up: the manifest's reference for fidelity.

        The default reads the component twice, fingerprint first. Kinds that read every
        byte while archiving anyway (directory trees) override it to digest in the same
        pass, so a backup costs one read of the data, and the fingerprint describes
        exactly the bytes archived even when files change meanwhile.
        """
        fp = self.fingerprint()
        if incremental is not None:
            return self.backup_incremental(writer, *incremental), fp
        return self.backup(writer), fp

    # Runtimes the kind works on; None means every runtime. A drill on another runtime
    # stops before provisioning with a message naming the ones that work.
    runtimes: ClassVar[frozenset[str] | None] = None

    # Incremental backups: only kinds that set ``supports_incremental`` implement these.
    supports_incremental: ClassVar[bool] = False

    def backup_incremental(
        self, writer: BackupSetWriter, parent: Fingerprint, parent_source: ArtifactSource
    ) -> dict[str, Any]:
        """Write only what changed since the parent backup (its fingerprint and artifacts)."""
        raise NotImplementedError(f"{self.name} components take full backups only")

    def restore_chain(self, sources: list[ArtifactSource]) -> None:
        """Restore from a full backup followed by incremental ones, oldest first."""
        if len(sources) != 1:
            raise NotImplementedError(f"{self.name} components take full backups only")
        self.restore(sources[0])

    # Kinds whose backups continue the previous one (a WAL history) set ``wants_history``;
    # the engine then hands them the newest earlier record of the same instance.
    wants_history: ClassVar[bool] = False

    def backup_history(self, previous: ComponentRecord | None) -> None:
        """Receive the newest earlier backup record of this instance, before ``backup``."""
        return None

    @abstractmethod
    def health(self) -> Health: ...

    def tool_versions(self) -> dict[str, str]:
        return {}

    def _fp(self, parts: dict[str, Any]) -> Fingerprint:
        return Fingerprint.build(self.instance, self.name, parts)


def copy_into(stream: IO[bytes], sink: IO[bytes]) -> int:
    from engine.streams import copy_stream

    return copy_stream(stream, sink)
