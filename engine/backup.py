"""Backup and restore of components through a repository: the engine's two verbs.

The drill runner and the (future) standalone CLI both call these, so a drill exercises
exactly the code an operator would run on the worst day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from engine import __version__, pitr
from engine.components.base import ArtifactSource, Component
from engine.errors import BackupNotFound, DrproofError, IntegrityError, RepositoryError
from engine.fingerprint import Fingerprint
from engine.manifest import ComponentRecord, Manifest
from engine.repository.base import Repository, VerifyReport

Progress = Callable[[str], None]


def backup(
    repository: Repository,
    components: Sequence[Component],
    *,
    label: str | None = None,
    labels: dict[str, str] | None = None,
    fingerprints: dict[str, Fingerprint] | None = None,
    progress: Progress | None = None,
    parent: Manifest | None = None,
) -> Manifest:
    """Write one complete backup set of ``components``, or nothing at all.

    With ``parent``, components that support it back up only what changed since that set
    (recorded as their ``parent``); all others take a full backup as usual.
    """
    writer = repository.begin(label)
    records: list[ComponentRecord] = []
    tools: dict[str, str] = {"drproof": __version__, "zstandard": _zstd_version()}
    try:
        for comp in components:
            if progress:
                progress(f"backing up {comp.instance} ({comp.name})")
            if comp.wants_history:
                comp.backup_history(_latest_record(repository, comp))
            base = _incremental_base(parent, comp)
            if base is not None:
                assert base.fingerprint is not None and parent is not None
                details = comp.backup_incremental(writer, base.fingerprint, _source(repository, parent, comp.instance))
            else:
                details = comp.backup(writer)
            tools.update({f"{comp.instance}: {k}": v for k, v in comp.tool_versions().items()})
            records.append(
                ComponentRecord(
                    name=comp.instance,
                    kind=comp.name,
                    artifacts=[],
                    fingerprint=(fingerprints or {}).get(comp.instance),
                    details=details,
                    parent=parent.id if base is not None and parent is not None else None,
                )
            )
        return writer.commit(records, tools, labels or {})
    except BaseException:
        writer.abort()
        raise


def _latest_record(repository: Repository, comp: Component) -> ComponentRecord | None:
    for m in sorted(repository.list(), key=lambda m: (m.created_at, m.id), reverse=True):
        try:
            record = m.component(comp.instance)
        except KeyError:
            continue
        if record.kind == comp.name:
            return record
    return None


def _incremental_base(parent: Manifest | None, comp: Component) -> ComponentRecord | None:
    if parent is None or not comp.supports_incremental:
        return None
    try:
        record = parent.component(comp.instance)
    except KeyError:
        return None
    return record if record.kind == comp.name and record.fingerprint is not None else None


def chain(repository: Repository, manifest: Manifest, component: str) -> list[Manifest]:
    """The sets a component's restore needs, full backup first; a missing link is damage."""
    sets = [manifest]
    while (parent := sets[-1].component(component).parent) is not None:
        if len(sets) > 1000:
            raise IntegrityError(f"backup {manifest.id}: the chain of {component!r} does not end")
        try:
            sets.append(repository.get(parent))
        except BackupNotFound:
            raise IntegrityError(
                f"backup {manifest.id}: {component!r} is incremental on {parent}, which is gone; "
                "it cannot be restored from this backup"
            ) from None
    return sets[::-1]


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
    sets = chain(repository, manifest, component.instance)
    _verify_before_restore(repository, sets, component)
    sources = [_source(repository, m, component.instance) for m in sets]
    if len(sources) == 1:
        component.restore(sources[0])
    else:
        component.restore_chain(sources)


def restore_to_time(
    repository: Repository, component: Component, target: datetime | None, *, live_wal: bool = False
) -> list[Manifest]:
    """Restore a component to a moment, from a base backup and the WAL after it.

    ``target`` None replays all the WAL there is. With ``live_wal``, segments the server
    archived after the newest backup (its archive survived the disaster) continue the
    replay. Returns the sets used, base first. Every artifact of every set is verified
    before the live component is touched, as for any restore.
    """
    if not getattr(component, "supports_point_in_time", False):
        raise DrproofError(
            f"{component.instance!r} ({component.name}) cannot be restored to a point in time; "
            "only physical PostgreSQL backups (kind postgres-physical) carry the WAL that needs"
        )
    chosen = pitr.plan(repository.list(), component.instance, component.name, target, live_wal=live_wal)
    bases = chain(repository, chosen.base, component.instance)
    _verify_before_restore(repository, [*bases[:-1], *chosen.sets], component)
    component.restore_to_time(  # type: ignore[attr-defined]
        [_source(repository, m, component.instance) for m in bases],
        [_source(repository, m, component.instance) for m in chosen.sets],
        target,
        live_after=chosen.live_after,
    )
    return [*bases[:-1], *chosen.sets]


def _verify_before_restore(repository: Repository, sets: list[Manifest], component: Component) -> None:
    # Verify every artifact the restore needs, across the whole chain, before touching the
    # live data, so a damaged backup never half-overwrites a component.
    for m in sets:
        checks = [repository.check_artifact(m, a) for a in m.artifacts_of(component.instance)]
        damaged = [c for c in checks if not c.ok]
        if damaged:
            raise IntegrityError(
                f"backup {m.id}: refusing to restore {component.instance!r}: "
                + "; ".join(f"{c.artifact} {c.problem}" for c in damaged)
            )


def _source(repository: Repository, manifest: Manifest, component: str) -> ArtifactSource:
    artifacts = {a.name: a for a in manifest.artifacts_of(component)}

    def opener(artifact: object) -> object:
        # restore() verified every artifact of the chain just before; the stream is hashed again.
        return repository.open_artifact(manifest, artifact, checked=True)  # type: ignore[arg-type]

    return ArtifactSource(artifacts, opener)


def _zstd_version() -> str:
    import zstandard

    return str(zstandard.__version__)


def sets_to_copy(source: Repository, target: Repository, manifest: Manifest) -> list[Manifest]:
    """The sets ``target`` lacks to restore ``manifest``: an incremental set needs its parents."""
    present = {m.id for m in target.list()}
    needed = {m.id: m for c in manifest.components for m in chain(source, manifest, c.name)}
    return [m for m in sorted(needed.values(), key=lambda m: (m.created_at, m.id)) if m.id not in present]


def copy_set(source: Repository, target: Repository, manifest: Manifest) -> VerifyReport:
    """Copy one set verbatim and prove the copy: every stored digest re-read in the target.

    Shared by the standalone ``copy`` command and the drill runner's offsite copy, so a
    drill exercises the same path an operator's offsite job runs. A copy that does not
    verify raises: an offsite set nobody can restore is worse than none, because it is
    trusted.
    """
    target.import_set(manifest, source)
    report = target.verify(manifest.id)
    target.record_verification(report)
    if not report.ok:
        raise RepositoryError(f"the copy of {manifest.id} failed verification in the target: {report.damaged}")
    return report
