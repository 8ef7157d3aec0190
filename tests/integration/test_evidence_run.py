"""A real drill signs its reports, and one flipped byte in report.html is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SCENARIOS
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


def test_signed_drill_verifies_until_a_byte_of_the_report_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub, report = tmp_path / "signing.key", tmp_path / "signing.pub", tmp_path / "report"
    assert run_cli(["keys", "init", "--private", str(key), "--public", str(pub)]) == 0
    scenario = SCENARIOS / "postgres-drop-table.yaml"
    code = run_cli(
        [
            "run",
            str(scenario),
            "--report-dir",
            str(report),
            "--work-dir",
            str(tmp_path / "work"),
            "--sign-key",
            str(key),
        ]
    )
    assert code == 0
    assert (report / "evidence.json").is_file() and (report / "evidence.sig").is_file()
    capsys.readouterr()
    assert run_cli(["evidence", "verify", str(report), "--public-key", str(pub)]) == 0

    html = bytearray((report / "report.html").read_bytes())
    html[len(html) // 2] ^= 0x01
    (report / "report.html").write_bytes(bytes(html))
    assert run_cli(["evidence", "verify", str(report), "--public-key", str(pub)]) == 1
    problems = capsys.readouterr().out.splitlines()
    assert len(problems) == 1 and problems[0].startswith("changed: report.html")
