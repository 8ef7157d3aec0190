"""Canaries in directory components (issue 16): a `.drproof-canary` file proves which backup came back.

No server is needed, so this runs as a fast test: a real drill of a volume and a
configuration directory, backed up twice with canaries, destroyed and restored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.cli import main
from engine.canary import CANARY_FILE, MAX_CANARY_BYTES, digest, plant_file, read_file
from engine.errors import ComponentError
from tests.integration.helpers import read_results


def _drill(tmp_path: Path, restore_from: str, after: list[Any] | None = None) -> Path:
    data = {
        "name": "file-canaries",
        "stack": {
            "components": {"uploads": {"kind": "volumes", "seed": {"files": 8}}, "conf": {"kind": "configuration"}}
        },
        "steps": [
            {"backup": {"name": "older", "canary": True}},
            {"backup": {"name": "nightly", "canary": True}},
            {"disaster": {"target": "uploads", "fault": "delete_files", "fraction": 1.0}},
            {"disaster": {"target": "conf", "fault": "delete"}},
            {"restore": {"from": restore_from}},
            *(after or []),
        ],
        "assertions": ["canary"],
    }
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(tmp_path: Path, scenario: Path) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report"
    code = main(["run", str(scenario), "--report-dir", str(report), "--work-dir", str(tmp_path / "work"), "-q"])
    return code, read_results(report)


def test_file_canaries_prove_the_restored_backup_and_never_show_their_value(tmp_path: Path) -> None:
    code, results = _run(tmp_path, _drill(tmp_path, "nightly"))
    by_id = {a["id"]: a for a in results["assertions"]}
    assert code == 0, by_id
    nightly = next(b for b in results["backups"] if b["name"] == "nightly")
    for name in ("uploads", "conf"):
        assert by_id[f"canary[{name}]"]["status"] == "pass"
        assert by_id[f"canary[{name}]"]["evidence"]["backup_id"] == nightly["id"]
    written = (tmp_path / "report" / "results.json").read_text() + (tmp_path / "report" / "report.html").read_text()
    assert not re.search(r"[0-9a-f]{32}@20", written), "the canary's value never appears in the reports"


def test_the_canary_names_the_backup_that_was_restored(tmp_path: Path) -> None:
    """Restoring the older set: its canary is what comes back, and the evidence names that set."""
    code, results = _run(tmp_path, _drill(tmp_path, "older"))
    by_id = {a["id"]: a for a in results["assertions"]}
    older = next(b["id"] for b in results["backups"] if b["name"] == "older")
    assert code == 0, by_id
    assert by_id["canary[uploads]"]["evidence"]["backup_id"] == older == by_id["canary[conf]"]["evidence"]["backup_id"]


def test_a_canary_overwritten_after_the_restore_fails(tmp_path: Path) -> None:
    """Negative control: the restored canary file no longer holds the backup's value."""
    code, results = _run(
        tmp_path,
        _drill(tmp_path, "nightly", [{"disaster": {"target": "uploads", "fault": "encrypt_files", "fraction": 1.0}}]),
    )
    by_id = {a["id"]: a for a in results["assertions"]}
    assert code == 1 and by_id["canary[uploads]"]["status"] == "fail", by_id["canary[uploads]"]
    assert by_id["canary[conf]"]["status"] == "pass"


def test_plant_and_read_are_atomic_private_and_refuse_what_is_not_ours(tmp_path: Path) -> None:
    where = plant_file(tmp_path, "v1@2026")
    assert CANARY_FILE in where and read_file(tmp_path) == "v1@2026"
    assert (tmp_path / CANARY_FILE).stat().st_mode & 0o777 == 0o600
    plant_file(tmp_path, "v2@2026")
    assert read_file(tmp_path) == "v2@2026" and sorted(p.name for p in tmp_path.iterdir()) == [CANARY_FILE]
    assert digest("v2@2026") != digest("v1@2026")
    (tmp_path / CANARY_FILE).write_bytes(b"x" * (MAX_CANARY_BYTES + 1))
    assert read_file(tmp_path) is None
    (tmp_path / CANARY_FILE).unlink()
    os.symlink("/etc/hostname", tmp_path / CANARY_FILE)
    with pytest.raises(ComponentError):
        read_file(tmp_path)  # a link is not followed (O_NOFOLLOW refuses it)
    assert read_file(tmp_path / "missing") is None
