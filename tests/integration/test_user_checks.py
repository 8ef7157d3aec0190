"""The checks users write, on real servers and a real service (issue 16).

Each check kind passes on a healthy restore (quiet control), fails with its finding when
what it reads was broken after the restore (negative control, exit 1), and is an error
when it cannot run at all (exit 2), never a pass. The application component starts
after its dependencies, restarts after them in a parallel restore, and its readiness
counts in the RTO.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import read_results, run_cli, servers_under

pytestmark = [pytest.mark.integration]

APP = Path(__file__).resolve().parents[2] / "scenarios" / "full-system" / "shop_app.py"


def _scenario(tmp_path: Path, steps_after_restore: list[Any], assertions: list[Any]) -> Path:
    shutil.copy(APP, tmp_path / "shop_app.py")
    (tmp_path / "ok.py").write_text("import os, sys\nprint('db at', os.environ['DRPROOF_SHOP_DB_URL'])\n")
    (tmp_path / "broken.py").write_text(
        "import os, sys\nprint('password is', os.environ['DRPROOF_SHOP_DB_PASSWORD'])\nsys.exit(3)\n"
    )
    data = {
        "name": "user-checks",
        "objectives": {"rto": "2m"},
        "stack": {
            "components": {
                "shop-db": {"kind": "postgres", "seed": {"customers": 50, "orders_per_customer": 2}},
                "sessions": {"kind": "redis", "seed": {"keys": 100, "key_spaces": ["session", "cart"]}},
                "web": {
                    "kind": "application",
                    "depends_on": ["shop-db", "sessions"],
                    "run": {"command": ["{python}", "shop_app.py"], "health": {"http": "/health", "timeout": 30}},
                },
            }
        },
        "steps": [
            {"backup": {"name": "nightly"}},
            {"disaster": {"target": "shop-db", "fault": "delete_data_dir"}},
            {"disaster": {"target": "sessions", "fault": "flushall"}},
            {"disaster": {"target": "web", "fault": "kill_process"}},
            {"restore": {"from": "nightly", "parallel": 2}},
            *steps_after_restore,
        ],
        "assertions": ["rto", *assertions],
    }
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CHECKS: list[Any] = [
    {"query": {"target": "shop-db", "sql": "SELECT count(*) FROM customers", "expect": "= 50", "name": "customers"}},
    {
        "query": {
            "target": "shop-db",
            "sql": "SELECT id FROM customers WHERE id <= 2 ORDER BY id",
            "expect": {"rows": [[1], [2]]},
            "name": "first-two",
        }
    },
    {"redis": {"target": "sessions", "command": ["DBSIZE"], "expect": "= 100"}},
    {"http": {"target": "web", "path": "/customers/3", "json": {"path": "orders", "expect": "= 2"}, "timeout": "5s"}},
    {"command": {"argv": ["{python}", "ok.py"], "components": ["shop-db"]}},
]


def _run(tmp_path: Path, scenario: Path) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "--work-dir", str(tmp_path / "work"), "-q"])
    assert servers_under(tmp_path / "work") == [], "the application and the servers are stopped"
    return code, read_results(report)


def _statuses(results: dict[str, Any]) -> dict[str, str]:
    return {a["id"]: a["status"] for a in results["assertions"]}


def test_every_check_passes_on_a_healthy_restore_and_the_service_counts_in_the_rto(tmp_path: Path) -> None:
    code, results = _run(tmp_path, _scenario(tmp_path, [], CHECKS))
    assert code == 0, [a for a in results["assertions"] if a["status"] != "pass"] or results["error"]
    assert set(_statuses(results)) >= {
        "query[customers]",
        "query[first-two]",
        "redis[sessions]",
        "http[web]",
        "command[ok.py]",
    }
    measured = results["measured"]
    assert measured["rto_seconds"] == measured["components"]["web"]  # the service answered last
    assert measured["critical_path"][-1] == "web" and measured["critical_path"][0] in ("shop-db", "sessions")
    restarts = [p for p in results["phases"] if p["name"] == "start web again"]
    restores = {p["component"]: p for p in results["phases"] if p["kind"] == "restore"}
    assert restarts and all(
        restarts[0]["offset_seconds"] >= restores[d]["offset_seconds"] + restores[d]["duration_seconds"] - 1e-3
        for d in ("shop-db", "sessions")
    ), "the service restarts only once both dependencies are back"
    command = next(a for a in results["assertions"] if a["name"] == "command")
    assert "DRPROOF_SHOP_DB_PASSWORD" in command["evidence"]["environment"]


def test_checks_fail_with_their_findings_when_what_they_read_is_broken(tmp_path: Path) -> None:
    sabotage = [
        {
            "sql": {
                "target": "shop-db",
                "statement": "DELETE FROM orders WHERE customer_id = 3; DELETE FROM customers WHERE id = 3",
            }
        },
        {"disaster": {"target": "sessions", "fault": "flushall"}},
    ]
    checks = [*CHECKS[:4], {"command": {"argv": ["{python}", "broken.py"], "components": ["shop-db"]}}]
    code, results = _run(tmp_path, _scenario(tmp_path, sabotage, checks))
    assert code == 1
    statuses = _statuses(results)
    assert statuses["query[customers]"] == statuses["redis[sessions]"] == statuses["http[web]"] == "fail"
    assert statuses["command[broken.py]"] == "fail" and statuses["query[first-two]"] == "pass"
    by_id = {a["id"]: a for a in results["assertions"]}
    assert by_id["query[customers]"]["findings"] == ["expected = 50, got 49"]
    assert "status 404" in by_id["http[web]"]["findings"][0]
    out = by_id["command[broken.py]"]["evidence"]["stdout"]
    assert "password is ***" in out, out  # the password it printed is masked in the evidence


def test_checks_that_cannot_run_are_errors_never_passes(tmp_path: Path) -> None:
    checks = [
        {"query": {"target": "shop-db", "sql": "SELEC count(*) FROM customers", "name": "typo"}},
        {"query": {"target": "shop-db", "sql": "SELECT count(*) FROM no_such_table", "name": "missing-table"}},
        {"command": {"argv": ["/nonexistent/checker"], "name": "absent"}},
        {
            "query": {
                "target": "shop-db",
                "sql": "INSERT INTO customers (name, email, created_at) VALUES ('x', 'x@x', now())",
                "name": "writes",
            }
        },
    ]
    code, results = _run(tmp_path, _scenario(tmp_path, [], checks))
    assert code == 2
    statuses = _statuses(results)
    assert statuses["query[typo]"] == "error" and statuses["command[absent]"] == "error"
    assert statuses["query[writes]"] == "error"  # read-only: a check cannot change what it checks
    assert statuses["query[missing-table]"] == "fail"  # what a broken restore looks like


def _canary_drill(tmp_path: Path, after_restore: list[Any]) -> Path:
    data = {
        "name": "canary",
        "stack": {
            "components": {
                "shop-db": {"kind": "postgres", "seed": {"customers": 20}},
                "sessions": {"kind": "redis", "seed": {"keys": 50}},
            }
        },
        "steps": [
            {"backup": {"name": "older", "canary": True}},
            {"backup": {"name": "nightly", "canary": True}},
            {"disaster": {"target": "shop-db", "fault": "delete_data_dir"}},
            {"disaster": {"target": "sessions", "fault": "flushall"}},
            {"restore": {"from": "nightly"}},
            *after_restore,
        ],
        "assertions": ["canary"],
    }
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_canary_proves_which_backup_came_back_and_never_shows_its_value(tmp_path: Path) -> None:
    code, results = _run(tmp_path, _canary_drill(tmp_path, []))
    import re

    written = (tmp_path / "report" / "results.json").read_text() + (tmp_path / "report" / "report.html").read_text()
    assert not re.search(r"[0-9a-f]{32}@20", written), "the canary's value never appears in the reports"
    assert code == 0, results["assertions"]
    by_id = {a["id"]: a for a in results["assertions"]}
    assert "canary of backup" in by_id["canary[shop-db]"]["summary"] and by_id["canary[sessions]"]["status"] == "pass"
    backup = next(b for b in results["backups"] if b["name"] == "nightly")
    assert by_id["canary[shop-db]"]["evidence"]["backup_id"] == backup["id"]


def test_the_canary_fails_when_the_restored_state_is_another_backups(tmp_path: Path) -> None:
    # The older backup's sentinel put back over the restored one: faithful data, wrong backup.
    older_into_db = {"sql": {"target": "shop-db", "statement": "UPDATE drproof_canary SET value = 'not this backup'"}}
    code, results = _run(
        tmp_path, _canary_drill(tmp_path, [older_into_db, {"disaster": {"target": "sessions", "fault": "flushall"}}])
    )
    assert code == 1
    by_id = {a["id"]: a for a in results["assertions"]}
    assert (
        by_id["canary[shop-db]"]["status"] == "fail" and "another backup's" in by_id["canary[shop-db]"]["findings"][0]
    )
    assert by_id["canary[sessions]"]["status"] == "fail" and "no canary" in by_id["canary[sessions]"]["findings"][0]


def _workload_drill(tmp_path: Path, app_source: str) -> Path:
    """A drill whose live workload goes through the service, which is then lost and restarted."""
    (tmp_path / "shop_app.py").write_text(app_source)
    data = {
        "name": "workload-through-the-service",
        "objectives": {"rto": "2m", "rpo": "1m"},
        "stack": {
            "components": {
                "shop-db": {"kind": "postgres", "seed": {"customers": 20, "orders_per_customer": 1}},
                "sessions": {"kind": "redis", "seed": {"keys": 10}},
                "web": {
                    "kind": "application",
                    "depends_on": ["shop-db", "sessions"],
                    "run": {
                        "command": ["{python}", "shop_app.py"],
                        "health": {"http": "/health", "timeout": 30},
                        "workload": {"write": "/workload/{seq}", "read": "/workload"},
                    },
                },
            }
        },
        "steps": [
            {"workload": {"components": ["web"], "rate": 20}},
            {"wait": "1500ms"},
            {"backup": {"name": "nightly"}},
            {"wait": "1s"},
            {"disaster": {"target": "shop-db", "fault": "delete_data_dir"}},
            {"disaster": {"target": "web", "fault": "kill_process"}},
            {"restore": {"from": "nightly"}},
        ],
        "assertions": ["fidelity", "rpo"],
    }
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_workload_goes_through_the_service_and_its_losses_are_measured(tmp_path: Path) -> None:
    code, results = _run(tmp_path, _workload_drill(tmp_path, APP.read_text()))
    assert code == 0, [a for a in results["assertions"] if a["status"] != "pass"] or results["error"]
    web = next(c for c in results["components"] if c["name"] == "web")["recovery_point"]
    assert web["measured"] and web["survived"] > 0 and web["lost_writes"] > 0, web  # the writes after the backup
    assert web["hole_count"] == 0
    assert _statuses(results)["fidelity[shop-db]"] == "pass", "the service's workload table is not the data"


def test_a_service_that_acknowledges_writes_it_did_not_keep_fails_the_rpo(tmp_path: Path) -> None:
    """Negative control: every third write is answered 201 but never stored."""
    lying = APP.read_text().replace(
        'query(f"INSERT INTO {WORKLOAD}', 'int(m.group(1)) % 3 == 0 or query(f"INSERT INTO {WORKLOAD}'
    )
    assert lying != APP.read_text()
    code, results = _run(tmp_path, _workload_drill(tmp_path, lying))
    assert code == 1, results["error"]
    rpo = next(a for a in results["assertions"] if a["name"] == "rpo")
    assert rpo["status"] == "fail" and "lost before a surviving one" in " ".join(rpo["findings"])
