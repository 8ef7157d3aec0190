"""Faults that hit the backup repository itself rather than the live stack."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.errors import FaultError
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams, flip_bytes


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
