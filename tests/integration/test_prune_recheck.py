"""Prune re-checks what it keeps: a set damaged after its backup-time verification never costs the good chain.

Review finding 3 (review-pitr): the newest set was damaged after the backup verified it; prune trusted the
old mark, keep_last kept the damaged set and deleted the older full and its incremental, the only
restorable chain, and exited 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


def _config(tmp_path: Path, keep_last: int | None) -> str:
    key = tmp_path / "key"
    if not key.exists():
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
    doc: dict[str, Any] = {
        "repository": {"type": "local", "path": str(tmp_path / "repo")},
        "encryption": {"key_file": str(key)},
        "components": {"files": {"kind": "volumes", "path": str(tmp_path / "vol")}},
    }
    if keep_last is not None:
        doc["retention"] = {"keep_last": keep_last}
    path = tmp_path / f"cfg{keep_last}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _three_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """A full, its incremental, then a newer full: ids oldest first."""
    vol = tmp_path / "vol"
    vol.mkdir()
    for i in range(4):
        (vol / f"f{i}").write_bytes(os.urandom(60_000))
    cfg = _config(tmp_path, None)
    ids = []
    for kind in ("full", "incremental", "full"):
        (vol / f"new-{len(ids)}").write_text("x")
        assert run_cli(["backup", "--config", cfg, "--type", kind, "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    return ids


def _listed(cfg: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert run_cli(["recovery", "list", "--config", cfg, "--json"]) == 0
    return [b["id"] for b in json.loads(capsys.readouterr().out)["backups"]]


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "repo" / "audit.jsonl").read_text().splitlines()]


def _damage(tmp_path: Path, backup_id: str) -> None:
    stored = sorted((tmp_path / "repo" / "sets" / backup_id / "files").glob("*.zst"))[0]
    with stored.open("r+b") as f:
        f.seek(5000)
        f.write(b"XXXXXXXX")


def test_prune_deletes_nothing_when_the_newest_kept_set_is_damaged_after_its_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, incremental, newest = _three_sets(tmp_path, capsys)
    _damage(tmp_path, newest)  # bit rot after the backup verified it: verified.json still says ok
    cfg = _config(tmp_path, 1)

    lines_before = _audit(tmp_path)
    assert run_cli(["recovery", "prune", "--config", cfg, "--dry-run"]) == 1
    dry = capsys.readouterr().err
    assert newest in dry and "damaged" in dry and "deleted nothing" in dry
    marks = json.loads((tmp_path / "repo" / "sets" / newest / "verified.json").read_text())
    assert marks["ok"] is True, "a dry run records nothing"
    assert _audit(tmp_path) == lines_before, "a dry run records nothing in the audit log either"

    assert run_cli(["recovery", "prune", "--config", cfg]) == 1
    said = capsys.readouterr().err
    assert newest in said and "files/files.tar" in said and "sha256" in said
    assert f"{incremental} (only verified backup of files left)" in said, "names what is still restorable"
    # The refusal is in the audit trail: which deletions were refused, and the damage that stopped them.
    [line] = _audit(tmp_path)[len(lines_before) :]
    assert (line["event"], line["outcome"], line["reason"]) == ("delete", "refused", "retention policy")
    assert sorted(line["backup_ids"]) == sorted([full, incremental])
    assert list(line["damaged"]) == [newest] and "sha256" in line["damaged"][newest][0]
    assert "prune deleted nothing" in line["error"] and newest in line["error"]
    assert _listed(cfg, capsys) == [full, incremental, newest], "nothing was deleted"

    # The damaged set lost its mark: the next prune keeps the older restorable chain and says so quietly.
    assert run_cli(["recovery", "prune", "--config", cfg, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {k["id"] for k in result["kept"]} == {full, incremental, newest} and result["deleted"] == []
    scratch = tmp_path / "scratch.yaml"
    scratch.write_text(yaml.safe_dump({"components": {"files": {"kind": "volumes", "path": str(tmp_path / "out")}}}))
    assert run_cli(["recovery", "restore", "--config", cfg, "--to", str(scratch), "--id", incremental]) == 0


def test_prune_of_a_healthy_repository_deletes_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Quiet control: nothing damaged, keep_last 1 keeps the newest and deletes the older chain, exit 0."""
    full, incremental, newest = _three_sets(tmp_path, capsys)
    cfg = _config(tmp_path, 1)
    assert run_cli(["recovery", "prune", "--config", cfg, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in result["kept"]] == [newest]
    assert {d["id"] for d in result["deleted"]} == {full, incremental}
    assert _listed(cfg, capsys) == [newest]
    assert [line["outcome"] for line in _audit(tmp_path) if line["event"] == "delete"] == ["ok", "ok"]


def test_backup_whose_retention_finds_an_older_kept_set_damaged_keeps_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prune after a backup re-checks the other components' sets it keeps; the new one is not read twice."""
    *_, newest = _three_sets(tmp_path, capsys)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a").write_text("a")
    doc = yaml.safe_load(Path(_config(tmp_path, 1)).read_text())
    doc["components"]["other"] = {"kind": "volumes", "path": str(tmp_path / "other")}
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    _damage(tmp_path, newest)  # the newest set of 'files'; the new backup below holds 'other' only
    assert run_cli(["backup", "--config", str(cfg), "--components", "other"]) == 1
    said = capsys.readouterr()
    assert "is complete and verified, but retention prune deleted nothing" in said.err and newest in said.err
    assert len(_listed(str(cfg), capsys)) == 4
    refused = [line for line in _audit(tmp_path) if line["outcome"] == "refused"]
    assert [(line["event"], list(line["damaged"])) for line in refused] == [("delete", [newest])]
