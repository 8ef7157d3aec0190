"""Shipped scenarios as a fleet, four at a time, on real servers (issue 20).

Four drills at once start their own PostgreSQL and Redis servers on ports each picks; the
test holds that none collides with another (every drill passes, as it does alone), that a
failing and an invalid drill rank first, that the combined JUnit counts every drill, and
that no server outlives the fleet.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import SCENARIOS
from tests.integration.helpers import run_cli, servers_under
from tests.integration.seaweedfs import s3_drill_environment
from tests.integration.servers import require_patroni, require_pgbackrest
from tests.integration.test_shipped_scenarios import SHIPPED, uses_s3
from tests.test_pytest_plugin import INVALID, SABOTAGED

pytestmark = [pytest.mark.integration]

# Fast shipped drills of every server kind: PostgreSQL, Redis, a vector store, files.
FAST = [
    "postgres-delete-all-rows",
    "redis-flushall",
    "vectorstore-swap-model",
    "volumes-delete-files",
    "configuration-delete",
]


def _run_fleet(files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], Path]:
    out, work = tmp_path / "out", tmp_path / "work"
    code = run_cli(["run", *map(str, files), "--parallel", "4", "--report-dir", str(out), "--work-dir", str(work)])
    card = capsys.readouterr().out.strip().splitlines()
    assert servers_under(work) == [], "a server outlived its drill"
    return code, card, out


def _failures(card: list[str], out: Path) -> str:
    """The scorecard and the log of every drill that did not pass: a rare stall under
    load is diagnosed from CI's output alone (the work directories are gone by then)."""
    logs = [
        f"--- {name}.log ---\n" + (out / f"{name}.log").read_text(errors="replace")
        for line in card
        if not line.startswith("PASS") and len(line.split()) > 1
        for name in [line.split()[1]]
        if (out / f"{name}.log").is_file()
    ]
    return "\n".join(card + logs)


def _suites(out: Path) -> list[ET.Element]:
    root = ET.parse(out / "junit.xml").getroot()
    suites = root.findall("testsuite")
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key, "-1")) == sum(int(s.get(key, "0")) for s in suites)
    return suites


def test_shipped_drills_four_at_a_time_with_a_failing_and_an_invalid_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "sabotaged.yaml").write_text(SABOTAGED, encoding="utf-8")
    (extra / "invalid.yaml").write_text(INVALID, encoding="utf-8")
    files = [SCENARIOS / f"{name}.yaml" for name in FAST] + [extra / "sabotaged.yaml", extra / "invalid.yaml"]
    code, card, out = _run_fleet(files, tmp_path, capsys)
    assert code == 2
    assert [line.split()[0] for line in card] == ["ERROR", "FAIL"] + ["PASS"] * len(FAST), card
    assert card[0].split()[1] == "invalid" and card[1].split()[1] == "sabotaged"
    assert {line.split()[1] for line in card[2:]} == set(FAST)
    assert all("RTO" in line and "within" in line for line in card[2:]), card  # measured, against the objective
    suites = _suites(out)
    assert len(suites) == len(files)
    assert (out / "index.html").is_file()


@pytest.mark.slow
def test_every_shipped_local_scenario_passes_four_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's acceptance: ``--parallel 4`` over the shipped scenarios passes with a scorecard.

    The Docker-runtime scenarios are left to tests/docker, as in test_shipped_scenarios.
    """
    require_pgbackrest()  # postgres-pgbackrest is among them: skipped without it, a failure under CI=true
    require_patroni()  # and postgres-patroni-leader-kill
    if any(map(uses_s3, SHIPPED)):  # the S3 drills read their endpoint and keys from the environment
        s3_drill_environment(request.getfixturevalue("s3_server"), monkeypatch)
    code, card, out = _run_fleet(SHIPPED, tmp_path, capsys)
    assert code == 0, _failures(card, out)
    assert len(card) == len(SHIPPED) and all(line.startswith("PASS") for line in card), _failures(card, out)
    assert len(_suites(out)) == len(SHIPPED)
