"""The Docker runtime: PostgreSQL and Redis in containers started through testcontainers.

Data live in named Docker volumes, so a disaster can destroy a server's data without
touching the host; client tools (pg_dump, pg_restore, psql) run *inside* the server's
container with ``docker exec`` so their version always matches the server, and their
output streams straight into the repository. Directory components (vectorstore, volumes,
configuration) stay on the host in the run's work directory: they need no server, and a
host directory is what a backup agent sees in production too (see docs/runtimes.md).

Every container, volume and network carries the labels in :data:`LABELS`, with this run's
id; ``close`` removes exactly those, and ``drproof clean`` removes leftovers of crashed
runs by the same labels. The Ryuk reaper is not used (it cannot be pulled here): cleanup
is explicit, on every exit path.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from engine.childenv import tool_environment
from engine.errors import RuntimeStartError
from engine.lazy import lazy
from engine.runtime import processes
from engine.runtime.base import (
    CONTAINERS,
    Check,
    ContainerOps,
    PostgresService,
    RedisService,
    Runtime,
    ServerWanted,
)
from engine.runtime.containers import ContainerSpec, ServiceContainer

if TYPE_CHECKING:
    import psycopg2
    import redis
else:
    psycopg2 = lazy("psycopg2")
    redis = lazy("redis")

# drproof removes what it creates itself, on every exit path; the Ryuk reaper container
# testcontainers would otherwise pull is neither needed nor available without a registry.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

DEFAULT_IMAGES = {"postgres": "postgres:17", "redis": "redis:8"}
LABEL_MANAGED = "dev.drproof.managed"
LABEL_RUN = "dev.drproof.run"
LABEL_PID = "dev.drproof.pid"
LABEL_HOST = "dev.drproof.host"
LABEL_OWNER = "dev.drproof.owner"  # pid:start:pid namespace of the drproof (``processes.owner_mark``)
# A run of another host (a CI job in a container of its own, sharing the Docker engine):
# whether its drproof still runs cannot be told from here, so only its age says it is gone.
OTHER_HOST_STALE_S = 7 * 86400
PGDATA = "/var/lib/postgresql/data"
READY_TIMEOUT = 90.0


def docker_client() -> Any:
    """A Docker SDK client, or a RuntimeStartError that says how to get an engine."""
    import docker
    from docker.errors import DockerException

    client = None
    try:
        _unix_socket_answers()
        client = docker.from_env(timeout=120)
        client.ping()
    except (DockerException, OSError) as exc:
        if client is not None:
            client.close()
        raise RuntimeStartError(
            f"no Docker engine answers ({exc}). Start one (e.g. `dockerd &`, or run tests/docker/engine.sh "
            "as root) and check with `drproof doctor`."
        ) from exc
    return client


def _unix_socket_answers() -> None:
    """Connect to the engine's unix socket once, or raise the OSError that says why not.

    Why: the Docker SDK asks the engine its API version while it builds the client, and
    when nothing listens it leaves that connection's socket open (found as a
    ResourceWarning in whichever test next ran the collector). A socket that does not
    answer is found here, and closed here.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        probe.connect(host.removeprefix("unix://"))


def container_exists(container: Any) -> bool:
    """Whether the engine still has ``container`` (refreshing its state): a removed one is gone, not an error."""
    from docker.errors import NotFound

    if container is None:
        return False
    try:
        container.reload()
        return True
    except NotFound:
        return False


