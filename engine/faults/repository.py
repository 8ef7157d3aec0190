"""Faults that hit the backup repository itself rather than the live stack."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.errors import FaultError
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams, flip_bytes
from engine.manifest import ArtifactRecord, Manifest


class CorruptArtifactParams(FaultParams):
    backup: str | None = Field(default=None, description="Backup step name; default: the latest backup.")
    component: str | None = Field(default=None, description="Component whose artifact is hit; default: random.")
    bytes: int = Field(default=1, ge=1, le=4096, description="How many stored bytes to invert.")


class CorruptArtifact(Fault):
    name: ClassVar[str] = "corrupt_artifact"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = CorruptArtifactParams
    description: ClassVar[str] = "Invert stored bytes in one artifact of a backup set, as storage bit rot would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, CorruptArtifactParams)
        manifest = ctx.find_backup(p.backup)
        candidates = [a for a in manifest.artifacts if p.component is None or a.component == p.component]
        candidates = [a for a in candidates if a.size > 0]
        if not candidates:
            raise FaultError(f"corrupt_artifact: backup {manifest.id} has no artifact of {p.component!r} to damage")
        artifact = ctx.rng.choice(candidates)
        size = ctx.repository.stored_size(manifest, artifact)
        offsets = sorted(ctx.rng.sample(range(size), min(p.bytes, size)))
        for off in offsets:
            original = ctx.repository.read_stored(manifest, artifact, off, 1)
            ctx.repository.overwrite_stored(manifest, artifact, off, flip_bytes(original))
        return {"backup_id": manifest.id, "artifact": artifact.key, "offsets": offsets}


class ArtifactChoiceParams(FaultParams):
    backup: str | None = Field(default=None, description="Backup step name; default: the latest backup.")
    component: str | None = Field(default=None, description="Component whose artifact is hit; default: random.")
    artifact: str | None = Field(
        default=None, description="Artifact name within the component (e.g. `database.dump`); default: random."
    )


def _choose(ctx: FaultContext, p: ArtifactChoiceParams, fault: str, non_empty: bool) -> tuple[Manifest, ArtifactRecord]:
    manifest = ctx.find_backup(p.backup)
    candidates = [
        a
        for a in manifest.artifacts
        if (p.component is None or a.component == p.component)
        and (p.artifact is None or a.name == p.artifact)
        and (a.size > 0 or not non_empty)
    ]
    if not candidates:
        held = ", ".join(a.key for a in manifest.artifacts) or "none"
        wanted = "/".join(x or "*" for x in (p.component, p.artifact))
        raise FaultError(f"{fault}: backup {manifest.id} has no artifact {wanted} to damage (it holds: {held})")
    return manifest, ctx.rng.choice(candidates)


def _confirm(ctx: FaultContext, manifest: Manifest, artifact: ArtifactRecord, fault: str) -> str:
    """The repository's own check must now see the damage; returns its wording."""
    check = ctx.repository.check_artifact(manifest, artifact)
    if check.ok:
        raise FaultError(f"{fault}: {artifact.key} of backup {manifest.id} still verifies after the damage")
    return check.problem or "damaged"


class TruncateArtifactParams(ArtifactChoiceParams):
    keep: float = Field(default=0.5, ge=0, lt=1, description="Share of the stored bytes that survive; 0 empties it.")


class TruncateArtifact(Fault):
    """An upload or copy that stopped halfway but left a file with the right name.

    The most common way a backup goes bad without anyone deleting it: a full disk, a
    killed sync job, an object store multipart upload completed too early. A restore
    that trusted the name would stream a prefix of the data and might even succeed on
    formats that end cleanly at a record boundary.
    """

    name: ClassVar[str] = "truncate_artifact"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = TruncateArtifactParams
    description: ClassVar[str] = "Cut one stored artifact of a backup set short, as an interrupted copy would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, TruncateArtifactParams)
        manifest, artifact = _choose(ctx, p, self.name, non_empty=True)
        repo = ctx.repository
        before = repo.stored_size(manifest, artifact)
        keep = int(before * p.keep)
        repo.truncate_stored(manifest, artifact, keep)
        after = repo.stored_size(manifest, artifact)
        if after != keep:
            raise FaultError(f"{self.name}: {artifact.key} is {after} bytes after cutting it to {keep}")
        return {
            "backup_id": manifest.id,
            "artifact": artifact.key,
            "bytes_before": before,
            "bytes_after": after,
            "verification": _confirm(ctx, manifest, artifact, self.name),
        }


class DeleteArtifact(Fault):
    """One file of a backup set gone: a lifecycle rule, a hand cleanup, a lost disk.

    The manifest still lists the artifact, so the set looks complete to anything that
    reads only manifests. Only re-reading the stored bytes shows the hole.
    """

    name: ClassVar[str] = "delete_artifact"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = ArtifactChoiceParams
    description: ClassVar[str] = "Delete one stored artifact of a backup set; its manifest still lists it."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ArtifactChoiceParams)
        manifest, artifact = _choose(ctx, p, self.name, non_empty=False)
        repo = ctx.repository
        size = repo.stored_size(manifest, artifact)
        repo.delete_stored(manifest, artifact)
        return {
            "backup_id": manifest.id,
            "artifact": artifact.key,
            "bytes": size,
            "verification": _confirm(ctx, manifest, artifact, self.name),
        }
