"""A query check that read nothing is never a detection (review of verdict-honesty leftovers, 1).

Real drills on the local runtime's PostgreSQL. A table or column that does not exist fails
a query check (a restore that lost it is broken), but nothing was read and a typo in the SQL
looks exactly the same: under ``outcome: fail`` it was counted as the detection the negative
control exists for, so a drill whose check could see nothing passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results

pytestmark = [pytest.mark.integration]


def _run(tmp_path: Path, checks: list[dict[str, Any]]) -> Results:
    data = {
        "name": "query-negative-control",
        "objectives": {"rto": "60s"},
        "stack": {"components": {"shop-db": {"kind": "postgres", "seed": {"customers": 20, "orders_per_customer": 1}}}},
        "steps": [
            {"backup": {"name": "nightly"}},
            {"disaster": {"target": "shop-db", "fault": "delete_data_dir"}},
            {"restore": {"from": "nightly"}},
        ],
        "assertions": [{"query": {"target": "shop-db", **c}} for c in checks],
    }
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return DrillRunner(load_scenario(path)).run()


def _statuses(results: Results) -> dict[str, tuple[str, str | None]]:
    return {a.id: (a.status, a.observed) for a in results.assertions if a.name == "query"}


def test_sql_naming_what_does_not_exist_is_no_detection(tmp_path: Path) -> None:
    results = _run(
        tmp_path,
        [
            {"sql": "SELECT count(custmer_id) FROM customers", "expect": "= 999", "outcome": "fail", "name": "typo-column"},
            {"sql": "SELECT count(*) FROM custmers", "expect": "= 999", "outcome": "fail", "name": "typo-table"},
            {"sql": "SELECT count(*) FROM custmers", "name": "positive-missing-table"},
        ],
    )
    statuses = _statuses(results)
    assert statuses["query[typo-column]"] == ("error", "fail"), statuses
    assert statuses["query[typo-table]"] == ("error", "fail"), statuses
    assert statuses["query[positive-missing-table]"] == ("fail", None), statuses  # still a broken restore
    assert (results.verdict, results.exit_code) == ("error", 2)


def test_a_value_that_misses_is_still_a_detection(tmp_path: Path) -> None:
    # Quiet control: a query that ran and read a value that misses its expectation is the detection.
    results = _run(tmp_path, [{"sql": "SELECT count(*) FROM customers", "expect": "= 999", "outcome": "fail", "name": "nc"}])
    assert _statuses(results) == {"query[nc]": ("pass", "fail")}
    assert (results.verdict, results.exit_code) == ("pass", 0)
