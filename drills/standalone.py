"""The standalone engine's operations: backup, list, verify, restore, prune.

These sit between the CLI and the engine: they turn a backup-config.yaml into
components bound to existing servers, and run the same engine code drills run, so an
operator's restore on the worst day is exactly what the monthly drill exercised.

Every backup, verify, restore, deletion and copy is also recorded in the audit log
(:mod:`engine.audit`) here, where the backup ids and components are known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backup_config import BackupConfig, LocalRepositorySpec
from drills.targets import Binding
from engine import backup as engine_backup
from engine import retention, selection
from engine.audit import DEFAULT_NAME, AuditError, AuditLog, Event, describe_repository
from engine.chain import NOT_PROVEN, UNTRUSTING, ChainAudit, PublishedRecord, missing_against
from engine.components import component_kinds
from engine.components.base import Component
from engine.crypto import Encryption
from engine.errors import BackupNotFound, ConfigError, DrproofError, IntegrityError
from engine.manifest import Manifest, ManifestSummary
from engine.repository import LocalRepository, OpenContext, open_repository
from engine.repository.base import Repository, VerifyReport
from engine.repository.objectlock import Hold
from engine.retention import Decision, Policy
from engine.runtime.external import ExternalRuntime
from engine.signing import RepositoryTrust

Progress = Callable[[str], None]
# Under "engine", so the CLI shows these warnings as it shows the engine's own.
log = logging.getLogger("engine.standalone")
BACKUP_TYPES = ("full", "database-only", "incremental")


def _describe(spec: Any) -> str:
    return describe_repository(spec.describe())


def where(config: BackupConfig | None, path: Path | None, offsite: bool = False) -> str:
    """The repository :func:`repository` opens, described for the audit log (no credentials)."""
    if offsite and config is not None and config.offsite is not None:
        return _describe(config.offsite)
    if path is not None or config is None:
        return describe_repository({"type": "local", "path": str(path)})
    return _describe(config.repository)


def audit_log(config: BackupConfig | None, path: Path | None) -> AuditLog:
    """Where this command's audit lines go: the configured ``audit_log``, else
    ``audit.jsonl`` in the local repository (``--repository`` or the configured one).

    An S3 repository has no local directory that belongs to it, so without ``audit_log``
    nothing is recorded rather than writing into whatever the current directory is.
    """
    if config is not None and config.audit_log is not None:
        return AuditLog(config.audit_log)
    if path is not None:
        return AuditLog(path / DEFAULT_NAME)
    if config is not None and isinstance(config.repository, LocalRepositorySpec):
        return AuditLog(config.repository.path / DEFAULT_NAME)
    return AuditLog(None)


def _open(
    spec: Any, encryption: Encryption | None, trust: RepositoryTrust | None, create: bool = True, offsite: bool = False
) -> Repository:
    repo = open_repository(spec, OpenContext(encryption=encryption, create=create, trust=trust))
    repo.pinned_identity = getattr(spec, "repository_id", None)  # refused whole if it is another repository
    repo.role = "copy" if offsite else "origin"  # whose tombstones count there (the other's are refused)
    return repo


def repository(
    config: BackupConfig | None,
    path: Path | None,
    offsite: bool = False,
    create: bool = True,
    writes: bool = False,
) -> Repository:
    """The repository a command works on; ``create=False`` for readers that must write nothing.

    ``writes``: the command publishes sets or records deletions, so a configured
    ``signing`` must include the private key (a restore-only host holds public keys only).
    """
    if path is not None and config is None:
        return LocalRepository(path, create=create)
    if config is None:
        raise ConfigError("say where the repository is: --repository PATH or --config FILE")
    encryption = None
    if config.encryption is not None:
        e = config.encryption
        encryption = Encryption.from_settings(e.key_env, e.key_file, e.passphrase_env)
    trust = config.signing.trust(require_signer=writes) if config.signing is not None else None
    if offsite:
        if config.offsite is None:
            raise ConfigError("--offsite: the configuration has no offsite repository")
        return _open(config.offsite, encryption, trust, create, offsite=True)
    if path is not None:
        return LocalRepository(path, encryption, create=create, trust=trust)
    return _open(config.repository, encryption, trust, create)


def copy(
    config: BackupConfig,
    backup_id: str | None,
    to_offsite: bool,
    progress: Progress,
    audit: AuditLog | None = None,
) -> Manifest:
    """Copy a set between the primary and the offsite repository, verbatim and verified."""
    audit = audit or AuditLog(None)
    source_where = where(config, None, offsite=not to_offsite)
    target_where = where(config, None, offsite=to_offsite)
    with ExitStack() as held:
        with audit.operation("copy", target_where) as op:
            # This line is written only if finding the set fails, or if nothing needs copying.
            op.backup_ids = [backup_id] if backup_id else []
            op.extra["source"] = source_where
            source = repository(config, None, offsite=not to_offsite)
            target = repository(config, None, offsite=to_offsite)
            # Shared for the whole copy: a concurrent prune cannot delete what is being read.
            held.enter_context(source.lock(exclusive=False, operation=f"copy to {target_where}"))
            manifest = find(source, backup_id, None)
            # An incremental set is only restorable with its parents: copy missing ones first.
            pending = engine_backup.sets_to_copy(source, target, manifest)
            op.backup_ids = [manifest.id]
            op.components = [c.name for c in manifest.components]
            op.extra["detail"] = "already present in the target"
            op.record_success = not pending
        # One line per set copied, so each parent of an incremental chain is on record too.
        for m in pending:
            with audit.operation("copy", target_where) as op:
                op.backup_ids = [m.id]
                op.components = [c.name for c in m.components]
                op.extra["source"] = source_where
                progress(f"copying {m.id} to the {'offsite' if to_offsite else 'primary'} repository")
                engine_backup.copy_set(source, target, m)
    return manifest


def components(
    config: BackupConfig,
    names: Sequence[str] | None,
    provision: bool = True,
    *,
    foreign_backups: bool = False,
    restoring: bool = False,
) -> list[Component]:
    """The chosen components, bound to the servers and directories the configuration names.

    ``provision=False`` leaves connecting to each to the caller, so one unreachable server
    fails its own component, not every other one with it. ``foreign_backups``: the
    servers receive restores of another configuration's backups (``recovery restore
    --to``), so a physical restore keeps each server's own configuration. ``restoring``:
    for a restore, which may replace the data directory of a physical server that is down.
    """
    chosen = list(names) if names else list(config.components)
    binding = Binding()
    for name in chosen:
        config.components[name].bind(name, binding)
    binding.physical = {
        k: replace(v, foreign_backups=foreign_backups, restore_when_down=restoring) for k, v in binding.physical.items()
    }
    runtime = ExternalRuntime(
        Path("."),
        postgres=binding.postgres,
        physical=binding.physical,
        redis_targets=binding.redis,
        directories=binding.directories,
    )
    out: list[Component] = []
    for name in chosen:
        spec = config.components[name]
        comp = component_kinds.get(spec.kind)(name, spec.params(name, binding), runtime)
        spec.prepare(comp)
        if provision:
            comp.provision()
            spec.configure(comp)
        out.append(comp)
    return out


def select_for_type(config: BackupConfig, names: Sequence[str] | None, backup_type: str) -> list[str]:
    chosen = list(names) if names else list(config.components)
    if backup_type == "database-only":
        chosen = [n for n in chosen if config.components[n].kind == "postgres"]
        if not chosen:
            raise ConfigError("--type database-only: no postgres component is configured or selected")
    return chosen


def take_backup(
    config: BackupConfig,
    names: Sequence[str] | None,
    backup_type: str,
    label: str | None,
    progress: Progress,
    audit: AuditLog | None = None,
) -> Manifest:
    chosen = select_for_type(config, names, backup_type)
    with (audit or AuditLog(None)).operation("backup", where(config, None)) as op:
        op.components = chosen
        op.extra["type"] = backup_type
        if label:
            op.extra["label"] = label
        repo = repository(config, None, writes=True)
        comps = components(config, chosen)
        with repo.lock(exclusive=False, operation=f"{backup_type} backup"):
            parent = None
            if backup_type == "incremental":
                # Volumes store only their changes since the newest set of the chain; other kinds
                # take full backups inside the same set (their tools have no cheap incremental form).
                parent = _incremental_parent(repo, progress)
            manifest = engine_backup.backup(
                repo,
                comps,
                label=label,
                labels={"type": backup_type},
                progress=progress,
                parent=parent,
                canaries={c.instance for c in comps if config.components[c.instance].canary},
            )
            op.backup_ids = [manifest.id]
            moved = {c.name: c.details["changed_while_archived"] for c in manifest.components if "changed_while_archived" in c.details}
            if moved:  # the audit trail says which files were captured as read, not as one moment
                op.extra["changed_while_archived"] = moved
            progress(f"verifying {manifest.id}")
            report = repo.verify(manifest.id, written=manifest)
            repo.record_verification(report)
            if found := limits(manifest):  # the set is kept and verified; the command exits 1
                op.extra["findings"] = found
                op.fail(f"backup {manifest.id} is complete, but: " + "; ".join(found))
        if not report.ok:
            raise IntegrityError(f"backup {manifest.id} failed verification right after writing: {report.damaged}")
    return manifest


def _incremental_parent(repo: Repository, progress: Progress) -> Manifest | None:
    """The chain's newest set, or None (a full backup); an incremental never builds on a set in doubt."""
    try:
        return selection.latest(repo).manifest
    except BackupNotFound:
        progress("no earlier backup: this incremental backup is a full one")
        return None


