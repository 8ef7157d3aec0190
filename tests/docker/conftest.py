"""Docker tests need a real engine and the locally built images.

With CI=true a missing engine or image is a failure: CI runs tests/docker/engine.sh and
build-images.sh first, so their absence means the set-up broke. Elsewhere the tests are
skipped with the command that provides what is missing. At the end of the session no
drproof-labelled container, volume or network of this process may remain.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import s3_server  # noqa: F401  the shipped S3 drills run on docker too

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run should have provided it (tests/docker/engine.sh)", pytrace=False)
    pytest.skip(f"{reason}; as root run: bash tests/docker/engine.sh && bash tests/docker/build-images.sh")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    from docker.errors import ImageNotFound

    from engine.errors import DrproofError
    from engine.runtime.docker import DEFAULT_IMAGES, LABEL_PID, docker_client

    try:
        client = docker_client()
    except DrproofError as exc:
        _unavailable(f"no Docker engine answers ({exc})")
    for image in DEFAULT_IMAGES.values():
        try:
            client.images.get(image)
        except ImageNotFound:
            _unavailable(f"image {image} is missing")
    yield client
    mine = {"label": [f"{LABEL_PID}={os.getpid()}"]}
    left = [c.name for c in client.containers.list(all=True, filters=mine)]
    left += [v.name for v in client.volumes.list(filters=mine)]
    left += [n.name for n in client.networks.list(filters=mine)]
    assert not left, f"drproof left Docker resources behind: {left}"
