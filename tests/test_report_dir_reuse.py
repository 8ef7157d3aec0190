"""One run's reports are never mixed with another's in a reused --report-dir (found by review).

Re-running into the same directory is supported (each file is replaced whole), but a run
replaced only the files it wrote: a scenario writing only results.json left the earlier
run's PASS report.html and junit.xml beside its FAIL, and a run into a signed directory
left evidence.json claiming the new, unsigned files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drills.cli import main
from engine.evidence import init_keys
from tests.test_pytest_plugin import PASSING, SABOTAGED

JSON_ONLY = "report:\n  formats: [json]\n"


def _run(tmp_path: Path, name: str, text: str, out: Path, *extra: str) -> int:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text, encoding="utf-8")
    return main(["run", str(scenario), "--report-dir", str(out), "--quiet", *extra])


def test_a_json_only_run_leaves_no_earlier_pass_beside_its_fail(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    assert _run(tmp_path, "roundtrip", PASSING, out) == 0
    assert ET.parse(out / "junit.xml").getroot().get("failures") == "0"
    assert _run(tmp_path, "sabotaged", SABOTAGED + JSON_ONLY, out) == 1
    assert '"verdict": "fail"' in (out / "results.json").read_text(encoding="utf-8")
    assert not (out / "junit.xml").exists() and not (out / "report.html").exists()


def test_an_unsigned_run_into_signed_evidence_is_refused_before_the_drill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = tmp_path / "k.pem", tmp_path / "k.pub"
    init_keys(key, public)
    out = tmp_path / "signed"
    assert _run(tmp_path, "roundtrip", PASSING, out, "--sign-key", str(key)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert _run(tmp_path, "sabotaged", SABOTAGED, out) == 2
    assert "holds the signed evidence of an earlier run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(["evidence", "verify", str(out), "--public-key", str(public)]) == 0
    # Signing again replaces the evidence with its own: a signed schedule may reuse its directory.
    assert _run(tmp_path, "roundtrip", PASSING, out, "--sign-key", str(key)) == 0
    assert main(["evidence", "verify", str(out), "--public-key", str(public)]) == 0


def test_the_quiet_control_rerunning_into_the_same_directory_still_works(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    assert _run(tmp_path, "roundtrip", PASSING, out) == 0
    assert _run(tmp_path, "roundtrip", PASSING, out) == 0
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.html", "junit.xml"}
    assert ET.parse(out / "junit.xml").getroot().get("errors") == "0"
