"""Choosing which real backup a restore test restores: the newest, a named one, or one at random.

A restore test proves that the team's *own* backups restore. Which set it restores is
part of the evidence, so the choice is a pure function of the inventory, the rule and
the moment (and, for a random pick, a seed that is recorded), and says why it chose what
it chose. Only sets that hold every component the test restores are candidates: a
database-only set cannot stand in for the full one the test asked for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from engine.chain import chain_key
from engine.errors import BackupNotFound
from engine.manifest import ManifestSummary

PickHow = Literal["latest", "id", "latest_within", "random_within"]


@dataclass(frozen=True)
class Pick:
    """The rule: ``latest``, ``id`` (``backup_id``), or within ``within_seconds`` of now."""

    how: PickHow = "latest"
    backup_id: str | None = None
    within_seconds: float | None = None
    seed: int | None = None  # random_within: the seed used, recorded so the pick can be repeated


@dataclass(frozen=True)
class Picked:
    summary: ManifestSummary
    reason: str  # "the newest of 12 sets holding shop-db, sessions"
    candidates: int
    seed: int | None = None


def holding(sets: Sequence[ManifestSummary], components: Sequence[str]) -> list[ManifestSummary]:
    """Sets that hold every one of ``components``, oldest first (the chain's order, never the clock's)."""
    wanted = set(components)
    chosen = [s for s in sets if wanted <= {c.name for c in s.components}]
    return sorted(chosen, key=chain_key)


def pick_set(sets: Sequence[ManifestSummary], components: Sequence[str], rule: Pick, now: datetime) -> Picked:
    """The set ``rule`` chooses among ``sets`` at ``now``; BackupNotFound says why none fits."""
    names = ", ".join(components) or "any component"
    fitting = holding(sets, components)
    if rule.how == "id":
        match = [s for s in sets if s.id == rule.backup_id]
        if not match:
            raise BackupNotFound(f"no complete backup {rule.backup_id!r} in the repository ({len(sets)} sets there)")
        if match[0] not in fitting:
            held = ", ".join(c.name for c in match[0].components)
            raise BackupNotFound(f"backup {rule.backup_id} holds {held}, not every one of {names}")
        return Picked(match[0], f"backup {rule.backup_id}, as named", len(fitting))
    if not fitting:
        raise BackupNotFound(f"no complete backup in the repository holds {names} ({len(sets)} sets there)")
    if rule.how == "random_within":
        assert rule.within_seconds is not None
        window = [s for s in fitting if 0 <= (now - s.created_at).total_seconds() <= rule.within_seconds]
        if not window:
            raise BackupNotFound(
                f"no backup holding {names} was taken in the last {rule.within_seconds:g} s "
                f"(the newest is {fitting[-1].id}, taken {fitting[-1].created_at.isoformat()})"
            )
        seed = rule.seed if rule.seed is not None else random.SystemRandom().randrange(2**31)
        chosen = random.Random(seed).choice(window)
        return Picked(chosen, f"chosen at random (seed {seed}) among the {len(window)} sets of the window", len(window), seed)
    newest = fitting[-1]
    held = f"holding {names}" if components else "(no components named: every component of the set is restored)"
    return Picked(newest, f"the newest of {len(fitting)} sets {held}", len(fitting))
