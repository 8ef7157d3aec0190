"""Restore tests of pgBackRest backups drproof did not take, from the operator's own stanza.

The source is set up as an operator would (``operated`` from the standalone pgBackRest
tests: Debian's PostgreSQL 15 run by ``postgres``, ``archive_command = pgbackrest
archive-push``, a stanza in the operator's pgbackrest.conf). Its pgBackRest takes a full
backup, rows are added, and a differential backup follows. Each set restores into a
PostgreSQL 15 sandbox whose fingerprint equals the source's at that backup's time; a
label the repository lacks could not be tested, and a damaged repository file or a lost
WAL segment fails the restore: never a pass.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.external import ExternalRuntime, PostgresTarget
from tests.integration.helpers import read_results, run_cli
from tests.integration.test_pgbackrest_standalone import _as_postgres, operated

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["operated"]  # the fixture, used by name


def _backup(source: dict[str, Any], kind: str) -> str:
    conf = source["root"] / "pgbackrest.conf"
    _as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "backup", f"--type={kind}"])
    out = _as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "info", "--output=json"]).stdout
    label: str = json.loads(out)[0]["backup"][-1]["label"]
    return label


def _fingerprint(tmp_path: Path, source: dict[str, Any]) -> str:
    target = PostgresTarget("127.0.0.1", source["port"], "postgres", "shop", source["password"])
    comp = PostgresComponent(
        "shop", PostgresParams(database="shop"), ExternalRuntime(tmp_path, postgres={"shop": target})
    )
    comp.provision()
    digest: str = comp.fingerprint().digest
    return digest


def _add_rows(source: dict[str, Any]) -> None:
    conn = psycopg2.connect(
        host="127.0.0.1", port=source["port"], user="postgres", dbname="shop", password=source["password"]
    )
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO orders SELECT g, g * 2.5 FROM generate_series(501, 900) g")
        cur.execute("CREATE TABLE refunds AS SELECT id, amount FROM orders WHERE id % 7 = 0")
    conn.close()


def _run(tmp_path: Path, backups: dict[str, dict[str, Any]], name: str) -> tuple[int, dict[str, Any]]:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "pgbackrest-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": ["fidelity", "rto", {"freshness": {"max": "1h"}}],
            }
        )
    )
    report = tmp_path / name
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def test_pgbackrest_sets_restore_whole_as_of_their_backup(tmp_path: Path, operated: dict[str, Any]) -> None:
    full = _backup(operated, "full")
    at_full = _fingerprint(tmp_path / "fp1", operated)
    _add_rows(operated)
    diff = _backup(operated, "diff")
    at_diff = _fingerprint(tmp_path / "fp2", operated)
    assert at_full != at_diff
    repo = str(operated["root"] / "repo")
    backups = {
        "full": {"format": "pgbackrest", "path": repo, "stanza": "main", "set": full},
        "latest": {"format": "pgbackrest", "path": repo, "stanza": "main"},
    }
    code, results = _run(tmp_path, backups, "sets")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")] or results
    restored = {
        a["id"].split("[", 1)[1].rstrip("]"): a["evidence"]["restored_sha256"]
        for a in results["assertions"]
        if a["name"] == "fidelity"
    }
    assert restored == {"full": at_full, "latest": at_diff}
    assert all(" 15." in results["runtime"][f"postgres:{n}"] for n in backups)
    inspected = next(p for p in results["phases"] if p["name"] == "inspect the foreign backups")["data"]
    assert (inspected["full"]["set"], inspected["latest"]["set"]) == (full, diff)
    assert inspected["latest"]["type"] == "diff" and inspected["latest"]["prior"] == full
    data = {p["component"]: p["data"] for p in results["phases"] if p["kind"] == "restore"}
    assert data["latest"]["wal_segments_fetched"] >= 1 and data["latest"]["database"] == "shop"

    code, results = _run(tmp_path, {"db": {**backups["full"], "set": "20000101-000000F"}}, "unknown")
    assert code == 2 and "has no backup '20000101-000000F'" in results["error"]


def test_a_damaged_repository_or_lost_wal_fails_the_restore(tmp_path: Path, operated: dict[str, Any]) -> None:
    label = _backup(operated, "full")
    repo = operated["root"] / "repo"
    backup_dir = repo / "backup" / "main" / label / "pg_data"
    victim = max((p for p in backup_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xde\xad\xbe\xef" * 4
    victim.write_bytes(bytes(data))
    spec = {"format": "pgbackrest", "path": str(repo), "stanza": "main"}
    code, results = _run(tmp_path, {"db": spec}, "damaged")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert "pgbackrest restore" in restore["detail"], restore["detail"]

    label = _backup(operated, "full")  # a sound backup, whose WAL is then lost
    info = json.loads(
        _as_postgres(
            ["pgbackrest", f"--config={operated['root'] / 'pgbackrest.conf'}", "--stanza=main", "info", "--output=json"]
        ).stdout
    )
    start = info[0]["backup"][-1]["archive"]["start"]
    for segment in (repo / "archive" / "main").rglob(f"{start}-*"):
        subprocess.run(["rm", "-f", str(segment)], check=True)
    code, results = _run(tmp_path, {"db": {**spec, "set": label}}, "no-wal")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert f"WAL file {start}, which backup {label} needs, is not in" in restore["detail"], restore["detail"]
