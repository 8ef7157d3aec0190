"""An application container on the docker runtime: started fresh on the run's network.

It carries the run's labels (so the end of the run and ``drproof clean`` remove it), its
port is published on 127.0.0.1 only, and its environment, which holds the dependencies'
passwords, goes to the engine as the container's environment and nowhere else: not in
its name, its labels, its command or any message drproof writes.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, cast

from engine.errors import ComponentError, RuntimeStartError
from engine.runtime.containers import ContainerSpec, ServiceContainer
from engine.runtime.docker import container_exists

if TYPE_CHECKING:
    from engine.runtime.docker import DockerRuntime

TIMED_OUT = 124  # the exit code of a probe command that did not finish, as timeout(1) reports it
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL, as the process form waits


class DockerServiceContainer(ServiceContainer):
    def __init__(self, runtime: DockerRuntime, instance: str, spec: ContainerSpec) -> None:
        self.runtime = runtime
        self.instance = instance
        self.spec = spec
        runtime.app_generation += 1  # a fresh name for each container of the run
        self.name = f"drproof-{runtime.run_id}-{instance}-app{runtime.app_generation}"
        self.host_port: int | None = None
        self.container: Any = None

    def start(self) -> None:
        from docker.errors import APIError, ImageNotFound

        self.remove()
        try:
            self.container = self.runtime.client.containers.run(self.spec.image, **self._run_kwargs())
        except ImageNotFound as exc:
            raise RuntimeStartError(
                f"application {self.instance!r}: image {self.spec.image!r} is not present and cannot be pulled here; "
                "build it (e.g. tests/docker/build-drproof-image.sh for drproof-local/drproof) or name one you have"
            ) from exc
        except APIError as exc:
            raise ComponentError(
                f"application {self.instance!r}: the engine refused the container: {exc.explanation}"
            ) from exc
        self.host_port = self._published_port()
        self.runtime.app_images[self.instance] = f"{self.spec.image} ({self.container.image.id})"

    def _run_kwargs(self) -> dict[str, Any]:
        api = self.runtime.client.api
        network = self.runtime.network_name
        kwargs: dict[str, Any] = {
            "detach": True,
            "name": self.name,
            "environment": self.spec.env,
            "labels": self.runtime.labels,
            "network": network,
            # Its component name on the run's network, like the servers it depends on.
            "networking_config": {network: api.create_endpoint_config(aliases=[self.instance])},
            # Published on loopback only: nothing outside this machine can reach the stack.
            "ports": {f"{self.spec.port}/tcp": ("127.0.0.1", None)},
            "volumes": {str(host): {"bind": target, "mode": "ro"} for host, target in self.spec.mounts.items()},
        }
        if self.spec.command:
            kwargs["entrypoint"] = self.spec.command
            kwargs["command"] = []
        return kwargs

    def _published_port(self) -> int | None:
        self.container.reload()
        bound = (self.container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{self.spec.port}/tcp")
        return int(bound[0]["HostPort"]) if bound else None

    def _exists(self) -> bool:
        return container_exists(self.container)

    def running(self) -> bool:
        return self._exists() and self.container.status == "running"

    def stop(self) -> None:
        if self.running():
            self.container.stop(timeout=STOP_GRACE)

    def kill(self) -> None:
        if self.running():
            self.container.kill(signal="SIGKILL")

    def remove(self) -> None:
        from docker.errors import NotFound

        if self.container is not None:
            with contextlib.suppress(NotFound):
                self.container.remove(force=True)
        self.container = None
        self.host_port = None

    def exit_code(self) -> int | None:
        if not self._exists() or self.container.status == "running":
            return None
        return int(self.container.attrs["State"]["ExitCode"])

    def logs(self) -> str:
        try:
            return cast(bytes, self.container.logs(tail=20)).decode(errors="replace")
        except Exception:  # the container may be gone; logs are only a hint
            return "(no logs)"

    def exec(self, argv: list[str], timeout: float) -> int:
        """Run ``argv`` in the container; a command still running after ``timeout`` counts as exit 124.

        The engine's exec has no deadline of its own, and the image need not have `timeout`:
        the call waits in a thread, which is abandoned (the container's removal ends it).
        """
        done: list[int] = []
        waiter = threading.Thread(target=lambda: done.append(int(self.container.exec_run(argv)[0])), daemon=True)
        waiter.start()
        waiter.join(timeout)
        return done[0] if done else TIMED_OUT
