"""An application: the service that uses the data components, started against them.

A restored database is not a recovered service. An application component is a process
(an argv, no shell) that the runtime starts once the components it depends on are up,
with their connection details in its environment (``DRPROOF_<NAME>_URL`` and friends,
passwords only in their own variables) and a free port in ``PORT``. It holds no data:
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
from engine.components.connections import connection_env
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.repository.base import BackupSetWriter
from engine.runtime import processes

PROBE_TIMEOUT = 2.0  # seconds one health probe may take


class HealthProbe(BaseModel):
    """How to tell that the application works: one of an HTTP path, a TCP connect, a command."""

    model_config = ConfigDict(extra="forbid")

    http: str | None = Field(default=None, description="Path requested on 127.0.0.1:PORT; healthy on a 2xx answer.")
    tcp: bool = Field(default=False, description="Healthy when 127.0.0.1:PORT accepts a connection.")
    command: list[str] | None = Field(
        default=None, min_length=1, description="argv run with the application's environment; healthy on exit 0."
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

    model_config = ConfigDict(extra="forbid")

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


class ApplicationParams(SeedParams):
    command: list[str] = Field(
        min_length=1,
        description="argv of the service (no shell), run in `cwd`; an argument `{python}` is the Python drproof "
        "runs on, which has psycopg2 and redis installed.",
    )
    cwd: Path | None = Field(default=None, description="Working directory (relative to the scenario); default: its directory.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment (no secrets here: they would be in the scenario file)."
    )
    health: HealthProbe = Field(default_factory=lambda: HealthProbe(http="/"), description="Readiness check.")
    workload: WorkloadEndpoints | None = Field(
        default=None, description="Endpoints through which the drill's workload writes and reads its records."
    )


class ApplicationComponent(Component):
    name: ClassVar[str] = "application"
    Params: ClassVar[type[SeedParams]] = ApplicationParams
    description: ClassVar[str] = (
        "A service process started against the restored components (their connection details in its "
        "environment); its restore is starting again until its health check answers."
    )
    stateful: ClassVar[bool] = False
    params_key: ClassVar[str] = "run"

    params: ApplicationParams

    def provision(self) -> None:
        self.dependencies: dict[str, Component] = getattr(self, "dependencies", {})
        self.port = processes.free_port()
        self.log = self.runtime.directory(self.instance) / "application.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runtime.adopt(self.stop)

    def environment(self) -> dict[str, str]:
        """What the process gets: a minimal base, its dependencies' connection details, PORT."""
        return tool_environment({**self.params.env, **connection_env(self.dependencies), "PORT": str(self.port)})

    def argv(self) -> list[str]:
        return [sys.executable if arg == "{python}" else arg for arg in self.params.command]

    def start(self) -> None:
        self.stop()
        try:
            self.proc = processes.spawn(self.argv(), log=self.log, env=self.environment(), cwd=self.params.cwd)
        except OSError as exc:
            raise ComponentError(f"application {self.instance!r}: cannot start {self.argv()[0]}: {exc}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGTERM, timeout=10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            processes.kill(self.proc)

    def url(self, path: str) -> str:
        """The service's address for ``path``, on loopback where the runtime started it."""
        return f"http://127.0.0.1:{self.port}{path}"

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def seed(self) -> dict[str, Any]:
        self.recover()
        return {"command": self.params.command[0], "port": self.port}

    def recover(self) -> None:
        """Start the service again and wait until its health check answers."""
        self.start()
        deadline = time.monotonic() + self.params.health.timeout
        health = self.health()
        while not health.ok and time.monotonic() < deadline:
            if not self.is_running():
                raise ComponentError(
                    f"application {self.instance!r} exited with code {self.proc.returncode if self.proc else '?'} "
                    f"while starting. Log:\n{processes.tail(self.log)}"
                )
            time.sleep(0.2)
            health = self.health()
        if not health.ok:
            raise ComponentError(
                f"application {self.instance!r} did not become healthy within {self.params.health.timeout:g} s "
                f"({health.detail}). Log:\n{processes.tail(self.log)}"
            )

    def health(self) -> Health:
        if not self.is_running():
            return Health(ok=False, detail="the process is not running")
        probe = self.params.health
        if probe.http is not None:
            return _http(self.port, probe.http)
        if probe.tcp:
            return _tcp(self.port)
        assert probe.command is not None
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


def _command(argv: list[str], env: dict[str, str], cwd: Path | None) -> Health:
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Health(ok=False, detail=f"{argv[0]}: {exc}")
    # Its output is not repeated: it runs with the components' passwords in its environment.
    return Health(ok=done.returncode == 0, detail=f"{os.path.basename(argv[0])} exited {done.returncode}")