@dataclass
class PruneResult:
    kept: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    dry_run: bool


def prune(
    config: BackupConfig,
    dry_run: bool,
    progress: Progress,
    audit: AuditLog | None = None,
    fresh: Sequence[str] = (),
    offsite: bool = False,
) -> PruneResult:
    """Apply the retention policy; ``fresh``: sets verified in full by this process just now (not re-read).

    ``offsite``: prune the configuration's offsite repository (``recovery prune --offsite``),
    which records its deletions as an offsite copy's; the primary is left alone.
    """
    if config.retention is None:
        raise ConfigError("no retention policy in the configuration (add retention: {keep_last: N, daily: N, ...})")
    r = config.retention
    policy = Policy(keep_last=r.keep_last, daily=r.daily, weekly=r.weekly, monthly=r.monthly)
    audit = audit or AuditLog(None)
    repo = repository(config, None, offsite=offsite, writes=not dry_run)
    repo_where = where(config, None, offsite=offsite)

    @contextmanager
    def deleting(d: Decision, holds: list[str]) -> Iterator[None]:
        # One line per deleted set, written while the exclusive lock is still held.
        with audit.operation("delete", repo_where) as op:
            op.backup_ids = [d.backup_id]
            op.components = holds
            op.extra.update(reason="retention policy", created_at=d.created_at.isoformat())
            progress(f"deleting {d.backup_id}")
            yield

    started = time.monotonic()
    try:
        pruned = retention.prune(repo, policy, dry_run=dry_run, now=datetime.now(UTC), deleting=deleting, fresh=fresh)
    except retention.PruneRefused as exc:
        if not dry_run:  # a dry run records nothing, here as in verified.json
            _audit_refused_prune(audit, repo_where, exc, time.monotonic() - started)
        raise
    locked = pruned.locked
    kept = [
        {"id": d.backup_id, "created_at": d.created_at.isoformat(), "reasons": d.reasons}
        | ({"locked": [h.as_dict() for h in locked[d.backup_id]]} if d.backup_id in locked else {})
        for d in pruned.decisions
        if d.keep
    ]
    deleted: list[dict[str, Any]] = []
    for d in pruned.decisions:
        if not d.keep:
            gone: dict[str, Any] = {"id": d.backup_id, "created_at": d.created_at.isoformat()}
            if d.backup_id in pruned.storage_left:
                left = pruned.storage_left[d.backup_id]
                gone.update(storage_left=left, freed=not left)
            deleted.append(gone)
    return PruneResult(kept, deleted, dry_run)


