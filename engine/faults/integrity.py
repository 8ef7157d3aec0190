"""Faults of someone who can write the repository: forgeries the signatures and the chain must name.

Storage faults (``engine.faults.repository``) break bytes the way disks and copies do,
and digests catch them. These are deliberate: an artifact rewritten together with its
digest in the manifest, an old set planted under a new id, the newest manifest deleted,
a backup taken with a clock a year ahead. Each is consistent enough that checking
stored bytes against their manifest passes (the evidence says so), so only a signature,
the chain, or (for the clock) ordering by the chain can catch it. On a signed repository
each must be named and refused; on an unsigned one a drill shows what goes unnoticed.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import zstandard
from pydantic import Field

from engine.errors import BackupNotFound, FaultError, IntegrityError
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams, flip_bytes
from engine.manifest import ArtifactRecord, Manifest
from engine.repository.base import Repository, new_backup_id
from engine.streams import zstd_compressor

MAX_FORGED_BYTES = 256 << 20  # drill artifacts are small; a forgery is built in memory


class ForgeArtifactParams(FaultParams):
    backup: str | None = Field(default=None, description="Backup step name; default: the latest backup.")
    component: str | None = Field(default=None, description="Component whose artifact is forged; default: random.")
    bytes: int = Field(default=16, ge=1, le=4096, description="How many bytes of the content to change.")


class ForgeArtifact(Fault):
    """An artifact replaced and its SHA-256 and size rewritten in the manifest to match.

    Unencrypted, the forged artifact is a valid zstd frame of changed content: every
    check of the stored bytes passes. Encrypted, an attacker without the key cannot seal
    new chunks, so stored bytes are changed instead (and the GCM tags would fail too).
    The manifest's signature is left as it was: whoever forges has no key.
    """

    name: ClassVar[str] = "forge_artifact"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = ForgeArtifactParams
    description: ClassVar[str] = (
        "Replace one artifact of a backup set and rewrite its SHA-256 and size in the manifest to match, as someone "
        "who can write the repository (but holds no signing key) would."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ForgeArtifactParams)
        manifest = ctx.find_backup(p.backup)
        stored = ctx.repository.stored_manifest_bytes(manifest.id)
        if stored is None:
            raise FaultError(f"{self.name}: backup {manifest.id} has no manifest to rewrite")
        current = Manifest.model_validate_json(stored)
        candidates = [a for a in current.artifacts if a.size > 0 and p.component in (None, a.component)]
        if not candidates:
            raise FaultError(f"{self.name}: backup {manifest.id} has no artifact of {p.component!r} to forge")
        artifact = ctx.rng.choice(candidates)
        body, how = _forged_body(ctx.repository, current, artifact, p.bytes)
        ctx.repository.truncate_stored(current, artifact, 0)
        ctx.repository.overwrite_stored(current, artifact, 0, body)
        forged_artifact = artifact.model_copy(update={"sha256": _sha256(body), "size": len(body)})
        forged = current.model_copy(
            update={"artifacts": [forged_artifact if a.key == artifact.key else a for a in current.artifacts]}
        )
        ctx.repository.overwrite_manifest(manifest.id, forged.to_json().encode("utf-8"))
        check = ctx.repository.check_artifact(forged, forged_artifact)
        if not check.ok:
            raise FaultError(
                f"{self.name}: the forged {artifact.key} does not match its rewritten entry ({check.problem})"
            )
        return {
            "backup_id": manifest.id,
            "artifact": artifact.key,
            "forgery": how,
            "sha256_before": artifact.sha256,
            "sha256_after": forged_artifact.sha256,
            "manifest": "rewritten to match; its signature left as it was",
            "stored_digest_check": "passes (the forgery is consistent with its manifest)",
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _forged_body(repo: Repository, manifest: Manifest, artifact: ArtifactRecord, count: int) -> tuple[bytes, str]:
    """New stored bytes for ``artifact`` and how they were made."""
    if repo.stored_size(manifest, artifact) > MAX_FORGED_BYTES:
        raise FaultError(f"forge_artifact: {artifact.key} is over {MAX_FORGED_BYTES} bytes; pick a smaller one")
    with repo.open_stored(manifest, artifact) as fh:
        stored = fh.read()
    if manifest.encryption is not None:
        middle = len(stored) // 2
        changed = stored[:middle] + flip_bytes(stored[middle : middle + count]) + stored[middle + count :]
        return changed, f"{min(count, len(stored) - middle)} stored bytes changed (encrypted: no key to re-seal)"
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    middle = len(raw) // 2
    content = raw[:middle] + flip_bytes(raw[middle : middle + count]) + raw[middle + count :]
    out = io.BytesIO()
    with zstd_compressor().stream_writer(out, closefd=False) as writer:
        writer.write(content)
    return (
        out.getvalue(),
        f"content changed ({min(count, len(raw) - middle)} bytes) and compressed again: a valid zstd frame",
    )


class ReplaySetParams(FaultParams):
    backup: str | None = Field(
        default=None, description="Backup step name of the older set to replay; default: the oldest set there is."
    )


class ReplaySet(Fault):
    """An older set planted under a new id that claims the next place in the chain.

    The attacker copies the old set's artifacts verbatim, writes a manifest with a new
    id, a current date and the place after the newest set (its predecessor's SHA-256
    computed right), and copies the old signature: everything but the signature is what
    drproof itself would have written, so on an unsigned repository "latest" becomes the
    stale data. Encrypted sets also fail their chunks' associated data (format v2).
    """

    name: ClassVar[str] = "replay_set"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = ReplaySetParams
    description: ClassVar[str] = (
        "Copy an older backup set under a new id claiming the next place in the chain (its manifest rewritten, its "
        "old signature copied), as someone who can write the repository would replay stale data as the newest."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ReplaySetParams)
        repo = ctx.repository
        found = repo.chain_audit()
        if not found.order:
            raise FaultError(f"{self.name}: the repository holds no set to replay")
        source = ctx.find_backup(p.backup) if p.backup else repo.get(found.order[0])
        head = found.sets[found.order[-1]]
        now = datetime.now(UTC)
        new_id = new_backup_id(now)
        replayed = source.model_copy(
            update={
                "id": new_id,
                "created_at": now,
                "completed_at": now,
                "sequence": (head.summary.sequence or 0) + 1,
                "previous_id": head.summary.id,
                "previous_sha256": head.sha256,
            }
        )
        repo.plant_set(source.id, new_id, replayed.to_json().encode("utf-8"), repo.stored_signature(source.id))
        return {
            "backup_id": new_id,
            "replayed_from": source.id,
            "claims_place": replayed.sequence,
            "after": head.summary.id,
            "signature": f"copied from {source.id}",
        }


class DeleteManifestParams(FaultParams):
    backup: str | None = Field(
        default=None, description="Backup step name; default: the newest set of the repository's chain."
    )


class DeleteManifest(Fault):
    """The newest set's manifest (and signature) deleted; its artifacts left where they are.

    Anything that lists sets by their manifests now sees an older set as the newest.
    """

    name: ClassVar[str] = "delete_manifest"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = DeleteManifestParams
    description: ClassVar[str] = (
        "Delete the manifest and signature of a backup set (the newest by default) and leave its artifacts, so an "
        "older set looks like the latest."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, DeleteManifestParams)
        repo = ctx.repository
        if p.backup:
            backup_id = ctx.find_backup(p.backup).id
        else:
            head = repo.chain_audit().head()
            if head is None:
                raise FaultError(f"{self.name}: the repository holds no set")
            backup_id = head
        manifest = repo.get(backup_id)
        signed = repo.stored_signature(backup_id) is not None
        repo.delete_manifest(backup_id)
        try:
            repo.get(backup_id)
        except (BackupNotFound, IntegrityError):
            pass
        else:
            raise FaultError(f"{self.name}: backup {backup_id} is still readable after deleting its manifest")
        return {
            "backup_id": backup_id,
            "deleted": ["manifest.json", *(["manifest.sig"] if signed else [])],
            "artifacts_left": len(manifest.artifacts),
        }


class SkewClockParams(FaultParams):
    days: float = Field(
        default=365, ge=-36500, le=36500, description="How far ahead the clock runs (negative: behind), in days."
    )
    backups: int = Field(default=1, ge=1, le=100, description="How many of the following backups take the wrong time.")


class SkewedClock:
    """A repository clock that runs ``offset`` off for the next ``remaining`` sets, then is right again."""

    def __init__(self, inner: Callable[[], datetime], offset: timedelta, remaining: int, issued: list[str]) -> None:
        self.inner, self.offset, self.remaining, self.issued = inner, offset, remaining, issued

    def __call__(self) -> datetime:
        if self.remaining <= 0:
            return self.inner()
        self.remaining -= 1
        when = self.inner() + self.offset
        self.issued.append(when.isoformat())
        return when


class SkewClock(Fault):
    """The backup host's clock runs wrong for the next backups (a year ahead by default).

    Nothing is damaged: the sets are real and validly signed, only dated wrong. Ordering
    by date would make the wrong one the newest (retention deleting the real newest, a
    plain restore bringing back stale data); the chain must keep the real order and name
    the date.
    """

    name: ClassVar[str] = "skew_clock"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = SkewClockParams
    description: ClassVar[str] = (
        "Make the clock the next backups are dated by run `days` ahead (or behind), as a host with a wrong clock would."
    )
    needs_backup: ClassVar[bool] = False

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, SkewClockParams)
        issued: list[str] = []
        repo = ctx.repository
        repo.clock = SkewedClock(repo.clock, timedelta(days=p.days), p.backups, issued)
        # ``issued`` fills in as the following backups take their time: the record says which.
        return {"clock_offset_days": p.days, "backups": p.backups, "skewed_created_at": issued}
