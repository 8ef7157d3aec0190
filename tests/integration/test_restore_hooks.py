"""Standalone restores record every operator hook: its exit code and output, in the JSON
output and the audit log; a failing after_restore hook fails the restore (exit 1) with its
output, a failing before_restore hook stops it before anything is restored (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


def _configs(tmp_path: Path, hooks: dict[str, Any]) -> tuple[Path, Path]:
    live, sandbox = tmp_path / "live", tmp_path / "sandbox"
    live.mkdir()
    sandbox.mkdir()
    for i in range(5):
        (live / f"f{i}.txt").write_text(f"file {i}\n")
    prod = tmp_path / "prod.yaml"
    prod.write_text(
        yaml.safe_dump({"repository": {"path": "repo"}, "components": {"files": {"kind": "volumes", "path": "live"}}})
    )
    to = tmp_path / "sandbox.yaml"
    to.write_text(yaml.safe_dump({"components": {"files": {"kind": "volumes", "path": "sandbox"}}, "hooks": hooks}))
    return prod, to


def _restore(tmp_path: Path, hooks: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    prod, to = _configs(tmp_path, hooks)
    assert run_cli(["backup", "--config", str(prod)]) == 0
    capsys.readouterr()
    code = run_cli(["recovery", "restore", "--config", str(prod), "--to", str(to), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_hook_output_and_status_are_recorded_and_a_failing_check_hook_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = {
        "after_restore": [
            ["sh", "-c", "echo smoke test passed; ls sandbox | wc -l"],
            ["sh", "-c", "echo checking orders; echo 'orders missing' >&2; exit 4"],
            ["sh", "-c", "echo never runs"],
        ]
    }
    code, body = _restore(tmp_path, hooks, capsys)
    assert code == 1  # a failed check of the restored service is a failure, not "could not run"
    assert [c["status"] for c in body["components"]] == ["restored"]
    runs = body["hooks"]
    assert [(h["when"], h["exit_code"], h["ok"]) for h in runs] == [
        ("after_restore", 0, True),
        ("after_restore", 4, False),
    ]
    assert "smoke test passed" in runs[0]["stdout"] and runs[1]["stderr"].strip() == "orders missing"
    audit = [json.loads(line) for line in (tmp_path / "repo" / "audit.jsonl").read_text().splitlines()]
    restore = next(e for e in audit if e["event"] == "restore")
    assert restore["outcome"] == "failed" and "after_restore hook 'sh' exited 4: orders missing" in restore["error"]
    assert [h["exit_code"] for h in restore["hooks"]] == [0, 4]


def test_a_failing_before_restore_hook_restores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, body = _restore(tmp_path, {"before_restore": [["sh", "-c", "echo not now >&2; exit 1"]]}, capsys)
    assert code == 2 and body["components"] == []
    assert body["hooks"][0]["stderr"].strip() == "not now"
    assert list((tmp_path / "sandbox").iterdir()) == []  # nothing was restored