def _audit_refused_prune(audit: AuditLog, repository: str, exc: retention.PruneRefused, seconds: float) -> None:
    """One ``delete`` line, outcome ``refused``: the deletions not made, and the damage that stopped them.

    Why: every other refusal (a restore or copy of a damaged set) leaves a line; a prune
    that found the set retention relies on damaged is the first sign of bit rot in the
    repository, and the audit trail is where an auditor looks for it.
    """
    try:
        audit.record(
            "delete",
            "refused",
            backup_ids=exc.refused,
            components=[],
            repository=repository,
            duration_seconds=seconds,
            error=str(exc),
            reason="retention policy",
            damaged=exc.damaged,
        )
    except AuditError as audit_exc:
        raise AuditError(f"{audit_exc} (the prune itself was refused: {exc})") from exc


def store_holds(repo: Repository, decisions: list[Decision]) -> dict[str, list[Hold]]:
    """Kept for callers of the standalone module: see :func:`engine.retention.store_holds`."""
    return retention.store_holds(repo, decisions)


def find_audited(
    repo: Repository,
    backup_id: str | None,
    timestamp: datetime | None,
    audit: AuditLog,
    event: Event,
    repo_where: str,
    reference: Repository | None = None,
) -> Manifest:
    """:func:`find`, with a failed ``event`` on record when the backup asked for is not there."""
    with audit.operation(event, repo_where) as op:
        op.backup_ids = [backup_id] if backup_id else []
        op.record_success = False  # the verify or restore itself writes the line
        if timestamp is not None:
            op.extra["at_or_before"] = timestamp.isoformat()
        latest = not backup_id and timestamp is None  # only "latest" can be a rollback the log shows
        manifest = find(repo, backup_id, timestamp, reference, audit.published(repo_where) if latest else None)
    return manifest


