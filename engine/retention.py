"""Which backups to keep: keep-last N and grandfather-father-son, with one safety rule.

The plan is a pure function of the backups, the policy and which backups were verified,
so it can be shown (``--dry-run``), tested exhaustively and applied by any repository.
The safety rule wins over the policy: the newest verified backup of every component is
never deleted, so pruning can never leave a component with no restorable backup. So do
the store's own holds (``held``: S3 Object Lock): a set the store will not delete yet is
kept, with the object and date that hold it as the reason, and never half-deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from engine.manifest import Manifest, ManifestSummary


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
) -> None:
    """Keep the newest backup of each of the ``count`` most recent periods that have one."""
    seen: list[Hashable] = []
    for m in newest_first:
        period = key(m.created_at)
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
) -> list[Decision]:
    """Decisions for every backup, newest first; ``held``: reasons the store keeps a set, by id."""
    newest_first = sorted(manifests, key=lambda m: (m.created_at, m.id), reverse=True)
    decisions = {m.id: Decision(m.id, m.created_at, keep=False) for m in newest_first}
    for m in newest_first[: policy.keep_last]:
        decisions[m.id].keep = True
        decisions[m.id].reasons.append("keep_last")
    _buckets(newest_first, policy.daily, lambda t: t.date().isoformat(), "daily", decisions)
    _buckets(
        newest_first, policy.weekly, lambda t: f"{t.isocalendar()[0]}-W{t.isocalendar()[1]:02d}", "weekly", decisions
    )
    _buckets(newest_first, policy.monthly, lambda t: t.strftime("%Y-%m"), "monthly", decisions)

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
