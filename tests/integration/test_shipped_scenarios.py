"""Every shipped scenario runs end to end on the local runtime and passes honestly."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli, servers_under
from tests.integration.seaweedfs import s3_drill_environment
from tests.integration.servers import require_patroni
from tests.integration.test_pgbackrest import require_pgbackrest

pytestmark = [pytest.mark.integration]

ALL_SHIPPED = sorted(SCENARIOS.glob("*.yaml"))
# Scenarios that declare the docker runtime use container faults; they run in tests/docker.
SHIPPED = [p for p in ALL_SHIPPED if (yaml.safe_load(p.read_text())["stack"].get("runtime") or "local") == "local"]


def uses_s3(scenario: Path) -> bool:
    """Whether a scenario keeps its backups in S3 (its endpoint and keys come from the environment)."""
    return (yaml.safe_load(scenario.read_text()).get("repository") or {}).get("type") == "s3"


def test_there_is_a_scenario_per_disaster() -> None:
    names = {p.stem for p in SHIPPED}
    assert "quickstart" in names and "corrupt-backup" in names
    assert len(SHIPPED) >= 12 and len(ALL_SHIPPED) > len(SHIPPED)


# Long drills are also marked slow (CI runs them; `-m "not slow"` leaves them out of a quick loop):
# the Patroni leader kill waits for the leader key's TTL and the old leader's rewind (about 30 s).
SLOW = {"postgres-patroni-leader-kill"}


@pytest.mark.parametrize(
    "scenario", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else []) for p in SHIPPED]
)
def test_shipped_scenario_passes(
    scenario: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = yaml.safe_load(scenario.read_text())
    components = doc["stack"]["components"].values()
    kinds = {c["kind"] for c in components}
    if "postgres-pgbackrest" in kinds:
        require_pgbackrest()  # Debian packages: skipped without them, a failure under CI=true
    if any((c.get("seed") or {}).get("manager") == "patroni" for c in components):
        require_patroni()
    if uses_s3(scenario):
        s3_drill_environment(request.getfixturevalue("s3_server"), monkeypatch)
    report = tmp_path / "report"
    work = tmp_path / "work"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "--work-dir", str(work), "--quiet"])
    results = read_results(report)
    failing = [
        (a["id"], a["status"], a["summary"], a["findings"]) for a in results["assertions"] if a["status"] != "pass"
    ]
    assert code == 0, (results["error"], failing)
    assert results["verdict"] == "pass"
    assert results["exit_code"] == 0
    assert results["runtime"]["runtime"] == "local"
    assert results["assertions"], "a drill with no assertions must never pass"
    assert all(a["status"] == "pass" for a in results["assertions"])

    # Every pass names its evidence.
    for a in results["assertions"]:
        assert a["evidence"], a["id"]
        assert a["source"]["line"] is not None

    # The disaster really happened and the RTO is a measurement, not a constant.
    assert results["disasters"], "each shipped scenario injects at least one fault"
    for d in results["disasters"]:
        assert d["effect"], d
    if any(a["name"] == "rto" for a in results["assertions"]):
        rto = results["measured"]["rto_seconds"]
        assert rto is not None and 0 < rto <= results["objectives"]["rto_seconds"]

    # Fingerprints were compared and equal, for every component restored from a backup
    # (a service is started again, not restored; a component no fault touched keeps its data).
    for c in results["components"]:
        if c["restored_from"] not in (None, "restarted"):
            assert c["fingerprint_at_backup"] and c["fingerprint_final"] == c["fingerprint_at_backup"], c["name"]

    # The three outputs exist; the HTML is self-contained.
    html = (report / "report.html").read_text()
    assert "PASS" in html and results["scenario"]["name"] in html
    # Self-contained: no script and nothing fetched (a checked URL may be shown as text).
    assert "<script" not in html and not re.search(r"url\(\s*['\"]?https?:", html)
    assert re.findall(r'(?:src|href)="([^"#][^"]*)"', html) in ([], ["data:,"]), "only inline assets"
    suite = ET.parse(report / "junit.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(results["assertions"])
    assert not suite.findall(".//failure") and not suite.findall(".//error")

    # Nothing is left behind: no server processes, no work files.
    assert servers_under(work) == []
    assert list(work.iterdir()) == []


def test_quickstart_covers_all_component_kinds(tmp_path: Path) -> None:
    report = tmp_path / "r"
    assert run_cli(["run", str(SCENARIOS / "quickstart.yaml"), "--report-dir", str(report), "-q"]) == 0
    results = read_results(report)
    kinds = {c["kind"] for c in results["components"]}
    assert kinds == {"postgres", "redis", "vectorstore", "volumes", "configuration"}
    assert {c["name"] for c in results["components"]} == {d["target"] for d in results["disasters"]}
    assert set(results["measured"]["components"]) == {c["name"] for c in results["components"]}
