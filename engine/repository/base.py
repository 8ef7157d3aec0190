"""What every backup repository offers, whatever stores the bytes."""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine import witness
from engine.chain import (
    IDENTITY_FORMAT,
    ChainAudit,
    Role,
    StoredSet,
    Tombstone,
    audit,
    chain_key,
    head_bytes,
    identity_bytes,
    read_head,
    read_identity,
    read_tombstone,
    tombstone_bytes,
)
from engine.crypto import Encryption, SetCipher
from engine.decoding import decoded, prove
from engine.errors import ChainBroken, ConfigError, FaultError, IntegrityError, RepositoryError, UntrustedSet
from engine.manifest import ArtifactRecord, ComponentRecord, Manifest, ManifestSummary
from engine.partstream import parts_problems
from engine.repository.objectlock import Hold
from engine.streams import CHUNK, CountingWriter, HashingWriter, zstd_compressor

if TYPE_CHECKING:  # an annotation only: engine.signing brings cryptography
    from engine.signing import RepositoryTrust


class ArtifactCheck(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    artifact: str
    ok: bool
    expected_sha256: str
    actual_sha256: str | None
    expected_size: int
    actual_size: int | None
    problem: str | None = None
    content_proven: bool = Field(
        default=False,
        description="Whether the content was decoded too (GCM tags, whole zstd frame, checksum, size), "
        "not only the stored bytes hashed.",
    )


class VerifyReport(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    backup_id: str
    ok: bool
    checks: list[ArtifactCheck] = Field(default_factory=list)
    findings: list[str] = Field(
        default_factory=list, description="Why the set could not be restored although its bytes are sound."
    )
    limits: list[str] = Field(
        default_factory=list,
        description="What the set cannot do although it is sound and restores (a hole in the WAL archive before "
        "a physical backup: no point-in-time recovery across it); the set stays verified for retention.",
    )
    trust: list[str] = Field(
        default_factory=list,
        description="What the signatures and the chain say (engine/chain.py): this set's findings first, then the "
        "repository's; on an unsigned repository, that integrity against a repository writer is not proven.",
    )

    @property
    def damaged(self) -> list[str]:
        return [c.artifact for c in self.checks if not c.ok]


class StoredArtifactMissing(RepositoryError):
    """open_stored found no stored file or object for the artifact."""


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


def new_backup_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def safe_segment(text: str) -> str:
    if not text or text in {".", ".."} or "/" in text or "\\" in text or "\0" in text:
        raise RepositoryError(f"invalid name for a stored artifact: {text!r}")
    return text


class EncodingSetWriter(BackupSetWriter):
    """The pipeline every backend shares: raw → zstd → (AES-GCM) → hashed → stored bytes.

    The stored digest covers exactly the bytes kept, so ``verify`` needs no key. Backends
    only say where stored bytes go (``_sink``) and how a finished set is published.
    """

    def __init__(
        self,
        encryption: Encryption | None,
        label: str | None,
        backup_id: str | None = None,
        now: datetime | None = None,
    ) -> None:
        # ``now``: the repository's clock (``Repository.clock``), injectable so a drill can
        # take a backup with a wrong clock; the completion time follows it by the elapsed time.
        self.created_at = now or datetime.now(UTC)
        self._started = time.monotonic()
        self.id = backup_id or new_backup_id(self.created_at)
        self.label = label
        self.records: list[ArtifactRecord] = []
        self.cipher: SetCipher | None = None
        self.encryption_info: dict[str, Any] | None = None
        if encryption is not None:
            self.cipher, self.encryption_info = encryption.for_new_set(self.id)

    @abstractmethod
    def _sink(self, rel: str) -> AbstractContextManager[IO[bytes]]:
        """Where one artifact's stored bytes go; kept only if the context exits cleanly."""

    @contextmanager
    def artifact(self, component: str, name: str) -> Iterator[IO[bytes]]:
        rel = f"{safe_segment(component)}/{safe_segment(name)}.zst"
        if any(r.path == rel for r in self.records):
            raise RepositoryError(f"artifact {component}/{name} written twice in backup {self.id}")
        with self._sink(rel) as out:
            stored = HashingWriter(out)
            sink: Any = stored if self.cipher is None else self.cipher.writer(stored, f"{component}/{name}")
            with zstd_compressor().stream_writer(sink, closefd=False) as compressed:
                # The content is counted, not hashed: what a restore checks is the stored
                # digest, zstd's content checksum and (encrypted) each chunk's GCM tag, so
                # a digest of the raw bytes would cost a SHA-256 pass nobody reads.
                raw: Any = CountingWriter(compressed)
                yield raw
            if sink is not stored:
                sink.close()
        self.records.append(
            ArtifactRecord(
                component=component,
                name=name,
                path=rel,
                size=stored.size,
                sha256=stored.hexdigest(),
                raw_size=raw.size,
            )
        )

    def _manifest(self, components: list[ComponentRecord], tools: dict[str, str], labels: dict[str, str]) -> Manifest:
        return Manifest.assemble(
            backup_id=self.id,
            label=self.label,
            created_at=self.created_at,
            components=components,
            artifacts=self.records,
            tools=tools,
            labels=labels,
            encryption=self.encryption_info,
            completed_at=self.created_at + timedelta(seconds=time.monotonic() - self._started),
        )


def _system_clock() -> datetime:
    return datetime.now(UTC)


_LOCKS = threading.local()
log = logging.getLogger("engine.repository")


def _held_locks() -> dict[int, tuple[bool, int]]:
    """This thread's repository locks: (exclusive, depth) by repository handle (``id``, alive while held)."""
    held: dict[int, tuple[bool, int]] | None = getattr(_LOCKS, "held", None)
    if held is None:
        held = _LOCKS.held = {}
    return held


class Repository(ABC):
    name: ClassVar[str]
    # How sets are signed and which signatures are accepted; None: an unsigned repository.
    trust: RepositoryTrust | None = None
    # What a new set's ``created_at`` is read from (a drill's clock-skew fault replaces it).
    clock: Callable[[], datetime] = staticmethod(_system_clock)

    @abstractmethod
    def begin(self, label: str | None = None) -> BackupSetWriter: ...

    @abstractmethod
    def list(self) -> list[Manifest]:
        """Complete backup sets only, oldest first."""

    @abstractmethod
    def get(self, backup_id: str) -> Manifest: ...

    def newest_first(self, sets: Sequence[ManifestSummary] | None = None) -> Iterator[Manifest]:
        """Whole manifests, newest first, read one at a time as the caller asks for them.

        Why: finding the newest set (an incremental's parent, "restore the latest") read
        every manifest whole first: 1.5 GB for ten sets of 100,000 files (issue 14). The
        order is the chain's (``engine.chain``), never the wall clock; a set that cannot be
        read whole (or, on a repository that verifies, fails its signature) is skipped as
        ``list`` skips it, and named in ``broken``.
        """
        chosen = self.summaries() if sets is None else sets
        broken = dict(getattr(self, "broken", {}))
        for summary in sorted(chosen, key=chain_key, reverse=True):
            try:
                yield self.get(summary.id)
            except RepositoryError as exc:
                broken[summary.id] = str(exc)
                self.broken = broken

    def summaries(self) -> builtins.list[ManifestSummary]:
        """Complete sets, oldest first, as an inventory shows them (no fingerprints read).

        A backend that can read less than whole manifests overrides this; sets it cannot
        read go to ``broken`` as with ``list``.
        """
        return [ManifestSummary.of(m) for m in self.list()]

    encryption: Encryption | None = None

    def check_artifact(self, manifest: Manifest, artifact: ArtifactRecord) -> ArtifactCheck:
        """Re-hash one stored artifact against its manifest entry."""
        base: dict[str, Any] = dict(artifact=artifact.key, expected_sha256=artifact.sha256, expected_size=artifact.size)
        digest = hashlib.sha256()
        size = 0
        try:
            with self.open_stored(manifest, artifact) as body:
                while chunk := body.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except StoredArtifactMissing:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem="missing")
        except RepositoryError as exc:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem=f"unreadable: {exc}")
        problem = None
        if size != artifact.size:
            problem = f"size {size} bytes, manifest says {artifact.size}"
        elif digest.hexdigest() != artifact.sha256:
            problem = "sha256 differs from manifest"
        return ArtifactCheck(
            **base, ok=problem is None, actual_sha256=digest.hexdigest(), actual_size=size, problem=problem
        )

    def check_present(self, manifest: Manifest, artifact: ArtifactRecord) -> ArtifactCheck:
        """Whether the stored artifact exists, without reading it (its stream proves the rest)."""
        base: dict[str, Any] = dict(artifact=artifact.key, expected_sha256=artifact.sha256, expected_size=artifact.size)
        try:
            with self.open_stored(manifest, artifact):
                pass
        except StoredArtifactMissing:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem="missing")
        except RepositoryError as exc:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem=f"unreadable: {exc}")
        return ArtifactCheck(**base, ok=True, actual_sha256=None, actual_size=None)

    def stored_manifest_bytes(self, backup_id: str) -> bytes | None:
        """The manifest exactly as stored; None where a backend cannot say (``verify`` then parses it)."""
        return None

    def _manifest_to_verify(self, backup_id: str, written: Manifest | None) -> Manifest:
        """``written`` when the stored manifest is byte for byte its text, else the stored one parsed.

        Why: verifying a backup right after writing it parsed the manifest again, every
        per-file fingerprint part, while the backup's own copy was alive (140 MB more at
        100,000 files, issue 14). Equal bytes parse to an equal manifest, so comparing
        them proves as much; any difference, or a backend that cannot give the bytes,
        falls back to the full parse, which fails where a restore would.
        """
        if written is not None and written.id == backup_id:
            stored = self.stored_manifest_bytes(backup_id)
            if stored is not None and stored == written.to_json().encode("utf-8"):
                return written
        return self.get(backup_id)

    def verify(self, backup_id: str, written: Manifest | None = None) -> VerifyReport:
        """Check every artifact of the set: in full where it can be read, else its stored bytes.

        An unencrypted set, or an encrypted one with its key configured, is read through
        every check a restore runs (``prove_artifact``), so "verified" means a restore
        would read it back. Without the key only the stored bytes can be hashed, and each
        check says so (``content_proven`` false). ``written``: the manifest this process
        just committed, if it did (see ``_manifest_to_verify``).
        """
        manifest = self._manifest_to_verify(backup_id, written)
        readable = manifest.encryption is None or self.encryption is not None
        if readable:
            try:
                self.cipher_for(manifest)
            except (ConfigError, IntegrityError):
                readable = False  # another key: the stored bytes can still be checked
        check = self.prove_artifact if readable else self.check_artifact
        checks = [check(manifest, a) for a in manifest.artifacts]
        findings: list[str] = []
        if readable:  # stored fingerprint parts must also be the ones the manifest records
            damaged = {c.artifact for c in checks if not c.ok}
            findings = parts_problems(manifest, lambda a: self.open_artifact(manifest, a, checked=True), damaged)
        ok = all(c.ok for c in checks) and not findings
        return VerifyReport(backup_id=backup_id, ok=ok, checks=checks, findings=findings)

    @contextmanager
    def open_artifact(
        self, manifest: Manifest, artifact: ArtifactRecord, *, checked: bool = False, whole: bool = True
    ) -> Iterator[IO[bytes]]:
        """Decompressed (and decrypted) content, proven as it streams (``engine.decoding``).

        Unless the caller just did (``checked=True``), the stored bytes are hashed first,
        so a plainly damaged artifact is refused before a single byte is handed out.
        Every other check (GCM tags, a whole zstd frame and its checksum, the content
        size) needs the whole stream and runs when the context exits: a consumer must
        keep what it read apart from live data until then, or call ``prove_artifact``
        first. ``whole=False`` is for a reader of the head of an artifact proven before:
        the rest is neither read nor checked.
        """
        check = None if checked else self.check_artifact(manifest, artifact)
        if check is not None and not check.ok:
            raise IntegrityError(
                f"backup {manifest.id}: artifact {artifact.key} is damaged ({check.problem}); refusing to restore it"
            )
        cipher = self.cipher_for(manifest)
        with (
            self.open_stored(manifest, artifact) as body,
            decoded(body, whole=whole, **self._decoding(manifest, artifact, cipher)) as content,
        ):
            yield content

    def prove_artifact(self, manifest: Manifest, artifact: ArtifactRecord) -> ArtifactCheck:
        """Read one artifact to the end with every check it carries, discarding the content.

        What a restore runs before it changes anything live: unlike ``check_artifact``
        (stored bytes only), this also catches damage whose manifest entry was rewritten
        to match, a truncated or padded compressed frame, and a chunk that fails its GCM
        tag. Needs the key of an encrypted set (a missing or wrong key raises).
        """
        base: dict[str, Any] = dict(artifact=artifact.key, expected_sha256=artifact.sha256, expected_size=artifact.size)
        cipher = self.cipher_for(manifest)
        try:
            with self.open_stored(manifest, artifact) as body:
                prove(body, **self._decoding(manifest, artifact, cipher))
        except StoredArtifactMissing:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem="missing")
        except IntegrityError as exc:
            problem = str(exc).removeprefix(f"backup {manifest.id}: ").removeprefix(f"artifact {artifact.key}")
            problem = problem.removeprefix(" is damaged").lstrip(": ")
            # Report what the stored bytes are too; when they alone disagree, that is the plainest account.
            stored = self.check_artifact(manifest, artifact)
            return ArtifactCheck(
                **base,
                ok=False,
                actual_sha256=stored.actual_sha256,
                actual_size=stored.actual_size,
                problem=stored.problem or problem,
            )
        except RepositoryError as exc:
            return ArtifactCheck(**base, ok=False, actual_sha256=None, actual_size=None, problem=f"unreadable: {exc}")
        return ArtifactCheck(
            **base, ok=True, actual_sha256=artifact.sha256, actual_size=artifact.size, content_proven=True
        )

    @staticmethod
    def _decoding(manifest: Manifest, artifact: ArtifactRecord, cipher: SetCipher | None) -> dict[str, Any]:
        return {
            "what": f"backup {manifest.id}: artifact {artifact.key}",
            "sha256": artifact.sha256,
            "size": artifact.size,
            "raw_size": artifact.raw_size,
            "cipher": cipher,
            "cipher_name": artifact.key,
        }

    def cipher_for(self, manifest: Manifest) -> SetCipher | None:
        """The cipher for an encrypted set, or a clear refusal when no (or the wrong) key is configured."""
        if manifest.encryption is None:
            return None
        if self.encryption is None:
            raise ConfigError(
                f"backup {manifest.id} is encrypted (key {manifest.encryption.get('key_fingerprint')}); "
                "configure encryption (key_env, key_file or passphrase_env) to restore it"
            )
        return self.encryption.for_manifest(manifest.id, manifest.encryption)

    @abstractmethod
    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> AbstractContextManager[IO[bytes]]:
        """The stored bytes exactly as kept (compressed, maybe encrypted): for offsite copies."""

    @abstractmethod
    def import_set(self, manifest: Manifest, source: Repository) -> None:
        """Copy a complete set from ``source`` verbatim, checking every digest; publish it last."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Where the repository is, for reports (never credentials)."""

    # Used by repository-side faults in drills: damage stored bytes on purpose.
    @abstractmethod
    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int: ...

    @abstractmethod
    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes: ...

    # The three below damage stored bytes on purpose: they exist for drills' repository
    # faults, which must break a set the way storage does, whatever the backend.
    @abstractmethod
    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def truncate_stored(self, manifest: Manifest, artifact: ArtifactRecord, length: int) -> None: ...

    @abstractmethod
    def delete_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> None: ...

    @abstractmethod
    def record_verification(self, report: VerifyReport) -> None:
        """Remember a full verification's outcome; retention protects verified sets."""

    @abstractmethod
    def verified_ids(self) -> set[str]: ...

    def verification_record(self, report: VerifyReport) -> tuple[bytes, bytes | None]:
        """The verification mark (``verified.json``) and its signature (``verified.sig``, None when unsigned).

        Why signed, and bound to the set and its manifest: anyone who can write the
        repository could write ``{"ok": true}`` beside a set that failed its verification
        (or copy a sound set's mark to it), and retention then kept that set as the
        newest verified one and deleted an older sound one. A mark names the set and the
        SHA-256 of its stored manifest, and on a repository that verifies signatures only
        a mark signed by a trusted key counts (``trusts_verification``). A host holding
        public keys only writes an unsigned mark, which such a repository does not count.
        The mark also names the role of the repository whose copy was verified (``own_role``):
        the offsite's mark for the same set (same manifest), copied into the primary, does
        not count there, nor the primary's in the offsite; each copy is verified on its own.
        """
        from datetime import UTC, datetime

        manifest = self.stored_manifest_bytes(report.backup_id)
        body = {
            "ok": report.ok,
            "at": datetime.now(UTC).isoformat(),
            "damaged": report.damaged,
            "backup_id": report.backup_id,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest() if manifest is not None else None,
            "role": self.own_role(),
        }
        data = (json.dumps(body) + "\n").encode("utf-8")
        signer = self.trust.signer if self.trust is not None else None
        return data, signer.sign(data) if signer is not None else None

    def trusts_verification(self, backup_id: str, data: bytes | None, signature: bytes | None) -> bool:
        """Whether a stored mark says the set verified, in a way this repository accepts.

        An unsigned repository takes the mark's word, as before (nothing there is proven
        against a repository writer: ``engine.chain.NOT_PROVEN``). One that verifies
        signatures takes only a mark signed by a trusted key that names this set and its
        manifest as stored now; a mark of an older drproof (unsigned) counts as none, so
        the set is treated as unverified until ``recovery verify`` marks it again, and so does
        a mark written in the repository of the other role (``verification_record``).
        """
        try:
            body = json.loads(data) if data is not None else None
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(body, dict) or body.get("ok") is not True:
            return False
        if self.trust is None or self.trust.keys is None:
            return True
        assert data is not None
        if not self.trust.keys.check(data, signature).ok or body.get("backup_id") != backup_id:
            return False
        if body.get("role") is not None and body.get("role") != self.own_role():  # none: the mark predates roles
            return False
        manifest = self.stored_manifest_bytes(backup_id)
        return manifest is not None and body.get("manifest_sha256") == hashlib.sha256(manifest).hexdigest()

    @abstractmethod
    def delete(self, backup_id: str) -> None:
        """Remove a set so that it is unlisted before any of its files go."""

    @contextmanager
    def lock(self, exclusive: bool, operation: str | None = None, timeout: float | None = None) -> Iterator[None]:
        """The repository lock: shared while reading or adding sets, exclusive while deleting.

        Backups, copies, restores and verifications hold it shared for as long as they
        read, so nothing they read is deleted under them; pruning holds it exclusive.
        ``operation`` names the holder in the message of anyone who waits (with host, pid
        and since when); after ``timeout`` seconds (default: the backend's) a waiter
        raises an error naming the holders.

        Re-entrant per thread and repository handle: a command that holds it and passes
        the same repository to an engine function that takes it again holds it once. Why:
        a lock that lets a waiting prune go before new shared holders (the S3 lease) would
        otherwise make a thread wait for itself. Asking for the exclusive lock while
        holding the shared one is refused, for the same reason. Two handles on one
        repository lock apart, as two processes would.
        """
        held = _held_locks()
        key = id(self)
        current = held.get(key)
        if current is not None:
            if exclusive and not current[0]:
                where = ", ".join(f"{k} {v}" for k, v in self.describe().items())
                raise RepositoryError(
                    f"{operation or 'an operation'} needs the exclusive lock of the repository ({where}), which this "
                    "thread holds shared; this is a bug in drproof"
                )
            held[key] = (current[0], current[1] + 1)
            try:
                yield
            finally:
                held[key] = current
            return
        with self.acquire_lock(exclusive, operation, timeout):
            held[key] = (exclusive, 1)
            try:
                yield
            finally:
                held.pop(key, None)

    @abstractmethod
    def acquire_lock(
        self, exclusive: bool, operation: str | None = None, timeout: float | None = None
    ) -> AbstractContextManager[None]:
        """Take the backend's lock itself (``lock`` makes it re-entrant): a file lock, an S3 lease."""

    def holds(self, backup_id: str) -> builtins.list[Hold]:
        """Stored objects of a set the store refuses to delete yet (S3 Object Lock); retention keeps such sets."""
        return []

    def left_after_delete(self, backup_id: str) -> builtins.list[str]:
        """What a deleted set still occupies (versions on a versioned bucket): storage not freed."""
        return []

    def iter_sets(self) -> Iterator[Manifest]:
        yield from self.list()

    # -- signatures and the chain (engine/signing.py, engine/chain.py) ------------------------
    def stored_signature(self, backup_id: str) -> bytes | None:
        """The signature document stored beside the manifest (``manifest.sig``), or None."""
        return None

    def _admit(self, backup_id: str, manifest_bytes: bytes) -> None:
        """Refuse a manifest whose signature a verifying repository does not accept.

        Every backend calls this on the bytes it is about to parse, so a set that fails
        is never read, listed as usable, ordered, restored or copied; it is named instead.
        """
        if self.trust is None or self.trust.keys is None:
            return
        check = self.trust.keys.check(manifest_bytes, self.stored_signature(backup_id))
        if not check.ok:
            raise UntrustedSet(f"backup {backup_id} is not trusted: {check.detail}")

    def _admit_copy(self, backup_id: str, manifest_bytes: bytes, signature: bytes | None) -> None:
        """Refuse to publish a copied set whose signature this repository would not accept."""
        if self.trust is None or self.trust.keys is None:
            return
        check = self.trust.keys.check(manifest_bytes, signature)
        if not check.ok:
            raise UntrustedSet(f"backup {backup_id} is not trusted, so it was not copied: {check.detail}")

    def sign(self, manifest_bytes: bytes) -> bytes | None:
        """The signature document for a set being published; None in an unsigned repository."""
        if self.trust is None or self.trust.signer is None:
            if self.trust is not None and self.trust.keys is not None:
                raise ConfigError(
                    f"the repository ({self.describe().get('path', self.name)}) verifies signatures, but no private "
                    "key is configured to sign new sets (signing: key_file or key_env)"
                )
            return None
        return self.trust.signer.sign(manifest_bytes)

    def stored_sets(self) -> Iterator[StoredSet]:
        """Every set as stored, manifest bytes and signature, whatever is wrong with it.

        This default finds sets through ``summaries`` (and ``broken``); a backend that can
        also see set directories without a manifest overrides it.
        """
        summaries = self.summaries()
        broken = dict(getattr(self, "broken", {}))
        for backup_id in [m.id for m in summaries] + sorted(broken):
            data = self.stored_manifest_bytes(backup_id)
            problem = None if data is not None else broken.get(backup_id, "its manifest cannot be read")
            yield StoredSet(backup_id, data, self.stored_signature(backup_id), problem)

    def stored_tombstones(self) -> builtins.list[tuple[str, bytes, bytes | None]]:
        """(id, record, signature) of every set retention deleted; none in a backend that keeps none."""
        return []

    def write_tombstone(self, backup_id: str, record: bytes, signature: bytes | None) -> None:
        """Keep the record that retention deleted a set (before it is deleted)."""
        return None

    def tombstones(self) -> builtins.list[Tombstone]:
        """Every stored tombstone; trusted only if validly signed and written by this repository (``own_role``)."""
        keys = self.trust.keys if self.trust is not None else None
        role, identity = self.own_role(), self.pinned_identity or self.recorded_identity()
        out = []
        for backup_id, data, sig in self.stored_tombstones():
            t = read_tombstone(backup_id, data, sig, keys, role, identity)
            if t is not None:
                out.append(t)
        return out

    # The identity the configuration pins (``repository.repository_id``); None: the sets decide.
    pinned_identity: str | None = None
    # Whether this host keeps its own record of the newest set (engine/witness.py); off for a
    # drill's throwaway repository, whose run directory is removed with it.
    keeps_witness: bool = True
    # The role the configuration gives this repository: ``origin`` (``repository:``) or
    # ``copy`` (``offsite:``); None: opened without one (the identity record says, see own_role).
    role: Role | None = None

    def own_role(self) -> Role:
        """This repository's role, which its tombstones name and which a tombstone must name to count here.

        Why from the configuration first: it is kept on the backup host, out of reach of a
        writer of the storage. Opened without one (the engine's API, ``--repository``), the
        role the identity record vouches for here (signed, this location) says it; with no
        valid record, ``origin``: a writer who deletes an offsite's record can then make it
        take the primary's tombstones, which a configured ``offsite:`` never does.
        """
        if self.role is not None:
            return self.role
        location = self.identity_location()
        stored = self.stored_identity() if location is not None else None
        keys = self.trust.keys if self.trust is not None else None
        if location is None or stored is None or read_identity(stored[0], stored[1], keys, location) is None:
            return "origin"
        return "copy" if json.loads(stored[0]).get("role") == "copy" else "origin"

    def chain_audit(self, now: datetime | None = None) -> ChainAudit:
        """The chain as stored: every set's signature, origin and links, and the order of the usable ones.

        With a pinned identity, that identity is the repository's (sets naming another are
        ``foreign``), and a repository that is plainly another one is refused whole
        (``check_pinned``) before any set is used.
        """
        keys = self.trust.keys if self.trust is not None else None
        found = audit(
            self.stored_sets(),
            self.tombstones(),
            keys,
            now,
            self.pinned_identity or self.recorded_identity(),
            self.recorded_head(),
            self.witnessed_head(),
            str(self.witness_file() or ""),
        )
        self.check_pinned(found)
        self.witness_head(found)
        return found

    def witness_place(self) -> str | None:
        """Where this host's record of the newest set is filed (engine/witness.py): the repository's location.

        A backend whose location does not say on which store it is (S3: bucket and
        prefix) adds the store, so a primary and an offsite with the same bucket and
        prefix on two stores do not share one record (the offsite, which lags by design,
        was held to the primary's newest place and "latest" refused there).
        """
        return self.identity_location() if self.keeps_witness else None

    def witnessed_head(self) -> builtins.list[tuple[str, tuple[str, int, str]]]:
        """(identity, newest set) of each repository this host's own record names at this place (engine/witness.py)."""
        place, location = self.witness_place(), self.identity_location()
        if place is None or location is None:
            return []
        keys = self.trust.keys if self.trust is not None else None
        out = []
        for held in witness.recall_all(place):
            head = read_head(held.record, held.signature, keys, location)
            if head is not None:
                out.append((held.repository_id, head))
        return out

    def witness_file(self) -> Path | None:
        """The file in which this host keeps its record of this repository's newest set, or None (none kept)."""
        place = self.witness_place()
        return witness.file_for(place) if place is not None else None

    def witness_head(self, found: ChainAudit) -> None:
        """Keep the repository's head record on this host when it names the chain's newest set, whole and trusted.

        Why: a restore host that never ran a backup still learns the newest place it saw,
        so a later rollback of this repository is named there too. Nothing is kept from a
        chain with doubts about its newest set, nor a record the chain does not bear out.
        """
        if not self.keeps_witness:
            return
        location, stored = self.identity_location(), self.stored_head()
        head_id = found.head()
        if location is None or stored is None or head_id is None or found.identity is None:
            return
        if found.doubts_about_latest():
            return
        keys = self.trust.keys if self.trust is not None else None
        head = read_head(stored[0], stored[1], keys, location)
        st = found.sets[head_id]
        if head is None or head != (head_id, st.summary.sequence, st.sha256) or st.summary.repository_id != found.identity:
            return
        if (place := self.witness_place()) is not None:
            witness.remember(place, found.identity, stored[0], stored[1], head[1])

    def check_pinned(self, found: ChainAudit) -> None:
        """Refuse a repository that is not the one the configuration pins (``repository_id``).

        Why: without a pin, a repository's identity is whatever its first set names, so a
        configuration pointed (by a writer of the storage, a swapped mount or a changed
        prefix) at another repository signed with the same key read that repository's sets
        as its own from the first use. Refused when the identity record, validly signed,
        names another identity (wherever it was written), or when sets name identities and
        none of them is the pinned one; a repository with no set yet, or only sets older
        than identities, takes the pinned identity with its next set.
        """
        pinned = self.pinned_identity
        if pinned is None:
            return
        claimed = self._record_claim()
        named = sorted(
            {
                st.summary.repository_id
                for st in found.sets.values()
                if st.summary.repository_id is not None and (st.signature is None or st.signature.ok)
            }
        )
        if (claimed is None or claimed == pinned) and (not named or pinned in named):
            return
        where = ", ".join(f"{k} {v}" for k, v in self.describe().items())
        says = f"its identity record names {claimed}" if claimed not in (None, pinned) else f"its sets name {', '.join(named)}"
        raise ChainBroken(
            f"the repository ({where}) is not repository {pinned}, which the configuration pins (repository_id): "
            f"{says}. Nothing was read from it or written to it; point the configuration at the right repository, "
            "or correct repository_id if this repository is the one meant"
        )

    def _record_claim(self) -> str | None:
        """The identity the stored record names, if it is validly signed (or the repository is unsigned); any location."""
        stored = self.stored_identity() if self.identity_location() is not None else None
        if stored is None:
            return None
        try:
            body = json.loads(stored[0])
        except (ValueError, UnicodeDecodeError):
            return None
        rid = body.get("repository_id") if isinstance(body, dict) else None
        if not isinstance(rid, str) or body.get("format") != IDENTITY_FORMAT:
            return None
        keys = self.trust.keys if self.trust is not None else None
        if keys is not None and not keys.check(stored[0], stored[1]).ok:
            return None
        return rid

    # -- the repository's identity (engine/chain.py: whose sets these are) ---------------------
    def identity_location(self) -> str | None:
        """Where this repository is, as its identity record binds it; None: the backend keeps no record."""
        return None

    def stored_identity(self) -> tuple[bytes, bytes | None] | None:
        """The identity record (``repository.json``) and its signature as stored, or None."""
        return None

    def write_identity(self, record: bytes, signature: bytes | None) -> None:
        """Store the identity record (replacing an older one)."""
        return None

    def stored_head(self) -> tuple[bytes, bytes | None] | None:
        """The head record (``head.json``) and its signature as stored, or None."""
        return None

    def write_head(self, record: bytes, signature: bytes | None) -> None:
        """Store the head record (replacing the older one)."""
        return None

    def recorded_head(self) -> tuple[str, int, str] | None:
        """The newest set (id, place, manifest SHA-256) the head record vouches for here (signed, here), or None."""
        location = self.identity_location()
        stored = self.stored_head() if location is not None else None
        if location is None or stored is None:
            return None
        keys = self.trust.keys if self.trust is not None else None
        return read_head(stored[0], stored[1], keys, location)

    def record_head(self, manifest: Manifest, data: bytes) -> None:
        """After publishing ``manifest`` (stored as ``data``): rewrite the head record to name it.

        Called under the publishing lock, after the set is visible. A record that cannot be
        written costs only its evidence (it names an older set, which a set here reaches),
        so it is warned about and the backup stands.
        """
        location = self.identity_location()
        if location is None or manifest.sequence is None:
            return
        record = head_bytes(manifest.id, manifest.sequence, hashlib.sha256(data).hexdigest(), location)
        try:
            signature = self.sign(record)
            if manifest.repository_id is not None and (place := self.witness_place()) is not None:
                witness.remember(place, manifest.repository_id, record, signature, manifest.sequence)
            self.write_head(record, signature)
        except (RepositoryError, ConfigError) as exc:
            log.warning("backup %s is published, but the head record was not rewritten: %s", manifest.id, exc)

    def recorded_identity(self) -> str | None:
        """The identity this repository's record vouches for here (signed, this location), or None."""
        location = self.identity_location()
        stored = self.stored_identity() if location is not None else None
        if location is None or stored is None:
            return None
        keys = self.trust.keys if self.trust is not None else None
        return read_identity(stored[0], stored[1], keys, location)

    def claim_identity(self, repository_id: str, role: str) -> None:
        """Record ``repository_id`` as this repository's, unless a valid record here already says so.

        Written when a repository's first set is published (or first copy received), and
        again when the record is gone, forged, or was written elsewhere (the repository
        moved): the sets themselves keep the identity, so a deleted record is written back
        from them and never replaced by a new identity. A host that cannot sign (public
        keys only) writes none: an unsigned record would vouch for nothing.
        """
        location = self.identity_location()
        if location is None or self.recorded_identity() == repository_id:
            return
        if self.trust is not None and self.trust.keys is not None and self.trust.signer is None:
            return
        record = identity_bytes(repository_id, location, role)
        self.write_identity(record, self.sign(record))

    def identity_for_new_set(self, found: ChainAudit) -> str:
        """The identity a set published now names: the repository's own, or a new one for its first.

        Refused while the repository holds sets of several repositories and no valid record
        says which is this one: a new set would have to take a side nobody can prove.
        """
        if found.ambiguous:
            where = ", ".join(f"{k} {v}" for k, v in self.describe().items())
            raise ChainBroken(
                f"the repository ({where}) holds sets written in several repositories and no valid identity record "
                "says which is this one; nothing was published: remove the sets copied in from the other repository "
                "(recovery list names them as foreign) and back up again"
            )
        repository_id = found.identity or self.pinned_identity or secrets.token_hex(16)
        self.claim_identity(repository_id, "origin")
        return repository_id

    def admit_origin(self, manifest: Manifest) -> None:
        """Refuse to copy in a set written in another repository than the one whose sets this one holds.

        Why: an offsite repository legitimately holds copies of its source's sets (which
        name the source's identity); a set of another repository copied into it would be
        refused there as foreign anyway, after its bytes were stored. The first copy
        records whose copies the repository holds.
        """
        origin = manifest.repository_id
        if origin is None:
            return
        found = self.chain_audit()
        where = ", ".join(f"{k} {v}" for k, v in self.describe().items())
        if found.ambiguous:
            raise ChainBroken(
                f"backup {manifest.id} was not copied: the target ({where}) holds sets of several repositories and "
                "no valid identity record says which is its own; remove the sets copied in from the other repository"
            )
        if found.identity is not None and found.identity != origin:
            raise ChainBroken(
                f"backup {manifest.id} was not copied: it was written in repository {origin}, and the target "
                f"({where}) holds the sets of repository {found.identity}; give each repository its own offsite "
                "repository (prefix or directory)"
            )
        self.claim_identity(origin, "copy")

    def chain_link(self) -> dict[str, Any]:
        """The place of a set published now: after the newest usable set (or tombstone).

        Called by a backend's commit while it holds the publishing lock, so two backups
        never take one place. Retention never deletes the newest set, but a repository
        emptied by other means continues after its newest tombstone, not from 1 again.
        The set also names the repository's identity (``identity_for_new_set``).
        """
        found = self.chain_audit()
        head_id = found.head()
        candidates: builtins.list[tuple[int, str, str]] = []
        if head_id is not None:
            st = found.sets[head_id]
            candidates.append((st.summary.sequence or 0, head_id, st.sha256))
        candidates += [
            (t.sequence, t.backup_id, t.manifest_sha256) for t in found.tombstones.values() if t.trusted and t.sequence
        ]
        if found.head_lost is not None and (head := found.lost_head) is not None:
            # The newest set was deleted whole: the next set follows it all the same, so its
            # signed link keeps naming the loss (``missing``) after the head record is rewritten.
            candidates.append((head[1], head[0], head[2]))
        identity = {"repository_id": self.identity_for_new_set(found)}
        if not candidates:
            return {"sequence": 1, "previous_id": None, "previous_sha256": None} | identity
        place, prev_id, prev_sha = max(candidates)
        return {"sequence": place + 1, "previous_id": prev_id, "previous_sha256": prev_sha} | identity

    @contextmanager
    def publishing(self, operation: str) -> Iterator[None]:
        """The exclusive section in which a new set takes its place in the chain.

        A backend without a lock of its own (S3 today) publishes without one: two backups
        at the same moment may then claim one place, which the audit reports as a fork.
        """
        yield

    def record_deletion(self, backup_id: str, reason: str) -> None:
        """Write the signed tombstone of a set about to be deleted (retention, an operator's prune)."""
        data = self.stored_manifest_bytes(backup_id)
        if data is None:
            return
        manifest = ManifestSummary.model_validate_json(data)
        record = tombstone_bytes(
            manifest, hashlib.sha256(data).hexdigest(), reason, self.own_role(), self.identity_location()
        )
        self.write_tombstone(backup_id, record, self.sign(record))

    # Damage on purpose, for drills' integrity faults (engine/faults/integrity.py).
    def overwrite_manifest(self, backup_id: str, data: bytes) -> None:
        raise FaultError(f"the {self.name} repository cannot rewrite a manifest on purpose")

    def delete_manifest(self, backup_id: str) -> None:
        raise FaultError(f"the {self.name} repository cannot delete a manifest on purpose")

    def plant_set(self, source_id: str, new_id: str, manifest_bytes: bytes, signature: bytes | None) -> None:
        """Store set ``source_id``'s files again as ``new_id`` with the given manifest, checking nothing.

        What an attacker with write access does to replay an old set under a new id; a
        repository's own ``import_set`` would refuse it.
        """
        raise FaultError(f"the {self.name} repository cannot plant a set on purpose")


def verbatim_manifest(manifest: Manifest, source: Repository) -> tuple[bytes, bytes | None]:
    """The manifest bytes and signature to copy: exactly as the source stores them.

    Why not ``manifest.to_json()``: a signature covers stored bytes, and a manifest an
    older drproof wrote may serialize differently today. The bytes must still be the
    manifest whose artifacts the copy checks; if the source changed them meanwhile, the
    copy is refused rather than publishing a manifest nobody checked.
    """
    data = source.stored_manifest_bytes(manifest.id)
    if data is None:
        return manifest.to_json().encode("utf-8"), None
    if data != manifest.to_json().encode("utf-8") and Manifest.model_validate_json(data) != manifest:
        raise IntegrityError(
            f"backup {manifest.id}: its manifest changed in the source while it was copied; not copied"
        )
    return data, source.stored_signature(manifest.id)
