"""The redis check fails only on what the restored data say (review of verdicts, finding 8).

Real drills on the local runtime's Redis. A command the server refuses for its arguments
(a typo in the check: ZRANGEBYSCORE with bounds that are no numbers) read no value; it was
a ``fail``, which a negative control (``outcome: fail``) counted as the detection, so a drill
whose check could see nothing passed. WRONGTYPE (the restored key holds another type) is
still a failure, and so a detection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results

pytestmark = [pytest.mark.integration]

SCENARIO = """
name: redis-check-verdicts
objectives: {{rto: 30s}}
stack:
  components:
    sessions: {{kind: redis, seed: {{keys: 50, key_spaces: [session]}}}}
steps:
  - backup: {{name: hourly}}
  - disaster: {{target: sessions, fault: flushall}}
  - restore: {{from: hourly}}
assertions:
  - fidelity
  - redis: {check}
"""


def _run(tmp_path: Path, check: str) -> Results:
    path = tmp_path / "drill.yaml"
    path.write_text(SCENARIO.format(check=check), encoding="utf-8")
    return DrillRunner(load_scenario(path)).run()


def _redis(results: Results) -> tuple[str, str | None, str]:
    [r] = [a for a in results.assertions if a.name == "redis"]
    return r.status, r.observed, r.summary


def test_a_command_the_server_refuses_read_nothing_and_detects_nothing(tmp_path: Path) -> None:
    check = '{target: sessions, command: [ZRANGEBYSCORE, "session:1", low, high], expect: rows, outcome: fail}'
    results = _run(tmp_path, check)
    status, observed, summary = _redis(results)
    assert (status, observed) == ("error", "error") and "no value was read" in summary, summary
    assert (results.verdict, results.exit_code) == ("error", 2)


def test_a_key_of_another_type_is_still_a_detection(tmp_path: Path) -> None:
    # session:0 is a string (the seed's first type): HGET on it is WRONGTYPE.
    results = _run(tmp_path, '{target: sessions, command: [HGET, "session:0", a], expect: rows, outcome: fail}')
    status, observed, summary = _redis(results)
    assert (status, observed) == ("pass", "fail") and "WRONGTYPE" in summary, summary
    assert results.verdict == "pass"


def test_a_value_read_back_passes(tmp_path: Path) -> None:
    results = _run(tmp_path, '{target: sessions, command: [HGET, "session:1", n], expect: {equals: "1"}}')
    assert _redis(results)[0] == "pass" and results.verdict == "pass"
