"""The standalone engine's operations: backup, list, verify, restore, prune.

These sit between the CLI and the engine: they turn a backup-config.yaml into
components bound to existing servers, and run the same engine code drills run, so an
operator's restore on the worst day is exactly what the monthly drill exercised.

Every backup, verify, restore, deletion and copy is also recorded in the audit log
(:mod:`engine.audit`) here, where the backup ids and components are known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from drills.backup_config import BackupConfig, LocalRepositorySpec
from drills.targets import Binding
from engine import backup as engine_backup
from engine.audit import DEFAULT_NAME, AuditLog, Event, describe_repository
from engine.components import component_kinds
from engine.components.base import Component
from engine.crypto import Encryption
from engine.errors import BackupNotFound, ConfigError, IntegrityError
from engine.manifest import Manifest, ManifestSummary
from engine.repository import LocalRepository, OpenContext, open_repository
from engine.repository.base import Repository, VerifyReport
from engine.repository.objectlock import Hold
from engine.retention import Decision, Policy, plan
from engine.runtime.external import ExternalRuntime

Progress = Callable[[str], None]
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


def _open(spec: Any, encryption: Encryption | None, create: bool = True) -> Repository:
    return open_repository(spec, OpenContext(encryption=encryption, create=create))


def repository(
    config: BackupConfig | None, path: Path | None, offsite: bool = False, create: bool = True
) -> Repository:
    """The repository a command works on; ``create=False`` for readers that must write nothing."""
    if path is not None and config is None:
        return LocalRepository(path, create=create)
    if config is None:
        raise ConfigError("say where the repository is: --repository PATH or --config FILE")
    encryption = None
    if config.encryption is not None:
        e = config.encryption
        encryption = Encryption.from_settings(e.key_env, e.key_file, e.passphrase_env)
    if offsite:
        if config.offsite is None:
            raise ConfigError("--offsite: the configuration has no offsite repository")
        return _open(config.offsite, encryption, create)
    if path is not None:
        return LocalRepository(path, encryption, create=create)
    return _open(config.repository, encryption, create)


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
    with audit.operation("copy", target_where) as op:
        # This line is written only if finding the set fails, or if nothing needs copying.
        op.backup_ids = [backup_id] if backup_id else []
        op.extra["source"] = source_where
        source = repository(config, None, offsite=not to_offsite)
        target = repository(config, None, offsite=to_offsite)
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


def components(config: BackupConfig, names: Sequence[str] | None, provision: bool = True) -> list[Component]:
    """The chosen components, bound to the servers and directories the configuration names.

    ``provision=False`` leaves connecting to each to the caller, so one unreachable server
    fails its own component, not every other one with it.
    """
    chosen = list(names) if names else list(config.components)
    binding = Binding()
    for name in chosen:
        config.components[name].bind(name, binding)
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
        repo = repository(config, None)
        comps = components(config, chosen)
        with repo.lock(exclusive=False):
            parent = None
            if backup_type == "incremental":
                # Volumes store only their changes since the newest set; other kinds take full
                # backups inside the same set (their tools have no cheap incremental form here).
                parent = next(repo.newest_first(), None)
                if parent is None:
                    progress("no earlier backup: this incremental backup is a full one")
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
        if not report.ok:
            raise IntegrityError(f"backup {manifest.id} failed verification right after writing: {report.damaged}")
    return manifest


@dataclass
class PruneResult:
    kept: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    dry_run: bool


def prune(config: BackupConfig, dry_run: bool, progress: Progress, audit: AuditLog | None = None) -> PruneResult:
    if config.retention is None:
        raise ConfigError("no retention policy in the configuration (add retention: {keep_last: N, daily: N, ...})")
    r = config.retention
    policy = Policy(keep_last=r.keep_last, daily=r.daily, weekly=r.weekly, monthly=r.monthly)
    audit = audit or AuditLog(None)
    repo = repository(config, None)
    with repo.lock(exclusive=True):
        # Only sets a restore could read count: a newer set whose manifest is damaged must
        # never take the place of the good one retention would otherwise keep. Each is read
        # whole once, one at a time, so memory stays that of one manifest.
        summaries = repo.summaries()
        readable = {m.id for m in repo.newest_first(summaries)}
        sets = [m for m in summaries if m.id in readable]
        holds = {m.id: [c.name for c in m.components] for m in sets}
        verified = repo.verified_ids()
        locked = store_holds(repo, plan(sets, policy, verified))
        decisions = plan(sets, policy, verified, {i: [h.reason() for h in hs] for i, hs in locked.items()})
        kept = [
            {"id": d.backup_id, "created_at": d.created_at.isoformat(), "reasons": d.reasons}
            | ({"locked": [h.as_dict() for h in locked[d.backup_id]]} if d.backup_id in locked else {})
            for d in decisions
            if d.keep
        ]
        deleted: list[dict[str, Any]] = [
            {"id": d.backup_id, "created_at": d.created_at.isoformat()} for d in decisions if not d.keep
        ]
        if not dry_run:
            for d in deleted:
                # One line per deleted set, written while the exclusive lock is still held.
                with audit.operation("delete", where(config, None)) as op:
                    op.backup_ids = [d["id"]]
                    op.components = holds.get(d["id"], [])
                    op.extra.update(reason="retention policy", created_at=d["created_at"])
                    progress(f"deleting {d['id']}")
                    repo.delete(d["id"])
                    d["storage_left"] = repo.left_after_delete(d["id"])
                    d["freed"] = not d["storage_left"]
    return PruneResult(kept, deleted, dry_run)


def store_holds(repo: Repository, decisions: list[Decision]) -> dict[str, list[Hold]]:
    """What the store still locks of each set the policy would delete (S3 Object Lock), by set id.

    Asked only for those sets, so a bucket without Object Lock costs nothing more, and
    retention never tries a delete the store would refuse half-way through a set.
    """
    found = {}
    for d in decisions:
        if not d.keep and (held := repo.holds(d.backup_id)):
            found[d.backup_id] = held
    return found


def find_audited(
    repo: Repository,
    backup_id: str | None,
    timestamp: datetime | None,
    audit: AuditLog,
    event: Event,
    repo_where: str,
) -> Manifest:
    """:func:`find`, with a failed ``event`` on record when the backup asked for is not there."""
    with audit.operation(event, repo_where) as op:
        op.backup_ids = [backup_id] if backup_id else []
        op.record_success = False  # the verify or restore itself writes the line
        if timestamp is not None:
            op.extra["at_or_before"] = timestamp.isoformat()
        manifest = find(repo, backup_id, timestamp)
    return manifest


def verify(repo: Repository, manifest: Manifest, repo_where: str, audit: AuditLog | None = None) -> VerifyReport:
    """Re-hash every stored artifact of a set and record the result (retention protects verified sets)."""
    with (audit or AuditLog(None)).operation("verify", repo_where) as op:
        op.backup_ids = [manifest.id]
        op.components = [c.name for c in manifest.components]
        report = repo.verify(manifest.id)
        report.findings += restorability(manifest)
        report.ok = report.ok and not report.findings
        repo.record_verification(report)
        if not report.ok:
            problems = (
                [f"{len(report.damaged)} damaged artifact(s): {', '.join(report.damaged)}"] if report.damaged else []
            )
            op.fail("; ".join(problems + report.findings))
    return report


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


def find(repo: Repository, backup_id: str | None, timestamp: datetime | None) -> Manifest:
    if backup_id:
        return repo.get(backup_id)
    sets = repo.summaries()
    if timestamp is not None:
        sets = [m for m in sets if m.created_at <= timestamp]
        if not sets:
            raise BackupNotFound(f"no backup was taken at or before {timestamp.isoformat()}")
    newest = next(repo.newest_first(sets), None)
    if newest is None:
        raise BackupNotFound("the repository holds no complete backup")
    return newest


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
