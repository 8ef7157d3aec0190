"""Which backups to keep: keep-last N and grandfather-father-son, with one safety rule.

The plan is a pure function of the backups, the policy and which backups were verified,
so it can be shown (``--dry-run``), tested exhaustively and applied by any repository.
The safety rule wins over the policy: the newest verified backup of every component is
never deleted, so pruning can never leave a component with no restorable backup. A
verification mark is only as fresh as its date: before deleting anything, ``prune``
re-hashes the sets the plan relies on (each component's newest kept verified set and the
sets it builds on), and deletes nothing when one of them is damaged now. So do
the store's own holds (``held``: S3 Object Lock): a set the store will not delete yet is
kept, with the object and date that hold it as the reason, and never half-deleted.

"Newest" is the chain's order (``engine.chain``), never the wall clock: a backup taken
while the clock ran a year ahead once made keep-last delete the newest real backup. The
daily, weekly and monthly periods still need dates; each set is bucketed by its date
capped at its successor's (and at now), so a wrong clock cannot promote it either.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.chain import chain_key, effective_times
from engine.errors import IntegrityError
from engine.manifest import Manifest, ManifestSummary

if TYPE_CHECKING:
    from engine.repository.base import Repository, VerifyReport
    from engine.repository.objectlock import Hold

# Wraps each deletion (the standalone engine writes its audit line around it); gets the
# decision and the components the set holds.
Deleting = Callable[["Decision", list[str]], AbstractContextManager[object]]


class PruneRefused(IntegrityError):
    """A prune that deleted nothing because a set it relies on failed its re-check.

    Carries what the message says in words, so ``recovery prune`` can write the refusal
    to the audit log as data: the deletions refused and each damaged set's problems.
    """

    def __init__(self, message: str, damaged: Mapping[str, list[str]], refused: list[str]) -> None:
        super().__init__(message)
        self.damaged = dict(damaged)
        self.refused = refused  # the sets the policy would have deleted, in the plan's order


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def keeps_anything(self) -> bool:
        return any((self.keep_last, self.daily, self.weekly, self.monthly))


@dataclass
class Decision:
    backup_id: str
    created_at: datetime
    keep: bool
    reasons: list[str] = field(default_factory=list)


def _buckets(
    newest_first: Sequence[Manifest | ManifestSummary],
    count: int,
    key: Callable[[datetime], Hashable],
    label: str,
    decisions: dict[str, Decision],
    when: dict[str, datetime],
) -> None:
    """Keep the newest backup of each of the ``count`` most recent periods that have one."""
    seen: list[Hashable] = []
    for m in newest_first:
        period = key(when[m.id])
        if period in seen:
            continue
        if len(seen) == count:
            break
        seen.append(period)
        decisions[m.id].keep = True
        decisions[m.id].reasons.append(f"{label} {period}")


def plan(
    manifests: Sequence[Manifest | ManifestSummary],
    policy: Policy,
    verified: set[str],
    held: Mapping[str, Sequence[str]] | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    """Decisions for every backup, newest first (the chain's order).

    ``held``: reasons the store keeps a set, by id. ``now``: dates after it are capped to
    it too (the operator's prune passes it; a test of the policy alone may leave it out).
    """
    newest_first = sorted(manifests, key=chain_key, reverse=True)
    when = effective_times(newest_first, now)
    decisions = {m.id: Decision(m.id, m.created_at, keep=False) for m in newest_first}
    for m in newest_first[: policy.keep_last]:
        decisions[m.id].keep = True
        decisions[m.id].reasons.append("keep_last")
    _buckets(newest_first, policy.daily, lambda t: t.date().isoformat(), "daily", decisions, when)
    _buckets(
        newest_first,
        policy.weekly,
        lambda t: f"{t.isocalendar()[0]}-W{t.isocalendar()[1]:02d}",
        "weekly",
        decisions,
        when,
    )
    _buckets(newest_first, policy.monthly, lambda t: t.strftime("%Y-%m"), "monthly", decisions, when)

    components = {c.name for m in newest_first for c in m.components}
    for name in sorted(components):
        holding = [m for m in newest_first if m.id in verified and any(c.name == name for c in m.components)]
        if holding and not any(decisions[m.id].keep for m in holding):
            newest = holding[0]
            decisions[newest.id].keep = True
            decisions[newest.id].reasons.append(f"only verified backup of {name} left")
    for backup_id, reasons in (held or {}).items():
        if backup_id in decisions and reasons:
            decisions[backup_id].keep = True
            decisions[backup_id].reasons += list(reasons)
    # A kept incremental backup is only restorable with the sets it builds on.
    by_id = {m.id: m for m in newest_first}
    changed = True
    while changed:
        changed = False
        for m in newest_first:
            if not decisions[m.id].keep:
                continue
            for c in m.components:
                if c.parent in by_id and not decisions[c.parent].keep:
                    decisions[c.parent].keep = True
                    decisions[c.parent].reasons.append(f"parent of {m.id}")
                    changed = True
    return [decisions[m.id] for m in newest_first]


@dataclass
class Pruned:
    """What a prune decided and did: decisions newest first, the sets the store holds, what deletes left."""

    decisions: list[Decision]
    locked: dict[str, list[Hold]] = field(default_factory=dict)
    storage_left: dict[str, list[str]] = field(default_factory=dict)


def prune(
    repository: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    deleting: Deleting | None = None,
    fresh: Collection[str] = (),
) -> Pruned:
    """Plan under the exclusive lock, and delete what the plan does not keep (unless ``dry_run``).

    Only sets a restore could read count: a newer set whose manifest is damaged (or, in a
    signed repository, whose signature fails) must never take the place of the good one
    retention would otherwise keep; those are left alone, and ``verify`` names them. Each
    manifest is read whole once, one at a time, so memory stays that of one manifest. A
    set the store will not delete yet (S3 Object Lock) is kept with its hold as the reason.
    Each deletion is preceded by its signed tombstone, so the chain shows a deleted set,
    not a missing one. Shared by ``recovery prune`` and the drill's ``prune`` step.

    Before anything is deleted (and in a dry run) the sets the plan relies on are re-hashed
    (``recheck_relied_on``); if one is damaged now, nothing is deleted and IntegrityError
    names it. ``fresh``: sets this process verified in full moments ago (the backup that
    just wrote them), not read again.
    """
    when = now or datetime.now(UTC)
    with repository.lock(exclusive=True, operation="prune (retention)"):
        summaries = repository.summaries()
        readable = {m.id for m in repository.newest_first(summaries)}
        sets = [m for m in summaries if m.id in readable]
        verified = repository.verified_ids()
        locked = store_holds(repository, plan(sets, policy, verified, now=when))
        held = {i: [h.reason() for h in hs] for i, hs in locked.items()}
        result = Pruned(plan(sets, policy, verified, held, now=when), locked)
        damaged = recheck_relied_on(repository, sets, policy, verified, held, when, record=not dry_run, fresh=fresh)
        if damaged:
            raise PruneRefused(
                _refusal(damaged, sets, plan(sets, policy, verified - set(damaged), held, now=when)),
                damaged,
                [d.backup_id for d in result.decisions if not d.keep],
            )
        if dry_run:
            return result
        holds = {m.id: [c.name for c in m.components] for m in sets}
        for d in result.decisions:
            if d.keep:
                continue
            with deleting(d, holds.get(d.backup_id, [])) if deleting is not None else nullcontext():
                repository.record_deletion(d.backup_id, "retention policy")
                repository.delete(d.backup_id)
                result.storage_left[d.backup_id] = repository.left_after_delete(d.backup_id)
    return result


def relied_on(sets: Sequence[Manifest | ManifestSummary], decisions: list[Decision], verified: set[str]) -> list[str]:
    """The sets a restore of each component would need after the plan: newest first.

    For every component, the newest kept set that holds it and verified, and the sets
    that one builds on for that component (its chain of parents).
    """
    by_id = {m.id: m for m in sets}
    kept = {d.backup_id for d in decisions if d.keep}
    newest_first = sorted(sets, key=chain_key, reverse=True)
    needed: list[str] = []
    for name in sorted({c.name for m in newest_first for c in m.components}):
        head = next(
            (m for m in newest_first if m.id in kept and m.id in verified and any(c.name == name for c in m.components)),
            None,
        )
        while head is not None:
            if head.id not in needed:
                needed.append(head.id)
            parent = next((c.parent for c in head.components if c.name == name), None)
            head = by_id.get(parent) if parent else None
    return sorted(needed, key=lambda i: chain_key(by_id[i]), reverse=True)


def recheck_relied_on(
    repository: Repository,
    sets: Sequence[Manifest | ManifestSummary],
    policy: Policy,
    verified: set[str],
    held: Mapping[str, Sequence[str]],
    now: datetime,
    record: bool = True,
    fresh: Collection[str] = (),
) -> dict[str, list[str]]:
    """Damaged sets among those the plan relies on, with their problems (empty: all sound now).

    Why: the verification mark is written when a set is verified, and bit rot or a partial
    overwrite afterwards leaves it standing; a prune that trusted it once kept a damaged
    newest set and deleted the only good chain. Each relied-on set's stored artifacts are
    re-hashed (size and sha256, no decoding: the mark already proved these bytes decode).
    A damaged one loses its mark (recorded unless ``record`` is false, as in a dry run), the
    plan is made again without it, and the sets the new plan relies on are checked in turn,
    so the message can name what is still restorable.
    """
    trusted = set(verified)
    damaged: dict[str, list[str]] = {}
    checked: set[str] = set(fresh) & trusted
    while True:
        decisions = plan(sets, policy, trusted, held, now=now)
        todo = [i for i in relied_on(sets, decisions, trusted) if i not in checked]
        if not todo:
            return damaged
        for backup_id in todo:
            checked.add(backup_id)
            report = _rehash(repository, backup_id)
            if report.ok:
                continue
            damaged[backup_id] = [f"{c.artifact}: {c.problem}" for c in report.checks if not c.ok]
            trusted.discard(backup_id)
            if record:
                repository.record_verification(report)


def _rehash(repository: Repository, backup_id: str) -> VerifyReport:
    from engine.repository.base import VerifyReport

    manifest = repository.get(backup_id)
    checks = [repository.check_artifact(manifest, a) for a in manifest.artifacts]
    return VerifyReport(backup_id=backup_id, ok=all(c.ok for c in checks), checks=checks)


def _refusal(
    damaged: Mapping[str, list[str]], sets: Sequence[Manifest | ManifestSummary], decisions: list[Decision]
) -> str:
    """Why nothing was deleted, which set is damaged, and what is still restorable."""
    holds = {m.id: sorted(c.name for c in m.components) for m in sets}
    kept = [d for d in decisions if d.keep]
    lines = [
        f"backup {i} ({', '.join(holds.get(i, []))}) is damaged now although it verified when written: "
        + "; ".join(problems[:5])
        + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        for i, problems in damaged.items()
    ]
    keeps = ", ".join(f"{d.backup_id} ({', '.join(d.reasons)})" for d in kept) or "nothing"
    return (
        "prune deleted nothing: a set retention relies on failed its re-check.\n  "
        + "\n  ".join(lines)
        + f"\n  without it the policy would keep: {keeps}."
        + "\n  Take a new backup (and run `drproof recovery verify` on the damaged set to see it whole), then prune "
        "again."
    )


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
