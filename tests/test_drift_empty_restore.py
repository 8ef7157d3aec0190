"""drift compares a component that came back empty (review of verdicts, finding 4).

The previous passing restore test of the source restored 2,000 keys of ``sessions`` and
500 rows of ``orders-db``; an empty Redis has no key space, so its fingerprint counts
nothing and its content is ``{}``. Such a component was left out of the comparison (or,
named, compared unit by unit with nothing), so a backup that shrank to nothing passed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drills.assertions.base import DrillState
from drills.assertions.drift import Drift, DriftParams
from drills.history import RunRecord
from engine.journal import AssertionResult, ComponentResult

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
BEFORE = {
    "orders-db": {"content": {"rows": 500}, "rows": {"public.orders": 500}},
    "sessions": {"content": {"keys": 2000}, "rows": {}},
}


def _drift(sessions: dict[str, int], params: dict[str, Any] | None = None, **state_fields: Any) -> AssertionResult:
    state = DrillState(repository=None, **state_fields)  # type: ignore[arg-type]
    state.previous_restore_test = RunRecord(
        id=1, scenario="nightly", scenario_sha256="a" * 64, started_at=NOW, finished_at=NOW, verdict="pass",
        exit_code=0, rto_seconds=1.0, rpo_seconds=None, drill_seconds=2.0, runtime="local", report_dir="/r",
        results_sha256="b" * 64, source="local /backups :: orders-db, sessions", backup_id="b1", content=BEFORE,
    )
    state.results = {
        "orders-db": ComponentResult(
            name="orders-db", kind="postgres", content={"rows": 500}, row_counts={"public.orders": 500}
        ),
        "sessions": ComponentResult(name="sessions", kind="redis", content=sessions),
    }
    return Drift().evaluate(DriftParams.model_validate(params or {}), state)[0]


def test_a_component_that_came_back_empty_dropped_everything() -> None:
    for params in ({}, {"components": ["sessions"]}):
        r = _drift({}, params)
        assert r.status == "fail", r.summary
        assert r.findings == ["sessions: keys is gone (had 2,000)"]


def test_a_component_whose_content_could_not_be_measured_is_no_comparison() -> None:
    r = _drift({}, fingerprint_errors={"sessions": "the server does not answer"})
    assert r.status == "error" and "sessions: the server does not answer" in r.summary


def test_the_same_content_again_passes_and_a_drop_within_the_limit_too() -> None:
    assert _drift({"keys": 2000}).status == "pass"
    assert _drift({"keys": 1700}).status == "pass"
    assert _drift({"keys": 1500}).status == "fail"
