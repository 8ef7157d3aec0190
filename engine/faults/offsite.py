"""Disasters of a drill's backup storage as a whole: the local copies, the key, the offsite link.

They exist to prove the second line of defence, not the first: that the offsite copy is
really there and restorable when the local repository is gone, that an encrypted backup
without its key is refused rather than half-restored, and that a backup whose offsite
copy cannot be made fails loudly instead of leaving a gap nobody notices.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import IO, Any, ClassVar

from pydantic import Field

from engine.chain import StoredSet
from engine.errors import FaultError, RepositoryError
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams
from engine.manifest import ArtifactRecord, Manifest
from engine.repository.base import BackupSetWriter, Repository, VerifyReport


class DeleteLocalBackups(Fault):
    """Every set in the primary repository deleted: a lost disk, ransomware, a wrong `rm -rf`.

    Only a copy somewhere else can help now, so this is the drill that proves the offsite
    copy is complete and restorable rather than merely present.
    """

    name: ClassVar[str] = "delete_local_backups"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Delete every backup set in the primary repository."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        repo = ctx.repository
        ids = [m.id for m in repo.list()]
        if not ids:
            raise FaultError(f"{self.name}: the primary repository holds no backup set to delete")
        for backup_id in ids:
            repo.delete(backup_id)
        left = [m.id for m in repo.list()]
        if left:
            raise FaultError(f"{self.name}: sets still listed after deleting them: {', '.join(left)}")
        return {"deleted": ids, "count": len(ids), "listed_after": 0}


class LoseEncryptionKey(Fault):
    """The run's encryption key is gone and a different key is all anyone has.

    Restores must then be refused up front, naming the key each set needs and the key
    on hand, never start decrypting garbage into a live component. Verification keeps
    working: it re-hashes stored bytes and needs no key.
    """

    name: ClassVar[str] = "lose_encryption_key"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Replace the drill's in-memory encryption key by a different one."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        if ctx.lose_key is None:
            raise FaultError(f"{self.name}: the drill has no key to lose; set `repository.encryption: true`")
        effect = ctx.lose_key()
        before, after = effect.get("key_fingerprint_before"), effect.get("key_fingerprint_after")
        if not before or not after or before == after:
            raise FaultError(f"{self.name}: the key did not change (fingerprints {before} and {after})")
        return dict(effect)


class OffsiteUnavailableParams(FaultParams):
    attempts_failing: int | None = Field(
        default=None,
        ge=1,
        description="How many offsite copy attempts fail before the link comes back; default: all of them.",
    )


class UnreachableRepository(Repository):
    """An offsite repository behind a link that is down: every operation raises.

    It wraps the real repository, so when the outage ends (after ``attempts_failing``
    failed operations) the sets copied before it are still there and new copies land
    beside them. An offsite copy attempt stops at its first failed operation, so failed
    operations and failed copy attempts count the same.
    """

    def __init__(self, inner: Repository, attempts_failing: int | None) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.encryption = inner.encryption
        self.trust = inner.trust
        self.role = inner.role
        self.remaining = attempts_failing
        self.failed_attempts = 0

    @property
    def down(self) -> bool:
        return self.remaining is None or self.remaining > 0

    def _gate(self, *, count: bool = True) -> None:
        """Raise while the link is down; ``count=False`` only probes, using up no failure."""
        if not self.down:
            return
        if count:
            self.failed_attempts += 1
            if self.remaining is not None:
                self.remaining -= 1
        raise RepositoryError(f"offsite unreachable ({self.inner.describe().get('path', self.inner.name)})")

    def import_set(self, manifest: Manifest, source: Repository) -> None:
        self._gate()
        self.inner.encryption = self.encryption
        self.inner.import_set(manifest, source)

    def begin(self, label: str | None = None) -> BackupSetWriter:
        self._gate()
        return self.inner.begin(label)

    def list(self) -> list[Manifest]:
        self._gate()
        return self.inner.list()

    def get(self, backup_id: str) -> Manifest:
        self._gate()
        return self.inner.get(backup_id)

    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> AbstractContextManager[IO[bytes]]:
        self._gate()
        return self.inner.open_stored(manifest, artifact)

    def stored_manifest_bytes(self, backup_id: str) -> bytes | None:
        self._gate()
        return self.inner.stored_manifest_bytes(backup_id)

    def stored_signature(self, backup_id: str) -> bytes | None:
        self._gate()
        return self.inner.stored_signature(backup_id)

    def stored_sets(self) -> Iterator[StoredSet]:
        self._gate()
        return self.inner.stored_sets()

    def identity_location(self) -> str | None:
        return self.inner.identity_location()

    def stored_identity(self) -> tuple[bytes, bytes | None] | None:
        self._gate()
        return self.inner.stored_identity()

    def write_identity(self, record: bytes, signature: bytes | None) -> None:
        self._gate()
        self.inner.write_identity(record, signature)

    def stored_tombstones(self) -> builtins.list[tuple[str, bytes, bytes | None]]:
        self._gate()
        return self.inner.stored_tombstones()

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "state": "unreachable" if self.down else "reachable again"}

    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int:
        self._gate()
        return self.inner.stored_size(manifest, artifact)

    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes:
        self._gate()
        return self.inner.read_stored(manifest, artifact, offset, length)

    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None:
        self._gate()
        self.inner.overwrite_stored(manifest, artifact, offset, data)

    def truncate_stored(self, manifest: Manifest, artifact: ArtifactRecord, length: int) -> None:
        self._gate()
        self.inner.truncate_stored(manifest, artifact, length)

    def delete_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> None:
        self._gate()
        self.inner.delete_stored(manifest, artifact)

    def record_verification(self, report: VerifyReport) -> None:
        self._gate()
        self.inner.record_verification(report)

    def verified_ids(self) -> set[str]:
        self._gate()
        return self.inner.verified_ids()

    def delete(self, backup_id: str) -> None:
        self._gate()
        self.inner.delete(backup_id)

    def acquire_lock(
        self, exclusive: bool, operation: str | None = None, timeout: float | None = None
    ) -> AbstractContextManager[None]:
        """The inner repository's own lock (re-entrant on it), once the link is up."""
        self._gate()
        return self.inner.lock(exclusive, operation, timeout)

    def iter_sets(self) -> Iterator[Manifest]:
        self._gate()
        yield from self.inner.iter_sets()


class OffsiteUnavailable(Fault):
    """The link to the offsite store is down while backups keep running.

    The danger is silence: local backups succeed, the offsite copy quietly does not,
    and the gap is found on the day the local disk dies. A backup step must retry and
    then fail loudly; a short outage (``attempts_failing``) must be ridden out by a retry
    and still be on record.
    """

    name: ClassVar[str] = "offsite_unavailable"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = OffsiteUnavailableParams
    description: ClassVar[str] = "Make the offsite repository unreachable for the next offsite copy attempts."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, OffsiteUnavailableParams)
        if ctx.offsite is None or ctx.replace_offsite is None:
            raise FaultError(f"{self.name}: the drill has no offsite repository; set `repository.offsite`")
        inner = ctx.offsite.inner if isinstance(ctx.offsite, UnreachableRepository) else ctx.offsite
        broken = UnreachableRepository(inner, p.attempts_failing)
        ctx.replace_offsite(broken)
        try:
            broken._gate(count=False)
        except RepositoryError as exc:
            probe = str(exc)
        else:
            raise FaultError(f"{self.name}: the offsite repository still answers after cutting it off")
        return {
            "offsite": inner.describe().get("path", inner.name),
            "attempts_failing": "all" if p.attempts_failing is None else p.attempts_failing,
            "probe": probe,
        }
