"""Planted secrets never appear in anything the standalone engine writes or prints.

Database and cache passwords, the encryption key and a webhook URL carrying a token are
given to drproof the way operators do (environment variables); then every command is
run, successes and failures alike, and every byte of output is searched for them:
stdout, stderr, the audit log, the metrics file and every file in the repository.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import run_cli
from tests.integration.test_standalone_engine import stack  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration]


def _every_file(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_no_secret_in_any_output_of_any_command(
    stack: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = secrets.token_hex(32)
    token = "tok-" + secrets.token_hex(12)
    monkeypatch.setenv("DRPROOF_KEY", key)
    monkeypatch.setenv("DRPROOF_WEBHOOK", f"http://127.0.0.1:9/hooks/{token}")  # nothing listens: a failure path
    planted = [key, token, *stack["secrets"]]
    config = yaml.safe_load(stack["config"].read_text())
    config["encryption"] = {"key_env": "DRPROOF_KEY"}
    config["notifications"] = {"webhook_url_env": "DRPROOF_WEBHOOK"}
    config["metrics"] = {"textfile": "drproof.prom"}
    config["retention"] = {"keep_last": 5}
    stack["config"].write_text(yaml.safe_dump(config))
    cfg = str(stack["config"])

    codes = [
        run_cli(["backup", "--config", cfg]),
        run_cli(["backup", "--config", cfg, "--json"]),
        run_cli(["recovery", "list", "--config", cfg, "--json"]),
        run_cli(["recovery", "verify", "--config", cfg]),
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg]),
        run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--json"]),
        run_cli(["recovery", "prune", "--config", cfg, "--dry-run"]),
    ]
    assert codes == [0, 0, 0, 0, 0, 0, 0]
    # Failure paths print the most: a wrong key and a wrong database password.
    monkeypatch.setenv("DRPROOF_KEY", secrets.token_hex(32))
    assert run_cli(["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--components", "conf"]) == 1
    monkeypatch.setenv("DRPROOF_KEY", key)
    monkeypatch.setenv("SHOP_DB_PASSWORD", "wrong-" + secrets.token_hex(8))
    assert run_cli(["backup", "--config", cfg, "--components", "db"]) == 2

    captured = capsys.readouterr()
    text = (captured.out + captured.err).encode()
    base = stack["config"].parent
    written = [base / "repo", base / "drproof.prom"]  # the repository holds audit.jsonl too
    assert (base / "repo" / "audit.jsonl").is_file() and (base / "drproof.prom").is_file()
    files = b"".join(_every_file(p) if p.is_dir() else p.read_bytes() for p in written)
    for secret in planted:
        assert secret.encode() not in text, "a secret was printed"
        assert secret.encode() not in files, "a secret was written"
