"""``drproof backup --dry-run`` checks what a backup needs and writes nothing (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.runtime.local import LocalRuntime
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


def test_dry_run_checks_every_component_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("a")
    with LocalRuntime(tmp_path / "rt") as rt:
        pg, rd = rt.postgres("db"), rt.redis("cache")
        monkeypatch.setenv("PG_PW", pg.password)
        monkeypatch.setenv("REDIS_PW", "wrong-password")
        config = {
            "repository": {"path": str(tmp_path / "repo")},
            "components": {
                "db": {
                    "kind": "postgres",
                    "url": f"postgresql://postgres@127.0.0.1:{pg.port}/postgres",
                    "password_env": "PG_PW",
                },
                "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{rd.port}", "password_env": "REDIS_PW"},
                "wrong-port": {"kind": "redis", "url": f"redis://127.0.0.1:{pg.port}"},
                "files": {"kind": "volumes", "path": str(files)},
            },
        }
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
        code = run_cli(["backup", "--config", str(tmp_path / "cfg.yaml"), "--dry-run", "--json"])
    checks = {c["what"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 2
    assert checks["db (postgres)"]["ok"] and "pg_dump" in checks["db (postgres)"]["detail"]
    assert checks["files (volumes)"]["ok"]
    assert not checks["cache (redis)"]["ok"] and "password" in checks["cache (redis)"]["detail"].lower()
    assert not checks["wrong-port (redis)"]["ok"]
    assert "does not speak the Redis protocol" in checks["wrong-port (redis)"]["detail"]
    assert not (tmp_path / "repo").exists(), "nothing was written: no repository, no audit log"


def test_unknown_components_get_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cfg.yaml").write_text(
        yaml.safe_dump({"repository": {"path": "repo"}, "components": {"sessions": {"kind": "volumes", "path": "."}}})
    )
    code = run_cli(["backup", "--config", str(tmp_path / "cfg.yaml"), "--components", "sesions"])
    assert code == 2 and "did you mean 'sessions'?" in capsys.readouterr().err
