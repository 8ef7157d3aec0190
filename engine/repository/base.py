"""What every backup repository offers, whatever stores the bytes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import IO, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.manifest import ArtifactRecord, ComponentRecord, Manifest


class ArtifactCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact: str
    ok: bool
    expected_sha256: str
    actual_sha256: str | None
    expected_size: int
    actual_size: int | None
    problem: str | None = None


class VerifyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backup_id: str
    ok: bool
    checks: list[ArtifactCheck] = Field(default_factory=list)

    @property
    def damaged(self) -> list[str]:
        return [c.artifact for c in self.checks if not c.ok]


class BackupSetWriter(ABC):
    """Collects the artifacts of one backup set; nothing is visible until ``commit``."""

    id: str

    @abstractmethod
    def artifact(self, component: str, name: str) -> AbstractContextManager[IO[bytes]]:
        """A writable stream for raw content; compression and hashing happen behind it."""

    @abstractmethod
    def commit(self, components: list[ComponentRecord], tools: dict[str, str], labels: dict[str, str]) -> Manifest:
        """Publish the set atomically. Before this returns, the set does not exist.

        Each component record's ``artifacts`` is filled in from what was written for it.
        """

    @abstractmethod
    def abort(self) -> None:
        """Throw away everything written so far."""


class Repository(ABC):
    name: ClassVar[str]

    @abstractmethod
    def begin(self, label: str | None = None) -> BackupSetWriter: ...

    @abstractmethod
    def list(self) -> list[Manifest]:
        """Complete backup sets only, oldest first."""

    @abstractmethod
    def get(self, backup_id: str) -> Manifest: ...

    @abstractmethod
    def open_artifact(self, manifest: Manifest, artifact: ArtifactRecord) -> AbstractContextManager[IO[bytes]]:
        """Decompressed content; raises IntegrityError if the stored bytes do not match."""

    @abstractmethod
    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> AbstractContextManager[IO[bytes]]:
        """The stored bytes exactly as kept (compressed, maybe encrypted): for offsite copies."""

    @abstractmethod
    def import_set(self, manifest: Manifest, source: Repository) -> None:
        """Copy a complete set from ``source`` verbatim, checking every digest; publish it last."""

    @abstractmethod
    def verify(self, backup_id: str) -> VerifyReport:
        """Re-hash every stored artifact of the set against its manifest."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Where the repository is, for reports (never credentials)."""

    # Used by repository-side faults in drills: damage stored bytes on purpose.
    @abstractmethod
    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int: ...

    @abstractmethod
    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def record_verification(self, report: VerifyReport) -> None:
        """Remember a full verification's outcome; retention protects verified sets."""

    @abstractmethod
    def verified_ids(self) -> set[str]: ...

    @abstractmethod
    def delete(self, backup_id: str) -> None:
        """Remove a set so that it is unlisted before any of its files go."""

    @abstractmethod
    def lock(self, exclusive: bool) -> AbstractContextManager[None]:
        """Shared for backups and restores, exclusive for pruning."""

    def iter_sets(self) -> Iterator[Manifest]:
        yield from self.list()
