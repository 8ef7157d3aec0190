"""Servers and directories drproof did not create: the targets of standalone backups.

The standalone engine (``drproof backup`` / ``drproof recovery``) works on a real stack.
drproof never starts, stops, kills or wipes these servers: it connects, backs up and
restores. A server that does not answer is an error telling the operator to start it.
Client tools come from the embedded PostgreSQL 18 wheel, which can dump and restore any
server from PostgreSQL 9.2 on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import psycopg2
import redis

from engine.errors import RuntimeStartError
from engine.runtime import processes
from engine.runtime.base import PhysicalAccess, PostgresService, RedisService, Runtime, prepare_recovery, promoted
from engine.runtime.local import postgres_bin_dir


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None


@dataclass(frozen=True)
class PhysicalTarget:
    """What a physical restore of an existing server needs, all declared by the operator.

    drproof never decides on its own to stop a server it did not start; it runs the
    operator's own stop and start commands (systemctl, pg_ctlcluster, ...) around the
    one operation that cannot be done on a running server.
    """

    data_directory: Path
    wal_archive: Path
    stop: list[str]
    start: list[str]


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    db: int
    password: str | None


class _NotOurs:
    """Refusals for operations drproof only performs on servers it created."""

    what: str

    def _refuse(self, action: str) -> RuntimeStartError:
        return RuntimeStartError(f"drproof does not {action} {self.what}: it did not start it")


class ExternalPostgres(_NotOurs, PostgresService):
    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.superuser = target.user
        self.what = f"the PostgreSQL server at {target.host}:{target.port}"
        self._version = "unknown"

    def dsn(self, dbname: str = "postgres") -> str:
        t = self.target
        return f"host={t.host} port={t.port} user={t.user} dbname={dbname} connect_timeout=10"

    def tool(self, name: str) -> list[str]:
        return [str(postgres_bin_dir() / name)]

    def tool_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.target.password is not None:
            env["PGPASSWORD"] = self.target.password
        return env

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        try:
            conn = psycopg2.connect(self.dsn(self.target.dbname), password=self.target.password)
        except psycopg2.OperationalError:
            try:
                conn = psycopg2.connect(self.dsn("postgres"), password=self.target.password)
            except psycopg2.OperationalError:
                return False
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                row = cur.fetchone()
                self._version = f"PostgreSQL {row[0]}" if row else "unknown"
        finally:
            conn.close()
        return True

    def ensure_running(self) -> None:
        if not self.is_running():
            raise RuntimeStartError(f"{self.what} does not answer; start it (or check the URL and password)")

    def kill(self) -> None:
        raise self._refuse("kill")

    def wipe_data(self) -> None:
        raise self._refuse("wipe")

    def data_location(self) -> str:
        return f"{self.target.host}:{self.target.port}"


class ExternalPhysicalPostgres(ExternalPostgres, PhysicalAccess):
    """An existing server whose data directory and WAL archive drproof may use."""

    def __init__(self, target: PostgresTarget, physical: PhysicalTarget) -> None:
        super().__init__(target)
        self.physical = physical
        self.replaced: Path | None = None
        self._pid_seen = False
        self._started = 0.0
        self._owner: tuple[int, int] | None = None

    def wal_archive(self) -> Path:
        return self.physical.wal_archive

    def server_file_owner(self) -> tuple[int, int] | None:
        # Read once, from the server's own directory, before a restore replaces it with
        # one drproof creates (and would otherwise own).
        if self._owner is None:
            data = self.physical.data_directory
            st = (data if data.exists() else data.parent).stat()
            self._owner = (st.st_uid, st.st_gid)
        return self._owner

    def _run(self, argv: list[str], what: str) -> None:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeStartError(f"the {what} command {argv[0]!r} could not run: {exc}") from exc
        if result.returncode != 0:
            raise RuntimeStartError(
                f"the {what} command {argv[0]!r} failed (exit {result.returncode}): {result.stderr.strip()[-1000:]}"
            )

    def replace_cluster(self, populate: Callable[[Path], None], settings: dict[str, str]) -> float:
        data = self.physical.data_directory
        owner = self.server_file_owner()
        self._run(self.physical.stop, "stop")
        if not processes.wait_until(lambda: not self.is_running(), timeout=120, interval=0.2):
            raise RuntimeStartError(f"{self.what} still answers after its stop command; nothing was changed")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # The replaced directory is kept, not deleted: after a restore the operator may
        # still need the state it replaced (forensics, a missed table). drproof says where.
        kept = data.with_name(f"{data.name}.drproof-replaced-{stamp}")
        if data.exists():
            data.rename(kept)
        try:
            data.mkdir(mode=0o700)
            populate(data)
            prepare_recovery(data, settings, owner)
            started = time.monotonic()
            self._run(self.physical.start, "start")
            self._pid_seen, self._started = False, time.monotonic()
            if not processes.wait_until(self._promoted, timeout=3600, interval=0.2):
                raise RuntimeStartError(f"{self.what} did not finish recovery within an hour")
            self.replaced = kept if kept.exists() else None
            return time.monotonic() - started
        except BaseException:
            with contextlib.suppress(RuntimeStartError):
                self._run(self.physical.stop, "stop")
            shutil.rmtree(data, ignore_errors=True)
            if kept.exists():
                kept.rename(data)
                self._run(self.physical.start, "start")
            raise

    def _promoted(self) -> bool:
        if promoted(self.dsn("postgres"), self.target.password):
            return True
        # drproof did not start this server and cannot watch its process; its pid file
        # says whether it still runs. A start command may return once the server accepts
        # read-only connections, and recovery can still fail after that: without this
        # check the wait would last the whole hour.
        if (self.physical.data_directory / "postmaster.pid").exists():
            self._pid_seen = True
        elif self._pid_seen:
            raise RuntimeStartError(f"{self.what} stopped during recovery; see the server's log")
        elif time.monotonic() - self._started > 120:
            raise RuntimeStartError(f"{self.what} did not start within 120 s of its start command")
        return False


class ExternalRedis(_NotOurs, RedisService):
    def __init__(self, target: RedisTarget) -> None:
        self.host = target.host
        self.port = target.port
        self.password = target.password
        self.what = f"the Redis server at {target.host}:{target.port}"
        self._version = "unknown"

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        try:
            info = self.client().info("server")
        except redis.RedisError:
            return False
        self._version = f"Redis {info.get('redis_version', '?')}"
        return True

    def ensure_running(self) -> None:
        if not self.is_running():
            raise RuntimeStartError(f"{self.what} does not answer; start it (or check the URL and password)")

    def kill(self) -> None:
        raise self._refuse("kill")


class ExternalRuntime(Runtime):
    """Maps component instances to existing servers and directories."""

    name: ClassVar[str] = "external"

    def __init__(
        self,
        workdir: Path,
        images: dict[str, str] | None = None,
        *,
        postgres: dict[str, PostgresTarget] | None = None,
        physical: dict[str, PhysicalTarget] | None = None,
        redis_targets: dict[str, RedisTarget] | None = None,
        directories: dict[str, Path] | None = None,
    ) -> None:
        self._pg: dict[str, ExternalPostgres] = {}
        for name, target in (postgres or {}).items():
            extra = (physical or {}).get(name)
            self._pg[name] = ExternalPhysicalPostgres(target, extra) if extra else ExternalPostgres(target)
        self._redis = {k: ExternalRedis(v) for k, v in (redis_targets or {}).items()}
        self._dirs = dict(directories or {})

    def postgres(self, instance: str) -> ExternalPostgres:
        svc = self._pg[instance]
        svc.ensure_running()
        return svc

    def redis(self, instance: str) -> ExternalRedis:
        svc = self._redis[instance]
        svc.ensure_running()
        return svc

    def directory(self, instance: str) -> Path:
        return self._dirs[instance]

    def describe(self) -> dict[str, str]:
        facts = {"runtime": self.name}
        facts.update({f"postgres:{k}": v.version() for k, v in self._pg.items()})
        facts.update({f"redis:{k}": v.version() for k, v in self._redis.items()})
        return facts

    def close(self) -> None:
        """Nothing to stop: drproof started nothing."""
