"""Choosing the backup sets a point-in-time restore needs, and proving the WAL is whole.

A point-in-time restore replays WAL from one base backup up to a target moment. The
WAL lives in the sets taken after that base, each continuing the one before it. This
module picks the base (the newest whose backup ended before the target, on the
timeline the replay will follow), the sets whose WAL reaches past the target, and
refuses, before anything live is touched, when the history has a gap (a set deleted,
or taken from another cluster), when no base leads to the replay's timeline, or when
the archived WAL ends before the target.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import BackupNotFound, IntegrityError, PointInTimeUnreachable
from engine.manifest import ComponentRecord, Manifest

HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
# pg_waldump's line for a commit or abort, run with TZ=UTC: "desc: COMMIT 2026-12-07 02:27:02.123456 UTC"
# (a prepared transaction's: "desc: COMMIT_PREPARED 5: 2026-...").
_DECISION = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+), prev [^,]*, desc: (?:COMMIT|ABORT)\w*(?: \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


def lsn(text: str) -> int:
    """A WAL position as PostgreSQL writes it ("0/3000060") as one number."""
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


@dataclass(frozen=True)
class Lineage:
    """The timeline a replay follows, and where each of its ancestors forked off.

    Recovery runs with ``recovery_target_timeline = 'latest'``: the newest timeline whose
    history file the archive holds. A base backup can start that replay only if it lies
    on that timeline, or on an ancestor before the fork: a base taken on a timeline an
    earlier point-in-time restore abandoned, after the fork, makes PostgreSQL refuse to
    start ("requested timeline 2 is not a child of this server's history"; review
    finding 6).
    """

    timeline: int
    forks: Mapping[int, int]  # ancestor timeline -> LSN where its child forked off it

    def why_not(self, timeline: int, end: int) -> str | None:
        """None if a backup that ended at ``end`` on ``timeline`` leads here, else why not."""
        if timeline == self.timeline:
            return None
        fork = self.forks.get(timeline)
        if fork is None:
            return f"it was taken on timeline {timeline}, which is not in the history of timeline {self.timeline}"
        if end > fork:
            return (
                f"it ended on timeline {timeline} at {_lsn_text(end)}, after timeline {self.timeline}'s history "
                f"forked off it at {_lsn_text(fork)} (an earlier point-in-time restore abandoned what followed)"
            )
        return None


def _lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def lineage(archive: Path) -> Lineage | None:
    """The lineage of the newest timeline whose history file ``archive`` holds; None if none.

    No history file means no restore ever forked a timeline: every base is on timeline 1.
    """
    histories = {int(m.group(1), 16): p for p in _listing(archive) if (m := HISTORY.match(p.name))}
    if not histories:
        return None
    newest = max(histories)
    forks: dict[int, int] = {}
    try:
        text = histories[newest].read_text()
    except OSError as exc:
        raise IntegrityError(f"cannot read timeline history {histories[newest]}: {exc}") from exc
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            forks[int(fields[0])] = lsn(fields[1])
        except (IndexError, ValueError) as exc:
            raise IntegrityError(f"timeline history {histories[newest]} is damaged: line {line!r}") from exc
    return Lineage(newest, forks)


def _listing(archive: Path) -> list[Path]:
    try:
        return list(archive.iterdir())
    except OSError:
        return []


def backup_end(backup_manifest: bytes) -> tuple[int, int]:
    """(timeline, LSN) where a base backup ended, from PostgreSQL's own ``backup_manifest``."""
    ranges = json.loads(backup_manifest)["WAL-Ranges"]
    last = max(ranges, key=lambda r: int(r["Timeline"]))
    return int(last["Timeline"]), lsn(str(last["End-LSN"]))


