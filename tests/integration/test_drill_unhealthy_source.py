"""A drill whose backup captures a source that fails its health check does not pass.

The drill's backup step reads the same findings as `drproof backup` (``engine.backup.limits``):
a configuration file hand-edited into YAML that no longer parses, then backed up, fails the
phase and the timeline, unless the scenario declares that backup to fail. No server needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results

pytestmark = [pytest.mark.integration]

SCENARIO = """
name: unhealthy-source-backup
objectives: {{rto: 1m}}
stack:
  components:
    conf: {{kind: configuration}}
steps:
  - backup: {{name: first}}
{disaster}  - backup: {{name: second{expect}}}
assertions:
  - backup_integrity
"""
BREAK = '  - disaster: {target: conf, fault: modify, append: "broken: [unclosed\\n"}\n'


def _run(tmp_path: Path, disaster: str, expect: str = "") -> Results:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(disaster=disaster, expect=expect))
    return DrillRunner(load_scenario(path)).run()


def test_a_drill_backup_of_an_unhealthy_source_fails_the_drill(tmp_path: Path) -> None:
    results = _run(tmp_path, BREAK)

    assert (results.verdict, results.exit_code) == ("fail", 1)
    [phase] = [p for p in results.phases if p.name == "backup second"]
    assert phase.status == "failed" and "conf: the source failed its health check" in phase.detail
    assert "app.yaml" in phase.data["findings"][0]
    [timeline] = [a for a in results.assertions if a.id == "timeline"]
    assert timeline.status == "fail"
    assert any("backup second is complete, but: conf: the source failed its health check" in f for f in timeline.findings)


def test_a_drill_that_declares_the_backup_to_fail_passes(tmp_path: Path) -> None:
    results = _run(tmp_path, BREAK, ", expect: failure")
    assert (results.verdict, results.exit_code) == ("pass", 0), [a.findings for a in results.assertions]


def test_a_drill_backing_up_healthy_sources_passes_quietly(tmp_path: Path) -> None:
    """Quiet control: the same steps without the breaking edit."""
    results = _run(tmp_path, "")
    assert (results.verdict, results.exit_code) == ("pass", 0), [a.findings for a in results.assertions]
    assert all(p.status == "ok" for p in results.phases if p.kind == "backup")
    assert not any("findings" in p.data for p in results.phases)
