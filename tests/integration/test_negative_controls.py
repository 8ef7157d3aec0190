"""Detectors fire on damage, and a drill that could not run is never green.

Each test here injects the damage a check exists to catch and asserts that the check
fails and names the damaged thing; the shipped scenarios are the healthy counterparts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner, Hooks
from engine.components.base import Component
from reports import write_all
from tests.conftest import DATA
from tests.integration.helpers import read_results, run_cli, servers_under

pytestmark = [pytest.mark.integration]
DRILLS = DATA / "drills"


def test_file_edited_after_restore_fails_fidelity_naming_the_file(tmp_path: Path) -> None:
    report = tmp_path / "r"
    code = run_cli(["run", str(DRILLS / "sabotage-after-restore.yaml"), "--report-dir", str(report), "-q"])
    assert code == 1
    results = read_results(report)
    assert results["verdict"] == "fail"
    [fid] = [a for a in results["assertions"] if a["id"] == "fidelity[app-config]"]
    assert fid["status"] == "fail"
    assert any("file database.ini" in f and "content differs" in f for f in fid["findings"]), fid["findings"]
    html = (report / "report.html").read_text()
    assert "file database.ini" in html and "FAIL" in html


def _tamper(comp: Component) -> None:
    """Change one row, one key and one file right after each is restored."""
    if comp.name == "postgres":
        conn = comp.connect()  # type: ignore[attr-defined]
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE orders SET amount = amount + 0.01 WHERE id = 7")
            assert cur.rowcount == 1
        conn.close()
    elif comp.name == "redis":
        comp.client().set("cart:5", b"tampered")  # type: ignore[attr-defined]
    elif comp.name == "volumes":
        victim = sorted(p for p in comp.path.rglob("*.bin") if not p.is_symlink())[3]  # type: ignore[attr-defined]
        data = bytearray(victim.read_bytes())
        data[100] ^= 0x01
        victim.write_bytes(bytes(data))


def test_tampered_restore_fails_and_names_table_key_space_and_file(tmp_path: Path) -> None:
    loaded = load_scenario(DRILLS / "three-kinds.yaml")
    results = DrillRunner(loaded, hooks=Hooks(after_restore=_tamper)).run()
    assert results.verdict == "fail" and results.exit_code == 1
    by_id = {a.id: a for a in results.assertions}
    assert by_id["fidelity[db]"].status == "fail"
    assert any(f.startswith("table public.orders: content differs") for f in by_id["fidelity[db]"].findings)
    assert not any("customers" in f for f in by_id["fidelity[db]"].findings), "only the tampered table differs"
    assert by_id["fidelity[cache]"].status == "fail"
    assert any(f.startswith("db0 keyspace cart") for f in by_id["fidelity[cache]"].findings)
    assert by_id["fidelity[files]"].status == "fail"
    assert len(by_id["fidelity[files]"].findings) == 1 and by_id["fidelity[files]"].findings[0].startswith("file dir")
    # The tampering happened after a healthy restore, so the RTO itself still holds.
    assert by_id["rto[stack]"].status == "pass"
    paths = write_all(results, tmp_path / "report")
    html = paths["html"].read_text()
    assert "table public.orders" in html and "db0 keyspace cart" in html


def test_healthy_run_of_the_same_drill_passes(tmp_path: Path) -> None:
    """The positive counterpart of the tamper test: same drill, no tampering."""
    results = DrillRunner(load_scenario(DRILLS / "three-kinds.yaml")).run()
    assert results.verdict == "pass", [(a.id, a.summary, a.findings) for a in results.assertions]
    assert all(not c.differences for c in results.components)


def test_restore_from_damaged_backup_is_refused_and_the_drill_fails(tmp_path: Path) -> None:
    report = tmp_path / "r"
    code = run_cli(["run", str(DRILLS / "restore-damaged-backup.yaml"), "--report-dir", str(report), "-q"])
    assert code == 1
    results = read_results(report)
    status = {a["id"]: a for a in results["assertions"]}
    assert status["backup_integrity[only]"]["status"] == "pass", "verify names the damage and the restore refused it"
    assert status["fidelity[uploads]"]["status"] == "fail"
    assert status["rto[stack]"]["status"] == "fail"
    [restore] = [p for p in results["phases"] if p["kind"] == "restore"]
    assert restore["status"] == "refused" and "refusing to restore" in restore["detail"]


def test_backup_integrity_fails_when_an_expected_refusal_does_not_happen(tmp_path: Path) -> None:
    report = tmp_path / "r"
    code = run_cli(["run", str(DRILLS / "expect-refusal-but-healthy.yaml"), "--report-dir", str(report), "-q"])
    results = read_results(report)
    [restore] = [p for p in results["phases"] if p["kind"] == "restore"]
    assert restore["status"] == "failed" and "expected the restore to be refused" in restore["detail"]
    assert code == 1 and results["verdict"] == "fail"
    status = {a["id"]: a for a in results["assertions"]}
    assert status["timeline"]["status"] == "fail"
    assert status["backup_integrity[good]"]["status"] == "fail"
    assert any("expected to be refused" in f for f in status["backup_integrity[good]"]["findings"])


def test_fault_that_cannot_be_injected_is_an_error_not_a_pass(tmp_path: Path) -> None:
    report = tmp_path / "r"
    work = tmp_path / "w"
    code = run_cli(
        ["run", str(DRILLS / "fault-cannot-run.yaml"), "--report-dir", str(report), "--work-dir", str(work), "-q"]
    )
    assert code == 2
    results = read_results(report)
    assert results["verdict"] == "error"
    assert "no_such_table" in results["error"]
    assert {a["status"] for a in results["assertions"]} == {"not_run"}
    assert len(results["assertions"]) == 2
    assert servers_under(work) == []


def test_invalid_scenario_exits_2_naming_file_line_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstack:\n  components:\n    db: {kind: postgres, seed: {rows: 5}}\nsteps: []\n")
    assert run_cli(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "stack.components.db.seed.rows: unknown key 'rows'" in err


def test_ctrl_c_stops_servers_and_writes_an_error_result(tmp_path: Path) -> None:
    report = tmp_path / "r"
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drills.cli",
            "run",
            str(DRILLS / "long-wait.yaml"),
            "--report-dir",
            str(report),
            "--work-dir",
            str(work),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "wait 120s" in line:
            break
    assert "wait 120s" in seen, seen
    assert servers_under(work), "servers should be running during the wait"
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + rest
    results = read_results(report)
    assert results["verdict"] == "error" and "interrupted" in results["error"]
    assert servers_under(work) == []
    assert list(work.iterdir()) == []


def test_runtime_never_touches_other_servers(tmp_path: Path) -> None:
    """A drill's teardown stops only its own servers: one started outside it survives."""
    from engine.runtime import LocalRuntime

    with LocalRuntime(tmp_path / "outside") as outside:
        svc = outside.postgres("keep")
        results = DrillRunner(load_scenario(DRILLS / "three-kinds.yaml"), work_root=tmp_path / "drill").run()
        assert results.verdict == "pass"
        conn = psycopg2.connect(svc.dsn(), password=svc.password)
        conn.close()
        assert svc.is_running()
