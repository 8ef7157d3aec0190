"""The application kind's image form on a real engine: the shipped full-system drill with
its service in a container, and its negative controls.

The shipped scenario itself also runs in test_docker_runtime's every-shipped-scenario test;
here it is checked in detail (the fault hit the container, the service's readiness is in
the RTO, no password left the container's environment) and sabotaged twice: a service
that serves wrong data, and a service that does not come back, must each be a FAIL
(exit 1), never a pass. Nothing of any run may be left behind.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.runtime.docker_app import DockerServiceContainer
from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import unavailable

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SCENARIO = "docker-full-system-image.yaml"
IMAGE = "drproof-local/drproof:0.1.0"


@pytest.fixture
def app_image(docker_engine: Any) -> str:
    """The drproof image .ci/run builds before the tests (tests/docker/build-drproof-image.sh)."""
    from docker.errors import ImageNotFound

    try:
        docker_engine.images.get(IMAGE)
    except ImageNotFound:
        unavailable(f"image {IMAGE} is missing; build it with: bash tests/docker/build-drproof-image.sh")
    return IMAGE


def _copy(tmp_path: Path) -> Path:
    """The shipped scenario and its service's directory, to sabotage a copy."""
    shutil.copy(SCENARIOS / SCENARIO, tmp_path / SCENARIO)
    shutil.copytree(SCENARIOS / "full-system", tmp_path / "full-system")
    return tmp_path / SCENARIO


def _labelled(client: Any, run_id: str) -> list[str]:
    selector = {"label": [f"dev.drproof.run={run_id}"]}
    return (
        [c.name for c in client.containers.list(all=True, filters=selector)]
        + [v.name for v in client.volumes.list(filters=selector)]
        + [n.name for n in client.networks.list(filters=selector)]
    )


def _statuses(results: dict[str, Any]) -> dict[str, str]:
    return {a["id"]: a["status"] for a in results["assertions"]}


def test_the_service_in_a_container_is_killed_restarted_and_counted_in_the_rto(
    tmp_path: Path, docker_engine: Any, app_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs: list[dict[str, str]] = []
    original = DockerServiceContainer._run_kwargs

    def spy(self: DockerServiceContainer) -> dict[str, Any]:
        kwargs = original(self)
        envs.append(dict(kwargs["environment"]))
        return kwargs

    monkeypatch.setattr(DockerServiceContainer, "_run_kwargs", spy)
    report = tmp_path / "r"
    code = run_cli(["run", str(SCENARIOS / SCENARIO), "--report-dir", str(report), "-q"])
    results = read_results(report)
    assert code == 0, (results["error"], _statuses(results))
    assert set(_statuses(results).values()) == {"pass"}
    assert results["runtime"]["application:web"].startswith(f"{IMAGE} (sha256:"), "the report names the image run"
    [kill] = [d for d in results["disasters"] if d["target"] == "web"]
    assert kill["effect"]["container"].startswith("drproof-") and kill["effect"]["running"] is False
    rto = {c["name"]: c["rto_seconds"] for c in results["components"]}
    assert rto["web"] is not None and rto["web"] >= rto["shop-db"], "the service starts after its database is back"
    assert len(envs) == 2, "started once, and once more by the restore"
    env = envs[-1]
    assert env["DRPROOF_SHOP_DB_HOST"] == "shop-db" and env["DRPROOF_SESSIONS_HOST"] == "sessions"
    assert env["DRPROOF_SHOP_DB_PORT"] == "5432" and env["DRPROOF_SESSIONS_PORT"] == "6379"
    passwords = [v for k, v in env.items() if k.endswith("_PASSWORD")]
    assert len(passwords) == 2
    for path in (p for p in report.rglob("*") if p.is_file()):
        text = path.read_bytes()
        assert not any(pw.encode() in text for pw in passwords), f"a password is in {path.name}"
    assert _labelled(docker_engine, results["runtime"]["run_id"]) == []


def test_a_service_that_serves_wrong_data_fails(tmp_path: Path, docker_engine: Any, app_image: str) -> None:
    scenario = _copy(tmp_path)
    app = tmp_path / "full-system" / "shop_app.py"
    text = app.read_text()
    assert '"orders": count,' in text
    app.write_text(text.replace('"orders": count,', '"orders": count + 1,'))
    report = tmp_path / "r"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    results = read_results(report)
    statuses = _statuses(results)
    assert code == 1 and results["verdict"] == "fail", statuses
    assert statuses["http[customer-7]"] == "fail" and statuses["http[web]"] == "pass"
    assert _labelled(docker_engine, results["runtime"]["run_id"]) == []


def test_a_service_that_does_not_come_back_fails(
    tmp_path: Path, docker_engine: Any, app_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore's container is a broken release: it exits at once instead of serving."""
    starts: list[str] = []
    original = DockerServiceContainer.start

    def second_start_broken(self: DockerServiceContainer) -> None:
        starts.append(self.name)
        if len(starts) > 1:
            self.spec = dataclasses.replace(self.spec, command=["/bin/false"])
        original(self)

    monkeypatch.setattr(DockerServiceContainer, "start", second_start_broken)
    report = tmp_path / "r"
    code = run_cli(["run", str(SCENARIOS / SCENARIO), "--report-dir", str(report), "-q"])
    results = read_results(report)
    statuses = _statuses(results)
    assert len(starts) == 2
    assert code == 1 and results["verdict"] == "fail", statuses
    assert statuses["rto[stack]"] == "fail" and statuses["http[web]"] == "fail" and statuses["timeline"] == "fail"
    assert "pass" not in {statuses["http[web]"], statuses["http[customer-7]"]}
    assert _labelled(docker_engine, results["runtime"]["run_id"]) == []


def test_a_stopped_service_container_is_started_again(tmp_path: Path, docker_engine: Any, app_image: str) -> None:
    scenario = _copy(tmp_path)
    text = scenario.read_text()
    assert "{target: web, fault: kill_process}" in text
    scenario.write_text(text.replace("{target: web, fault: kill_process}", "{target: web, fault: stop_process}"))
    report = tmp_path / "r"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    results = read_results(report)
    assert code == 0, (results["error"], _statuses(results))
    [stop] = [d for d in results["disasters"] if d["target"] == "web"]
    assert stop["effect"]["signal"] == "SIGTERM" and stop["effect"]["running"] is False
    assert _labelled(docker_engine, results["runtime"]["run_id"]) == []
