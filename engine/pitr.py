"""Choosing the backup sets a point-in-time restore needs, and proving the WAL is whole.

A point-in-time restore replays WAL from one base backup up to a target moment. The
WAL lives in the sets taken after that base, each continuing the one before it. This
module picks the base (the newest whose backup ended before the target), the sets
whose WAL reaches past the target, and refuses, before anything live is touched, when
the history has a gap: a set deleted, or taken from another cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from engine.errors import BackupNotFound, IntegrityError
from engine.manifest import ComponentRecord, Manifest


@dataclass(frozen=True)
class Plan:
    """The base set first, then every set whose WAL the replay needs, oldest first."""

    sets: list[Manifest]
    target: datetime | None
    live_after: str | None = None  # replay continues with the live archive after this segment

    @property
    def base(self) -> Manifest:
        return self.sets[0]


def _record(m: Manifest, component: str, kind: str) -> ComponentRecord | None:
    try:
        record = m.component(component)
    except KeyError:
        return None
    return record if record.kind == kind else None


def _time(record: ComponentRecord, key: str) -> datetime:
    return datetime.fromisoformat(str(record.details[key]))


def plan(
    manifests: list[Manifest], component: str, kind: str, target: datetime | None, *, live_wal: bool = False
) -> Plan:
    """The sets that restore ``component`` to ``target``; an error says what is missing.

    ``target`` None means "as far as the WAL goes". With ``live_wal``, WAL the server
    archived after the newest set (still in its archive, not yet in the repository) may
    carry the replay on; PostgreSQL itself then proves whether it reached the target.
    """
    if target is not None and target.tzinfo is None:
        raise ValueError("the target time must carry a time zone")
    if target is not None and target > datetime.now(UTC):
        # Found by review: a target in the future stopped the live server, failed recovery
        # ("recovery ended before configured recovery target was reached") and was rolled
        # back with only "could not start server" to say why.
        raise BackupNotFound(
            f"{target.isoformat()} is in the future: no WAL reaches it. Give a moment that has passed; nothing was "
            "changed"
        )
    history = sorted(
        ((m, r) for m in manifests if (r := _record(m, component, kind)) is not None),
        key=lambda mr: _time(mr[1], "backup_end"),
    )
    if not history:
        raise BackupNotFound(f"no physical backup of {component!r} is in the repository")
    if target is None:
        base, base_record = history[-1]
        return Plan(sets=[base], target=None, live_after=base_record.details.get("wal_through") if live_wal else None)
    bases = [(m, r) for m, r in history if _time(r, "backup_end") <= target]
    if not bases:
        first = _time(history[0][1], "backup_end")
        raise BackupNotFound(
            f"no physical backup of {component!r} ended before {target.isoformat()}; "
            f"the earliest ended at {first.isoformat()}"
        )
    base, base_record = bases[-1]
    chosen, last = [base], base_record
    system = base_record.details.get("system_identifier")
    later = [(m, r) for m, r in history if _time(r, "backup_end") > _time(base_record, "backup_end")]
    while _time(last, "wal_through_time") < target:
        following = [(m, r) for m, r in later if r.details.get("wal_continues") == chosen[-1].id]
        gapped = [(m, r) for m, r in later if r.details.get("wal_gap")]
        if not following and gapped:
            m, r = gapped[0]
            raise IntegrityError(
                f"the WAL of {component!r} after backup {chosen[-1].id} has a hole: backup {m.id} found "
                f"{r.details['wal_gap']}, so no replay can cross from before it to {target.isoformat()}"
            )
        if not following:
            reach = _time(last, "wal_through_time").isoformat()
            if live_wal and chosen[-1] is history[-1][0]:
                return Plan(sets=chosen, target=target, live_after=last.details.get("wal_through"))
            if any(r.details.get("system_identifier") == system for _, r in later):
                raise IntegrityError(
                    f"the WAL of {component!r} after backup {chosen[-1].id} (up to {reach}) is not in the "
                    f"repository: the set that continued it is gone, so {target.isoformat()} cannot be reached"
                )
            raise BackupNotFound(
                f"the archived WAL of {component!r} in the repository ends at {reach}; "
                f"{target.isoformat()} is later. Take a backup after that moment to make it restorable"
            )
        m, last = following[0]
        chosen.append(m)
    return Plan(sets=chosen, target=target)
