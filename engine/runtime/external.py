"""Servers and directories drproof did not create: the targets of standalone backups.

The standalone engine (``drproof backup`` / ``drproof recovery``) works on a real stack.
drproof never starts, stops, kills or wipes these servers: it connects, backs up and
restores. A server that does not answer is an error telling the operator to start it.
Client tools come from the embedded PostgreSQL 18 wheel, which can dump and restore any
server from PostgreSQL 9.2 on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psycopg2
import redis

from engine.errors import RuntimeStartError
from engine.runtime.base import PostgresService, RedisService, Runtime
from engine.runtime.local import postgres_bin_dir


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None


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
        redis_targets: dict[str, RedisTarget] | None = None,
        directories: dict[str, Path] | None = None,
    ) -> None:
        self._pg = {k: ExternalPostgres(v) for k, v in (postgres or {}).items()}
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
