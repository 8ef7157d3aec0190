"""Point-in-time plans: the right base, an unbroken WAL history, refusals that say why."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import pitr
from engine.errors import BackupNotFound, IntegrityError, PointInTimeUnreachable
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


# -- timelines (review finding 6) ------------------------------------------------------------


def test_history_file_gives_the_newest_timeline_and_its_forks(tmp_path: Path) -> None:
    (tmp_path / "00000002.history").write_text("1\t0/3000060\tbefore 2026-12-07 02:27:02+00\n")
    (tmp_path / "00000003.history").write_text(
        "1\t0/3000060\tbefore 2026-12-07 02:27:02+00\n\n2\t0/5000000\tbefore 2026-12-07 02:30:00+00\n"
    )
    (tmp_path / "000000030000000000000005").write_bytes(b"")
    line = pitr.lineage(tmp_path)
    assert line is not None and line.timeline == 3 and dict(line.forks) == {1: 0x3000060, 2: 0x5000000}
    assert line.why_not(3, 0x9000000) is None
    assert line.why_not(1, 0x3000060) is None  # ended exactly at the fork: its WAL is shared
    assert "after timeline 3's history forked off it at 0/3000060" in str(line.why_not(1, 0x4000000))
    assert "not in the history" in str(line.why_not(4, 0))
    assert pitr.lineage(tmp_path / "none") is None


def test_backup_end_is_read_from_postgresqls_backup_manifest() -> None:
    manifest = b'{"WAL-Ranges": [{"Timeline": 2, "Start-LSN": "0/3000060", "End-LSN": "0/4000100"}]}'
    assert pitr.backup_end(manifest) == (2, 0x4000100)


def test_a_base_on_an_abandoned_timeline_is_passed_over_for_an_older_one() -> None:
    sets = _history(3)
    plan = pitr.plan(
        sets, "db", "postgres-physical", T0 + timedelta(seconds=150), live_wal=True,
        why_not=lambda m: "abandoned" if m.id == "b2" else None,
    )  # fmt: skip
    assert [m.id for m in plan.sets] == ["b1", "b2"]  # b2 still carries the WAL before the fork


def test_latest_after_an_abandoned_base_replays_from_an_older_one_through_every_later_set() -> None:
    plan = pitr.plan(_history(3), "db", "postgres-physical", None, live_wal=True, why_not=lambda m: m.id != "b0" or None)
    assert [m.id for m in plan.sets] == ["b0", "b1", "b2"]


def test_no_base_on_the_replays_timeline_is_a_refusal_naming_each_set() -> None:
    with pytest.raises(PointInTimeUnreachable, match=r"(?s)nothing was changed.*backup b1: forked.*backup b0: forked"):
        pitr.plan(_history(2), "db", "postgres-physical", T0 + timedelta(seconds=90), why_not=lambda m: "forked")


def test_unreachable_targets_are_refusals_exit_1() -> None:
    """Review finding 8: docs/backup-engine.md says a refused point-in-time restore exits 1."""
    with pytest.raises(PointInTimeUnreachable) as caught:
        pitr.plan(_history(2), "db", "postgres-physical", T0 - timedelta(seconds=1))
    assert caught.value.exit_code == 1 and isinstance(caught.value, IntegrityError)


def test_pg_waldump_commit_lines_are_read_as_utc() -> None:
    out = (
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/03000060, prev 0/03000028, "
        "desc: COMMIT 2026-12-07 02:27:02.123456 UTC\n"
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/03000090, prev 0/03000060, "
        "desc: ABORT 2026-12-07 02:27:03.5 UTC\n"
    )
    times = [m.group(2) for m in pitr._DECISION.finditer(out)]
    assert times == ["2026-12-07 02:27:02.123456", "2026-12-07 02:27:03.5"]


def test_only_wal_the_replay_follows_proves_the_target_is_reached(tmp_path: Path) -> None:
    """Commits an earlier restore abandoned (after the fork) do not prove a moment reachable."""
    archive = tmp_path / "wal"
    archive.mkdir()
    (archive / "00000002.history").write_text("1\t0/4000100\tbefore 2026-12-07 02:00:30+00\n")
    for name in ("000000010000000000000004", "000000010000000000000005", "000000020000000000000004"):
        with (archive / name).open("wb") as fh:
            fh.truncate(16 << 20)
    line = "rmgr: Transaction len (rec/tot): 34/34, tx: 1, lsn: {}, prev 0/0, desc: COMMIT 2026-12-07 {} UTC"
    waldump = tmp_path / "waldump"
    waldump.write_text(
        "#!/bin/sh\ncase \"$2\" in\n"
        f"*000000010000000000000004) echo '{line.format('0/04000050', '02:00:00')}'; "
        f"echo '{line.format('0/04000300', '04:00:00')}';;\n"
        f"*000000010000000000000005) echo '{line.format('0/05000050', '05:00:00')}';;\n"
        "esac\n"
    )
    waldump.chmod(0o755)
    found = pitr.newest_decision(archive, "000000010000000000000003", [str(waldump)], pitr.lineage(archive))
    assert found == (datetime(2026, 12, 7, 2, tzinfo=UTC), "000000010000000000000004")
    # Without the lineage the abandoned timeline's later commit would have counted.
    assert pitr.newest_decision(archive, "000000010000000000000003", [str(waldump)]) == (
        datetime(2026, 12, 7, 5, tzinfo=UTC),
        "000000010000000000000005",
    )