def newest_decision(
    archive: Path, after: str, waldump: list[str], line: Lineage | None = None
) -> tuple[datetime, str] | None:
    """The newest commit or abort time in the archived segments after ``after``, and its segment.

    Recovery to a time stops at the first commit or abort stamped at or after the target;
    without one it runs out of WAL and fails after the live server was stopped (review
    finding 5). Segments are read newest first, and only until one holds a decision: the
    newest is usually enough, so the proof costs one ``pg_waldump`` of one segment. With
    ``line``, only WAL the replay follows counts: its timeline, and each ancestor's up to
    where the next one forked off it (not what an earlier restore abandoned).
    """
    names = sorted((p.name for p in _listing(archive) if SEGMENT.match(p.name) and p.name > after), reverse=True)
    for name in names:
        path = archive / name
        limit = _followed_until(path, line)
        if limit is not None and limit <= 0:
            continue
        try:
            done = subprocess.run(
                [*waldump, "--rmgr=Transaction", str(path), str(path)],
                capture_output=True,
                text=True,
                timeout=120,
                env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PointInTimeUnreachable(
                f"cannot read the archived WAL segment {path} with {waldump[0]} ({exc}), so nothing proves the "
                "archive reaches the target; nothing was changed"
            ) from exc
        times = [
            datetime.fromisoformat(m.group(2)).replace(tzinfo=UTC)
            for m in _DECISION.finditer(done.stdout)
            if limit is None or lsn(m.group(1)) < limit
        ]
        if times:
            return max(times), name
    return None


def _followed_until(segment: Path, line: Lineage | None) -> int | None:
    """None if the replay follows all of ``segment``, else the LSN it leaves it at (0: none of it)."""
    timeline = int(segment.name[:8], 16)
    if line is None or timeline == line.timeline:
        return None
    fork = line.forks.get(timeline)
    if fork is None:
        return 0
    try:
        size = segment.stat().st_size
    except OSError:
        return 0
    if size < 1 << 20 or size & (size - 1):
        return fork  # not a whole segment: let the records' own positions decide
    start = (int(segment.name[8:16], 16) << 32) + int(segment.name[16:24], 16) * size
    return fork if start < fork else 0



@dataclass(frozen=True)
class Plan:
    """The base set first, then every set whose WAL the replay needs, oldest first."""

    sets: list[Manifest]
    target: datetime | None
    live_after: str | None = None  # replay continues with the live archive after this segment

    @property
    def base(self) -> Manifest:
        return self.sets[0]


class Replayed(list[Manifest]):
    """The sets a point-in-time restore replayed, base first, and whether it went on into the live archive."""

    def __init__(self, sets: list[Manifest], live: bool) -> None:
        super().__init__(sets)
        self.live = live


def _record(m: Manifest, component: str, kind: str) -> ComponentRecord | None:
    try:
        record = m.component(component)
    except KeyError:
        return None
    return record if record.kind == kind else None


def _time(record: ComponentRecord, key: str) -> datetime:
    return datetime.fromisoformat(str(record.details[key]))


def plan(
    manifests: list[Manifest],
    component: str,
    kind: str,
    target: datetime | None,
    *,
    live_wal: bool = False,
    why_not: Callable[[Manifest], str | None] | None = None,
) -> Plan:
    """The sets that restore ``component`` to ``target``; an error says what is missing.

    ``target`` None means "as far as the WAL goes". With ``live_wal``, WAL the server
    archived after the newest set (still in its archive, not yet in the repository) may
    carry the replay on; the component proves it reaches the target before it stops
    anything. ``why_not`` says why a set cannot be the base of this replay (its timeline
    was abandoned), or None: the newest set it accepts is the base.
    """
    if target is not None and target.tzinfo is None:
        raise ValueError("the target time must carry a time zone")
    if target is not None and target > datetime.now(UTC):
        # Found by review: a target in the future stopped the live server, failed recovery
        # ("recovery ended before configured recovery target was reached") and was rolled
        # back with only "could not start server" to say why.
        raise PointInTimeUnreachable(
            f"{target.isoformat()} is in the future: no WAL reaches it. Give a moment that has passed; nothing was "
            "changed"
        )
    history = sorted(
        ((m, r) for m in manifests if (r := _record(m, component, kind)) is not None),
        key=lambda mr: _time(mr[1], "backup_end"),
    )
    if not history:
        raise BackupNotFound(f"no physical backup of {component!r} is in the repository")
    ended = history if target is None else [(m, r) for m, r in history if _time(r, "backup_end") <= target]
    if not ended:
        first = _time(history[0][1], "backup_end")
        raise PointInTimeUnreachable(
            f"no physical backup of {component!r} ended before {target.isoformat() if target else 'now'}; "
            f"the earliest ended at {first.isoformat()}. Nothing was changed"
        )
    base, base_record = _base(ended, component, why_not)
    chosen, last = [base], base_record
    system = base_record.details.get("system_identifier")
    later = [(m, r) for m, r in history if _time(r, "backup_end") > _time(base_record, "backup_end")]
    while target is None or _time(last, "wal_through_time") < target:
        following = [(m, r) for m, r in later if r.details.get("wal_continues") == chosen[-1].id]
        gapped = [(m, r) for m, r in later if r.details.get("wal_gap")]
        if not following and gapped:
            m, r = gapped[0]
            raise IntegrityError(
                f"the WAL of {component!r} after backup {chosen[-1].id} has a hole: backup {m.id} found "
                f"{r.details['wal_gap']}, so no replay can cross from before it to "
                f"{target.isoformat() if target else 'the newest archived WAL'}"
            )
        if not following:
            reach = _time(last, "wal_through_time").isoformat()
            if (live_wal or target is None) and chosen[-1] is history[-1][0]:
                live_after = last.details.get("wal_through") if live_wal else None
                return Plan(sets=chosen, target=target, live_after=live_after)
            if any(r.details.get("system_identifier") == system for _, r in later):
                raise IntegrityError(
                    f"the WAL of {component!r} after backup {chosen[-1].id} (up to {reach}) is not in the "
                    f"repository: the set that continued it is gone, so "
                    f"{target.isoformat() if target else 'the newest archived WAL'} cannot be reached"
                )
            if target is None:
                return Plan(sets=chosen, target=None, live_after=last.details.get("wal_through") if live_wal else None)
            raise PointInTimeUnreachable(
                f"the archived WAL of {component!r} in the repository ends at {reach}; "
                f"{target.isoformat()} is later. Take a backup after that moment to make it restorable; "
                "nothing was changed"
            )
        m, last = following[0]
        chosen.append(m)
    return Plan(sets=chosen, target=target)


def _base(
    ended: list[tuple[Manifest, ComponentRecord]], component: str, why_not: Callable[[Manifest], str | None] | None
) -> tuple[Manifest, ComponentRecord]:
    """The newest of ``ended`` that can start the replay; a refusal naming each set passed over."""
    skipped: list[str] = []
    for m, r in reversed(ended):
        reason = why_not(m) if why_not is not None else None
        if reason is None:
            return m, r
        skipped.append(f"backup {m.id}: {reason}")
    raise PointInTimeUnreachable(
        f"no physical backup of {component!r} can start this replay; nothing was changed. " + "; ".join(skipped)
    )
