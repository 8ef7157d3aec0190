"""Restore tests of backups drproof did not make: pg_dump files of a PostgreSQL 15 server.

The dumps are made by Debian's pg_dump 15 itself (custom, directory and gzipped plain
SQL), of a database with owners and grants to a role the dump does not carry. Each
restores into a PostgreSQL 15 sandbox; the restored state's fingerprint equals the
fingerprint of the database that was dumped (so "restored" means whole, although the
test itself cannot know that without a fingerprint and says "not compared"). ``drift``
stays quiet on an unchanged second test and fires when the next dump holds half the rows.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import PG15, require_pg15

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXTRA = """
CREATE ROLE reporting NOLOGIN;
CREATE SCHEMA sales AUTHORIZATION reporting;
CREATE TABLE sales.invoices (id int PRIMARY KEY, total numeric(10, 2));
ALTER TABLE sales.invoices OWNER TO reporting;
INSERT INTO sales.invoices SELECT g, g * 1.5 FROM generate_series(1, 500) g;
GRANT SELECT ON sales.invoices TO app_readonly;
"""


def _dumps(root: Path, delete_half: bool = False) -> tuple[dict[str, Path], str]:
    sql = root / "extra.sql"
    sql.write_text(EXTRA)
    with LocalRuntime(root / f"prod-{delete_half}", images={"postgres": str(PG15)}) as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=150, sql_file=sql), rt)
        db.provision()
        db.seed()
        if delete_half:
            conn = db.connect()
            with conn, conn.cursor() as cur:
                cur.execute("DELETE FROM orders WHERE id % 2 = 0")
            conn.close()
        svc = rt.postgres("db")
        env, dsn = svc.tool_env(), svc.tool_dsn("shop")
        out = root / ("half" if delete_half else "full")
        out.mkdir()
        subprocess.run([*svc.tool("pg_dump"), "-Fc", "-f", str(out / "shop.dump"), "-d", dsn], env=env, check=True)
        subprocess.run(
            [*svc.tool("pg_dump"), "-Fd", "-j2", "-f", str(out / "shop.dir"), "-d", dsn], env=env, check=True
        )
        plain = subprocess.run([*svc.tool("pg_dump"), "-d", dsn], env=env, check=True, capture_output=True).stdout
        (out / "shop.sql.gz").write_bytes(gzip.compress(plain))
        digest = db.fingerprint().digest
    return {"custom": out / "shop.dump", "directory": out / "shop.dir", "plain": out / "shop.sql.gz"}, digest


def _scenario(path: Path, dumps: dict[str, Path], assertions: list[Any]) -> Path:
    backups = {name: {"format": "pg_dump", "path": str(p)} for name, p in dumps.items()}
    if "plain" in backups:
        backups["plain"]["database"] = "shop"  # a plain dump records no database name
    path.write_text(
        yaml.safe_dump(
            {
                "name": "dumps-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": assertions,
            }
        )
    )
    return path


def _run(tmp_path: Path, scenario: Path, name: str, history: Path) -> tuple[int, dict[str, Any]]:
    report = tmp_path / name
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q", "--history", str(history)])
    return code, read_results(report)


def test_pg_dump_files_restore_whole_and_drift_catches_a_shrunken_dump(tmp_path: Path) -> None:
    require_pg15()
    dumps, digest = _dumps(tmp_path)
    scenario = _scenario(tmp_path / "rt.yaml", dumps, ["fidelity", "rto", {"freshness": {"max": "1h"}}, "drift"])
    history = tmp_path / "history.sqlite"

    code, first = _run(tmp_path, scenario, "first", history)
    assert code == 0, [a for a in first["assertions"] if a["status"] not in ("pass", "not_compared")] or first["error"]
    statuses = {a["id"]: a["status"] for a in first["assertions"]}
    assert statuses["fidelity[custom]"] == statuses["drift"] == "not_compared"  # never a pass
    for a in first["assertions"]:
        if a["name"] == "fidelity":
            # The sandbox holds what was dumped: its fingerprint is the source database's own.
            assert a["evidence"]["restored_sha256"] == digest, a
    assert all("15." in first["runtime"][f"postgres:{n}"] for n in dumps)
    restored = {p["component"]: p["data"] for p in first["phases"] if p["kind"] == "restore"}
    assert "reporting" in restored["custom"]["roles_created"]
    assert first["scope"]["kind"] == "restore-test" and "not compared" in first["scope"]["statement"]

    code, second = _run(tmp_path, scenario, "second", history)
    assert code == 0 and {a["id"]: a["status"] for a in second["assertions"]}["drift"] == "pass"

    half, _ = _dumps(tmp_path, delete_half=True)
    for name, path in half.items():  # tonight's dumps replace last night's, at the same paths
        (shutil.rmtree if path.is_dir() else Path.unlink)(dumps[name])
        shutil.move(path, dumps[name])
    code, third = _run(tmp_path, scenario, "third", history)
    assert code == 1
    drift = next(a for a in third["assertions"] if a["name"] == "drift")
    assert drift["status"] == "fail"
    assert any("table public.orders" in f and "-50.0%" in f for f in drift["findings"]), drift["findings"]


def test_a_file_that_is_no_dump_could_not_be_tested(tmp_path: Path) -> None:
    require_pg15()
    bogus = tmp_path / "shop.dump"
    bogus.write_bytes(b"this is not a database dump\n" * 10)
    scenario = _scenario(tmp_path / "rt.yaml", {"db": bogus}, ["rto"])
    code, results = _run(tmp_path, scenario, "bogus", tmp_path / "h.sqlite")
    assert code == 2 and results["verdict"] == "error"
    assert "neither a pg_dump archive nor a plain SQL dump" in results["error"]
