"""No child process of the standalone engine holds a secret it does not need.

A backup and a restore run with the encryption key, a webhook URL with a token and both
server passwords in drproof's environment, as operators give them; meanwhile every child
process (pg_dump, pg_restore, psql, hooks) has its environment read from /proc every few
milliseconds. The key and the token must never be there; a tool of one server must not
hold the other server's password; a hook gets neither.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from engine import witness
from engine.runtime.processes import OWNER_ENV
from tests.integration.helpers import run_cli
from tests.integration.test_standalone_engine import stack  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration]


class _Sampler(threading.Thread):
    """Children started while it runs; those already there (a session's SeaweedFS) are the tests', not drproof's."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[str, dict[str, str]]] = {}
        self.stop = threading.Event()
        self.before = {c.pid for c in psutil.Process(os.getpid()).children(recursive=True)}

    def run(self) -> None:
        me = psutil.Process(os.getpid())
        while not self.stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if child.pid not in self.seen and child.pid not in self.before:
                        self.seen[child.pid] = (" ".join(child.cmdline()), child.environ())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self.stop.wait(0.002)


def test_children_get_only_the_secret_they_need(
    stack: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    key = secrets.token_hex(32)
    token = "tok-" + secrets.token_hex(12)
    monkeypatch.setenv("DRPROOF_KEY", key)
    monkeypatch.setenv("DRPROOF_WEBHOOK", f"http://127.0.0.1:9/hooks/{token}")
    hook_out = tmp_path / "hook-env"
    config = yaml.safe_load(stack["config"].read_text())
    config["encryption"] = {"key_env": "DRPROOF_KEY"}
    config["notifications"] = {"webhook_url_env": "DRPROOF_WEBHOOK"}
    config["hooks"] = {"after_restore": [["sh", "-c", f"env > {hook_out}"]]}
    stack["config"].write_text(yaml.safe_dump(config))
    pg_password, redis_password = stack["secrets"]

    sampler = _Sampler()
    sampler.start()
    try:
        assert run_cli(["backup", "--config", str(stack["config"])]) == 0
        code = run_cli(
            ["recovery", "restore", "--in-place", "--yes", "--config", str(stack["config"]), "--components", "db"]
        )
        assert code == 0, capsys.readouterr().err
    finally:
        sampler.stop.set()
        sampler.join(5)

    tools = {
        pid: seen for pid, seen in sampler.seen.items() if any(t in seen[0] for t in ("pg_dump", "pg_restore", "psql"))
    }
    assert tools, "no PostgreSQL tool was seen running"
    for _pid, (cmd, env) in sampler.seen.items():
        values = "\n".join(env.values())
        assert key not in values and token not in values, cmd
        # The one DRPROOF_ variable a server carries is its owner mark (pid and start time, no
        # secret), by which `drproof clean` finds servers a killed drproof left; the test
        # session's own state directory (tests/conftest.py) is no secret either, and a
        # process the test harness starts (pytest-xdist's) carries it.
        allowed = (OWNER_ENV, witness.STATE_ENV)
        assert not any(k.startswith("DRPROOF_") and k not in allowed for k in env), cmd
    for cmd, env in tools.values():
        assert redis_password not in "\n".join(env.values()), f"{cmd} holds the Redis password"
        # A tool that talks to the server gets its password; one that reads a file (the
        # dump's sequences) gets none.
        assert env.get("PGPASSWORD") in (pg_password, None), cmd
    hook_env = hook_out.read_text()
    for secret in (key, token, pg_password, redis_password):
        assert secret not in hook_env, "the hook got a secret the configuration names"
