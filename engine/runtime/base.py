"""What a runtime provides to components: servers and directories it owns.

Components talk to services only through these interfaces, so the same component code
runs against embedded processes (local) or containers (docker). Operations that destroy
or rebuild a server (kill, wipe, restart) are runtime operations because only the
runtime knows how that server was created.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from engine.lazy import lazy
from engine.registry import Registry

if TYPE_CHECKING:
    import redis

    from engine.runtime.containers import ContainerSpec, ServiceContainer
else:
    redis = lazy("redis")


class PostgresService(ABC):
    """A PostgreSQL server owned by the runtime."""

    superuser: str = "postgres"

    @abstractmethod
    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for drproof itself (no password in it; see ``tool_env``)."""

    def tool_dsn(self, dbname: str = "postgres") -> str:
        """The connection string client tools use; differs when they run inside a container."""
        return self.dsn(dbname)

    @abstractmethod
    def tool(self, name: str) -> list[str]:
        """argv prefix to run a client tool (pg_dump, pg_restore, psql) matching the server."""

    @abstractmethod
    def tool_env(self) -> dict[str, str]:
        """Environment for client tools, carrying credentials out of argv."""

    def client_tools(self) -> str:
        """Where this server's client tools come from, for the manifest."""
        return " ".join(self.tool("pg_dump"))

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def is_running(self) -> bool: ...

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""

    @abstractmethod
    def wipe_data(self) -> None:
        """Kill the server and delete its data directory: total loss. Must verify the loss."""

    @abstractmethod
    def data_location(self) -> str:
        """Where the data live, for reports (a path, or a volume and mount point)."""

    def network_dsn(self, dbname: str = "postgres") -> str | None:
        """The libpq DSN a container on the run's network uses, or None off a container network."""
        return None

    @abstractmethod
    def ensure_running(self) -> None:
        """Start the server, creating an empty cluster first if its data are gone."""


class PhysicalAccess(ABC):
    """Server-side access that physical (file-level) PostgreSQL backups need.

    A logical dump needs only a connection; a base backup restore replaces the data
    directory and replays WAL, which only whoever runs the server can do. Services that
    offer this implement it; the physical component refuses clearly on the others.
    """

    @abstractmethod
    def wal_archive(self) -> Path:
        """Directory the server's ``archive_command`` copies each completed WAL segment into."""

    @property
    def restores_foreign_backups(self) -> bool:
        """Whether restores here are of another server's backups (``recovery restore --to``).

        Then this server's WAL archive is its own, not the backups' server's: none of its
        WAL may be replayed as theirs, and its timelines are not theirs to follow.
        """
        return False

    @abstractmethod
    def server_file_owner(self) -> tuple[int, int] | None:
        """uid and gid the server's files must belong to, or None to keep the current user's."""

    def cluster_directory(self) -> Path | None:
        """The data directory ``replace_cluster`` rebuilds, or None where drproof cannot see it.

        Why: the new cluster is built beside the old one, on the same filesystem, before the
        old one goes; a restore checks that filesystem's free space before stopping anything.
        """
        return None

    @abstractmethod
    def replace_cluster(self, populate: Callable[[Path], None], settings: dict[str, str]) -> float:
        """Stop the server, rebuild its data directory with ``populate``, recover, promote.

        ``settings`` go into the recovery configuration (restore_command, targets). The old
        data directory is kept until the new cluster has promoted, and put back if recovery
        fails, so a failed restore never leaves less than there was. Returns the seconds
        spent in WAL replay and promotion.
        """


def prepare_recovery(data: Path, settings: dict[str, str], owner: tuple[int, int] | None) -> None:
    """Make a freshly populated data directory start in recovery with ``settings``.

    The settings go into postgresql.auto.conf (read last, so they win over the restored
    cluster's own), recovery.signal asks for archive recovery, and every file is handed
    to the server's user, which must own its data directory.
    """
    import os

    if settings:  # drproof's own recovery; a tool that wrote its own (pgBackRest) keeps it
        _strip_recovery(data / "postgresql.auto.conf")
    with (data / "postgresql.auto.conf").open("a", encoding="utf-8") as fh:
        fh.write("# written by drproof for this restore\n")
        for key, value in settings.items():
            fh.write(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n")
    (data / "recovery.signal").touch()
    if owner is not None:
        for path in [data, *data.rglob("*")]:
            os.lchown(path, *owner)


# The settings that make a server recover, and stop it where asked. Left in a restored
# server's postgresql.auto.conf they travel into every later base backup (found by
# review): a restore of such a set stopped replaying "after reaching consistency" (rows
# committed after it lost, while drproof said it had replayed the live archive), or
# refused to start ("multiple recovery targets specified").
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
)


