"""A regression gate that could never compare is refused (review of verdicts, finding 11).

``--regression-runs 1`` or ``2`` capped the baseline below the three passing runs the gate
needs: every run's ``regression[rto]`` was "not compared" and exited 0, however slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.cli import main
from drills.history import Gate, regression_assertion, trend
from engine.errors import ConfigError
from tests.test_history import _earlier, _results
from tests.test_pytest_plugin import PASSING


@pytest.mark.parametrize("runs", [1, 2])
def test_a_baseline_of_fewer_runs_than_the_gate_needs_is_refused_before_the_drill(tmp_path: Path, runs: int) -> None:
    with pytest.raises(ConfigError, match=f"--regression-runs {runs}: the gate's baseline needs at least 3"):
        Gate(threshold=20.0, runs=runs)
    scenario = tmp_path / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    history = tmp_path / "h.sqlite"
    gate = ["--history", str(history), "--fail-on-regression", "20%", "--regression-runs", str(runs)]
    assert main(["run", str(scenario), "--report-dir", str(tmp_path / "one"), *gate]) == 2
    assert main(["run", str(tmp_path), "--parallel", "1", "--report-dir", str(tmp_path / "fleet"), *gate]) == 2
    assert not (tmp_path / "one").exists() and not (tmp_path / "fleet").exists()


def test_the_smallest_baseline_gates(tmp_path: Path) -> None:
    gate = Gate(threshold=20.0, runs=3)
    earlier = _earlier(tmp_path, *(_results(10.0, day=d) for d in range(4)))
    slow = _results(100.0, day=9)
    assert regression_assertion(trend(earlier, slow, gate), 100.0, gate).status == "fail"
    same = _results(10.5, day=9)
    assert regression_assertion(trend(earlier, same, gate), 10.5, gate).status == "pass"
