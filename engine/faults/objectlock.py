"""A repository writer tries to destroy a backup the store keeps under Object Lock.

Ransomware that reaches the backup credentials deletes the backups before it encrypts
anything. With S3 Object Lock the store refuses: this fault makes that attempt for real
(every stored version of one artifact, by version id: a plain delete would only hide it
behind a delete marker) and records what the store answered. The drill then proves the
artifact is still there and restorable; whether the attempt was refused is evidence, and
a repository without the lock (a local directory, an unlocked bucket) loses the artifact,
so the same drill fails there.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.errors import FaultError
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams
from engine.faults.repository import ArtifactChoiceParams, _choose
from engine.repository.objectlock import ObjectLocked


class DeleteLockedObject(Fault):
    name: ClassVar[str] = "delete_locked_object"
    targets: ClassVar[frozenset[str]] = frozenset({REPOSITORY_TARGET})
    Params: ClassVar[type[FaultParams]] = ArtifactChoiceParams
    description: ClassVar[str] = (
        "Try to delete every stored version of one artifact of a backup set, as ransomware holding the repository's "
        "write keys would; Object Lock must refuse it and the artifact must still verify."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ArtifactChoiceParams)
        manifest, artifact = _choose(ctx, p, self.name, non_empty=False)
        repo = ctx.repository
        effect: dict[str, Any] = {"backup_id": manifest.id, "object": artifact.key, "repository": repo.describe()}
        try:
            repo.delete_stored(manifest, artifact)
        except ObjectLocked as refused:
            effect.update(
                attempt="refused",
                refused_by=str(refused),
                locked=[h.as_dict() for h in refused.holds],
            )
        else:
            # Named as `artifact` only now: backup_integrity then expects verification to find it damaged.
            effect.update(attempt="deleted", artifact=artifact.key)
        check = repo.check_artifact(manifest, artifact)
        effect["after"] = "intact" if check.ok else check.problem
        if effect["attempt"] == "refused" and not check.ok:
            raise FaultError(f"{self.name}: the store refused the delete, yet {artifact.key} is {check.problem}")
        return effect
