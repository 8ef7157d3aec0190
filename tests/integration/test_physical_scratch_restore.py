"""`recovery restore --to SCRATCH` of a postgres-physical backup keeps the scratch server's own identity.

Production and scratch are two Debian PostgreSQL 15 clusters set up by hand, each with its
postgresql.conf in its data directory (every non-Debian layout) naming its own port,
sockets and WAL archive. Found by review: the scratch server started on production's
postgresql.conf from the base backup, listened on production's port, ran production's
archive_command (a timeline history and a WAL segment written into production's WAL
archive) and drproof waited an hour on the scratch's port. An in-place restore of
production is the same server: it keeps the backup's configuration, archiving included.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.operator_pg import init_cluster
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]
PASSWORD = "scratch-test-password"
CLI_TIMEOUT = 150  # seconds; before the fix the restore waited up to an hour


@dataclass
class Cluster:
    name: str
    base: Path
    port: int
    pg_ctl: list[str]

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def wal(self) -> Path:
        return self.base / "wal"

    def spec(self) -> dict[str, object]:
        return {
            "kind": "postgres-physical",
            "url": f"postgresql://postgres@127.0.0.1:{self.port}/shop",
            "password_env": "DRPROOF_TEST_PG_PASSWORD",
            "physical": {
                "data_directory": str(self.data),
                "wal_archive": str(self.wal),
                "stop": [*self.pg_ctl, "-m", "fast", "stop"],
                "start": [*self.pg_ctl, "-l", str(self.base / "server.log"), "start"],
            },
        }

    def sql(self, statement: str, dbname: str = "shop") -> object:
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD, dbname=dbname, connect_timeout=5
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    def running(self) -> bool:
        return subprocess.run([*self.pg_ctl, "status"], capture_output=True).returncode == 0


def _make(root: Path, name: str, user: str | None, bin_dir: Path) -> Cluster:
    pg = init_cluster(
        root, name, user, bin_dir, PASSWORD, conf="postgresql.conf", archive="wal", settings="wal_level = replica\n", wait=60
    )
    base = pg.base
    cluster = Cluster(name, base, pg.port, pg.pg_ctl)
    subprocess.run([*cluster.pg_ctl, "-l", str(base / "server.log"), "start"], check=True, capture_output=True)
    cluster.sql("CREATE DATABASE shop", dbname="postgres")
    return cluster


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[tuple[Cluster, Cluster]]:
    bin_dir = require_pg15()
    # The LocalRuntime only lends a directory the unprivileged server user can reach (when root).
    with LocalRuntime(tmp_path / "lend") as lender:
        made: list[Cluster] = []
        try:
            for name in ("prod", "scratch"):
                made.append(_make(lender.pg_root, name, lender._pg_user, bin_dir))
            yield made[0], made[1]
        finally:
            for cluster in made:
                subprocess.run([*cluster.pg_ctl, "-m", "immediate", "stop"], capture_output=True)


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its content's digest (byte-identical means equal)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def _cli(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """The real CLI in a process of its own: a hang is a failure here, not a stuck test run."""
    env = {**os.environ, "DRPROOF_TEST_PG_PASSWORD": PASSWORD}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drills.cli", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # drproof rolls the restore back on SIGTERM
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"drproof was still waiting after {CLI_TIMEOUT} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _configs(tmp_path: Path, prod: Cluster, scratch: Cluster) -> tuple[Path, Path]:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    prod_cfg, scratch_cfg = tmp_path / "prod.yaml", tmp_path / "scratch.yaml"
    prod_cfg.write_text(
        json.dumps(
            {
                "repository": {"type": "local", "path": str(tmp_path / "repo")},
                "encryption": {"key_file": str(key)},
                "components": {"shop-db": prod.spec()},
            }
        )
    )
    scratch_cfg.write_text(json.dumps({"components": {"shop-db": scratch.spec()}}))
    return prod_cfg, scratch_cfg


@pytest.mark.parametrize("production", ["running", "stopped"])
def test_scratch_restore_keeps_the_scratch_servers_identity_and_leaves_production_alone(
    clusters: tuple[Cluster, Cluster], tmp_path: Path, production: str
) -> None:
    prod, scratch = clusters
    prod.sql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    prod_cfg, scratch_cfg = _configs(tmp_path, prod, scratch)
    code, _, err = _cli(["backup", "--config", str(prod_cfg)], tmp_path)
    assert code == 0, err
    if production == "stopped":  # the usual reason to restore elsewhere
        subprocess.run([*prod.pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
    time.sleep(1)
    archive_before = _tree(prod.wal)

    code, out, err = _cli(
        [
            "recovery",
            "restore",
            "--config",
            str(prod_cfg),
            "--to",
            str(scratch_cfg),
            "--components",
            "shop-db",
            "--json",
        ],
        tmp_path,
    )

    assert code == 0, err[-3000:]
    outcome = json.loads(out)["components"][0]
    assert (outcome["status"], outcome["fidelity"]) == ("restored", "match"), outcome
    assert _tree(prod.wal) == archive_before, "the scratch restore wrote into production's WAL archive"
    # The scratch server runs on its own port with its own archive; the backup's configuration is kept beside.
    assert scratch.sql("SELECT count(*) FROM t") == (100,)
    assert scratch.sql("SELECT setting FROM pg_settings WHERE name = 'port'") == (str(scratch.port),)
    conf = (scratch.data / "postgresql.conf").read_text()
    assert str(scratch.wal) in conf and str(prod.wal) not in conf
    assert str(prod.wal) in (scratch.data / "postgresql.conf.from-backup").read_text()
    scratch.sql("SELECT pg_switch_wal()")
    assert processes.wait_until(lambda: any(p.name.endswith(".history") for p in scratch.wal.iterdir()), timeout=30)
    assert _tree(prod.wal) == archive_before
    if production == "running":
        assert prod.sql("SELECT count(*) FROM t") == (100,)
    else:
        assert not prod.running()
        subprocess.run([*prod.pg_ctl, "-l", str(prod.base / "server.log"), "start"], check=True, capture_output=True)
        assert prod.sql("SELECT count(*) FROM t") == (100,)


def test_in_place_restore_keeps_productions_archiving(clusters: tuple[Cluster, Cluster], tmp_path: Path) -> None:
    """The quiet control: in place the backup's configuration is the server's own, archive_command included."""
    prod, scratch = clusters
    prod.sql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    prod_cfg, _ = _configs(tmp_path, prod, scratch)
    code, _, err = _cli(["backup", "--config", str(prod_cfg)], tmp_path)
    assert code == 0, err
    prod.sql("INSERT INTO t VALUES (101)")

    code, out, err = _cli(
        ["recovery", "restore", "--config", str(prod_cfg), "--in-place", "--yes", "--components", "shop-db", "--json"],
        tmp_path,
    )

    assert code == 0, err[-3000:]
    assert json.loads(out)["components"][0]["fidelity"] == "match"
    assert prod.sql("SELECT count(*) FROM t") == (100,)
    assert not (prod.data / "postgresql.conf.from-backup").exists()
    segment = str(prod.sql("SELECT pg_walfile_name(pg_switch_wal())")[0])  # type: ignore[index]
    prod.sql("SELECT pg_switch_wal()")
    assert processes.wait_until(lambda: (prod.wal / segment).exists(), timeout=30), "production no longer archives"
    assert any(p.name.endswith(".history") for p in prod.wal.iterdir())


def test_a_restored_server_listening_elsewhere_ends_the_wait_saying_where(
    clusters: tuple[Cluster, Cluster],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port that differs from the URL's ends the wait with where the server listens, not after an hour."""
    import signal

    from engine.runtime.external import ExternalPhysicalPostgres
    from tests.integration.helpers import run_cli

    prod, scratch = clusters
    prod.sql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    elsewhere = processes.free_port()
    prod.pg_ctl = [*prod.pg_ctl, "-o", f"-p {elsewhere}"]  # the start command overrides the port
    prod_cfg, _ = _configs(tmp_path, prod, scratch)
    monkeypatch.setenv("DRPROOF_TEST_PG_PASSWORD", PASSWORD)
    monkeypatch.setattr(ExternalPhysicalPostgres, "silent_timeout", 3.0)
    assert run_cli(["backup", "--config", str(prod_cfg)]) == 0
    capsys.readouterr()

    def hung(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # as drproof's own SIGTERM handler: the restore rolls back

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(90)
    try:
        code = run_cli(
            [
                "recovery",
                "restore",
                "--config",
                str(prod_cfg),
                "--in-place",
                "--yes",
                "--components",
                "shop-db",
                "--json",
            ]
        )
    except KeyboardInterrupt:
        pytest.fail("drproof was still waiting for the restored server after 90 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert code == 2
    detail = json.loads(capsys.readouterr().out)["components"][0]["detail"]
    assert f"nothing has listened at 127.0.0.1:{prod.port}" in detail and f"port {elsewhere}" in detail, detail
    # Rolled back: the pre-restore data were put back and started (by the same start command).
    prod.port = elsewhere
    assert prod.sql("SELECT count(*) FROM t") == (100,)


def test_point_in_time_restore_into_a_scratch_replays_productions_wal_not_the_scratchs(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    """The scratch's own archive is not production's live archive, nor are its timelines production's.

    An earlier restore into the scratch forked a timeline there, and the scratch archived
    its own writes on it into its own archive. Before the fix a later ``--to
    --point-in-time latest`` replayed those (the scratch's "live archive", timeline
    "latest") instead of production's WAL from the repository.
    """
    prod, scratch = clusters
    prod.sql("CREATE TABLE marks (name text); INSERT INTO marks VALUES ('base')")
    prod_cfg, scratch_cfg = _configs(tmp_path, prod, scratch)
    to_scratch = ["recovery", "restore", "--config", str(prod_cfg), "--to", str(scratch_cfg), "--components", "shop-db"]
    assert _cli(["backup", "--config", str(prod_cfg)], tmp_path)[0] == 0
    code, _, err = _cli(to_scratch, tmp_path)
    assert code == 0, err[-3000:]
    scratch.sql("INSERT INTO marks VALUES ('scratch-only')")
    segment = str(scratch.sql("SELECT pg_walfile_name(pg_switch_wal())")[0])  # type: ignore[index]
    assert processes.wait_until(lambda: (scratch.wal / segment).exists(), timeout=30)
    prod.sql("INSERT INTO marks VALUES ('prod-later')")
    assert _cli(["backup", "--config", str(prod_cfg)], tmp_path)[0] == 0
    archive_before = _tree(prod.wal)

    code, out, err = _cli([*to_scratch, "--point-in-time", "latest", "--json"], tmp_path)

    assert code == 2, err[-3000:]  # restored, but a point in time has no fingerprint to prove it: never green
    outcome = json.loads(out)["components"][0]
    assert outcome["status"] == "restored" and "live archive" not in outcome["detail"], outcome
    assert scratch.sql("SELECT string_agg(name, ',' ORDER BY name) FROM marks") == ("base,prod-later",)
    assert _tree(prod.wal) == archive_before


@pytest.mark.parametrize("loss", ["stopped", "data directory lost"])
def test_in_place_restore_of_a_server_that_is_down(
    clusters: tuple[Cluster, Cluster], tmp_path: Path, loss: str
) -> None:
    """The lost-disk case point-in-time recovery is for: the server cannot answer, the restore still runs.

    Before, it was refused with "does not answer … start it", and with a lost data
    directory there was nothing to start. A backup of a server that is down is still refused.
    """
    prod, scratch = clusters
    prod.sql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
    prod_cfg, _ = _configs(tmp_path, prod, scratch)
    assert _cli(["backup", "--config", str(prod_cfg)], tmp_path)[0] == 0
    subprocess.run([*prod.pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
    if loss == "data directory lost":
        prod.data.rename(prod.base / "lost")
    code, _, err = _cli(["backup", "--config", str(prod_cfg)], tmp_path)
    assert code != 0 and "does not answer" in err, err[-2000:]

    code, out, err = _cli(
        ["recovery", "restore", "--config", str(prod_cfg), "--in-place", "--yes", "--components", "shop-db", "--json"],
        tmp_path,
    )

    assert code == 0, err[-3000:]
    outcome = json.loads(out)["components"][0]
    assert (outcome["status"], outcome["fidelity"]) == ("restored", "match"), outcome
    assert prod.sql("SELECT count(*) FROM t") == (100,)
    replaced = sorted(prod.base.glob("data.drproof-replaced-*"))
    assert len(replaced) == (1 if loss == "stopped" else 0)


def test_a_failed_restore_of_a_server_that_was_down_leaves_it_down_on_its_own_data(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    from datetime import datetime

    from engine import backup as engine_backup
    from engine.components.postgres import PostgresParams
    from engine.components.postgres_physical import PostgresPhysicalComponent
    from engine.errors import ComponentError
    from engine.repository import LocalRepository
    from engine.runtime.external import ExternalRuntime, PhysicalTarget, PostgresTarget

    prod, _ = clusters
    prod.sql("CREATE TABLE t (i int)")
    spec = prod.spec()["physical"]
    assert isinstance(spec, dict)

    def component(when_down: bool) -> PostgresPhysicalComponent:
        physical = PhysicalTarget(prod.data, prod.wal, spec["stop"], spec["start"], restore_when_down=when_down)
        target = PostgresTarget("127.0.0.1", prod.port, "postgres", "shop", PASSWORD)
        runtime = ExternalRuntime(Path("."), postgres={"db": target}, physical={"db": physical})
        comp = PostgresPhysicalComponent("db", PostgresParams(database="shop"), runtime)
        comp.provision()
        return comp

    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [component(False)])
    subprocess.run([*prod.pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
    before = _tree(prod.data)
    comp = component(True)
    source = engine_backup._source(repo, manifest, "db")
    beyond = datetime.fromisoformat(manifest.component("db").details["wal_through_time"]).replace(year=2099)

    with pytest.raises(ComponentError, match="physical restore of 'db' failed"):
        comp.restore_to_time([source], [source], beyond)

    assert not prod.running(), "a server that was down was started by the rollback"
    assert _tree(prod.data) == before
    assert not list(prod.base.glob("data.drproof-*"))
