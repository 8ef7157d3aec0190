"""Physical PostgreSQL backups on a real server: base backups, WAL, point in time, chains."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.errors import BackupNotFound, ComponentError, IntegrityError
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import insert_mark, marks

pytestmark = [pytest.mark.integration]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PostgresPhysicalComponent, LocalRepository]]:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresPhysicalComponent("db", PostgresParams(customers=300), runtime)
        comp.provision()
        comp.seed()
        yield comp, LocalRepository(tmp_path / "repo")


def test_point_in_time_restore_lands_between_two_writes_one_second_apart(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    comp, repo = stack
    engine_backup.backup(repo, [comp])
    first = insert_mark(comp, "first")
    time.sleep(1)
    second = insert_mark(comp, "second")
    assert second - first >= timedelta(seconds=1)
    engine_backup.backup(repo, [comp])  # carries the WAL of both writes
    comp.service.wipe_data()

    used = engine_backup.restore_to_time(repo, comp, first + (second - first) / 2)

    assert marks(comp) == ["first"]
    assert len(used) == 2  # the base before the writes, and the set holding their WAL
    assert comp.health().ok


def test_restore_to_a_backup_gives_its_fingerprint_even_after_later_writes(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    comp, repo = stack
    before = comp.fingerprint()
    manifest = engine_backup.backup(repo, [comp], fingerprints={"db": before})
    insert_mark(comp, "later")
    assert comp.fingerprint().digest != before.digest

    engine_backup.restore(repo, manifest, comp)

    assert comp.fingerprint().digest == before.digest
    record = manifest.component("db")
    assert record.details["wal_segments"] >= 1
    assert {a.name for a in manifest.artifacts_of("db")} == {"base.tar", "backup_manifest", "wal.tar"}


def test_incremental_base_backups_are_smaller_and_restore_as_a_combined_chain(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    comp, repo = stack
    full = engine_backup.backup(repo, [comp], fingerprints={"db": comp.fingerprint()})
    insert_mark(comp, "after-full")
    middle_fp = comp.fingerprint()
    incr = engine_backup.backup(repo, [comp], fingerprints={"db": middle_fp}, parent=full)
    insert_mark(comp, "after-incremental")
    record = incr.component("db")
    assert record.parent == full.id and record.details["incremental"] is True
    assert record.details["base_bytes"] < full.component("db").details["base_bytes"] / 2

    comp.service.wipe_data()
    engine_backup.restore(repo, incr, comp)

    assert comp.fingerprint().digest == middle_fp.digest
    assert marks(comp) == ["after-full"]


def test_failed_recovery_puts_the_old_cluster_back(stack: tuple[PostgresPhysicalComponent, LocalRepository]) -> None:
    comp, repo = stack
    manifest = engine_backup.backup(repo, [comp])
    insert_mark(comp, "live")
    source = engine_backup._source(repo, manifest, "db")
    beyond = datetime.fromisoformat(manifest.component("db").details["wal_through_time"]) + timedelta(hours=1)

    # Bypassing the plan's check: the WAL ends before the target, so PostgreSQL stops
    # with "recovery ended before configured recovery target was reached".
    with pytest.raises(ComponentError, match=r"(?s)physical restore of 'db' failed.*recovery target"):
        comp.restore_to_time([source], [source], beyond)

    assert comp.service.is_running()
    assert marks(comp) == ["live"]


def test_damaged_wal_in_a_later_set_is_refused_before_the_live_cluster_is_touched(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    comp, repo = stack
    engine_backup.backup(repo, [comp])
    first = insert_mark(comp, "first")
    later = engine_backup.backup(repo, [comp])
    wal = next(a for a in later.artifacts_of("db") if a.name == "wal.tar")
    stored = repo.root / "sets" / later.id / wal.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    insert_mark(comp, "live")

    with pytest.raises(IntegrityError, match=r"wal\.tar"):
        engine_backup.restore_to_time(repo, comp, first + timedelta(milliseconds=1))

    assert marks(comp) == ["first", "live"]


def test_target_beyond_the_stored_wal_is_refused(stack: tuple[PostgresPhysicalComponent, LocalRepository]) -> None:
    comp, repo = stack
    engine_backup.backup(repo, [comp])
    written = insert_mark(comp, "not-in-any-backup")
    with pytest.raises(BackupNotFound, match="Take a backup after that moment"):
        engine_backup.restore_to_time(repo, comp, written)
    assert marks(comp) == ["not-in-any-backup"]


def test_two_restores_from_one_backup_leave_archiving_and_the_next_backup_working(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    """Each restore must open a new timeline; reusing one stalls WAL archiving."""
    comp, repo = stack
    manifest = engine_backup.backup(repo, [comp])
    engine_backup.restore(repo, manifest, comp)
    engine_backup.restore(repo, manifest, comp)
    insert_mark(comp, "after-two-restores")
    later = engine_backup.backup(repo, [comp])  # waits for its WAL to be archived
    assert later.component("db").details["wal_through"].startswith("00000003")


def test_a_newer_backup_restores_after_an_older_one_was_restored(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    """Restoring backup A makes a timeline that forks before backup B; B must still restore.

    Found by bench/postgres_pgbench.py: with ``recovery_target_timeline = 'latest'``
    PostgreSQL followed A's timeline from the archive and refused to start ("requested
    timeline 2 is not a child of this server's history").
    """
    comp, repo = stack
    older = engine_backup.backup(repo, [comp])
    insert_mark(comp, "between")
    newer = engine_backup.backup(repo, [comp])

    engine_backup.restore(repo, older, comp)
    assert marks(comp) == []
    engine_backup.restore(repo, newer, comp)

    assert marks(comp) == ["between"]
    assert comp.health().ok


def test_a_restored_cluster_keeps_no_recovery_settings_so_its_next_backup_replays_to_the_end(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    """Found by review: drproof's recovery target stayed in postgresql.auto.conf and went
    into every later base backup; a replay of the live archive from such a set stopped
    "after reaching consistency" and lost the rows written after it."""
    comp, repo = stack
    first = engine_backup.backup(repo, [comp])
    engine_backup.restore(repo, first, comp)  # to the end of that backup: a recovery target
    auto = (comp.service.data_dir() / "postgresql.auto.conf").read_text()
    assert "recovery_target" not in auto and "restore_command" not in auto, auto
    engine_backup.backup(repo, [comp])
    insert_mark(comp, "after-the-second-backup")
    engine_backup.restore_to_time(repo, comp, None, live_wal=True)
    assert marks(comp) == ["after-the-second-backup"]


def test_a_hole_in_the_live_archive_is_refused_before_anything_is_touched(
    stack: tuple[PostgresPhysicalComponent, LocalRepository], tmp_path: Path
) -> None:
    comp, repo = stack
    engine_backup.backup(repo, [comp])
    for name in ("a", "b", "c"):
        insert_mark(comp, name)
        comp._close_segment()
    live = comp.physical.wal_archive()
    after = repo.list()[-1].component("db").details["wal_through"]
    newer = sorted(p for p in live.iterdir() if len(p.name) == 24 and p.name > after)
    assert len(newer) >= 3
    newer[1].rename(tmp_path / newer[1].name)  # the operator lost one segment
    with pytest.raises(IntegrityError, match=rf"nothing was changed.*lacks segment {newer[1].name}"):
        engine_backup.restore_to_time(repo, comp, None, live_wal=True)
    assert marks(comp) == ["a", "b", "c"] and comp.health().ok


def test_a_physical_restore_leaves_the_operators_directories_beside_the_archive_alone(
    stack: tuple[PostgresPhysicalComponent, LocalRepository],
) -> None:
    """Found by review: "restore-wal" and "restore-staging" beside the WAL archive were emptied and removed."""
    comp, repo = stack
    work = comp.physical.wal_archive().parent
    for name in ("restore-wal", "restore-staging"):
        (work / name).mkdir(exist_ok=True)
        (work / name / "operator.txt").write_text("mine")
    engine_backup.restore(repo, engine_backup.backup(repo, [comp]), comp)
    assert all((work / n / "operator.txt").read_text() == "mine" for n in ("restore-wal", "restore-staging"))
    assert not list(work.glob(".drproof-restore-*")), "the restore's own directory was left behind"
