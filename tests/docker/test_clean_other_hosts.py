"""`drproof clean` removes the Docker resources of gone runs only, never of a run of another host still going.

Found by review: a run was "gone" unless its host was this one and its pid lived, so a
CI job in a container of its own (a hostname of its own, the host's Docker socket) had
every other job's drill containers and volumes removed by its `drproof clean`, mid-drill.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from engine.runtime import docker, processes

pytestmark = [pytest.mark.docker, pytest.mark.integration]


@pytest.fixture
def volumes(docker_engine: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    from docker.errors import NotFound

    for v in made:
        with contextlib.suppress(NotFound):
            v.remove(force=True)


def _volume(client: Any, made: list[Any], **labels: str) -> str:
    run = f"review-{secrets.token_hex(4)}"
    base = {docker.LABEL_MANAGED: "true", docker.LABEL_RUN: run, docker.LABEL_PID: str(os.getpid())}
    made.append(client.volumes.create(name=f"drproof-{run}", labels={**base, **labels}))
    return run


def _dead_mark() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = processes._start_ticks(proc.pid)
    proc.wait()
    return f"{proc.pid}:{start}:{processes.pid_namespace()}"


def test_a_run_of_another_host_is_left_alone_and_a_gone_run_of_this_host_is_not(
    docker_engine: Any, volumes: list[Any]
) -> None:
    import socket

    other = _volume(docker_engine, volumes, **{docker.LABEL_HOST: "ci-job-container-b", docker.LABEL_PID: "1"})
    live = _volume(
        docker_engine, volumes, **{docker.LABEL_HOST: socket.gethostname(), docker.LABEL_OWNER: processes.owner_mark()}
    )
    gone = _volume(
        docker_engine, volumes, **{docker.LABEL_HOST: socket.gethostname(), docker.LABEL_OWNER: _dead_mark()}
    )
    listed = docker.leftovers(docker_engine)
    assert other not in listed and live not in listed
    assert listed.get(gone) == [f"volume drproof-{gone}"]  # quiet control: a gone run of this host still goes
    everything = docker.leftovers(docker_engine, everything=True)
    assert {other, live, gone} <= set(everything)  # --all: every run


class _RacedVolumes:
    """The engine's volumes, where another cleanup removes the first one right after ours lists them."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list(self, **kwargs: Any) -> list[Any]:
        found = self.client.volumes.list(**kwargs)
        other = docker.docker_client()  # the other `drproof clean`
        try:
            other.volumes.get(found[0].name).remove(force=True)
        finally:
            other.close()
        return list(found)


class _Raced:
    def __init__(self, client: Any) -> None:
        self.containers, self.networks, self.volumes = client.containers, client.networks, _RacedVolumes(client)


def test_a_resource_another_cleanup_removed_first_is_no_traceback(docker_engine: Any, volumes: list[Any]) -> None:
    """Found by review: two cleanups at once (two CI jobs' `drproof clean`, or one racing a run's close) ended
    one in a docker.errors.NotFound traceback, the rest of the run's resources left behind."""
    run = _volume(docker_engine, volumes, **{docker.LABEL_HOST: "gone"})
    second = docker_engine.volumes.create(name=f"drproof-{run}-2", labels=volumes[0].attrs["Labels"])
    volumes.append(second)
    listed = sorted(v.name for v in docker_engine.volumes.list(filters={"label": [f"{docker.LABEL_RUN}={run}"]}))
    gone = docker.remove_labelled(_Raced(docker_engine), {docker.LABEL_RUN: run})
    assert len(gone) == 1 and gone[0] in [f"volume {n}" for n in listed]
    assert docker_engine.volumes.list(filters={"label": [f"{docker.LABEL_RUN}={run}"]}) == []