class _Container:
    """One service container with its named volume: (re)created from the same image on demand."""

    def __init__(self, runtime: DockerRuntime, instance: str, kind: str, mount: str, port: int) -> None:
        self.runtime = runtime
        self.instance = instance
        self.kind = kind
        self.mount = mount
        self.port = port
        self.image = runtime.image_for(instance, kind)
        self.volume = f"drproof-{runtime.run_id}-{instance}-data"
        self.generation = 0
        self.host_port: int | None = None
        self.container: Any = None
        self._ensure_volume()

    def _ensure_volume(self) -> None:
        from docker.errors import NotFound

        try:
            self.runtime.client.volumes.get(self.volume)
        except NotFound:
            self.runtime.client.volumes.create(self.volume, labels=self.runtime.labels)

    def start(self, env: dict[str, str], command: list[str] | None, binds: dict[str, dict[str, str]]) -> None:
        """Create and start a fresh container from the image, keeping (or recreating) the volume."""
        from docker.errors import ImageNotFound
        from testcontainers.core.container import DockerContainer

        self._ensure_volume()
        self.generation += 1
        tc = DockerContainer(self.image)
        for key, value in env.items():
            tc.with_env(key, value)
        if command:
            tc.with_command(command)
        tc.with_volume_mapping(self.volume, self.mount, "rw")
        for host, spec in binds.items():
            tc.with_volume_mapping(host, spec["bind"], spec["mode"])
        # Published on loopback only: nothing outside this machine can reach the stack.
        cast(dict[str, Any], tc.ports)[f"{self.port}/tcp"] = ("127.0.0.1", None)
        tc.with_name(f"drproof-{self.runtime.run_id}-{self.instance}-{self.generation}")
        tc.with_kwargs(labels=self.runtime.labels, network=self.runtime.network_name, networking_config=self._alias())
        try:
            tc.start()
        except ImageNotFound as exc:
            raise RuntimeStartError(
                f"image {self.image!r} is not present and cannot be pulled here. Build it with "
                "tests/docker/build-images.sh, or set stack.images.{self.kind} to an image you have."
            ) from exc
        self.container = tc.get_wrapped_container()
        self.host_port = int(tc.get_exposed_port(self.port))
        self.runtime.remember_image(self.kind, self.image)

    def _alias(self) -> dict[str, Any]:
        """Its component name as its address on the run's network, whatever generation it is."""
        network = self.runtime.network_name
        return {network: self.runtime.client.api.create_endpoint_config(aliases=[self.instance])}

    def resume(self) -> None:
        """Start the stopped container again; its published port may have changed."""
        self.container.start()
        self.container.reload()
        ports = self.container.attrs["NetworkSettings"]["Ports"][f"{self.port}/tcp"]
        self.host_port = int(ports[0]["HostPort"])

    def exists(self) -> bool:
        return container_exists(self.container)

    def running(self) -> bool:
        return self.exists() and self.container.status == "running"

    def logs(self) -> str:
        try:
            return cast(bytes, self.container.logs(tail=20)).decode(errors="replace")
        except Exception:  # the container may be gone; logs are only a hint
            return "(no logs)"

    def kill(self) -> dict[str, Any]:
        if self.running():
            self.container.kill(signal="SIGKILL")
        return {"container": self.container.name, "signal": "SIGKILL"}

    def stop(self) -> dict[str, Any]:
        if self.running():
            self.container.stop(timeout=15)
        return {"container": self.container.name, "stopped": not self.running()}

    def remove(self) -> dict[str, Any]:
        name = self.container.name if self.container is not None else None
        if self.exists():
            self.container.remove(force=True)
        self.container = None
        return {"container": name, "removed": True}

    def remove_volume(self) -> dict[str, Any]:
        from docker.errors import NotFound

        detail = self.remove()
        with contextlib.suppress(NotFound):
            self.runtime.client.volumes.get(self.volume).remove(force=True)
        return {**detail, "volume": self.volume, "volume_removed": True}

    def exec_version(self, argv: list[str]) -> str:
        code, out = self.container.exec_run(argv)
        return cast(bytes, out).decode(errors="replace").strip() if code == 0 else "unknown"


class _BoxOps(ContainerOps):
    """Container faults act on the service's one container and volume."""

    box: _Container

    def kill_container(self) -> dict[str, Any]:
        return self.box.kill()

    def stop_container(self) -> dict[str, Any]:
        return self.box.stop()

    def remove_container(self) -> dict[str, Any]:
        return self.box.remove()

    def remove_volume(self) -> dict[str, Any]:
        return self.box.remove_volume()


