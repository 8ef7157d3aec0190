"""The image docs/examples/container/Dockerfile builds runs the Kubernetes fleet's command.

No cluster can run here, so the pod is imitated with ``docker run`` as the manifests
set it up: the image's unprivileged user, a read-only root file system, a writable
``/tmp`` for work directories, the drills mounted read-only and an evidence volume. The
command is the drill-fleet CronJob's own, read from the manifest, so the image, the
manifest and ``drproof run DIR --parallel`` are checked together.

The image is built by tests/docker/build-drproof-image.sh (a debootstrap base, a
wheelhouse of this checkout, then ``docker build``): minutes the first time, hence slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "docs" / "examples" / "kubernetes" / "fleet"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _version() -> str:
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as fh:
        version: str = tomllib.load(fh)["project"]["version"]
    return version


@pytest.fixture(scope="module")
def image(docker_engine: Any) -> str:
    tag = f"drproof-local/drproof:{_version()}"
    built = subprocess.run(
        ["bash", str(REPO / "tests" / "docker" / "build-drproof-image.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": os.environ.get("PYTHON", "python3")},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return tag


@pytest.fixture
def evidence() -> Iterator[str]:
    """A named volume: Docker gives it the image's /evidence owner, the unprivileged user."""
    name = f"drproof-test-evidence-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def _pod_like(image: str, evidence: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--user",
            "10001:10001",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            "/tmp:rw,exec,size=2g",
            "-v",
            f"{FLEET / 'drills'}:/etc/drproof/drills:ro",
            "-v",
            f"{evidence}:/evidence",
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            " ".join(command),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_image_runs_as_an_unprivileged_user_with_drproof_and_the_servers(image: str, evidence: str) -> None:
    done = _pod_like(
        image,
        evidence,
        "id -u; drproof --version; ls /usr/lib/postgresql; command -v pgbackrest; command -v redis-server",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "10001" and f"drproof {_version()}" in done.stdout
    assert (
        "15" in lines
        and any(p.endswith("/pgbackrest") for p in lines)
        and any(p.endswith("/redis-server") for p in lines)
    )


def test_the_fleet_cronjob_s_command_passes_in_the_image(image: str, evidence: str) -> None:
    cronjob = yaml.safe_load((FLEET / "drill-fleet-cronjob.yaml").read_text(encoding="utf-8"))
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0].replace("exec drproof", "drproof")
    done = _pod_like(
        image,
        evidence,
        f"{script}; code=$?; cat /evidence/drills/*/junit.xml >/dev/null && ls /evidence/drills; exit $code",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    card = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL", "ERROR"))]
    assert sorted(line.split()[1] for line in card) == ["postgres-drop-table", "quickstart"], done.stdout
    assert all(line.startswith("PASS") for line in card)
    listing = _pod_like(image, evidence, "cat /evidence/drills/*/quickstart/results.json")
    results = json.loads(listing.stdout)
    assert results["verdict"] == "pass" and results["identity"]["user"] == "drproof"
