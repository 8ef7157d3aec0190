"""A pg_basebackup nothing can verify never passes a restore test (review-pitr finding 2).

A backup taken with ``--no-manifest`` whose relation file was cut, or had 8 bytes overwritten,
restored, started, answered "2 tables readable" and the test passed with [fidelity, rto]: the
only trace was "not verified" in the phase data. Now such a backup is refused unless the
scenario opts in (``unverified: true``); then the run can never pass on it, and where the
cluster has page checksums ``pg_checksums --check`` catches overwritten bytes before it starts.
Source: Debian's PostgreSQL 15 (drproof's local runtime initdb's with --data-checksums).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import PG15, require_pg15

pytestmark = [pytest.mark.integration]

BIG = "CREATE TABLE big (id int PRIMARY KEY, note text); INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 20000) g;"


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A -Fp backup with its manifest, the same without, and a single tar on stdout (manifest inside)."""
    require_pg15()
    root = tmp_path_factory.mktemp("bb")
    sql = root / "big.sql"
    sql.write_text(BIG)
    out: dict[str, Path] = {}
    with LocalRuntime(root / "prod", images={"postgres": str(PG15)}) as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=50, sql_file=sql), rt)
        db.provision()
        db.seed()
        svc = rt.postgres("db")
        env, base = svc.tool_env(), [*svc.tool("pg_basebackup"), "-d", svc.tool_dsn("postgres"), "--checkpoint=fast"]
        subprocess.run([*base, "-D", str(root / "plain"), "-Fp"], env=env, check=True)
        subprocess.run([*base, "-D", str(root / "plain-nomf"), "-Fp", "--no-manifest"], env=env, check=True)
        with open(root / "stdout.tar", "wb") as fh:
            subprocess.run([*base, "-D", "-", "-Ft", "-X", "fetch"], env=env, check=True, stdout=fh)
        out = {"plain": root / "plain", "nomf": root / "plain-nomf", "stdout": root / "stdout.tar"}
        time.sleep(1)
    return out


def _variant(backups: dict[str, Path], tmp_path: Path, name: str, damage: str | None) -> Path:
    target = tmp_path / name
    subprocess.run(["cp", "-a", str(backups["nomf"]), str(target)], check=True)
    biggest = max((p for p in target.glob("base/*/*") if p.is_file()), key=lambda p: p.stat().st_size)
    assert biggest.stat().st_size > 400_000, biggest
    if damage == "cut":
        with biggest.open("r+b") as fh:
            fh.truncate(8192)
    elif damage == "flip":
        with biggest.open("r+b") as fh:
            fh.seek(300_000)
            fh.write(b"XXXXXXXX")
    return target


def _run(tmp_path: Path, name: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": f"rt-{name}",
                "objectives": {"rto": "10m"},
                "source": {"backups": {"db": {"format": "pg_basebackup", **spec}}},
                "assertions": ["fidelity", "rto"],
            }
        )
    )
    report = tmp_path / f"report-{name}"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def _restore_phase(results: dict[str, Any]) -> dict[str, Any]:
    phase: dict[str, Any] = next(p for p in results["phases"] if p["kind"] == "restore")
    return phase


def test_a_base_backup_without_a_manifest_is_refused_by_default(backups: dict[str, Path], tmp_path: Path) -> None:
    cut = _variant(backups, tmp_path, "cutrel-nomf", "cut")
    code, results = _run(tmp_path, "cut-default", {"path": str(cut)})
    assert code == 2 and results["verdict"] == "error"
    assert "has no backup_manifest" in results["error"] and "unverified: true" in results["error"]
    assert not [p for p in results["phases"] if p["kind"] == "restore"], "refused before anything was restored"


def test_an_unverified_base_backup_never_passes_even_when_it_restores(backups: dict[str, Path], tmp_path: Path) -> None:
    cut = _variant(backups, tmp_path, "cutrel-nomf", "cut")  # pg_checksums cannot see a cut file: nothing can
    code, results = _run(tmp_path, "cut-optin", {"path": str(cut), "unverified": True})
    assert code == 2 and results["verdict"] == "error"
    assert "restored from a backup nothing verified" in results["error"]
    restore = _restore_phase(results)
    assert restore["status"] == "ok" and restore["detail"].startswith("UNVERIFIED (the backup has no backup_manifest")
    assert restore["data"]["verified"] == "not verified: the backup has no backup_manifest"


def test_overwritten_bytes_in_an_unverified_backup_are_caught_by_page_checksums(
    backups: dict[str, Path], tmp_path: Path
) -> None:
    flip = _variant(backups, tmp_path, "flip-nomf", "flip")
    code, results = _run(tmp_path, "flip-optin", {"path": str(flip), "unverified": True})
    assert code == 1 and results["verdict"] == "fail"
    restore = _restore_phase(results)
    assert restore["status"] == "failed" and "pg_checksums --check" in restore["detail"], restore["detail"]
    assert "checksum verification failed" in restore["detail"], restore["detail"]


def test_verified_base_backups_still_pass(backups: dict[str, Path], tmp_path: Path) -> None:
    """Quiet controls: with a manifest (a file, or inside a single tar) the test passes, page checksums checked."""
    for name in ("plain", "stdout"):
        code, results = _run(tmp_path, name, {"path": str(backups[name])})
        assert code == 0 and results["verdict"] == "pass", results.get("error") or results["assertions"]
        data = _restore_phase(results)["data"]
        assert data["verified"].startswith("pg_verifybackup: every file matches"), data
        assert data["page_checksums"].startswith("pg_checksums --check: every page's checksum matches"), data
        assert "unverified" not in data
