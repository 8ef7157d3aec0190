"""Backup and restore of components through a repository: the engine's two verbs.

The drill runner and the (future) standalone CLI both call these, so a drill exercises
exactly the code an operator would run on the worst day.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from engine import __version__, canary, pitr, selection
from engine.chain import chain_key
from engine.components.base import UNHEALTHY_AT_BACKUP, ArtifactSource, Component, Health
from engine.errors import (
    BackupNotFound,
    ComponentError,
    DrproofError,
    InsufficientSpace,
    IntegrityError,
    NotComparable,
    RepositoryError,
)
from engine.fingerprint import Fingerprint
from engine.manifest import ComponentRecord, Manifest, ManifestSummary
from engine.partstream import reading_from_set, store_parts
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
    canaries: Collection[str] = (),
) -> Manifest:
    """Write one complete backup set of ``components``, or nothing at all.

    With ``parent``, components that support it back up only what changed since that set
    (recorded as their ``parent``); all others take a full backup as usual. Each record
    carries the component's fingerprint, taken by the component during its backup where
    it can: the reference every restore is proven against (a set without one cannot be
    restored) and an incremental backup's per-file base. ``fingerprints`` given by the
    caller win (benchmarks take them apart, so a backup's timing is the backup alone).
    Components named in ``canaries`` get a fresh canary planted just before their backup
    (``engine.canary``); the manifest records its digest, never its value.
    """
    with repository.lock(exclusive=False, operation=f"backup{f' {label}' if label else ''}"):
        return _backup(repository, components, label, labels, fingerprints, progress, parent, canaries)


def _backup(
    repository: Repository,
    components: Sequence[Component],
    label: str | None,
    labels: dict[str, str] | None,
    fingerprints: dict[str, Fingerprint] | None,
    progress: Progress | None,
    parent: Manifest | None,
    canaries: Collection[str],
) -> Manifest:
    writer = repository.begin(label)
    records: list[ComponentRecord] = []
    tools: dict[str, str] = {"drproof": __version__, "zstandard": _zstd_version()}
    comp: Component | None = None  # the component being backed up, for the error if it fails
    try:
        for comp in components:
            if progress:
                progress(f"backing up {comp.instance} ({comp.name})")
            if comp.wants_history:
                comp.backup_history(_latest_record(repository, comp))
            base = _incremental_base(parent, comp)
            incremental = None
            if base is not None:
                assert parent is not None
                source = _source(repository, parent, comp.instance)  # its fingerprint reads stored parts
                assert source.fingerprint is not None
                incremental = (source.fingerprint, source)
            planted = canary.plant(comp) if comp.instance in canaries else None
            fp = (fingerprints or {}).get(comp.instance)
            if fp is None:
                details, fp = comp.backup_fingerprinted(writer, incremental)
            elif incremental is not None:
                details = comp.backup_incremental(writer, *incremental)
            else:
                details = comp.backup(writer)
            if planted is not None:
                details = {**details, "canary": planted}
            details = _judged(comp, details)
            store_parts(writer, comp.instance, fp)
            tools.update({f"{comp.instance}: {k}": v for k, v in comp.tool_versions().items()})
            records.append(
                ComponentRecord(
                    name=comp.instance,
                    kind=comp.name,
                    artifacts=[],
                    fingerprint=fp,
                    details=details,
                    parent=parent.id if base is not None and parent is not None else None,
                )
            )
        comp = None
        return writer.commit(records, tools, labels or {})
    except BaseException as exc:
        writer.abort()
        failure = _server_failure(comp, exc) if comp is not None and isinstance(exc, Exception) else None
        if failure is None:
            raise
        raise failure from exc


def _judged(comp: Component, details: dict[str, Any]) -> dict[str, Any]:
    """``details``, with the source's failed health check at backup time recorded in them.

    The set is kept either way (it is the truth of the moment, and may be all there is);
    ``limits`` turns the record into a finding, so the backup exits 1 and says why. A
    health check that cannot run is recorded too: "could not check" is never healthy.
    """
    try:
        health = comp.health_at_backup(details)
    except Exception as exc:  # any failure to judge is itself the finding
        health = Health(ok=False, detail=f"its health check could not run ({type(exc).__name__}: {exc})")
    if health.ok:
        return details
    return {**details, UNHEALTHY_AT_BACKUP: " ".join(health.detail.split())[:1000]}


def _server_failure(comp: Component, exc: Exception) -> ComponentError | None:
    """A component's backup failure, told as what happened to its server, or None to re-raise.

    A server that dies mid-backup surfaces in two ways: a client driver error escaping the
    component (redis-py, psycopg2: a bare traceback otherwise), or a ComponentError from a
    tool such as pg_dump whose summary line ("PQgetCopyData() failed") does not say the
    server went away. The first becomes a ComponentError naming the component; the second
    is completed by asking the component whether its server still answers.
    """
    import psycopg2
    import redis

    done = "nothing was published"
    if isinstance(
        exc, redis.ConnectionError | redis.TimeoutError | psycopg2.OperationalError | psycopg2.InterfaceError
    ):
        detail = " ".join(str(exc).split())
        if isinstance(exc, redis.AuthenticationError) or "password authentication failed" in detail:
            return ComponentError(
                f"{comp.name} {comp.instance!r}: its server refused the password during the backup ({detail}); "
                f"check the configured password; {done}"
            )
        return ComponentError(
            f"{comp.name} {comp.instance!r}: lost the connection to its server during the backup ({detail}); {done}"
        )
    if isinstance(exc, redis.ResponseError):  # a refused command (ACL, rename-command): a traceback before (review)
        from engine.components.redis_stage import server_error

        try:
            health = comp.health()
        except Exception:
            health = None
        why = health.detail if health is not None and not health.ok else f"the server refused a command: {server_error(exc)}"
        return ComponentError(f"{comp.name} {comp.instance!r}: {' '.join(why.split())}; {done}")
    # Only components with a server (``service``: PostgreSQL, Redis) are asked; a
    # directory component's failure says what it needs to already.
    if not isinstance(exc, ComponentError) or getattr(comp, "service", None) is None:
        return None
    try:
        health = comp.health()
    except Exception:  # a probe that cannot run tells nothing more
        return None
    if health.ok or health.detail.startswith("query failed"):
        return None  # the server answers; what failed is the data (a damaged page), already said
    detail = " ".join(health.detail.split())
    if "ALLOW_CONNECTIONS false" in str(exc):
        return ComponentError(f"{str(exc).rstrip('.')}; {done}")  # it answers: not "stopped or unreachable"
    if "password authentication failed" in detail or isinstance(exc.__cause__, redis.AuthenticationError):
        return ComponentError(
            f"{str(exc).rstrip('.')}; {comp.instance!r} refused the password ({detail}); check the configured "
            f"password; {done}"
        )
    return ComponentError(
        f"{str(exc).rstrip('.')}; {comp.instance!r} no longer answers ({detail}): its server stopped or became unreachable "
        f"during the backup; {done}"
    )


def _latest_record(repository: Repository, comp: Component) -> ComponentRecord | None:
    holding = [s for s in repository.summaries() if any(c.name == comp.instance for c in s.components)]
    for m in repository.newest_first(holding):
        record = m.component(comp.instance)
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


def restore(repository: Repository, manifest: Manifest, component: Component, *, defer_proof: bool = False) -> bool:
    """Restore one component from a backup set; nothing live changes unless it is proven.

    Refused up front (an IntegrityError, nothing touched): a set without a fingerprint of
    the component, since no restore of it could be proven; an artifact that is missing
    or, for kinds that do not stage their restore, fails any check of its bytes. Kinds
    that stage (``proves_while_staging``) refuse damage and a staged copy that differs
    from the fingerprint before they swap anything in.

    ``defer_proof``: the caller restores into a sandbox it built and compares the restored
    state with the set's fingerprint afterwards (a restore test's fidelity check). A kind
    may then skip its proof before the swap where the target holds nothing, since there is
    no live data to protect and the caller's comparison is the proof; the RTO then times
    the restore, as ``pg_restore`` alone would, not the restore and a second proof.
    Returns whether a proof was left to the caller, who must then make it.
    """
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
    if record.fingerprint is None:
        raise NotComparable(
            f"backup {manifest.id} holds no fingerprint of {component.instance!r} taken at backup time, so no "
            "restore of it could be proven to hold what was backed up; refusing to restore it (nothing was "
            "touched). Restore from a backup taken with fingerprints (every `drproof backup` takes them)"
        )
    with repository.lock(exclusive=False, operation=f"restore of {component.instance} from {manifest.id}"):
        return _restore_locked(repository, manifest, component, defer_proof)


def _restore_locked(repository: Repository, manifest: Manifest, component: Component, defer_proof: bool) -> bool:
    sets = chain(repository, manifest, component.instance)
    _verify_before_restore(repository, sets, component)
    sources = [_source(repository, m, component.instance) for m in sets]
    for source in sources:
        source.defer_proof = defer_proof
    try:
        if len(sources) == 1:
            component.restore(sources[0])
        else:
            component.restore_chain(sources)
    except IntegrityError as exc:
        # Damage met while staging, a staged copy that does not match, a hostile archive:
        # every one is refused before the swap, and said the same way.
        if str(exc).startswith("refusing to restore"):
            raise
        raise type(exc)(f"refusing to restore {component.instance!r} (the live data were not touched): {exc}") from exc
    except (DrproofError, OSError) as exc:
        if not component.proves_while_staging or isinstance(exc, InsufficientSpace):
            raise  # no room is about the disk, not the set: reading every artifact again tells nothing
        # A staged restore that broke mid-stream (a tar parser meeting the end of a cut
        # artifact) says what broke, not why: if the artifact itself is damaged, that is
        # the finding, and a refusal.
        _prove_all(repository, sets, component, cause=exc)
        raise
    return any(source.proof_deferred for source in sources)


def restore_to_time(
    repository: Repository, component: Component, target: datetime | None, *, live_wal: bool = False
) -> pitr.Replayed:
    """Restore a component to a moment, from a base backup and the WAL after it.

    ``target`` None replays all the WAL there is. With ``live_wal``, segments the server
    archived after the newest backup (its archive survived the disaster) continue the
    replay. Returns the sets used, base first, and whether the live archive was. Every
    artifact of every set is verified before the live component is touched, as for any
    restore.
    """
    if not getattr(component, "supports_point_in_time", False):
        raise DrproofError(
            f"{component.instance!r} ({component.name}) cannot be restored to a point in time; "
            "only physical PostgreSQL backups (kind postgres-physical) carry the WAL that needs"
        )
    # A kind that knows timelines says which sets can start a replay on the one recovery follows.
    judging: Callable[[], Callable[[ArtifactSource], str | None] | None] | None = getattr(component, "base_judge", None)
    judge = judging() if judging is not None else None

    def why_not(m: Manifest) -> str | None:
        return judge(_source(repository, m, component.instance)) if judge is not None else None

    chosen = pitr.plan(
        repository.list(), component.instance, component.name, target, live_wal=live_wal, why_not=why_not
    )
    bases = chain(repository, chosen.base, component.instance)
    _verify_before_restore(repository, [*bases[:-1], *chosen.sets], component)
    component.restore_to_time(  # type: ignore[attr-defined]
        [_source(repository, m, component.instance) for m in bases],
        [_source(repository, m, component.instance) for m in chosen.sets],
        target,
        live_after=chosen.live_after,
    )
    return pitr.Replayed([*bases[:-1], *chosen.sets], chosen.live_after is not None)


def _verify_before_restore(repository: Repository, sets: list[Manifest], component: Component) -> None:
    """Refuse before anything live changes: every artifact the restore needs, whole chain.

    A kind that changes live data as it reads (``proves_while_staging`` False) gets every
    artifact read to its end with every check first (``prove_artifact``); a kind that
    stages is only asked whether each exists, since its own read proves the rest before
    its swap.
    """
    for m in sets:
        artifacts = m.artifacts_of(component.instance)
        if component.proves_while_staging:
            checks = [repository.check_present(m, a) for a in artifacts]
        else:
            checks = [repository.prove_artifact(m, a) for a in artifacts]
        damaged = [c for c in checks if not c.ok]
        if damaged:
            raise IntegrityError(
                f"backup {m.id}: refusing to restore {component.instance!r} (nothing was touched): "
                + "; ".join(f"{c.artifact} {c.problem}" for c in damaged)
            )


def _prove_all(repository: Repository, sets: list[Manifest], component: Component, cause: BaseException) -> None:
    for m in sets:
        damaged = [c for c in (repository.prove_artifact(m, a) for a in m.artifacts_of(component.instance)) if not c.ok]
        if damaged:
            raise IntegrityError(
                f"backup {m.id}: refusing to restore {component.instance!r} (the live data were not touched): "
                + "; ".join(f"{c.artifact} {c.problem}" for c in damaged)
            ) from cause


def _source(repository: Repository, manifest: Manifest, component: str) -> ArtifactSource:
    artifacts = {a.name: a for a in manifest.artifacts_of(component)}

    def opener(artifact: object, whole: bool = True) -> object:
        # Checked just before (proven, or present for kinds that stage); the stream
        # itself runs every check again as it is read.
        return repository.open_artifact(manifest, artifact, checked=True, whole=whole)  # type: ignore[arg-type]

    try:
        record = manifest.component(component)
    except KeyError:
        return ArtifactSource(artifacts, opener)
    prefix = f"{component}: "
    tools = {k[len(prefix) :]: v for k, v in manifest.tools.items() if k.startswith(prefix)}
    fingerprint = record.fingerprint
    if fingerprint is not None and fingerprint.external:
        fingerprint = _reading_parts(repository, manifest, component, fingerprint)
    return ArtifactSource(artifacts, opener, fingerprint, record.details, tools)


def _reading_parts(repository: Repository, manifest: Manifest, component: str, fp: Fingerprint) -> Fingerprint:
    """``fp`` with its parts read from the set's own artifact, every check on the way."""
    return reading_from_set(
        manifest, component, fp, lambda record: repository.open_artifact(manifest, record, checked=True)
    )


