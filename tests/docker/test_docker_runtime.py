"""The docker runtime runs the same scenarios as the local one, against a real engine."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components import component_kinds
from engine.faults import faults
from engine.runtime import DockerRuntime
from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli
from tests.integration.seaweedfs import s3_drill_environment
from tests.integration.test_shipped_scenarios import uses_s3

pytestmark = [pytest.mark.docker, pytest.mark.integration]


def _runs_on_docker(path: Path) -> bool:
    """Whether every component kind and fault of a scenario declares it works on docker."""
    doc = yaml.safe_load(path.read_text())
    kinds = [component_kinds.get(c["kind"]) for c in doc["stack"]["components"].values()]
    used = [faults.get(s["disaster"]["fault"]) for s in doc["steps"] if isinstance(s, dict) and "disaster" in s]
    return all(not DockerRuntime.lacks(x.needs, getattr(x, "server", None)) for x in [*kinds, *used])


SHIPPED = [p for p in sorted(SCENARIOS.glob("*.yaml")) if _runs_on_docker(p)]


def _labelled(client: Any, run_id: str) -> list[str]:
    selector = {"label": [f"dev.drproof.run={run_id}"]}
    return (
        [c.name for c in client.containers.list(all=True, filters=selector)]
        + [v.name for v in client.volumes.list(filters=selector)]
        + [n.name for n in client.networks.list(filters=selector)]
    )


@pytest.mark.parametrize("scenario", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_passes_on_docker(
    scenario: Path, tmp_path: Path, docker_engine: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if uses_s3(scenario):  # the repository is a real S3 server (SeaweedFS) on the host
        s3_drill_environment(request.getfixturevalue("s3_server"), monkeypatch)
    report = tmp_path / "r"
    code = run_cli(["run", str(scenario), "--runtime", "docker", "--report-dir", str(report), "-q"])
    results = read_results(report)
    failing = [(a["id"], a["summary"], a["findings"]) for a in results["assertions"] if a["status"] != "pass"]
    assert code == 0, (results["error"], failing)
    runtime = results["runtime"]
    assert runtime["runtime"] == "docker"
    kinds = {c["kind"] for c in results["components"]}
    for kind in {"postgres", "redis"} & kinds:
        assert runtime[f"image:{kind}"].split(" (sha256:")[1], "the report names the image and its id"
    assert _labelled(docker_engine, runtime["run_id"]) == [], "the run removed what it created"


def test_postgres_container_killed_and_volume_removed_recovers(tmp_path: Path, docker_engine: Any) -> None:
    report = tmp_path / "r"
    assert run_cli(["run", str(SCENARIOS / "docker-postgres-volume-loss.yaml"), "--report-dir", str(report), "-q"]) == 0
    results = read_results(report)
    effects = {(d["target"], d["fault"]): d["effect"] for d in results["disasters"]}
    assert effects[("orders-db", "remove_volume")]["volume_removed"] is True
    assert effects[("orders-db", "kill_container")]["signal"] == "SIGKILL"
    [db] = [c for c in results["components"] if c["name"] == "orders-db"]
    assert db["rto_seconds"] is not None and db["rto_seconds"] > 0
    assert db["fingerprint_final"] == db["fingerprint_at_backup"]


def test_container_faults_refuse_on_the_local_runtime(tmp_path: Path, docker_engine: Any) -> None:
    report = tmp_path / "r"
    code = run_cli(
        [
            "run",
            str(SCENARIOS / "docker-postgres-volume-loss.yaml"),
            "--runtime",
            "local",
            "--report-dir",
            str(report),
            "-q",
        ]
    )
    results = read_results(report)
    assert code == 2 and results["verdict"] == "error"
    assert "kill_container needs a container runtime" in results["error"]


def test_clean_removes_only_labelled_leftovers_of_finished_runs(
    docker_engine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    labels = {
        "dev.drproof.managed": "true",
        "dev.drproof.run": "feedc0ffee00",
        "dev.drproof.pid": "999999999",
        "dev.drproof.host": socket.gethostname(),
    }
    live = {**labels, "dev.drproof.run": "feedc0ffee01", "dev.drproof.pid": str(os.getpid())}
    dead_volume = docker_engine.volumes.create("drproof-test-dead", labels=labels)
    live_volume = docker_engine.volumes.create("drproof-test-live", labels=live)
    foreign = docker_engine.volumes.create("not-drproof-test")
    try:
        assert run_cli(["clean"]) == 0
        names = {v.name for v in docker_engine.volumes.list()}
        assert "drproof-test-dead" not in names
        assert "drproof-test-live" in names, "a run whose process is alive is left alone"
        assert "not-drproof-test" in names, "clean never touches unlabelled resources"
        assert "run feedc0ffee00: removed volume drproof-test-dead" in capsys.readouterr().out
    finally:
        for v in (dead_volume, live_volume, foreign):
            with contextlib.suppress(Exception):
                v.remove(force=True)


def test_doctor_sees_engine_and_images(docker_engine: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["doctor", "--runtime", "docker"]) == 0
    out = capsys.readouterr().out
    assert "Docker engine: version" in out and "image postgres:17" in out and "image redis:8" in out