def _strip_recovery(conf: Path) -> None:
    """Remove recovery settings (and drproof's marks) a restored postgresql.auto.conf still holds."""
    if not conf.exists():
        return
    kept = [
        line
        for line in conf.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
        if line.split("=", 1)[0].strip() not in RECOVERY_SETTINGS and line.strip() != "# written by drproof for this restore"
    ]
    conf.write_text("".join(kept), encoding="utf-8", errors="surrogateescape")


def forget_recovery(data: Path) -> None:
    """Once the restored server is promoted, take drproof's recovery settings out of its configuration.

    Edited in place (the file keeps its owner and mode), not by ``ALTER SYSTEM``, which
    needs a superuser: the settings are read only when a server starts, so removing them
    from a running primary changes nothing now, and later base backups of it carry no
    recovery target (see ``RECOVERY_SETTINGS``).
    """
    _strip_recovery(data / "postgresql.auto.conf")


# Settings in a restored cluster's configuration that act outside its data directory: on
# the backup's server's files, archive, replicas, port and sockets. A cluster started
# anywhere but on the server the backup came from must not have them: a scratch restore
# that kept them listened on production's port and ran production's archive_command,
# writing a timeline history and a WAL segment into production's WAL archive (found by
# review). ``synchronous_standby_names`` would make every commit wait for production's
# standbys; ``log_directory`` may be an absolute path of production's.
OUTWARD_SETTINGS = re.compile(
    r"^\s*(data_directory|hba_file|ident_file|external_pid_file|include|include_if_exists|include_dir|ssl\w*|"
    r"archive_mode|archive_command|archive_library|archive_cleanup_command|restore_command|recovery_end_command|"
    r"primary_conninfo|primary_slot_name|synchronous_standby_names|port|listen_addresses|unix_socket_\w+|"
    r"log_directory)\b",
    re.IGNORECASE,
)
SERVER_CONFIGURATION = ("postgresql.conf", "postgresql.auto.conf")


def comment_out_outward(data: Path, note: str, names: tuple[str, ...] = SERVER_CONFIGURATION) -> list[str]:
    """Comment out ``OUTWARD_SETTINGS`` in the data directory's server configuration; the names done.

    ``postgresql.auto.conf`` is the backed-up server's ``ALTER SYSTEM``: its archive and
    replication settings go too. ``note`` says, in each commented line, why.
    """
    done = []
    for name in names:
        path = data / name
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
        kept = []
        for line in lines:
            match = OUTWARD_SETTINGS.match(line)
            if match:
                done.append(match.group(1).lower())
                line = f"# ({note}) {line}"
            kept.append(line)
        path.write_text("".join(kept), encoding="utf-8", errors="surrogateescape")
    return done


def login_refused(exc: Exception) -> str | None:
    """The reason, when a connection failed because the server refused the login itself.

    Wrong password, unknown role or a pg_hba.conf rule answer within milliseconds and
    never heal by waiting; telling them apart from "not up yet" stops a restore from
    waiting an hour on a server that is there but will not let drproof in.
    """
    text = " ".join(str(exc).split())
    for marker in (
        "password authentication failed",
        "no password supplied",
        "does not exist",
        "pg_hba.conf",
        "authentication failed",
        "WRONGPASS",
        "NOAUTH",
        "invalid password",
        "invalid username-password",
    ):
        if marker in text:
            return text
    return None


def promoted(dsn: str, password: str | None) -> bool:
    """Whether the server at ``dsn`` answers and has left recovery (False while it has not).

    A login the server refuses raises at once (``RuntimeStartError``): after a physical
    restore the roles are the backup's, and if the configured password is not theirs no
    amount of waiting lets drproof in.
    """
    import psycopg2

    from engine.errors import RuntimeStartError

    try:
        conn = psycopg2.connect(dsn, password=password)
    except psycopg2.OperationalError as exc:
        refused = login_refused(exc)
        if refused and "the database system is" not in refused:
            raise RuntimeStartError(
                f"the restored server answers but refuses drproof's login ({refused}): the restored cluster's "
                "roles are the backup's, so the configured user or password must be the ones valid at backup "
                "time. Recovery itself may have finished: check the server's log"
            ) from None
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            row = cur.fetchone()
            return row is not None and row[0] is False
    finally:
        conn.close()


