"""Measured RPO on real servers: what each recovery strategy loses, and the check failing.

The shipped scenarios rpo-nightly-backup and rpo-wal-point-in-time are the healthy
runs; here the same drills are held to tighter objectives (the check must fail, naming
components and counts) and tampered with (a lost early write must be caught as a hole).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner, Hooks
from engine.components.base import WORKLOAD_MARK, Component
from engine.errors import ValidationFailed
from reports import write_all
from tests.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]


def _with(tmp_path: Path, scenario: str, old: str, new: str) -> Path:
    text = (SCENARIOS / scenario).read_text()
    assert old in text
    target = tmp_path / scenario
    target.write_text(text.replace(old, new))
    return target


def test_nightly_backup_loses_the_time_since_the_backup_and_fails_a_tight_objective(tmp_path: Path) -> None:
    path = _with(tmp_path, "rpo-nightly-backup.yaml", "rpo: 15s", "rpo: 2s")
    results = DrillRunner(load_scenario(path)).run()

    assert results.verdict == "fail" and results.exit_code == 1
    [rpo] = [a for a in results.assertions if a.name == "rpo"]
    assert rpo.status == "fail"
    for name in ("orders-db", "sessions", "uploads", "embeddings"):
        point = next(c.recovery_point for c in results.components if c.name == name)
        assert point is not None and point.lost_writes > 0 and point.hole_count == 0
        # Writes went on for 5 s after the backup: the window is that, within one
        # workload interval (1/20 s) plus the time the backup itself took.
        backup_seconds = results.backups[0].duration_seconds
        assert 5.0 - 0.1 <= (point.loss_window_seconds or 0) <= 5.0 + backup_seconds + 0.5, point
        assert any(f.startswith(f"{name}: lost {point.lost_writes} of") for f in rpo.findings)
    # Fidelity still holds: the seed data are exactly the backup's; only the workload lost writes.
    assert all(a.status == "pass" for a in results.assertions if a.name == "fidelity")
    html = write_all(results, tmp_path / "report")["html"].read_text()
    assert "rpo[stack]" in html


def test_wal_replay_loses_about_the_archive_interval(tmp_path: Path) -> None:
    results = DrillRunner(load_scenario(SCENARIOS / "rpo-wal-point-in-time.yaml")).run()
    assert results.verdict == "pass", [(a.id, a.summary) for a in results.assertions]
    point = results.components[0].recovery_point
    assert point is not None and point.survived > 0
    assert (point.loss_window_seconds or 0) < 2.5  # archive_timeout is 1 s
    assert results.measured.rpo_seconds == point.loss_window_seconds


def _drop_early_write(comp: Component) -> None:
    conn = comp.connect()  # type: ignore[attr-defined]
    with conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {WORKLOAD_MARK} WHERE seq = (SELECT min(seq) FROM {WORKLOAD_MARK})")
        assert cur.rowcount == 1
    conn.close()


def test_a_lost_early_write_is_a_hole_even_when_the_window_is_small(tmp_path: Path) -> None:
    results = DrillRunner(
        load_scenario(SCENARIOS / "pitr-bad-migration.yaml"), hooks=Hooks(after_restore=_drop_early_write)
    ).run()
    [rpo] = [a for a in results.assertions if a.name == "rpo"]
    assert rpo.status == "fail"
    assert any("lost before a surviving one" in f for f in rpo.findings), rpo.findings


def test_a_drill_without_workload_never_shows_a_green_rpo(tmp_path: Path) -> None:
    path = _with(tmp_path, "postgres-delete-data-dir.yaml", "  rto: 1m\n", "  rto: 1m\n  rpo: 1m\n")
    path.write_text(path.read_text().replace("  - rto\n", "  - rto\n  - rpo\n"))
    # Refused before anything runs; the assertion itself also says "error" if it ever
    # met such a drill (tests/test_workload_rpo.py), never "pass".
    with pytest.raises(ValidationFailed, match="rpo needs a workload step"):
        load_scenario(path)


LOWER_BOUND = """
name: rpo-lower-bound
objectives: {rto: 1m, rpo: 5s}
stack:
  components:
    sessions: {kind: redis, seed: {keys: 200}}
steps:
  - backup: {name: nightly}
  - wait: 3s
  - workload: {rate: 20}
  - wait: 1s
  - disaster: {target: sessions, fault: flushall}
  - restore: {from: nightly}
assertions: [rpo]
"""

NEVER_RESTORED = """
name: rpo-dead-server
objectives: {rto: 1m, rpo: 1m}
stack:
  components:
    sessions: {kind: redis, seed: {keys: 200}}
steps:
  - backup: {name: nightly}
  - workload: {rate: 20}
  - wait: 1s
  - disaster: {target: sessions, fault: kill}
assertions: [rpo]
"""


@pytest.mark.parametrize(
    ("scenario", "says"),
    [
        (LOWER_BOUND, "no acknowledged write survived"),
        (NEVER_RESTORED, "the surviving writes could not be read"),
    ],
    ids=["restored-to-before-the-workload", "server-never-restored"],
)
def test_an_rpo_nobody_measured_is_never_within_the_objective(tmp_path: Path, scenario: str, says: str) -> None:
    """Found by review: both passed (1.00 s "within the objective").

    Restored from a backup taken 3 s before the workload began, the loss is at least
    4 s; counted from the workload's start it was 1 s. A killed server read as "nothing
    survived". Neither is a measurement that can meet an objective.
    """
    path = tmp_path / "s.yaml"
    path.write_text(scenario)
    results = DrillRunner(load_scenario(path), work_root=tmp_path / "work").run()
    [rpo] = [a for a in results.assertions if a.name == "rpo"]
    assert rpo.status == "error", (rpo.status, rpo.summary)
    assert says in rpo.summary + " ".join(rpo.findings)
    assert results.verdict == "error" and results.exit_code == 2
