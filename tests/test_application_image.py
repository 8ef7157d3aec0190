"""The application kind's image form, without a Docker engine: its model, its runtimes,
the local runtime's refusal, and what the container is given (passwords in its
environment only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import ValidationError

from engine.components.application import ApplicationComponent, ApplicationParams
from engine.components.base import Component
from engine.components.connections import network_connection_env
from engine.errors import ComponentError, RuntimeStartError
from engine.runtime.containers import ContainerSpec
from engine.runtime.docker_app import DockerServiceContainer
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli

SECRET = "s3cret-Pa55word"


def test_a_process_or_an_image_and_never_neither() -> None:
    assert ApplicationParams(command=["./serve"]).image is None
    assert ApplicationParams(image="shop:1").container_port() == 8080
    assert ApplicationParams(image="shop:1", command=["python", "/srv/app.py"], port=9000).container_port() == 9000
    with pytest.raises(ValidationError, match="give `command`"):
        ApplicationParams()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"command": ["./serve"], "port": 8080}, "port is for the image form only"),
        ({"command": ["./serve"], "mounts": {"app": "/srv"}}, "mounts is for the image form only"),
        ({"image": "shop:1", "cwd": "somewhere"}, "cwd belongs to the process form"),
        ({"image": "shop:1", "mounts": {"app": "srv"}}, "must be an absolute path"),
        ({"image": "shop:1", "command": ["{python}", "app.py"]}, "{python} is the Python drproof runs on"),
        ({"image": "two words"}, "should match pattern"),
    ],
)
def test_keys_of_the_other_form_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ApplicationParams.model_validate(params)


def test_the_image_form_runs_only_where_containers_can_be_started() -> None:
    from engine.runtime import supporting

    process = ApplicationComponent.needs_for(ApplicationParams(command=["./serve"]))
    image = ApplicationComponent.needs_for(ApplicationParams(image="shop:1"))
    assert "local" in supporting(process, ApplicationComponent.server)
    assert supporting(image, ApplicationComponent.server) == ["docker"]


def test_the_local_runtime_refuses_a_service_container(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path / "work")
    try:
        with pytest.raises(RuntimeStartError, match="needs the docker runtime"):
            runtime.service_container("web", ContainerSpec(image="shop:1", command=None, env={}, port=8080))
    finally:
        runtime.close()


def test_a_drill_with_an_image_on_the_local_runtime_stops_before_anything_starts(tmp_path: Path) -> None:
    scenario = tmp_path / "app.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "image-on-local",
                "stack": {
                    "runtime": "local",
                    "components": {
                        "db": {"kind": "postgres"},
                        "web": {"kind": "application", "depends_on": ["db"], "run": {"image": "shop:1"}},
                    },
                },
                "steps": [{"backup": {"name": "b"}}],
                "assertions": ["backup_integrity"],
            }
        )
    )
    report = tmp_path / "r"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    results = read_results(report)
    assert code == 2 and results["verdict"] == "error"
    refused = "cannot run on the local runtime: web (application needs containers (runtimes that have it: docker))"
    assert refused in results["error"]
    assert all(a["status"] != "pass" for a in results["assertions"])


class _Server:
    """A dependency as the docker runtime describes it on the run's network."""

    name = "postgres"

    def __init__(self, facts: dict[str, str] | None) -> None:
        self.facts = facts

    def network_connection_env(self) -> dict[str, str] | None:
        return self.facts


def test_dependencies_are_given_by_their_network_address_and_directories_refused() -> None:
    db = _Server({"HOST": "shop-db", "PORT": "5432", "PASSWORD": SECRET})
    env = network_connection_env(cast(dict[str, Component], {"shop-db": db}), "application 'web'")
    assert env == {
        "DRPROOF_SHOP_DB_HOST": "shop-db",
        "DRPROOF_SHOP_DB_PORT": "5432",
        "DRPROOF_SHOP_DB_PASSWORD": SECRET,
    }
    uploads = _Server(None)
    uploads.name = "volumes"
    with pytest.raises(ComponentError, match="cannot reach volumes component 'uploads'"):
        network_connection_env(cast(dict[str, Component], {"uploads": uploads}), "application 'web'")


class _Api:
    def create_endpoint_config(self, aliases: list[str]) -> dict[str, Any]:
        return {"Aliases": aliases}


class _Client:
    api = _Api()


class _Runtime:
    def __init__(self) -> None:
        self.client = _Client()
        self.run_id = "abc123"
        self.network_name = "drproof-abc123"
        self.labels = {"dev.drproof.managed": "true", "dev.drproof.run": "abc123"}
        self.app_generation = 0
        self.app_images: dict[str, str] = {}


def test_the_container_is_labelled_on_the_runs_network_and_its_password_only_in_its_environment() -> None:
    spec = ContainerSpec(
        image="shop:1",
        command=["python", "/srv/app.py"],
        env={"DRPROOF_DB_PASSWORD": SECRET, "PORT": "8080"},
        port=8080,
        mounts={Path("/scenarios/app"): "/srv"},
    )
    box = DockerServiceContainer(cast(Any, _Runtime()), "web", spec)
    kwargs = box._run_kwargs()
    assert kwargs["labels"]["dev.drproof.run"] == "abc123"
    assert kwargs["network"] == "drproof-abc123"
    assert kwargs["networking_config"] == {"drproof-abc123": {"Aliases": ["web"]}}
    assert kwargs["ports"] == {"8080/tcp": ("127.0.0.1", None)}, "published on loopback only"
    assert kwargs["volumes"] == {"/scenarios/app": {"bind": "/srv", "mode": "ro"}}
    assert kwargs["entrypoint"] == ["python", "/srv/app.py"]
    assert kwargs["environment"]["DRPROOF_DB_PASSWORD"] == SECRET
    outside = {k: v for k, v in kwargs.items() if k != "environment"}
    assert SECRET not in repr(outside) and SECRET not in box.name
