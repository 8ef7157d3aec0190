"""A drill whose backup finds a hole in the WAL archive does not pass.

Leftover of review finding 1 (review-pitr): `drproof backup` exits 1 on a set taken after a
hole in the WAL archive, but a drill's `backup` step took the same set and the run passed:
results.json and the JUnit file said nothing of the lost point-in-time window.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results
from reports.writers import write_junit

pytestmark = [pytest.mark.integration]

# Two segments are written and archived after the first backup, then the archive is
# wiped: the second backup's WAL does not continue the first's.
SCENARIO = """
name: wal-gap-between-backups
objectives: {{rto: 1m}}
stack:
  components:
    db: {{kind: postgres-physical, seed: {{customers: 20}}}}
steps:
  - backup: {{name: first}}
  - sql: {{target: db, statement: "CREATE TABLE marks(id int); INSERT INTO marks VALUES (1); SELECT pg_switch_wal()"}}
  - sql: {{target: db, statement: "INSERT INTO marks VALUES (2); SELECT pg_switch_wal()"}}
  - wait: 3s
{disaster}  - backup: {{name: second{expect}}}
assertions:
  - backup_integrity
"""
WIPE = "  - disaster: {target: db, fault: delete_wal_segments}\n"


def _run(tmp_path: Path, disaster: str, expect: str = "") -> Results:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(disaster=disaster, expect=expect))
    return DrillRunner(load_scenario(path)).run()


def _junit_failures(results: Results, tmp_path: Path) -> list[str]:
    out = tmp_path / "junit.xml"
    write_junit(results, out)
    return [f.get("message", "") + "\n" + (f.text or "") for f in ET.parse(out).iter("failure")]


def test_a_drill_backup_after_a_hole_in_the_wal_archive_fails_the_drill(tmp_path: Path) -> None:
    results = _run(tmp_path, WIPE)

    assert (results.verdict, results.exit_code) == ("fail", 1)
    [phase] = [p for p in results.phases if p.name == "backup second"]
    assert phase.status == "failed" and "is missing from the WAL archive" in phase.detail
    assert "is impossible" in phase.data["findings"][0]
    [timeline] = [a for a in results.assertions if a.id == "timeline"]
    assert timeline.status == "fail"
    assert any("backup second is complete, but: db: segment" in f for f in timeline.findings)
    [second] = [b for b in timeline.evidence["backups"] if b["backup"] == "second"]
    assert second["outcome"] == "findings"
    assert any("backup second is complete, but" in f for f in _junit_failures(results, tmp_path))


def test_a_drill_that_declares_the_backup_to_fail_on_the_hole_passes(tmp_path: Path) -> None:
    """The scenario proves the backup says so: the finding is the declared failure."""
    results = _run(tmp_path, WIPE, ", expect: failure")

    assert (results.verdict, results.exit_code) == ("pass", 0), [a.findings for a in results.assertions]
    [phase] = [p for p in results.phases if p.name == "backup second"]
    assert phase.status == "failed" and phase.detail.startswith("failed as expected: backup set")


def test_a_drill_with_an_unbroken_wal_archive_passes_quietly(tmp_path: Path) -> None:
    """Quiet control: the same steps without the wipe."""
    results = _run(tmp_path, "")

    assert (results.verdict, results.exit_code) == ("pass", 0), [a.findings for a in results.assertions]
    assert all(p.status == "ok" for p in results.phases if p.kind == "backup")
    assert not any("findings" in p.data for p in results.phases)
    assert _junit_failures(results, tmp_path) == []
