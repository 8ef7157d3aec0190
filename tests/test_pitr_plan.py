"""Point-in-time plans: the right base, an unbroken WAL history, refusals that say why."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import pitr
from engine.errors import BackupNotFound, IntegrityError
from engine.manifest import ComponentRecord, Manifest

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _set(i: int, continues: int | None, system: str = "7000", gap: float = 60.0) -> Manifest:
    """Backup ``i`` ends at T0 + i*gap; its WAL reaches one second later."""
    end = T0 + timedelta(seconds=i * gap)
    record = ComponentRecord(
        name="db",
        kind="postgres-physical",
        artifacts=[],
        details={
            "backup_id": f"b{i}",
            "system_identifier": system,
            "backup_end": end.isoformat(),
            "wal_through_time": (end + timedelta(seconds=1)).isoformat(),
            "wal_continues": f"b{continues}" if continues is not None else None,
        },
    )
    return Manifest(id=f"b{i}", created_at=end, completed_at=end, components=[record], artifacts=[])


def _history(n: int) -> list[Manifest]:
    return [_set(i, i - 1 if i else None) for i in range(n)]


def test_target_between_two_backups_uses_the_earlier_base_and_the_next_sets_wal() -> None:
    sets = _history(4)
    plan = pitr.plan(sets, "db", "postgres-physical", T0 + timedelta(seconds=90))
    assert [m.id for m in plan.sets] == ["b1", "b2"]


def test_target_inside_a_backups_own_wal_needs_no_later_set() -> None:
    plan = pitr.plan(_history(3), "db", "postgres-physical", T0 + timedelta(seconds=60.5))
    assert [m.id for m in plan.sets] == ["b1"]


def test_target_before_every_backup_is_refused_with_the_earliest_end() -> None:
    with pytest.raises(BackupNotFound, match="earliest ended at 2026-11-01T00:00:00"):
        pitr.plan(_history(2), "db", "postgres-physical", T0 - timedelta(seconds=1))


def test_target_after_the_newest_wal_is_refused_with_its_reach() -> None:
    with pytest.raises(BackupNotFound, match=r"ends at 2026-11-01T00:01:01.*Take a backup after"):
        pitr.plan(_history(2), "db", "postgres-physical", T0 + timedelta(hours=1))


def test_a_deleted_set_in_the_middle_is_a_gap_not_a_silent_shortcut() -> None:
    sets = _history(4)
    del sets[2]
    with pytest.raises(IntegrityError, match=r"after backup b1 .* is not in the repository"):
        pitr.plan(sets, "db", "postgres-physical", T0 + timedelta(seconds=150))


def test_sets_of_another_kind_or_component_are_ignored() -> None:
    sets = _history(2)
    other = _set(5, None)
    other.components[0].kind = "postgres"
    with pytest.raises(BackupNotFound, match="no physical backup of 'other'"):
        pitr.plan([*sets, other], "other", "postgres-physical", T0)
    assert [m.id for m in pitr.plan([*sets, other], "db", "postgres-physical", T0 + timedelta(seconds=30)).sets] == [
        "b0",
        "b1",
    ]


def test_a_naive_target_is_a_bug_not_a_guess() -> None:
    with pytest.raises(ValueError, match="time zone"):
        pitr.plan(_history(1), "db", "postgres-physical", datetime(2026, 11, 1))


@given(n=st.integers(1, 12), offset=st.floats(0, 800), dropped=st.sets(st.integers(0, 11), max_size=3))
def test_any_plan_is_an_unbroken_chain_that_reaches_the_target(n: int, offset: float, dropped: set[int]) -> None:
    sets = [m for i, m in enumerate(_history(n)) if i not in dropped]
    target = T0 + timedelta(seconds=offset)
    try:
        plan = pitr.plan(sets, "db", "postgres-physical", target)
    except (BackupNotFound, IntegrityError):
        return
    details = [m.components[0].details for m in plan.sets]
    assert datetime.fromisoformat(details[0]["backup_end"]) <= target
    assert datetime.fromisoformat(details[-1]["wal_through_time"]) >= target
    for before, after in itertools.pairwise(details):
        assert after["wal_continues"] == before["backup_id"]
    # The base is the newest usable one: no later set ended before the target.
    later = [m for m in sets if m.created_at > plan.base.created_at]
    assert all(datetime.fromisoformat(m.components[0].details["backup_end"]) > target for m in later)


def test_wal_gap_finds_the_first_missing_segment_within_a_timeline() -> None:
    from engine.components.postgres_physical import wal_gap

    size = 16 * 1024 * 1024  # 256 segments per log id
    names = ["0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000"]
    assert wal_gap("0000000100000000000000FD", names, size) is None
    assert wal_gap("0000000100000000000000FC", names, size) == "0000000100000000000000FD"
    assert wal_gap(None, [names[0], names[2]], size) == "0000000100000000000000FF"
    # A new timeline starts at its fork point: not a gap.
    assert wal_gap("000000010000000000000009", ["000000020000000000000005", "00000002.history"], size) is None


def test_a_set_that_found_a_wal_gap_explains_why_a_time_is_unreachable() -> None:
    sets = _history(3)
    sets[2].components[0].details["wal_continues"] = None
    sets[2].components[0].details["wal_gap"] = "segment 000000010000000000000007 is missing from the WAL archive"
    with pytest.raises(IntegrityError, match=r"has a hole: backup b2 found segment 000000010000000000000007"):
        pitr.plan(sets, "db", "postgres-physical", T0 + timedelta(seconds=90))


def test_a_target_in_the_future_is_refused_even_with_the_live_archive() -> None:
    """Found by review: it stopped the live server, failed recovery and rolled back."""
    future = datetime.now(UTC) + timedelta(days=30)
    with pytest.raises(BackupNotFound, match=r"is in the future: no WAL reaches it.*nothing was changed"):
        pitr.plan(_history(2), "db", "postgres-physical", future, live_wal=True)
