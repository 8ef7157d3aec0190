"""An application: the service that uses the data components, started against them.

A restored database is not a recovered service. An application component is a process
(an argv, no shell) that the runtime starts once the components it depends on are up,
with their connection details in its environment (``DRPROOF_<NAME>_URL`` and friends,
passwords only in their own variables) and a free port in ``PORT``; or, on a runtime with
containers (docker), a container from an image on the run's private network, which
reaches its dependencies by their component names and is published on loopback. It holds no data:
it is never backed up or fingerprinted, and its "restore" is starting it again once
what it depends on has been restored, then waiting until its health check answers, so
the stack's RTO includes the time until the service works again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.childenv import tool_environment
from engine.components.base import ArtifactSource, Component, Health, SeedParams
from engine.components.connections import connection_env, network_connection_env
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.repository.base import BackupSetWriter
from engine.runtime import processes
from engine.runtime.base import CONTAINERS
from engine.runtime.containers import ServiceContainer

PROBE_TIMEOUT = 2.0  # seconds one health probe may take


class HealthProbe(BaseModel):
    """How to tell that the application works: one of an HTTP path, a TCP connect, a command."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    http: str | None = Field(default=None, description="Path requested on 127.0.0.1:PORT; healthy on a 2xx answer.")
    tcp: bool = Field(default=False, description="Healthy when 127.0.0.1:PORT accepts a connection.")
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="argv run with the application's environment (inside the container for the image form); "
        "healthy on exit 0.",
    )
    timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds to wait for health after a start.")

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthProbe:
        if sum((self.http is not None, self.tcp, self.command is not None)) != 1:
            raise ValueError("give exactly one of http, tcp, command")
        return self


class WorkloadEndpoints(BaseModel):
    """Where a service takes the drill's workload: the writes go through the service itself.

    Why: a workload written straight into the database measures the database's recovery
    point; users lose what their *service* acknowledged. With these set, the drill's
    workload step POSTs record N to the service and, after the restore, asks the service
    which records it still has.
    """

    model_config = ConfigDict(defer_build=True, extra="forbid")

    write: str = Field(
        description="Path POSTed for each record, with `{seq}` for its number (e.g. `/workload/{seq}`); "
        "a 2xx answer means the service acknowledged the write."
    )
    read: str = Field(
        description="Path whose GET answers a JSON list of the record numbers the service holds (e.g. `/workload`)."
    )

    @model_validator(mode="after")
    def _paths(self) -> WorkloadEndpoints:
        if "{seq}" not in self.write:
            raise ValueError("write must contain {seq}, the record's number")
        for path in (self.write, self.read):
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not a path on the service (it must start with /)")
        return self


DEFAULT_CONTAINER_PORT = 8080


class ApplicationParams(SeedParams):
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Process form: argv of the service (no shell), run in `cwd`; an argument `{python}` is the "
        "Python drproof runs on, which has psycopg2 and redis installed. Image form: the argv run in the container "
        "instead of the image's entrypoint and command (default: the image's own).",
    )
    image: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        description="Image form (docker runtime only): run the service from this local image, on the run's private "
        "network, its dependencies reached by their component names.",
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=f"Image form: the port the container listens on (also given in PORT; default "
        f"{DEFAULT_CONTAINER_PORT}), published on 127.0.0.1 only for the health check and checks.",
    )
    mounts: dict[Path, str] = Field(
        default_factory=dict,
        description="Image form: directories (relative to the scenario) mounted read-only in the container, each "
        "at the absolute path given, e.g. `{full-system: /srv/shop}`.",
    )
    cwd: Path | None = Field(
        default=None, description="Process form: working directory (relative to the scenario); default: its directory."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment (no secrets here: they would be in the scenario file)."
    )
    health: HealthProbe = Field(default_factory=lambda: HealthProbe(http="/"), description="Readiness check.")
    workload: WorkloadEndpoints | None = Field(
        default=None, description="Endpoints through which the drill's workload writes and reads its records."
    )

    @model_validator(mode="after")
    def _one_form(self) -> ApplicationParams:
        """Exactly one form: a process (``command``) or a container (``image``), and no key of the other."""
        if self.image is None:
            if self.command is None:
                raise ValueError("give `command` (argv of a process) or `image` (a container, docker runtime only)")
            extra = [k for k in ("port", "mounts") if getattr(self, k)]
            if extra:
                one = len(extra) == 1
                raise ValueError(
                    f"{' and '.join(extra)} {'is' if one else 'are'} for the image form only: add `image` or remove "
                    f"{'it' if one else 'them'}"
                )
            return self
        if self.cwd is not None:
            raise ValueError("cwd belongs to the process form: a container runs in its image's working directory")
        if self.command is not None and "{python}" in self.command:
            raise ValueError("{python} is the Python drproof runs on, not the image's: name the image's interpreter")
        for target in self.mounts.values():
            if not target.startswith("/"):
                raise ValueError(f"mount target {target!r} must be an absolute path in the container")
        return self

    def container_port(self) -> int:
        return self.port or DEFAULT_CONTAINER_PORT