def recorded_fingerprint(repository: Repository, manifest: Manifest, component: str) -> Fingerprint | None:
    """The fingerprint ``manifest`` recorded of ``component``, its parts readable wherever they are kept.

    A fingerprint of many parts keeps them in an artifact of the set: comparing with it
    reads them from ``repository``, checked against the manifest as they pass.
    """
    fp = manifest.component(component).fingerprint
    if fp is None or not fp.external or fp.source is not None:
        return fp
    return _reading_parts(repository, manifest, component, fp)


def _zstd_version() -> str:
    import zstandard

    return str(zstandard.__version__)


def sets_to_copy(source: Repository, target: Repository, manifest: Manifest) -> list[Manifest]:
    """The sets ``target`` lacks to restore ``manifest``: an incremental set needs its parents."""
    present = {m.id for m in target.list()}
    needed = {m.id: m for c in manifest.components for m in chain(source, manifest, c.name)}
    return [m for m in sorted(needed.values(), key=chain_key) if m.id not in present]


def copy_set(source: Repository, target: Repository, manifest: Manifest) -> VerifyReport:
    """Copy one set verbatim and prove the copy: every stored digest re-read in the target.

    Shared by the standalone ``copy`` command and the drill runner's offsite copy, so a
    drill exercises the same path an operator's offsite job runs. A copy that does not
    verify raises: an offsite set nobody can restore is worse than none, because it is
    trusted.
    """
    what = f"copy of {manifest.id}"
    with source.lock(exclusive=False, operation=what), target.lock(exclusive=False, operation=what):
        target.admit_origin(manifest)  # a set of another repository is refused before any byte is stored
        target.import_set(manifest, source)
        report = target.verify(manifest.id)
        target.record_verification(report)
        # The copy carries the source's chain: in the target too it must be a set the chain accepts.
        problem = selection.refusal(manifest.id, target.chain_audit())
    if not report.ok:
        raise RepositoryError(f"the copy of {manifest.id} failed verification in the target: {report.damaged}")
    if problem is not None:
        raise problem
    return report


def limits(manifest: Manifest | ManifestSummary) -> list[str]:
    """The findings of a sound set, by component: what each kind says it cannot do (a WAL gap
    before it), and a source that was not healthy when it was backed up (any kind).

    ``drproof backup`` and ``verify`` say these with exit 1, a drill's backup step fails the
    timeline with them, and ``recovery list`` marks the set: a summary carries only the
    details ``limits`` reads, so the inventory says the same without reading fingerprints.
    """
    from engine.components import component_kinds  # the registry imports every kind, some of them this module

    found = []
    for record in manifest.components:
        details = record.details if isinstance(record.details, dict) else record.details.as_details()
        unhealthy = details.get(UNHEALTHY_AT_BACKUP)
        if unhealthy:
            found.append(
                f"{record.name}: the source failed its health check when it was backed up ({unhealthy}); the set "
                "holds that state as it was, and a restore of it brings the damage back: repair the source and "
                "back it up again"
            )
        if record.kind in component_kinds:
            found += [f"{record.name}: {f}" for f in component_kinds.get(record.kind).limits(details)]
    return found
