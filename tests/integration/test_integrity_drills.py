"""The shipped repository-forgery drills prove what they claim, and only because of signing.

Each shipped scenario passes (tests/integration/test_shipped_scenarios.py runs them all);
here each is also run with its repository unsigned, where the forgeries that only a
signature can catch must make the drill fail, and with a wrong `refused_by`, where a
refusal by another check than the one declared must fail it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]


def _run(tmp_path: Path, name: str, edit: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    text = (SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8")
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text, encoding="utf-8")
    code = run_cli(["run", str(scenario), "--report-dir", str(tmp_path / "report"), "-q"])
    return code, read_results(tmp_path / "report")


def _assertion(results: dict[str, Any], rid: str) -> dict[str, Any]:
    return next(a for a in results["assertions"] if a["id"] == rid)


def test_a_forged_artifact_is_refused_by_the_signature_and_named(tmp_path: Path) -> None:
    code, results = _run(tmp_path, "repository-forge-artifact")
    assert code == 0, [a["findings"] for a in results["assertions"]]
    forged = next(d for d in results["disasters"] if d["fault"] == "forge_artifact")["effect"]
    assert forged["stored_digest_check"].startswith("passes")
    integrity = _assertion(results, "repository_integrity")
    assert integrity["status"] == "pass" and f"{forged['backup_id']} (altered)" in integrity["summary"]
    refusals = [r for r in _assertion(results, "timeline")["evidence"]["restores"] if r["outcome"] == "refused"]
    assert [r["refused_by"] for r in refusals] == ["signature", "chain"]
    assert results["repository"]["signing"].startswith("ed25519") and "integrity" not in results["repository"]


def test_without_signing_the_forgery_gets_past_every_repository_check(tmp_path: Path) -> None:
    code, results = _run(tmp_path, "repository-forge-artifact", ("  signing: true", "  signing: false"))
    assert code == 1
    timeline = _assertion(results, "timeline")
    assert timeline["status"] == "fail"
    assert any("refused by the fingerprint check, not by signature as declared" in f for f in timeline["findings"])
    assert _assertion(results, "repository_integrity")["status"] == "not_compared"
    assert results["repository"]["integrity"].startswith("NOT proven against anyone who can write the repository")


def test_without_signing_a_replayed_set_is_restored_as_the_latest(tmp_path: Path) -> None:
    code, results = _run(tmp_path, "repository-replay-set", ("  signing: true", "  signing: false"))
    assert code == 1
    findings = _assertion(results, "timeline")["findings"]
    assert any("was expected to be refused but ok" in f for f in findings), findings


def test_a_refusal_by_another_check_than_declared_fails_the_drill(tmp_path: Path) -> None:
    edit = (
        "{from: latest, expect: refused, refused_by: signature}",
        "{from: latest, expect: refused, refused_by: artifact}",
    )
    code, results = _run(tmp_path, "repository-forge-artifact", edit)
    assert code == 1
    findings = _assertion(results, "timeline")["findings"]
    assert any("refused by the signature check, not by artifact as declared" in f for f in findings), findings


def test_the_hidden_newest_set_is_named_and_latest_refused(tmp_path: Path) -> None:
    code, results = _run(tmp_path, "repository-delete-manifest")
    assert code == 0
    hidden = next(d for d in results["disasters"] if d["fault"] == "delete_manifest")["effect"]["backup_id"]
    newest = next(b for b in results["backups"] if b["name"] == "newest")["id"]
    assert hidden == newest
    assert f"{newest} (manifest-missing)" in _assertion(results, "repository_integrity")["summary"]


def test_retention_and_latest_keep_the_real_newest_when_a_clock_ran_ahead(tmp_path: Path) -> None:
    code, results = _run(tmp_path, "repository-clock-skew")
    assert code == 0
    ids = {b["name"]: b["id"] for b in results["backups"]}
    prune = next(p for p in results["phases"] if p["kind"] == "prune")
    assert [k["id"] for k in prune["data"]["kept"]] == [ids["newest"]]
    assert {d["id"] for d in prune["data"]["deleted"]} == {ids["first"], ids["skewed"]}
    assert any(f.startswith(f"future-dated: {ids['skewed']}") for f in prune["data"]["chain_findings"])
    restored = next(p for p in results["phases"] if p["kind"] == "restore")
    assert restored["data"]["backup_id"] == ids["newest"] and restored["status"] == "ok"
    assert _assertion(results, "fidelity[app-config]")["status"] == "pass"
