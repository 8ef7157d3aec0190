"""What integration tests need from the host, and how they say it is missing.

.ci/run installs Debian's PostgreSQL 15, pgBackRest and redis-server; with CI=true a
missing one fails the test (a skipped test would hide that CI lost a server), elsewhere
it is skipped with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from engine.runtime import processes

PG15 = Path("/usr/lib/postgresql/15/bin")
DEBIAN_REDIS = Path("/usr/bin/redis-server")


def unavailable(reason: str) -> NoReturn:
    """A test cannot run here: a failure under CI=true (CI provides everything), a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run must provide it", pytrace=False)
    pytest.skip(reason)


def require(what: str, present: bool, install: str) -> None:
    if not present:
        unavailable(f"{what} is not installed ({install})")


def require_pg15() -> Path:
    require("Debian's PostgreSQL 15", (PG15 / "postgres").is_file(), "apt-get install postgresql-15")
    return PG15


def require_pgbackrest() -> None:
    require_pg15()
    require("pgBackRest", shutil.which("pgbackrest") is not None, "apt-get install pgbackrest")


def require_patroni() -> None:
    """Debian's patroni and etcd-server: a postgres-replicated component with ``manager: patroni``."""
    for tool, package in (("patroni", "patroni"), ("etcd", "etcd-server")):
        require(f"Debian's {package}", shutil.which(tool) is not None, f"apt-get install {package}")


def require_debian_redis() -> Path:
    require("Debian's redis-server 7", DEBIAN_REDIS.is_file(), "apt-get install redis-server")
    return DEBIAN_REDIS


@contextlib.contextmanager
def debian_redis(root: Path, password: str) -> Iterator[int]:
    """A Debian redis-server 7 on loopback with a password, as an operator runs one; yields its port."""
    with redis_server(require_debian_redis(), root, password) as port:
        yield port


@contextlib.contextmanager
def redis_server(binary: Path, root: Path, password: str, extra: str = "") -> Iterator[int]:
    """A server of ``binary`` (Redis or Valkey) on loopback with a password; yields its port.

    ``extra``: more configuration lines (``databases 8``).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    conf = root / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\ndir {root}\nrequirepass {password}\nsave ""\nappendonly no\ndaemonize no\n'
        + extra
    )
    conf.chmod(0o600)
    proc = processes.spawn([str(binary), str(conf)], log=root / "server.log")
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
        if not processes.wait_until(lambda: _pings(client), timeout=20, interval=0.05):
            raise RuntimeError(f"redis-server on {port} did not start: {processes.tail(root / 'server.log')}")
        yield port
    finally:
        processes.stop(proc, signal.SIGTERM)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