class DockerPostgres(PostgresService, _BoxOps):
    def __init__(self, runtime: DockerRuntime, instance: str) -> None:
        self.password = secrets.token_urlsafe(24)
        self.box = _Container(runtime, instance, "postgres", PGDATA, 5432)
        self._version = "unknown"
        self.ensure_running()

    def _env(self) -> dict[str, str]:
        return {"POSTGRES_USER": self.superuser, "POSTGRES_PASSWORD": self.password, "POSTGRES_DB": "postgres"}

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.box.host_port} user={self.superuser} dbname={dbname} connect_timeout=5"

    def tool_dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port=5432 user={self.superuser} dbname={dbname} connect_timeout=10"

    def network_dsn(self, dbname: str = "postgres") -> str | None:
        return f"host={self.box.instance} port=5432 user={self.superuser} dbname={dbname} connect_timeout=5"

    def tool(self, name: str) -> list[str]:
        # `-e PGPASSWORD` without a value copies it from our environment: never in argv.
        return ["docker", "exec", "-i", "-e", "PGPASSWORD", self.box.container.id, name]

    def tool_env(self) -> dict[str, str]:
        # docker exec needs the client's own settings (DOCKER_HOST, TLS) and nothing else.
        return tool_environment({"PGPASSWORD": self.password}, prefixes=("DOCKER_",))

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        return self.box.running()

    def kill(self) -> None:
        self.box.kill()

    def wipe_data(self) -> None:
        self.box.remove_volume()

    def data_location(self) -> str:
        return f"volume {self.box.volume} at {PGDATA}"

    def ensure_running(self) -> None:
        if self.box.running():
            return
        if self.box.exists():
            self.box.resume()
        else:
            self.box.start(self._env(), None, {})
        if not processes.wait_until(self._answers, timeout=READY_TIMEOUT, interval=0.2):
            raise RuntimeStartError(
                f"PostgreSQL container for {self.box.instance!r} did not answer within {READY_TIMEOUT:.0f} s. "
                f"Logs:\n{self.box.logs()}"
            )
        self._version = self.box.exec_version(["postgres", "--version"])

    def _answers(self) -> bool:
        if not self.box.running():
            raise RuntimeStartError(f"PostgreSQL container for {self.box.instance!r} exited. Logs:\n{self.box.logs()}")
        try:
            conn = psycopg2.connect(self.dsn(), password=self.password)
        except psycopg2.OperationalError:
            return False
        conn.close()
        return True


