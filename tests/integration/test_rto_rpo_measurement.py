"""How the RTO and RPO are measured, on real drills (local runtime): found by a hostile review.

- The stack's RTO waited only for the damaged components: a restore step that put the
  whole set back stopped the clock before the volume it replaced next was back.
- The RTO clock started once the fault was injected, leaving out the seconds the fault
  itself took (a SIGKILL, then the deletion of the data directory).
- A workload too sparse to probe the time between the backup and the disaster measured
  "0.00 s lost" and passed a 1 s objective.
- A component whose every write failed was left out, and the stack's RPO passed on the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results

pytestmark = [pytest.mark.integration]

WHOLE_SET = """
name: rto-whole-set
objectives: {rto: 1m, rpo: 15s}
stack:
  components:
    orders-db: {kind: postgres, seed: {customers: 50, orders_per_customer: 2}}
    uploads: {kind: volumes, seed: {files: 300, file_size: 64KiB}}
steps:
  - workload: {rate: 20}
  - wait: 1s
  - backup: {name: nightly}
  - wait: 1s
  - disaster: {target: orders-db, fault: delete_data_dir}
  - restore: {from: nightly}
assertions: [rto, rpo]
"""


def _run(tmp_path: Path, text: str) -> Results:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return DrillRunner(load_scenario(path), runtime="local", work_root=tmp_path / "work").run()


@pytest.fixture(scope="module")
def whole_set(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return _run(tmp_path_factory.mktemp("whole-set"), WHOLE_SET)


def test_the_stack_rto_waits_for_every_component_the_restore_replaced(whole_set: Results) -> None:
    """Only ``orders-db`` was damaged; ``uploads`` was restored after it and was down meanwhile."""
    comps = whole_set.measured.components
    assert comps["uploads"] is not None and comps["orders-db"] is not None
    assert comps["uploads"] > comps["orders-db"]  # restored second
    assert whole_set.measured.rto_seconds == comps["uploads"]
    # Quiet control: a healthy drill keeps its measured figures and passes.
    assert whole_set.verdict == "pass", [(a.id, a.summary) for a in whole_set.assertions]
    [rto] = [a for a in whole_set.assertions if a.name == "rto"]
    assert rto.evidence["measured_seconds"] == comps["uploads"]
    assert whole_set.measured.rpo_seconds is not None and 0.9 <= whole_set.measured.rpo_seconds <= 5


def test_the_rto_clock_starts_when_the_fault_does(whole_set: Results) -> None:
    disaster = next(p for p in whole_set.phases if p.kind == "disaster")
    last_restore = max((p for p in whole_set.phases if p.kind == "restore"), key=lambda p: p.offset_seconds)
    back = last_restore.offset_seconds + last_restore.duration_seconds
    rto = whole_set.measured.rto_seconds
    assert rto is not None and disaster.duration_seconds > 0.1  # the SIGKILL, then the deletion
    # From the start of the disaster phase to the end of the last restore, the fault's own time included.
    assert abs(rto - (back - disaster.offset_seconds)) < 0.01, (rto, back, disaster)
