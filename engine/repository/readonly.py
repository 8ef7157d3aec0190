"""A repository opened for reading only: what a restore test of production backups gets.

A restore test reads the team's real repository. Nothing it does may change that
repository: no verification marks, no lock files, no deleted or damaged sets, no new
ones. Every method that would write raises instead, so a bug (or a fault aimed at the
wrong repository) fails loudly rather than touching production backups.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, ClassVar, NoReturn

from engine.chain import ChainAudit, StoredSet
from engine.crypto import Encryption
from engine.errors import RepositoryError
from engine.manifest import ArtifactRecord, Manifest, ManifestSummary
from engine.repository.base import BackupSetWriter, Repository, VerifyReport
from engine.signing import RepositoryTrust


class ReadOnlyRepository(Repository):
    name: ClassVar[str] = "read-only"

    def __init__(self, inner: Repository) -> None:
        self.inner = inner
        self.role = inner.role

    @property
    def encryption(self) -> Encryption | None:
        return self.inner.encryption

    @encryption.setter
    def encryption(self, value: Encryption | None) -> None:
        self.inner.encryption = value

    @property
    def trust(self) -> RepositoryTrust | None:
        return self.inner.trust

    @trust.setter
    def trust(self, value: RepositoryTrust | None) -> None:
        self.inner.trust = value

    def _refuse(self, what: str) -> NoReturn:
        where = ", ".join(f"{k} {v}" for k, v in self.inner.describe().items())
        raise RepositoryError(f"refusing to {what}: the repository ({where}) is open read-only for a restore test")

    # -- reading: the inner repository's own -------------------------------------------------
    def list(self) -> builtins.list[Manifest]:
        return self.inner.list()

    def summaries(self) -> builtins.list[ManifestSummary]:
        return self.inner.summaries()

    def get(self, backup_id: str) -> Manifest:
        return self.inner.get(backup_id)

    def stored_manifest_bytes(self, backup_id: str) -> bytes | None:
        return self.inner.stored_manifest_bytes(backup_id)

    def stored_signature(self, backup_id: str) -> bytes | None:
        return self.inner.stored_signature(backup_id)

    def stored_sets(self) -> Iterator[StoredSet]:
        return self.inner.stored_sets()

    def chain_audit(self, now: datetime | None = None) -> ChainAudit:
        """The inner repository's own audit: a backend may add what it alone sees (S3's notes)."""
        return self.inner.chain_audit(now)

    def identity_location(self) -> str | None:
        return self.inner.identity_location()

    def witness_place(self) -> str | None:
        return self.inner.witness_place() if self.keeps_witness else None

    def stored_identity(self) -> tuple[bytes, bytes | None] | None:
        return self.inner.stored_identity()

    def stored_tombstones(self) -> builtins.list[tuple[str, bytes, bytes | None]]:
        return self.inner.stored_tombstones()

    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> Iterator[IO[bytes]]:  # type: ignore[override]
        return self.inner.open_stored(manifest, artifact)  # type: ignore[return-value]

    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int:
        return self.inner.stored_size(manifest, artifact)

    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes:
        return self.inner.read_stored(manifest, artifact, offset, length)

    def verified_ids(self) -> set[str]:
        return self.inner.verified_ids()

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "access": "read-only"}

    @contextmanager
    def acquire_lock(
        self, exclusive: bool, operation: str | None = None, timeout: float | None = None
    ) -> Iterator[None]:
        """No lock file is created or taken: a reader must not write one into production."""
        if exclusive:
            self._refuse("take the repository's exclusive lock")
        yield

    # -- writing: refused -------------------------------------------------------------------
    def begin(self, label: str | None = None) -> BackupSetWriter:
        self._refuse("write a backup set")

    def import_set(self, manifest: Manifest, source: Repository) -> None:
        self._refuse(f"copy backup {manifest.id} into it")

    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None:
        self._refuse(f"change {artifact.key} of backup {manifest.id}")

    def truncate_stored(self, manifest: Manifest, artifact: ArtifactRecord, length: int) -> None:
        self._refuse(f"truncate {artifact.key} of backup {manifest.id}")

    def delete_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> None:
        self._refuse(f"delete {artifact.key} of backup {manifest.id}")

    def record_verification(self, report: VerifyReport) -> None:
        self._refuse(f"record a verification of backup {report.backup_id}")

    def delete(self, backup_id: str) -> None:
        self._refuse(f"delete backup {backup_id}")

    def write_tombstone(self, backup_id: str, record: bytes, signature: bytes | None) -> None:
        self._refuse(f"record the deletion of backup {backup_id}")

    def overwrite_manifest(self, backup_id: str, data: bytes) -> None:
        self._refuse(f"change the manifest of backup {backup_id}")

    def delete_manifest(self, backup_id: str) -> None:
        self._refuse(f"delete the manifest of backup {backup_id}")
