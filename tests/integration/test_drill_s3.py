"""Drills on an S3 repository (SeaweedFS on loopback): the shipped Object Lock scenario and its controls.

scenarios/s3-delete-locked-object.yaml passes on a bucket with Object Lock because the
store refuses the delete (the quiet control is the shipped-scenario test); here the same
drill on a local repository and on a versioned bucket without the lock loses the
artifact, and must fail (negative controls). A drill's S3 configuration mistakes are
errors that name the variable or bucket, never a silent local run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli
from tests.integration.seaweedfs import SeaweedFS, bucket_name, s3_drill_environment

pytestmark = [pytest.mark.integration]

LOCKED = SCENARIOS / "s3-delete-locked-object.yaml"


def _run(doc: dict[str, Any], tmp_path: Path, name: str) -> tuple[int, dict[str, Any]]:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(yaml.safe_dump(doc))
    report = tmp_path / f"report-{name}"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "--work-dir", str(tmp_path / "work"), "-q"])
    return code, read_results(report)


def _attempt(results: dict[str, Any]) -> dict[str, Any]:
    return next(d["effect"] for d in results["disasters"] if d["fault"] == "delete_locked_object")


def test_locked_object_refused_on_s3_with_object_lock(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_drill_environment(s3_server, monkeypatch)
    code, results = _run(yaml.safe_load(LOCKED.read_text()), tmp_path, "locked")
    assert code == 0 and results["verdict"] == "pass", results["error"]
    effect = _attempt(results)
    assert effect["attempt"] == "refused" and effect["after"] == "intact"
    assert "AccessDenied" in effect["refused_by"] and "artifact" not in effect
    assert [h["mode"] for h in effect["locked"]] == ["COMPLIANCE"]
    assert results["repository"]["object_lock"] == "COMPLIANCE for 1 day"
    assert results["repository"]["prefix"].startswith("drills/drproof-s3-delete-locked-object-")


def test_the_same_drill_fails_where_nothing_locks_the_object(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_drill_environment(s3_server, monkeypatch)
    doc = yaml.safe_load(LOCKED.read_text())
    local = {**doc, "repository": {"type": "local"}}
    code, results = _run(local, tmp_path, "local")
    assert code == 1 and results["verdict"] == "fail"
    assert _attempt(results)["attempt"] == "deleted" and _attempt(results)["after"] == "missing"

    bucket = bucket_name("drill-unlocked")
    client: Any = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    unlocked = {**doc, "repository": {k: v for k, v in doc["repository"].items() if k != "object_lock"}}
    unlocked["repository"]["bucket"] = bucket
    code, results = _run(unlocked, tmp_path, "unlocked")
    assert code == 1 and results["verdict"] == "fail"
    assert _attempt(results)["attempt"] == "deleted" and _attempt(results)["after"] == "missing"
    failing = {a["id"] for a in results["assertions"] if a["status"] != "pass"}
    assert "fidelity[uploads]" in failing, results["assertions"]


def test_s3_drill_mistakes_are_errors_that_say_what_to_fix(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_drill_environment(s3_server, monkeypatch)
    doc = yaml.safe_load(LOCKED.read_text())
    monkeypatch.delenv("DRPROOF_S3_SECRET")
    code, results = _run(doc, tmp_path, "nokey")
    assert code == 2 and "DRPROOF_S3_SECRET is not set" in results["error"], results["error"]
    assert s3_server.secret_key not in yaml.safe_dump(results)

    s3_drill_environment(s3_server, monkeypatch)
    plain = bucket_name("drill-nolock")
    client: Any = s3_server.client()
    client.create_bucket(Bucket=plain)
    doc["repository"]["bucket"] = plain
    code, results = _run(doc, tmp_path, "nolock")
    assert code == 2 and f"S3 bucket {plain}" in results["error"], results["error"]
    assert "does not have Object Lock enabled" in results["error"]
    assert client.list_objects_v2(Bucket=plain).get("KeyCount", 0) == 0