def verify(
    repo: Repository,
    manifest: Manifest,
    repo_where: str,
    audit: AuditLog | None = None,
    reference: Repository | None = None,
) -> VerifyReport:
    """Re-hash every stored artifact of a set and record the result (retention protects verified sets)."""
    with (audit or AuditLog(None)).operation("verify", repo_where) as op:
        op.backup_ids = [manifest.id]
        op.components = [c.name for c in manifest.components]
        report = repo.verify(manifest.id)
        report.findings += restorability(manifest)
        report.limits = limits(manifest)
        found = repo.chain_audit()
        report.trust = trust_findings(found, manifest.id, _reference_audit(reference))
        untrusted = [str(f) for f in found.findings if f.backup_id == manifest.id and f.kind in UNTRUSTING]
        report.ok = report.ok and not report.findings and not untrusted
        repo.record_verification(report)
        if not report.ok:
            problems = (
                [f"{len(report.damaged)} damaged artifact(s): {', '.join(report.damaged)}"] if report.damaged else []
            )
            op.fail("; ".join(problems + report.findings + untrusted))
        elif report.limits:  # sound and kept as verified, but not all it should be: exit 1
            op.extra["findings"] = report.limits
            op.fail("; ".join(report.limits))
    return report


def offsite_reference(config: BackupConfig | None, offsite: bool) -> Repository | None:
    """The other copy of the chain to compare with: the offsite repository, when reading the primary."""
    if config is None or config.offsite is None or offsite:
        return None
    try:
        return repository(config, None, offsite=True, create=False)
    except DrproofError as exc:
        log.warning("the offsite copy could not be opened to compare with (%s); a newest set deleted here would go unseen", exc)
        return None


def _reference_audit(reference: Repository | None) -> ChainAudit | None:
    """The reference copy's audit; one that cannot be read is left out, and said so."""
    if reference is None:
        return None
    try:
        return reference.chain_audit()
    except DrproofError as exc:
        log.warning("the offsite copy could not be compared with (%s); a newest set deleted here would go unseen", exc)
        return None


def trust_findings(found: ChainAudit, backup_id: str, reference: ChainAudit | None = None) -> list[str]:
    """What the signatures and the chain say, the set's own findings first, then the repository's."""
    lines = [] if found.verifies else [f"integrity {NOT_PROVEN}"]
    if found.verifies and backup_id in found.sets and backup_id not in found.untrusted():
        check = found.sets[backup_id].signature
        lines.append(f"{backup_id}: signature valid (key {check.key_fingerprint if check else '?'})")
    lines += [f"{f.kind}: {f}" for f in found.findings if f.backup_id == backup_id]
    lines += [f"{f.kind}: {f}" for f in found.findings if f.backup_id != backup_id]
    if reference is not None:
        lines += [f"{f.kind}: {f}" for f in missing_against(found, reference)]
    return lines


def restorability(manifest: Manifest) -> list[str]:
    """What each component kind says would keep this set from restoring where it came from."""
    findings = []
    for record in manifest.components:
        if record.kind not in component_kinds:
            findings.append(f"{record.name}: kind {record.kind!r} is not one this drproof can restore")
            continue
        prefix = f"{record.name}: "
        tools = {k[len(prefix) :]: v for k, v in manifest.tools.items() if k.startswith(prefix)}
        findings += [
            f"{record.name}: {f}" for f in component_kinds.get(record.kind).restorability(record.details, tools)
        ]
    return findings


limits = engine_backup.limits  # drills call it from here; the engine computes it


def find(
    repo: Repository,
    backup_id: str | None,
    timestamp: datetime | None,
    reference: Repository | None = None,
    published: PublishedRecord | None = None,
) -> Manifest:
    """The set a command reads: by id, the newest at or before a time, or the latest (all through the chain).

    A set whose signature or place in the chain forbids it is refused (UntrustedSet,
    ChainBroken: exit 1); "latest" is refused while the chain leaves it open, while
    ``reference`` (the offsite copy) holds a newer set than this repository does, or while
    ``published`` (the audit log) names a newer set that is gone.
    """
    if backup_id:
        return selection.by_id(repo, backup_id).manifest
    if timestamp is None:
        return selection.latest(repo, reference=_reference_audit(reference), published=published).manifest
    found = repo.chain_audit()
    for candidate in reversed(found.order):
        st = found.sets[candidate]
        dated_wrong = any(f.kind == "future-dated" for f in found.findings_for(candidate))
        if st.summary.created_at <= timestamp and not dated_wrong:
            return selection.by_id(repo, candidate, found).manifest
    raise BackupNotFound(f"no backup was taken at or before {timestamp.isoformat()}")


def summary(manifest: Manifest | ManifestSummary) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "label": manifest.label,
        "created_at": manifest.created_at.isoformat(),
        "components": [c.name for c in manifest.components],
        "artifacts": len(manifest.artifacts),
        "stored_bytes": sum(a.size for a in manifest.artifacts),
        "type": manifest.labels.get("type", "full"),
    }
