"""Choosing the set a restore or copy reads: by id or "latest", through the chain and its signatures.

Why a module of its own: the standalone commands, the drill's restore step and the
offsite copy must refuse the same sets for the same reasons, or a drill would prove a
path an operator never runs. A set is refused when its signature fails (on a repository
that verifies), its manifest is gone while its artifacts remain, or retention deleted it
and it is back; "latest" is refused while anything leaves open which set is the newest
(:meth:`engine.chain.ChainAudit.doubts_about_latest`), naming the newest set the chain
does vouch for, so an older set never becomes "latest" without anyone being told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.chain import UNTRUSTING, ChainAudit, Finding, PublishedRecord, missing_against, missing_from_record
from engine.errors import BackupNotFound, ChainBroken, IntegrityError, UntrustedSet
from engine.manifest import Manifest
from engine.repository.base import Repository

_SIGNATURE_KINDS = frozenset({"unsigned", "unknown-key", "altered", "malformed-signature"})


@dataclass
class Chosen:
    """The set to use, and what the chain says about it (warnings, not refusals)."""

    manifest: Manifest
    notes: list[Finding] = field(default_factory=list)


def refusal(backup_id: str, found: ChainAudit) -> IntegrityError | None:
    """Why ``backup_id`` must not be read, as the error to raise; None if nothing forbids it."""
    bad = [f for f in found.findings_for(backup_id) if f.kind in UNTRUSTING]
    if not bad:
        return None
    detail = "; ".join(f.detail for f in bad)
    if any(f.kind in _SIGNATURE_KINDS for f in bad) and found.verifies:
        return UntrustedSet(f"backup {backup_id} is not trusted: {detail}")
    return ChainBroken(f"backup {backup_id} cannot be used: {detail}")


def by_id(repository: Repository, backup_id: str, found: ChainAudit | None = None) -> Chosen:
    """The named set, refused (UntrustedSet, ChainBroken) when its signature or the chain forbid it."""
    found = found or repository.chain_audit()
    problem = refusal(backup_id, found)
    if problem is not None:
        raise problem
    manifest = repository.get(backup_id)  # the signature is checked again, on the very bytes parsed
    return Chosen(manifest, [f for f in found.findings_for(backup_id) if f.kind not in UNTRUSTING])


def latest(
    repository: Repository,
    found: ChainAudit | None = None,
    components: Sequence[str] = (),
    reference: ChainAudit | None = None,
    published: PublishedRecord | None = None,
) -> Chosen:
    """The chain's newest usable set holding every one of ``components``; refused while in doubt.

    ``reference``: the audit of another copy of the chain (the offsite repository); a set
    it holds after this repository's newest is the newest deleted here, and a doubt.
    ``published``: the sets the audit log says were backed up here; one it names after
    every set here that is gone without a tombstone is a doubt too.
    """
    found = found or repository.chain_audit()
    doubts = found.doubts_about_latest() + (missing_against(found, reference) if reference is not None else [])
    doubts += missing_from_record(found, published) if published is not None else []
    if doubts:
        head = found.head()
        instead = f"the newest set the chain vouches for is {head}; name it (--id) to restore it anyway" if head else ""
        raise ChainBroken(
            "refusing to choose the latest backup, since the repository leaves open which set is the newest: "
            + "; ".join(str(d) for d in doubts)
            + (f". {instead}" if instead else "")
        )
    wanted = set(components)
    for backup_id in reversed(found.order):
        summary = found.sets[backup_id].summary
        if not wanted <= {c.name for c in summary.components}:
            continue
        try:
            return by_id(repository, backup_id, found)
        except BackupNotFound:
            continue  # deleted since the audit: the next one
    raise BackupNotFound(
        "the repository holds no complete backup" + (f" of {', '.join(components)}" if components else "")
    )