class DockerRedis(RedisService, _BoxOps):
    def __init__(self, runtime: DockerRuntime, instance: str, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.password = secrets.token_urlsafe(24)
        self.box = _Container(runtime, instance, "redis", "/data", 6379)
        conf_dir = workdir / f"redis-{instance}"
        conf_dir.mkdir(parents=True)
        conf = conf_dir / "redis.conf"
        # Password in a 0600 file mounted read-only, never in the container's command line.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'bind 0.0.0.0\nport 6379\ndir /data\nrequirepass {self.password}\nsave ""\nappendonly no\n')
        self.conf = conf
        self.port = 0
        self._version = "unknown"
        self.ensure_running()

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        return self.box.running()

    def kill(self) -> None:
        self.box.kill()

    def network_address(self) -> tuple[str, int] | None:
        return self.box.instance, 6379

    def ensure_running(self) -> None:
        if self.box.running():
            return
        if self.box.exists():
            self.box.resume()
        else:
            binds = {str(self.conf): {"bind": "/etc/drproof/redis.conf", "mode": "ro"}}
            self.box.start({}, ["redis-server", "/etc/drproof/redis.conf"], binds)
        assert self.box.host_port is not None
        self.port = self.box.host_port
        if not processes.wait_until(self._answers, timeout=READY_TIMEOUT, interval=0.1):
            raise RuntimeStartError(
                f"Redis container for {self.box.instance!r} did not answer within {READY_TIMEOUT:.0f} s. "
                f"Logs:\n{self.box.logs()}"
            )
        self._version = self.box.exec_version(["redis-server", "--version"])

    def _answers(self) -> bool:
        if not self.box.running():
            raise RuntimeStartError(f"Redis container for {self.box.instance!r} exited. Logs:\n{self.box.logs()}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


class DockerRuntime(Runtime):
    name: ClassVar[str] = "docker"
    capabilities: ClassVar[frozenset[str]] = frozenset({CONTAINERS})

    def __init__(self, workdir: Path, images: dict[str, str] | None = None) -> None:
        self.client = docker_client()
        self.images = {**DEFAULT_IMAGES, **(images or {})}
        self._chosen = set(images or {})  # kinds whose image the scenario named: never replaced
        self._wanted: dict[str, str] = {}  # instance -> image a restore test's backup needs
        self.run_id = secrets.token_hex(6)
        self.labels = {
            LABEL_MANAGED: "true",
            LABEL_RUN: self.run_id,
            LABEL_PID: str(os.getpid()),
            LABEL_HOST: socket.gethostname(),
            LABEL_OWNER: processes.owner_mark(),
        }
        self.root = workdir / "runtime"
        self.root.mkdir(parents=True, exist_ok=False)
        self.network_name = f"drproof-{self.run_id}"
        # A private network per run: the run's containers see each other and nothing else.
        self.client.networks.create(self.network_name, labels=self.labels, driver="bridge")
        self._dirs: dict[str, Path] = {}
        self._image_ids: dict[str, str] = {}
        self.app_generation = 0  # application containers started so far (engine.runtime.docker_app)
        self.app_images: dict[str, str] = {}  # application -> "image (id)" it last ran from, for the report
        self._closed = False

    def want(self, instance: str, wanted: ServerWanted) -> None:
        """The official image of the backup's major (``postgres:15``, ``redis:7``), unless the
        scenario named an image for that kind; a missing image is reported when it starts."""
        if wanted.kind not in self._chosen:
            self._wanted[instance] = f"{wanted.kind}:{wanted.major}"

    def image_for(self, instance: str, kind: str) -> str:
        return self._wanted.get(instance, self.images[kind])

    def remember_image(self, kind: str, image: str) -> None:
        if kind not in self._image_ids:
            self._image_ids[kind] = str(self.client.images.get(image).id)

    def postgres(self, instance: str) -> DockerPostgres:
        service: DockerPostgres = self.server("postgres", instance)
        return service

    def redis(self, instance: str) -> DockerRedis:
        service: DockerRedis = self.server("redis", instance)
        return service

    def start_postgres(self, instance: str, options: object = None) -> DockerPostgres:
        return DockerPostgres(self, instance)

    def start_redis(self, instance: str, options: object = None) -> DockerRedis:
        return DockerRedis(self, instance, self.root)

    def service_container(self, instance: str, spec: ContainerSpec) -> ServiceContainer:
        from engine.runtime.docker_app import DockerServiceContainer

        return DockerServiceContainer(self, instance, spec)

    def describe(self) -> dict[str, str]:
        facts = {
            "runtime": self.name,
            "engine": str(self.client.version().get("Version", "unknown")),
            "run_id": self.run_id,
            "isolation": "fresh containers and volumes per run on a private bridge network, ports published on "
            "127.0.0.1 only, per-run random passwords; directory components on the host",
        }
        for kind, image_id in sorted(self._image_ids.items()):
            facts[f"image:{kind}"] = f"{self.images[kind]} ({image_id})"
        for name, image in sorted(self.app_images.items()):
            facts[f"application:{name}"] = image
        for kind, name, svc in self.started():
            facts[f"{kind}:{name}"] = svc.version()
        return facts

    @classmethod
    def doctor(cls, images: dict[str, str], required: bool) -> Iterator[Check]:
        """The docker CLI, an engine that answers, and the images drills start containers from."""
        fix_engine = "start an engine (as root: bash tests/docker/engine.sh, or `dockerd &`)"
        cli = shutil.which("docker")
        yield Check("docker CLI", cli is not None, cli or "not found", "apt-get install docker.io", required)
        try:
            client = docker_client()
        except RuntimeStartError as exc:
            yield Check("Docker engine", False, str(exc).split(". ")[0], fix_engine, required)
            return
        try:
            yield Check("Docker engine", True, f"version {client.version().get('Version', '?')}", required=required)
            yield from cls._image_checks(client, images, required)
        finally:
            client.close()  # also when the caller stops reading the checks early

    @classmethod
    def _image_checks(cls, client: Any, images: dict[str, str], required: bool) -> Iterator[Check]:
        from docker.errors import ImageNotFound

        for kind, image in sorted({**DEFAULT_IMAGES, **images}.items()):
            try:
                found = client.images.get(image)
                yield Check(f"image {image} ({kind})", True, str(found.id)[:19], required=required)
            except ImageNotFound:
                yield Check(
                    f"image {image} ({kind})",
                    False,
                    "not present (no registry is reachable from this machine)",
                    "build it: bash tests/docker/build-images.sh (or docker pull where a registry is reachable)",
                    required,
                )

    @classmethod
    def leftovers(cls, everything: bool = False) -> dict[str, list[str]]:
        client = docker_client()
        try:
            return {f"run {run}": items for run, items in leftovers(client, everything=everything).items()}
        finally:
            client.close()

    @classmethod
    def remove_leftovers(cls, run: str) -> list[str]:
        client = docker_client()
        try:
            return remove_labelled(client, {LABEL_RUN: run.removeprefix("run ")})
        finally:
            client.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        problems = self.stop_adopted()
        remove_labelled(self.client, {LABEL_RUN: self.run_id})
        shutil.rmtree(self.root, ignore_errors=True)
        self.client.close()
        if problems:
            raise RuntimeStartError("some processes could not be stopped cleanly: " + "; ".join(problems))


def remove_labelled(client: Any, labels: dict[str, str]) -> list[str]:
    """Remove containers, then volumes, then networks carrying all ``labels``; return what went.

    What is gone by the time it is removed (another `drproof clean`, or the run's own close
    racing a ``--all``) is not an error: two cleanups at once ended one of them in a
    docker.errors.NotFound traceback, the rest of its run's resources left (found by
    review). What cannot be removed is named in a RuntimeStartError once the rest is gone.
    """
    from docker.errors import APIError, NotFound

    selector = {"label": [f"{k}={v}" for k, v in labels.items()]}
    gone: list[str] = []
    problems: list[str] = []

    def attempt(what: str, remove: Callable[[], object]) -> None:
        try:
            remove()
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code == 409 and "in progress" in str(exc.explanation):
                return  # another cleanup is removing it
            problems.append(f"{what}: {exc.explanation or exc}")
            return
        gone.append(what)

    for c in client.containers.list(all=True, filters=selector, ignore_removed=True):
        attempt(f"container {c.name}", functools.partial(c.remove, force=True, v=True))
    for v in client.volumes.list(filters=selector):
        attempt(f"volume {v.name}", functools.partial(v.remove, force=True))
    for n in client.networks.list(filters=selector):
        attempt(f"network {n.name}", n.remove)
    if problems:
        raise RuntimeStartError("could not remove Docker resources: " + "; ".join(problems))
    return gone


def leftovers(client: Any, *, everything: bool = False) -> dict[str, list[str]]:
    """drproof-labelled resources by run id, for runs whose process is gone (or all)."""
    runs: dict[str, list[str]] = {}
    selector = {"label": [f"{LABEL_MANAGED}=true"]}
    items: list[tuple[str, dict[str, str], str]] = []
    items += [
        (f"container {c.name}", c.labels, c.attrs.get("Created", ""))
        for c in client.containers.list(all=True, filters=selector, ignore_removed=True)
    ]
    items += [
        (f"volume {v.name}", v.attrs.get("Labels") or {}, v.attrs.get("CreatedAt", ""))
        for v in client.volumes.list(filters=selector)
    ]
    items += [
        (f"network {n.name}", n.attrs.get("Labels") or {}, n.attrs.get("Created", ""))
        for n in client.networks.list(filters=selector)
    ]
    for what, labels, created in items:
        if everything or not _run_alive(labels, created):
            runs.setdefault(labels.get(LABEL_RUN, "?"), []).append(what)
    return runs


def _run_alive(labels: dict[str, str], created: str) -> bool:
    """Whether the run that labelled a resource may still be going.

    Why not "gone unless this host's pid lives": a run of another host (a CI job in its
    own container, sharing the Docker engine through its socket, has a hostname of its
    own) was always "gone", and `drproof clean` anywhere removed its containers and
    volumes mid-drill (found by review). Its drproof cannot be seen from here: it is gone
    only once older than any drill (``OTHER_HOST_STALE_S``), like a repository's staging.
    """
    owner = labels.get(LABEL_OWNER, "")
    if labels.get(LABEL_HOST, "") != socket.gethostname() or (owner and processes.in_another_namespace(owner)):
        return _age_s(created) < OTHER_HOST_STALE_S
    if owner:
        return processes.owner_alive(owner)
    pid = labels.get(LABEL_PID, "")  # labelled by an older drproof
    return pid.isdigit() and _pid_alive(int(pid))


def _age_s(created: str) -> float:
    """Seconds since Docker's ``Created`` time (UTC, ``2026-12-07T19:17:00.123Z``); 0 if unreadable."""
    try:
        then = datetime.datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return time.time() - then.timestamp()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
