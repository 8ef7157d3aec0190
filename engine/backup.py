"""Backup and restore of components through a repository: the engine's two verbs.

The drill runner and the (future) standalone CLI both call these, so a drill exercises
exactly the code an operator would run on the worst day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine import __version__
from engine.components.base import ArtifactSource, Component
from engine.errors import DrproofError, IntegrityError
from engine.fingerprint import Fingerprint
from engine.manifest import ComponentRecord, Manifest
from engine.repository.base import Repository

Progress = Callable[[str], None]


def backup(
    repository: Repository,
    components: Sequence[Component],
    *,
    label: str | None = None,
    labels: dict[str, str] | None = None,
    fingerprints: dict[str, Fingerprint] | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Write one complete backup set of ``components``, or nothing at all."""
    writer = repository.begin(label)
    records: list[ComponentRecord] = []
    tools: dict[str, str] = {"drproof": __version__, "zstandard": _zstd_version()}
    try:
        for comp in components:
            if progress:
                progress(f"backing up {comp.instance} ({comp.name})")
            details = comp.backup(writer)
            tools.update({f"{comp.instance}: {k}": v for k, v in comp.tool_versions().items()})
            records.append(
                ComponentRecord(
                    name=comp.instance,
                    kind=comp.name,
                    artifacts=[],
                    fingerprint=(fingerprints or {}).get(comp.instance),
                    details=details,
                )
            )
        return writer.commit(records, tools, labels or {})
    except BaseException:
        writer.abort()
        raise


def restore(repository: Repository, manifest: Manifest, component: Component) -> None:
    """Restore one component from a backup set; damaged artifacts are refused first."""
    try:
        record = manifest.component(component.instance)
    except KeyError:
        raise DrproofError(
            f"backup {manifest.id} has no component {component.instance!r} "
            f"(it holds: {', '.join(c.name for c in manifest.components)})"
        ) from None
    if record.kind != component.name:
        raise DrproofError(
            f"backup {manifest.id}: {component.instance!r} was backed up as {record.kind}, not {component.name}"
        )
    artifacts = {a.name: a for a in manifest.artifacts_of(component.instance)}

    def opener(artifact: object) -> object:
        return repository.open_artifact(manifest, artifact)  # type: ignore[arg-type]

    # Verify every artifact of the component before touching the live data, so a
    # damaged backup never half-overwrites a component.
    report = repository.verify(manifest.id)
    damaged = [c for c in report.checks if not c.ok and c.artifact.split("/", 1)[0] == component.instance]
    if damaged:
        raise IntegrityError(
            f"backup {manifest.id}: refusing to restore {component.instance!r}: "
            + "; ".join(f"{c.artifact} {c.problem}" for c in damaged)
        )
    component.restore(ArtifactSource(artifacts, opener))


def _zstd_version() -> str:
    import zstandard

    return str(zstandard.__version__)
