"""`drproof backup` / `recovery restore` on a PostgreSQL 15 server whose own pgBackRest takes its backups.

Set up as an operator would, not by drproof: Debian's PostgreSQL 15 cluster owned by the
`postgres` user, `archive_command = pgbackrest archive-push`, a stanza in the operator's
own pgbackrest.conf, and pg_ctl as the stop and start commands. drproof only drives that
stanza and proves what it restores.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from engine.runtime import processes
from tests.integration.helpers import run_cli
from tests.integration.servers import require, require_pgbackrest

pytestmark = [pytest.mark.integration]

PG = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=True, timeout=120, **kwargs
    )


@pytest.fixture
def operated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    require_pgbackrest()
    require(
        "root and Debian's postgres user",
        os.geteuid() == 0 and _has_user("postgres"),
        "run as root with postgresql-15 installed",
    )
    root = Path(tempfile.mkdtemp(prefix="drproof-operated-"))
    root.chmod(0o755)
    pg_uid = pwd.getpwnam("postgres")
    for sub in ("data", "repo", "log", "lock", "sock"):
        (root / sub).mkdir(mode=0o700)
        os.chown(root / sub, pg_uid.pw_uid, pg_uid.pw_gid)
    port = processes.free_port()
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    os.chown(pwfile, pg_uid.pw_uid, pg_uid.pw_gid)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        f"[global]\nrepo1-path={root / 'repo'}\nrepo1-retention-full=10\nlog-path={root / 'log'}\n"
        f"lock-path={root / 'lock'}\nlog-level-console=warn\nstart-fast=y\n\n[main]\npg1-path={root / 'data'}\n"
        f"pg1-port={port}\npg1-socket-path={root / 'sock'}\npg1-user=postgres\n"
    )
    data = root / "data"
    try:
        _as_postgres(
            [
                str(PG / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
            ]
        )
        pwfile.unlink()
        with (data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root / 'sock'}'\n"
                "archive_mode = on\nwal_level = replica\n"
                f"archive_command = 'pgbackrest --config={conf} --stanza=main archive-push %p'\n"
            )
        start = [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(PG / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log" / "server.log"),
            "-w",
            "start",
        ]
        stop = ["runuser", "-u", "postgres", "--", str(PG / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"]
        subprocess.run(start, check=True, capture_output=True, timeout=120)
        _as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "stanza-create"])
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", password=password)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE shop")
        conn.close()
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="shop", password=password)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id int PRIMARY KEY, amount numeric)")
            cur.execute("INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 500) g")
        conn.close()
        monkeypatch.setenv("OPS_PG", password)
        config = root / "backup-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "repository": {"path": str(tmp_path / "drproof-repo")},
                    "components": {
                        "shop": {
                            "kind": "postgres-pgbackrest",
                            "url": f"postgresql://postgres@127.0.0.1:{port}/shop",
                            "password_env": "OPS_PG",
                            "pgbackrest": {"stanza": "main", "config": str(conf), "user": "postgres"},
                            "physical": {"data_directory": str(data), "stop": stop, "start": start},
                        }
                    },
                }
            )
        )
        yield {"config": config, "port": port, "password": password, "root": root}
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _orders(site: dict[str, Any]) -> int:
    conn = psycopg2.connect(
        host="127.0.0.1", port=site["port"], user="postgres", dbname="shop", password=site["password"]
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            row = cur.fetchone()
            return int(row[0]) if row else -1
    finally:
        conn.close()


def test_the_operators_own_stanza_backs_up_and_restores_in_place(
    operated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(operated["config"])
    assert run_cli(["backup", "--config", cfg, "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads(
        (
            Path(yaml.safe_load(Path(cfg).read_text())["repository"]["path"]) / "sets" / summary["id"] / "manifest.json"
        ).read_text()
    )
    details = manifest["components"][0]["details"]
    assert details["pgbackrest_stanza"] == "main" and details["pgbackrest_type"] == "full"
    assert details["verify"].startswith("ok")

    conn = psycopg2.connect(
        host="127.0.0.1", port=operated["port"], user="postgres", dbname="shop", password=operated["password"]
    )
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id > 100")
    conn.close()
    assert _orders(operated) == 100

    code = run_cli(["recovery", "restore", "--config", cfg, "--in-place", "--yes", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    [outcome] = out["components"]
    assert outcome["status"] == "restored" and outcome["fidelity"] == "match", outcome
    assert _orders(operated) == 500


def _tree(path: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def test_a_restore_to_a_scratch_server_keeps_the_scratchs_identity_and_productions_repository(
    operated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--to` a scratch cluster: its own port and archiving, pgBackRest's archive-get kept, production's repo untouched.

    Before the fix the scratch ran production's postgresql.conf from the backup: its port
    and its archive_command (pgbackrest archive-push into production's repository).
    """
    cfg, root = str(operated["config"]), operated["root"]
    assert run_cli(["backup", "--config", cfg, "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    scratch = root / "scratch"
    scratch.mkdir(mode=0o700)
    os.chown(scratch, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    pwfile = scratch / "pw"
    pwfile.write_text(operated["password"])
    os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    data, port = scratch / "data", processes.free_port()
    _as_postgres(
        [str(PG / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile), "--auth-host=scram-sha-256"]
    )
    with (data / "postgresql.conf").open("a") as fh:
        fh.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{scratch}'\n")
    pg_ctl = ["runuser", "-u", "postgres", "--", str(PG / "pg_ctl"), "-D", str(data), "-w"]
    start, stop = [*pg_ctl, "-l", str(scratch / "server.log"), "start"], [*pg_ctl, "-m", "fast", "stop"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        spec = yaml.safe_load(Path(cfg).read_text())["components"]["shop"]
        spec["url"] = f"postgresql://postgres@127.0.0.1:{port}/shop"
        spec["physical"] = {"data_directory": str(data), "stop": stop, "start": start}
        scratch_cfg = root / "scratch.yaml"
        scratch_cfg.write_text(yaml.safe_dump({"components": {"shop": spec}}))
        subprocess.run(operated_stop(root), check=True, capture_output=True, timeout=120)  # production is down
        repo_before = _tree(root / "repo")

        code = run_cli(["recovery", "restore", "--config", cfg, "--to", str(scratch_cfg), "--json"])

        out = json.loads(capsys.readouterr().out)
        assert code == 0, out
        [outcome] = out["components"]
        assert outcome["status"] == "restored" and outcome["fidelity"] == "match", outcome
        assert _orders({**operated, "port": port}) == 500
        assert "archive-push" not in (data / "postgresql.conf").read_text()
        assert _tree(root / "repo") == repo_before, "the scratch restore wrote into production's pgBackRest repository"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)


def operated_stop(root: Path) -> list[str]:
    return ["runuser", "-u", "postgres", "--", str(PG / "pg_ctl"), "-D", str(root / "data"), "-w", "-m", "fast", "stop"]