class RedisService(ABC):
    """A Redis server owned by the runtime."""

    host: str
    port: int
    password: str | None

    def client(self, db: int = 0) -> redis.Redis:
        """A client for one logical database; the password never leaves this object."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, db=db, socket_timeout=30)

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def is_running(self) -> bool: ...

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    def ensure_running(self) -> None: ...

    def network_address(self) -> tuple[str, int] | None:
        """(host, port) a container on the run's network uses, or None off a container network."""
        return None

    def load_checked_rdb(self, rdb: Path, dbs: list[int]) -> bool:
        """Load an RDB file drproof has already proven sound into this server, in place.

        False where the service cannot (the default: a server drproof does not own);
        the caller then copies the keys over a connection instead.
        """
        return False


class ContainerOps(ABC):
    """Container-level operations, offered only by services that run in containers.

    Faults such as kill_container or remove_volume look for this interface and refuse
    clearly on runtimes that have no containers.
    """

    @abstractmethod
    def kill_container(self) -> dict[str, Any]: ...

    @abstractmethod
    def stop_container(self) -> dict[str, Any]: ...

    @abstractmethod
    def remove_container(self) -> dict[str, Any]: ...

    @abstractmethod
    def remove_volume(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ServerWanted:
    """The server a restore needs: the kind, and the version the backup was taken from.

    A restore test builds its sandbox from a real backup, so the sandbox server must be
    one the backup loads into and compares with: a base backup only into its own major
    version, a dump and its catalog fingerprint alike only into the major it came from,
    and an RDB only into a Redis that reads its format.
    """

    kind: str  # "postgres" | "redis"
    major: int
    version: str  # as the backup recorded it, e.g. "PostgreSQL 15.10" or "7.0.15"
    why: str  # for messages: "backup 20261205T... of shop-db was taken from PostgreSQL 15.10"


# -- what runtimes offer --------------------------------------------------------------------
# A runtime has capabilities; component kinds and faults name the ones they need, and a
# drill on a runtime that lacks one stops before anything starts, naming the runtimes
# that have it. A new capability is one line here and in the runtimes that have it.
PHYSICAL_ACCESS = "physical-access"
OWNED_PROCESSES = "owned-processes"
CONTAINERS = "containers"
REPLICAS = "replicas"
HOST_RDB = "host-rdb"

CAPABILITIES: dict[str, str] = {
    PHYSICAL_ACCESS: "the data directory and WAL archive of its PostgreSQL servers are reachable from this host",
    OWNED_PROCESSES: "drproof starts its servers as processes on this host, so it may stop them and edit their files",
    CONTAINERS: "its servers run in containers, which faults may kill, stop or remove with their volumes, and it "
    "starts an application from an image as a container (run.image)",
    REPLICAS: "it starts replicated topologies (a primary with streaming replicas, Sentinel, Cluster)",
    HOST_RDB: "a redis-server on this host reads the RDB snapshots its Redis servers write",
}


@dataclass
class ServerKind:
    """One kind of server a runtime provides: the name components ask for, and how it starts one.

    ``start(runtime, instance, options)`` creates the server for ``instance`` and returns
    it running; ``options`` are the component's wishes for a topology (replicas, a
    manager), None for a single server. A new topology is a module with its service and
    one ``provide`` line (engine/runtime/__init__.py) per runtime that offers it.
    """

    name: str
    start: Callable[[Any, str, Any], Any]
    description: str = ""


@dataclass(frozen=True)
class Check:
    """One line of `drproof doctor`: a verdict and, when it fails, the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


class Runtime(ABC):
    """Provides and owns every server and directory of one drill run."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # The server kinds this runtime provides, by the name components ask for; each
    # runtime class has its own (``__init_subclass__``), filled by ``provide``.
    server_kinds: ClassVar[Registry[ServerKind]] = Registry("server kind")
    # Whether `drproof doctor`'s checks of this runtime decide its exit code even when
    # another runtime was asked for (the local one: every drill can run there).
    doctor_required: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "server_kinds" not in cls.__dict__:
            cls.server_kinds = Registry(f"{cls.__dict__.get('name', cls.__name__)} server kind")
            cls.provide(ServerKind("directory", _start_directory, "a fresh directory of the run"))

    @classmethod
    def provide(cls, kind: ServerKind) -> ServerKind:
        """Register a server kind this runtime offers (one line per runtime and kind)."""
        return cls.server_kinds.register(kind)

    @classmethod
    def lacks(cls, needs: frozenset[str], server: str | None = None) -> list[str]:
        """What of ``needs`` (capabilities) and ``server`` (a server kind) this runtime does not offer."""
        missing = sorted(needs - cls.capabilities)
        if server is not None and server not in cls.server_kinds:
            missing.append(f"{server} servers")
        return missing

    def server(self, kind: str, instance: str, options: Any = None) -> Any:
        """The server of ``kind`` for ``instance``, started on first use and owned until ``close``."""
        started: dict[tuple[str, str], Any] = self.__dict__.setdefault("_started", {})
        if (kind, instance) not in started:
            if kind not in type(self).server_kinds:
                from engine.errors import RuntimeStartError

                raise RuntimeStartError(
                    f"the {self.name} runtime provides no {kind} servers "
                    f"(it provides: {', '.join(type(self).server_kinds.names())})"
                )
            started[(kind, instance)] = type(self).server_kinds.get(kind).start(self, instance, options)
        return started[(kind, instance)]

    def started(self) -> list[tuple[str, str, Any]]:
        """Every server started so far, as (kind, instance, service), in start order; directories left out."""
        started: dict[tuple[str, str], Any] = self.__dict__.get("_started", {})
        return [(kind, instance, svc) for (kind, instance), svc in started.items() if kind != "directory"]

    def want(self, instance: str, wanted: ServerWanted) -> None:
        """Ask for the server version a backup needs, before ``postgres``/``redis`` creates it.

        Runtimes that can choose (local, docker) override this; the others cannot give a
        sandbox a version, and say so before anything starts.
        """
        from engine.errors import RuntimeStartError

        raise RuntimeStartError(
            f"the {self.name} runtime cannot choose server versions, which a restore test needs: {wanted.why}; "
            "use the local or docker runtime"
        )

    @abstractmethod
    def __init__(self, workdir: Path, images: dict[str, str] | None = None) -> None:
        """Own ``workdir``; ``images`` maps kinds to container images for runtimes that use them."""

    def postgres(self, instance: str) -> PostgresService:
        """The single PostgreSQL server of ``instance`` (server kind ``postgres``)."""
        service: PostgresService = self.server("postgres", instance)
        return service

    def redis(self, instance: str) -> RedisService:
        """The single Redis server of ``instance`` (server kind ``redis``)."""
        service: RedisService = self.server("redis", instance)
        return service

    def service_container(self, instance: str, spec: ContainerSpec) -> ServiceContainer:
        """A service container on the run's private network; runtimes without one refuse."""
        from engine.errors import RuntimeStartError

        raise RuntimeStartError(
            f"application {instance!r} runs from an image ({spec.image}), which needs the docker runtime "
            f"(--runtime docker or stack.runtime: docker); the {self.name} runtime starts processes only"
        )

    # Runtimes that own a run directory set these; ``directory`` then needs no override.
    root: Path
    _dirs: dict[str, Path]

    def directory(self, instance: str) -> Path:
        """A fresh, empty directory that belongs to this run (created once per instance)."""
        if instance not in self._dirs:
            path = self.root / f"dir-{instance}"
            path.mkdir()
            self._dirs[instance] = path
        return self._dirs[instance]

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Runtime facts for reports: name, versions, isolation."""

    @abstractmethod
    def close(self) -> None:
        """Stop every server and remove everything this runtime created. Idempotent."""

    # -- `drproof doctor` and `drproof clean` ----------------------------------------------
    @classmethod
    def doctor(cls, images: dict[str, str], required: bool) -> Iterator[Check]:
        """Whether this machine can run this runtime's servers, one check at a time."""
        return iter(())

    @classmethod
    def leftovers(cls, everything: bool = False) -> dict[str, list[str]]:
        """What runs of this runtime left behind (by run), for runs whose process is gone (or all)."""
        return {}

    @classmethod
    def remove_leftovers(cls, run: str) -> list[str]:
        """Remove what ``leftovers`` listed for ``run``; return what went."""
        return []

    def adopt(self, stop: Callable[[], None]) -> None:
        """Have ``stop`` called first when the runtime closes: a process a component started.

        An application component starts its own process; like every server of the run it
        must be gone when the run is, whatever the exit path.
        """
        self.__dict__.setdefault("_adopted", []).append(stop)

    def stop_adopted(self) -> list[str]:
        """Run the adopted stops (each at most once); the problems, for ``close`` to report."""
        problems = []
        adopted: list[Callable[[], None]] = self.__dict__.pop("_adopted", [])
        for stop in reversed(adopted):
            try:
                stop()
            except Exception as exc:  # keep stopping the others; report at the end
                problems.append(f"{getattr(stop, '__qualname__', 'process')}: {exc}")
        return problems

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_directory(runtime: Runtime, instance: str, options: Any) -> Path:
    return runtime.directory(instance)
