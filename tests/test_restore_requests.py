"""The rules a restore follows before it reads a byte: targets, overlaps, exit codes, child environments."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from drills.backup_config import RestoreTargets, load_config
from drills.recovery import NOT_COMPARED_PITR, HookRun, Request, RestoreOutcome, RestoreResult, exit_code
from engine.childenv import operator_environment, tool_environment
from engine.errors import ConfigError
from engine.manifest import ComponentRecord, Manifest


def _config(tmp_path: Path, name: str, pg_port: int, data: str, model: type = RestoreTargets) -> object:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "repository: {path: repo}\n"
        "components:\n"
        f"  db: {{kind: postgres, url: 'postgresql://postgres@localhost:{pg_port}/shop'}}\n"
        f"  files: {{kind: volumes, path: {data}}}\n"
    )
    return load_config(path, model)


def _manifest() -> Manifest:
    now = datetime.now(UTC)
    return Manifest(
        id="20261202T000000Z-abcdef",
        created_at=now,
        completed_at=now,
        components=[
            ComponentRecord(name="db", kind="postgres", artifacts=[]),
            ComponentRecord(name="files", kind="volumes", artifacts=[]),
        ],
        artifacts=[],
    )


def test_a_restore_without_a_target_is_refused(tmp_path: Path) -> None:
    prod = _config(tmp_path, "prod", 5432, "data")
    with pytest.raises(ConfigError, match="needs a target"):
        Request.build(prod, _manifest(), None, targets=None, in_place=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("port", "data", "clash"),
    [
        (5432, "elsewhere", "db"),  # the same server and database (localhost is 127.0.0.1)
        (6543, "data", "files"),  # the same directory
        (6543, "data/sub", "files"),  # inside the production directory
        (6543, ".", "files"),  # containing it
    ],
)
def test_to_may_not_name_production(tmp_path: Path, port: int, data: str, clash: str) -> None:
    (tmp_path / "data").mkdir()
    prod = _config(tmp_path, "prod", 5432, "data")
    to = _config(tmp_path, "to", port, data)
    with pytest.raises(ConfigError, match=f"production component '{clash}'"):
        Request.build(prod, _manifest(), None, targets=to, in_place=False)  # type: ignore[arg-type]


def test_quiet_control_a_real_sandbox_is_accepted(tmp_path: Path) -> None:
    prod = _config(tmp_path, "prod", 5432, "data")
    to = _config(tmp_path, "to", 6543, "sandbox")
    request = Request.build(prod, _manifest(), None, targets=to, in_place=False)  # type: ignore[arg-type]
    assert request.names == ["db", "files"] and not request.in_place


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([("restored", "match")], 0),
        ([("restored", "match"), ("restored", "differs")], 1),
        ([("refused", "not compared")], 1),
        ([("restored", "match"), ("failed", "not compared")], 2),
        ([("restored", NOT_COMPARED_PITR)], 2),
        ([("restored", "not compared: the backup holds no fingerprint")], 2),
        ([("refused", "not compared"), ("restored", NOT_COMPARED_PITR)], 2),
    ],
)
def test_only_a_proven_match_is_green(outcomes: list[tuple[str, str]], code: int) -> None:
    result = RestoreResult([RestoreOutcome(f"c{i}", s, "", f) for i, (s, f) in enumerate(outcomes)])
    assert exit_code(result) == code
    # The operator's own check failing after a restore never leaves it green.
    result.hooks.append(HookRun("after_restore", ["smoke-test"], 1, 0.1))
    assert exit_code(result) == max(code, 1)
    before = RestoreResult([], [HookRun("before_restore", ["stop-app"], 3, 0.1)])
    assert exit_code(before) == 2


def test_tools_get_an_allow_list_and_hooks_lose_named_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRPROOF_KEY", "k" * 64)
    monkeypatch.setenv("SHOP_DB_PASSWORD", "pw-db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = tool_environment({"PGPASSWORD": "own"}, prefixes=("PG",))
    assert env["PGPASSWORD"] == "own" and env["PGSSLMODE"] == "verify-full" and env["LC_ALL"] == "C.UTF-8"
    assert "DRPROOF_KEY" not in env and "SHOP_DB_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    hooks = operator_environment(["SHOP_DB_PASSWORD"])
    assert "SHOP_DB_PASSWORD" not in hooks and "DRPROOF_KEY" not in hooks
    assert hooks["AWS_SECRET_ACCESS_KEY"] == "aws"  # the operator's own command may need its own credentials