class ApplicationComponent(Component):
    name: ClassVar[str] = "application"
    server: ClassVar[str | None] = "directory"
    Params: ClassVar[type[SeedParams]] = ApplicationParams
    description: ClassVar[str] = (
        "A service started against the restored components, as a process or (docker runtime) a container, "
        "their connection details in its environment; its restore is starting again until its health check answers."
    )
    stateful: ClassVar[bool] = False
    params_key: ClassVar[str] = "run"

    params: ApplicationParams

    @classmethod
    def needs_for(cls, params: SeedParams) -> frozenset[str]:
        """The image form runs where the runtime starts containers (the ``containers`` capability)."""
        if not isinstance(params, ApplicationParams) or params.image is None:
            return cls.needs
        return cls.needs | {CONTAINERS}

    def provision(self) -> None:
        self.dependencies: dict[str, Component] = getattr(self, "dependencies", {})
        self.port = processes.free_port()
        self.log = self.runtime.directory(self.instance) / "application.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.box: ServiceContainer | None = None
        self.runtime.adopt(self._shutdown)

    def environment(self) -> dict[str, str]:
        """What the process gets: a minimal base, its dependencies' connection details, PORT."""
        return tool_environment({**self.params.env, **connection_env(self.dependencies), "PORT": str(self.port)})

    def container_environment(self) -> dict[str, str]:
        """What the container gets: its dependencies as the run's network reaches them, PORT.

        Nothing of the host's environment: the image brings its own PATH and locale.
        """
        port = str(self.params.container_port())
        return {
            **self.params.env,
            **network_connection_env(self.dependencies, f"application {self.instance!r}"),
            "PORT": port,
        }

    def argv(self) -> list[str]:
        assert self.params.command is not None
        return [sys.executable if arg == "{python}" else arg for arg in self.params.command]

    def start(self) -> None:
        self.stop()
        if self.params.image is not None:
            self._start_container(self.params.image)
            return
        try:
            self.proc = processes.spawn(self.argv(), log=self.log, env=self.environment(), cwd=self.params.cwd)
        except OSError as exc:
            raise ComponentError(f"application {self.instance!r}: cannot start {self.argv()[0]}: {exc}") from exc

    def _start_container(self, image: str) -> None:
        """A fresh container from the image, with the dependencies' current addresses."""
        from engine.runtime.containers import ContainerSpec

        spec = ContainerSpec(
            image=image,
            command=self.params.command,
            env=self.container_environment(),
            port=self.params.container_port(),
            mounts=self._mounts(),
        )
        if self.box is not None:
            self.box.remove()
        self.box = self.runtime.service_container(self.instance, spec)
        self.box.start()
        # A container that exited at once has no published port: ``recover`` reports its exit.
        self.port = self.box.host_port or 0

    def _mounts(self) -> dict[Path, str]:
        """Mount sources, relative to ``cwd`` (the scenario's directory in a drill), checked to exist."""
        base = self.params.cwd or Path.cwd()
        mounts = {}
        for source, target in self.params.mounts.items():
            path = (base / source).resolve()
            if not path.is_dir():
                raise ComponentError(f"application {self.instance!r}: mount {source} ({path}) is not a directory")
            mounts[path] = target
        return mounts

    def stop(self) -> None:
        if self.box is not None:
            self.box.stop()
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGTERM, timeout=10)
            self.proc = None

    def _shutdown(self) -> None:
        """At the end of the run: a container goes at once (its runtime removes it anyway; a
        service that ignores SIGTERM as PID 1 would hold the run for the grace period)."""
        if self.box is not None:
            self.box.remove()
        self.stop()

    def kill(self) -> None:
        if self.box is not None:
            self.box.kill()
        if self.proc is not None:
            processes.kill(self.proc)

    def identity(self) -> dict[str, Any]:
        """What a fault acted on: the process id, or the container's name."""
        if self.box is not None:
            return {"container": self.box.name}
        return {"pid": self.proc.pid if self.proc is not None else None}

    def url(self, path: str) -> str:
        """The service's address for ``path``, on loopback where the runtime started it (or published it)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def is_running(self) -> bool:
        if self.box is not None:
            return self.box.running()
        return self.proc is not None and self.proc.poll() is None

    def seed(self) -> dict[str, Any]:
        self.recover()
        if self.params.image is not None:
            return {"image": self.params.image, "port": self.params.container_port()}
        assert self.params.command is not None
        return {"command": self.params.command[0], "port": self.port}

    def recover(self) -> None:
        """Start the service again and wait until its health check answers."""
        self.start()
        deadline = time.monotonic() + self.params.health.timeout
        health = self.health()
        while not health.ok and time.monotonic() < deadline:
            if not self.is_running():
                raise ComponentError(
                    f"application {self.instance!r} exited with code {self._exit_code()} while starting. "
                    f"Log:\n{self._log_tail()}"
                )
            time.sleep(0.2)
            health = self.health()
        if not health.ok:
            raise ComponentError(
                f"application {self.instance!r} did not become healthy within {self.params.health.timeout:g} s "
                f"({health.detail}). Log:\n{self._log_tail()}"
            )

    def _exit_code(self) -> int | str | None:
        if self.box is not None:
            return self.box.exit_code()
        return self.proc.returncode if self.proc else "?"

    def _log_tail(self) -> str:
        return self.box.logs() if self.box is not None else processes.tail(self.log)

    def health(self) -> Health:
        if not self.is_running():
            return Health(
                ok=False, detail="the process is not running" if self.box is None else "the container is not running"
            )
        probe = self.params.health
        if probe.http is not None:
            return _http(self.port, probe.http)
        if probe.tcp:
            return _tcp(self.port)
        assert probe.command is not None
        if self.box is not None:
            return _in_container(self.box, probe.command)
        return _command(probe.command, self.environment(), self.params.cwd)

    # A service holds no data: nothing to back up, fingerprint or restore from a backup.
    def fingerprint(self) -> Fingerprint:
        return self._fp({})

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        raise ComponentError(f"application {self.instance!r} holds no data to back up")

    def restore(self, source: ArtifactSource) -> None:
        raise ComponentError(f"application {self.instance!r} is restarted, not restored from a backup")


def _http(port: int, path: str) -> Health:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path if path.startswith("/") else "/" + path)
        status = conn.getresponse().status
    except OSError as exc:
        return Health(ok=False, detail=f"GET {path}: {exc}")
    finally:
        conn.close()
    return Health(ok=200 <= status < 300, detail=f"GET {path} answered {status}")


def _tcp(port: int) -> Health:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT):
            return Health(ok=True, detail=f"port {port} accepts connections")
    except OSError as exc:
        return Health(ok=False, detail=f"port {port}: {exc}")


def _in_container(box: ServiceContainer, argv: list[str]) -> Health:
    """The command probe of the image form runs inside the container, with its environment."""
    try:
        code = box.exec(argv, timeout=30)
    except Exception as exc:  # the engine's error types are the runtime's business
        return Health(ok=False, detail=f"{argv[0]} in the container: {type(exc).__name__}")
    return Health(ok=code == 0, detail=f"{os.path.basename(argv[0])} in the container exited {code}")


def _command(argv: list[str], env: dict[str, str], cwd: Path | None) -> Health:
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Health(ok=False, detail=f"{argv[0]}: {exc}")
    # Its output is not repeated: it runs with the components' passwords in its environment.
    return Health(ok=done.returncode == 0, detail=f"{os.path.basename(argv[0])} exited {done.returncode}")
