"""``drproof backup --dry-run``: everything a backup needs, checked, and nothing written.

A nightly backup that fails at 02:00 because a password rotated, a pg_dump of the right
major is missing or the repository's disk was remounted read-only is found out the next
morning. The dry run checks each of those now: the configuration resolves its secrets,
the repository can be written (without writing a set), the audit log can be appended to,
and each component's server answers with the configured credentials, its client tools are
there, and a directory can be read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drills.backup_config import BackupConfig, LocalRepositorySpec
from engine.errors import DrproofError


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


def dry_run(config: BackupConfig, names: Sequence[str] | None) -> list[Check]:
    """Every check, each its own outcome: one failing does not hide the others."""
    from drills import standalone

    checks = [_repository(config), _audit(config)]
    try:
        comps = standalone.components(config, standalone.select_for_type(config, names, "full"), provision=False)
    except DrproofError as exc:  # a secret that cannot be read, an unknown kind
        return [*checks, Check("components", False, str(exc))]
    for comp in comps:
        checks.append(_component(config, comp))
    return checks


def _repository(config: BackupConfig) -> Check:
    from drills import standalone

    where = f"repository {standalone.where(config, None)}"
    local = config.repository.path if isinstance(config.repository, LocalRepositorySpec) else None
    if local is not None:
        existing = next((p for p in (local, *local.parents) if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK | os.X_OK):
            return Check(where, False, f"{existing or local} is not writable by this user")
        if not (local / "sets").is_dir():
            return Check(where, True, f"does not exist yet: the first backup creates it in {existing}")
    try:
        # Resolves the encryption key and the signing key too (a backup needs the private one).
        repo = standalone.repository(config, None, create=False, writes=True)
        sets = len(repo.summaries())
        storage = _s3_storage(repo)
    except DrproofError as exc:
        return Check(where, False, str(exc))
    key = "; encryption key resolved" if config.encryption else ""
    key += (
        "; signing key resolved" if config.signing else "; unsigned: integrity against a repository writer not proven"
    )
    return Check(where, True, f"readable ({sets} sets), writable{key}{storage}")


def _s3_storage(repo: object) -> str:
    """An S3 bucket's versioning and Object Lock, checked as the first write would (raises if it cannot keep the lock)."""
    from engine.repository import S3Repository

    if not isinstance(repo, S3Repository):
        return ""
    repo.check_bucket()
    lock = f"; Object Lock {repo.object_lock.describe()} (enabled on the bucket)" if repo.object_lock else ""
    return ("; versioned bucket" if repo.versioned else "") + lock


def _audit(config: BackupConfig) -> Check:
    """The audit log can be appended to (or created), checked without creating it."""
    from drills import standalone

    path = standalone.audit_log(config, None).path
    if path is None:
        return Check("audit log", True, "none configured (an S3 repository without audit_log records nothing)")
    if path.exists():
        ok = os.access(path, os.W_OK)
    else:
        parent = next((p for p in path.parents if p.exists()), None)
        ok = parent is not None and os.access(parent, os.W_OK | os.X_OK)
    return Check(f"audit log {path}", ok, "can be appended to" if ok else "cannot be written by this user")


def _component(config: BackupConfig, comp: object) -> Check:
    from engine.components.base import Component

    assert isinstance(comp, Component)
    what = f"{comp.instance} ({comp.name})"
    try:
        comp.provision()
        config.components[comp.instance].configure(comp)
        health = comp.health()
        if not health.ok:
            return Check(what, False, health.detail)
        tools = comp.tool_versions()
    except DrproofError as exc:
        return Check(what, False, str(exc))
    except Exception as exc:  # a driver's error: the server is not usable as configured
        return Check(what, False, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    path = getattr(comp, "path", None)
    if isinstance(path, Path) and not os.access(path, os.R_OK | os.X_OK):
        return Check(what, False, f"{path} is not readable by this user")
    shown = "; ".join(f"{k} {v}" for k, v in tools.items()) or "no client tools needed"
    return Check(what, True, f"{health.detail}; {shown}")
