"""The standalone engine on a running stack: backup, list, verify, restore, without a drill."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running 'production' stack the standalone engine did not create."""
    with LocalRuntime(tmp_path / "prod") as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=100), rt)
        cache = RedisComponent("cache", RedisParams(keys=300), rt)
        files = VolumesComponent("files", VolumesParams(files=15), rt)
        conf = ConfigurationComponent("conf", ConfigurationParams(), rt)
        for c in (db, cache, files, conf):
            c.provision()
            c.seed()
        pg, rd = rt.postgres("db"), rt.redis("cache")
        monkeypatch.setenv("SHOP_DB_PASSWORD", pg.password)
        monkeypatch.setenv("CACHE_PASSWORD", rd.password)
        config = {
            "repository": {"path": "repo"},
            "components": {
                "db": {
                    "kind": "postgres",
                    "url": f"postgresql://postgres@127.0.0.1:{pg.port}/shop",
                    "password_env": "SHOP_DB_PASSWORD",
                },
                "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{rd.port}", "password_env": "CACHE_PASSWORD"},
                "files": {"kind": "volumes", "path": str(files.path)},
                "conf": {"kind": "configuration", "path": str(conf.path)},
            },
        }
        path = tmp_path / "backup-config.yaml"
        path.write_text(yaml.safe_dump(config))
        yield {
            "config": path,
            "db": db,
            "cache": cache,
            "files": files,
            "conf": conf,
            "secrets": [pg.password, rd.password],
        }


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_backup_list_verify_restore(stack: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(stack["config"])
    assert run_cli(["backup", "--config", cfg, "--json"]) == 0
    summary = _json(capsys)
    assert sorted(summary["components"]) == ["cache", "conf", "db", "files"]

    assert run_cli(["recovery", "list", "--config", cfg, "--json"]) == 0
    assert [b["id"] for b in _json(capsys)["backups"]] == [summary["id"]]

    assert run_cli(["recovery", "verify", "--config", cfg, "--id", summary["id"], "--json"]) == 0
    assert _json(capsys)["ok"] is True

    # Disaster on the live stack, then a restore of two components only.
    conn = stack["db"].connect()
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders")
    conn.close()
    stack["cache"].client().flushall()
    assert (
        run_cli(
            ["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--components", "db", "cache", "--json"]
        )
        == 0
    )
    result = _json(capsys)
    assert {c["component"]: (c["status"], c["fidelity"]) for c in result["components"]} == {
        "db": ("restored", "match"),
        "cache": ("restored", "match"),
    }

    # Secrets never reach output or the repository's manifests.
    captured = capsys.readouterr()
    manifests = "".join(p.read_text() for p in (stack["config"].parent / "repo").rglob("manifest.json"))
    for secret in stack["secrets"]:
        assert secret not in captured.out + captured.err + manifests + stack["config"].read_text()


def test_database_only_backup_and_refused_damaged_restore(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(stack["config"])
    assert run_cli(["backup", "--config", cfg, "--type", "database-only", "--json"]) == 0
    summary = _json(capsys)
    assert summary["components"] == ["db"] and summary["type"] == "database-only"
    stored = next((stack["config"].parent / "repo" / "sets" / summary["id"] / "db").glob("database.dump.zst"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert run_cli(["recovery", "verify", "--config", cfg, "--json"]) == 1
    assert _json(capsys)["ok"] is False
    assert run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--json"]) == 1
    [outcome] = _json(capsys)["components"]
    assert outcome["status"] == "refused" and "db/database.dump" in outcome["detail"]


def test_incremental_backups_store_only_changes_and_restore_the_chain(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(stack["config"])
    files = stack["files"].path
    assert run_cli(["backup", "--config", cfg, "--components", "files", "--type", "incremental", "--json"]) == 0
    first = _json(capsys)
    victims = sorted(p for p in files.rglob("*.bin") if not p.is_symlink())
    victims[0].write_bytes(b"changed content")
    victims[1].unlink()
    (files / "new.txt").write_text("added after the first backup")
    assert run_cli(["backup", "--config", cfg, "--components", "files", "--type", "incremental", "--json"]) == 0
    second = _json(capsys)
    assert second["stored_bytes"] < first["stored_bytes"] / 4, "only the changes are stored"
    expected = stack["files"].fingerprint()

    import shutil

    shutil.rmtree(files)  # total loss of the volume
    assert run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--id", second["id"], "--json"]) == 0
    [outcome] = _json(capsys)["components"]
    assert (outcome["status"], outcome["fidelity"]) == ("restored", "match")
    assert stack["files"].fingerprint() == expected
    assert not victims[1].exists() and (files / "new.txt").read_text() == "added after the first backup"

    # Damage in the parent set makes the child unrestorable: refused, not half-applied.
    parent_tar = next((stack["config"].parent / "repo" / "sets" / first["id"] / "files").glob("files.tar.zst"))
    data = bytearray(parent_tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    parent_tar.write_bytes(bytes(data))
    assert run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--id", second["id"], "--json"]) == 1
    assert first["id"] in _json(capsys)["components"][0]["detail"]


def test_inline_password_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("repository: {path: r}\ncomponents:\n  db: {kind: postgres, url: 'postgresql://u:s3cret@h/db'}\n")
    assert run_cli(["backup", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:3:" in err and "passwords may not be written in the URL" in err and "s3cret" not in err


def test_encrypted_backup_restores_only_with_the_right_key(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    config = yaml.safe_load(stack["config"].read_text())
    config["encryption"] = {"key_env": "DRPROOF_TEST_KEY"}
    stack["config"].write_text(yaml.safe_dump(config))
    cfg = str(stack["config"])
    key = os.urandom(32).hex()
    monkeypatch.setenv("DRPROOF_TEST_KEY", key)
    assert run_cli(["backup", "--config", cfg, "--components", "conf", "files", "--json"]) == 0
    backup_id = _json(capsys)["id"]
    manifest = (stack["config"].parent / "repo" / "sets" / backup_id / "manifest.json").read_text()
    assert "aes-256-gcm-chunked-v2" in manifest and key not in manifest

    (stack["conf"].path / "app.yaml").unlink()
    monkeypatch.setenv("DRPROOF_TEST_KEY", os.urandom(32).hex())
    assert (
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--components", "conf"]) == 1
    )  # refused
    err = capsys.readouterr().err
    assert "wrong key" in err and key not in err
    assert not (stack["conf"].path / "app.yaml").exists(), "nothing was restored with the wrong key"

    monkeypatch.setenv("DRPROOF_TEST_KEY", key)
    assert (
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--components", "conf", "--json"]) == 0
    )
    [outcome] = _json(capsys)["components"]
    assert (outcome["status"], outcome["fidelity"]) == ("restored", "match")


def test_retention_prunes_after_backup_and_dry_run_deletes_nothing(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load(stack["config"].read_text())
    cfg = str(stack["config"])
    ids = []
    for _ in range(3):
        assert run_cli(["backup", "--config", cfg, "--components", "conf", "--json"]) == 0
        ids.append(_json(capsys)["id"])
    config["retention"] = {"keep_last": 1}
    stack["config"].write_text(yaml.safe_dump(config))
    assert run_cli(["recovery", "prune", "--config", cfg, "--dry-run", "--json"]) == 0
    plan = _json(capsys)
    assert [k["id"] for k in plan["kept"]] == [ids[-1]] and {d["id"] for d in plan["deleted"]} == set(ids[:2])
    assert run_cli(["recovery", "list", "--config", cfg, "--json"]) == 0
    assert len(_json(capsys)["backups"]) == 3, "a dry run deletes nothing"
    # A backup applies the policy afterwards.
    assert run_cli(["backup", "--config", cfg, "--components", "conf", "--json"]) == 0
    newest = _json(capsys)["id"]
    assert run_cli(["recovery", "list", "--config", cfg, "--json"]) == 0
    assert [b["id"] for b in _json(capsys)["backups"]] == [newest]


def test_a_newer_set_with_a_damaged_manifest_never_takes_the_place_of_a_good_one_in_retention(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Negative control for prune reading summaries: the damaged set is not counted, the good one is kept."""
    import json

    config = yaml.safe_load(stack["config"].read_text())
    cfg = str(stack["config"])
    ids = []
    for _ in range(2):
        assert run_cli(["backup", "--config", cfg, "--components", "conf", "--json"]) == 0
        ids.append(_json(capsys)["id"])
    path = stack["config"].parent / "repo" / "sets" / ids[-1] / "manifest.json"
    doc = json.loads(path.read_text())
    doc["components"][0]["fingerprint"] = {"parts": "damaged"}
    path.write_text(json.dumps(doc))
    config["retention"] = {"keep_last": 1}
    stack["config"].write_text(yaml.safe_dump(config))
    assert run_cli(["recovery", "prune", "--config", cfg, "--dry-run", "--json"]) == 0
    plan = _json(capsys)
    assert [k["id"] for k in plan["kept"]] == [ids[0]] and plan["deleted"] == []


def test_offsite_copy_survives_loss_of_every_local_backup(
    stack: dict[str, Any], s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import boto3

    boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="offsite-drill")
    config = yaml.safe_load(stack["config"].read_text())
    config["offsite"] = {"type": "s3", "bucket": "offsite-drill", "prefix": "shop", "endpoint_url": s3_endpoint}
    stack["config"].write_text(yaml.safe_dump(config))
    cfg = str(stack["config"])
    assert run_cli(["backup", "--config", cfg, "--components", "db", "conf", "--json"]) == 0
    backup_id = _json(capsys)["id"]

    shutil.rmtree(stack["config"].parent / "repo")  # every local backup is gone
    (stack["conf"].path / "app.yaml").unlink()
    assert run_cli(["recovery", "list", "--config", cfg, "--offsite", "--json"]) == 0
    assert [b["id"] for b in _json(capsys)["backups"]] == [backup_id]
    assert run_cli(["recovery", "verify", "--config", cfg, "--offsite", "--json"]) == 0
    capsys.readouterr()
    assert (
        run_cli(
            [
                "recovery",
                "restore",
                "--in-place",
                "--yes",
                "--config",
                cfg,
                "--offsite",
                "--components",
                "conf",
                "--json",
            ]
        )
        == 0
    )
    assert _json(capsys)["components"][0]["fidelity"] == "match"
    assert run_cli(["recovery", "copy", "--config", cfg, "--from-offsite", "--id", backup_id]) == 0
    assert capsys.readouterr().out.strip() == backup_id
    assert run_cli(["recovery", "verify", "--config", cfg, "--id", backup_id]) == 0


def test_unreachable_offsite_fails_the_backup_loudly(stack: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from engine.runtime.processes import free_port

    config = yaml.safe_load(stack["config"].read_text())
    config["offsite"] = {"type": "s3", "bucket": "nowhere", "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    stack["config"].write_text(yaml.safe_dump(config))
    assert run_cli(["backup", "--config", str(stack["config"]), "--components", "conf"]) == 2
    captured = capsys.readouterr()
    backup_id = captured.out.strip()
    assert backup_id and "complete in the primary repository, but the offsite copy failed" in captured.err


def test_webhook_and_metrics_report_success_and_failure_without_leaking_the_url(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(
                {"path": self.path, "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token_url = f"http://127.0.0.1:{server.server_port}/hooks/s3cr3t-token"
        monkeypatch.setenv("DRPROOF_WEBHOOK", token_url)
        config = yaml.safe_load(stack["config"].read_text())
        config["notifications"] = {"webhook_url_env": "DRPROOF_WEBHOOK"}
        config["metrics"] = {"textfile": "drproof.prom"}
        stack["config"].write_text(yaml.safe_dump(config))
        cfg = str(stack["config"])
        assert run_cli(["backup", "--config", cfg, "--components", "conf", "--json"]) == 0
        backup_id = _json(capsys)["id"]
        assert received[-1]["path"] == "/hooks/s3cr3t-token"
        assert received[-1]["body"]["status"] == "success" and received[-1]["body"]["backup"]["id"] == backup_id
        metrics = (stack["config"].parent / "drproof.prom").read_text()
        assert "drproof_backup_success 1" in metrics and "drproof_backup_stored_bytes " in metrics

        # A failing backup is reported too; the URL (with its token) never appears in output.
        config["components"]["conf"]["path"] = str(stack["config"].parent / "no-such-dir")
        stack["config"].write_text(yaml.safe_dump(config))
        assert run_cli(["backup", "--config", cfg, "--components", "conf"]) != 0
        assert received[-1]["body"]["status"] == "failure" and received[-1]["body"]["error"]
        assert "drproof_backup_success 0" in (stack["config"].parent / "drproof.prom").read_text()
        server.shutdown()
        server.server_close()  # connections are now refused, not left hanging
        assert run_cli(["backup", "--config", cfg, "--components", "conf"]) != 0
        captured = capsys.readouterr()
        assert "notification not sent: the webhook could not be reached" in captured.err
        assert "nothing to back up" in captured.err, "a missing directory is a failed backup, not an empty one"
        assert "s3cr3t" not in captured.out + captured.err
    finally:
        server.server_close()


def test_copying_an_incremental_set_offsite_brings_its_parents(
    stack: dict[str, Any], s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    cfg = str(stack["config"])
    assert run_cli(["backup", "--config", cfg, "--components", "files", "--type", "incremental", "--json"]) == 0
    parent = _json(capsys)["id"]
    (stack["files"].path / "later.txt").write_text("after the first backup")
    assert run_cli(["backup", "--config", cfg, "--components", "files", "--type", "incremental", "--json"]) == 0
    child = _json(capsys)["id"]

    boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="chain-offsite")
    config = yaml.safe_load(stack["config"].read_text())
    config["offsite"] = {"type": "s3", "bucket": "chain-offsite", "endpoint_url": s3_endpoint}
    stack["config"].write_text(yaml.safe_dump(config))
    assert run_cli(["recovery", "copy", "--config", cfg, "--id", child]) == 0
    capsys.readouterr()
    assert run_cli(["recovery", "list", "--config", cfg, "--offsite", "--json"]) == 0
    assert [b["id"] for b in _json(capsys)["backups"]] == [parent, child]

    expected = stack["files"].fingerprint()
    import shutil

    shutil.rmtree(stack["files"].path)
    assert (
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--offsite", "--id", child, "--json"])
        == 0
    )
    assert _json(capsys)["components"][0]["fidelity"] == "match"
    assert stack["files"].fingerprint() == expected


def test_audit_log_records_backup_verify_restore_and_prune(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(stack["config"])
    repo = stack["config"].parent / "repo"
    ids = []
    for _ in range(2):
        assert run_cli(["backup", "--config", cfg, "--components", "db", "conf", "--json"]) == 0
        ids.append(_json(capsys)["id"])
    assert run_cli(["recovery", "verify", "--config", cfg, "--id", ids[1], "--json"]) == 0
    dump = next((repo / "sets" / ids[0] / "db").glob("database.dump.zst"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    assert run_cli(["recovery", "verify", "--config", cfg, "--id", ids[0], "--json"]) == 1
    assert (
        run_cli(
            [
                "recovery",
                "restore",
                "--in-place",
                "--yes",
                "--config",
                cfg,
                "--id",
                ids[0],
                "--components",
                "db",
                "--json",
            ]
        )
        == 1
    )
    assert (
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--components", "conf", "--json"]) == 0
    )
    config = yaml.safe_load(stack["config"].read_text())
    config["retention"] = {"keep_last": 1}
    stack["config"].write_text(yaml.safe_dump(config))
    assert run_cli(["recovery", "prune", "--config", cfg, "--json"]) == 0
    capsys.readouterr()

    text = (repo / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(x["event"], x["outcome"], x["backup_ids"], x["components"]) for x in lines] == [
        ("backup", "ok", [ids[0]], ["db", "conf"]),
        ("backup", "ok", [ids[1]], ["db", "conf"]),
        ("verify", "ok", [ids[1]], ["db", "conf"]),
        ("verify", "failed", [ids[0]], ["db", "conf"]),
        ("restore", "refused", [ids[0]], ["db"]),
        ("restore", "ok", [ids[1]], ["conf"]),
        ("delete", "ok", [ids[0]], ["db", "conf"]),
    ]
    assert "db/database.dump" in lines[3]["error"] and "db/database.dump" in lines[4]["error"]
    assert all(x["repository"] == f"local {repo}" and x["duration_seconds"] >= 0 for x in lines)
    assert all("error" not in x for x in lines if x["outcome"] == "ok")
    for secret in stack["secrets"]:
        assert secret not in text
