"""Staging a Redis restore in the live server's spare logical databases, then swapping.

A Redis restore cannot be built beside the live data the way a directory or a database
can be, except in the server itself: Redis has numbered logical databases, and
``SWAPDB a b`` (Redis 4.0 and later) exchanges two of them atomically for every client.
So the keys of each backed-up database ``d`` are restored into a database ``s`` that
holds nothing and that the backup does not use; the staged copy is fingerprinted as if
it were ``d`` and compared with the backup's fingerprint; only then is ``SWAPDB d s``
run, and ``s`` (now the old data) flushed. Any failure before the swap flushes the
spares and leaves every live key as it was.

Where the server has no spare database (Redis Cluster has only database 0, a server
may be configured with ``databases 1``, or every database is in use), the restore goes
into the live databases directly, after the engine proved the whole artifact; the
restore says so, because a failure part-way would then leave a partial copy.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

log = logging.getLogger(__name__)

_DB_PART = re.compile(r"^db(\d+) ")
# Keys staged with little time left may expire before they are counted.
_EXPIRY_SLACK = 0.01


def fingerprint_dbs(parts: Iterable[str]) -> set[int]:
    """The logical databases a Redis fingerprint names ("db5 keyspace user" -> 5)."""
    return {int(m.group(1)) for name in parts if (m := _DB_PART.match(name))}


def database_count(client: redis.Redis) -> int:
    """How many logical databases the server has; 16 (Redis's default) if CONFIG is refused."""
    try:
        reply = client.config_get("databases")
        return int(str(reply.get("databases", 16)))
    except (redis.RedisError, ValueError):
        return 16


def used_databases(client: redis.Redis) -> set[int]:
    info = client.info("keyspace")
    return {int(name[2:]) for name in info if name.startswith("db")}


class Stage:
    """Maps each backed-up database to a spare one of the live server, and swaps them in."""

    def __init__(self, client: Callable[[int], redis.Redis], backup_dbs: set[int], what: str) -> None:
        self.client = client
        admin = self.admin = client(0)
        self.what = what
        self.backup_dbs = set(backup_dbs)
        count = database_count(admin)
        self.live_used = used_databases(admin)
        taken = self.live_used | self.backup_dbs
        self.free = [n for n in range(count - 1, -1, -1) if n not in taken]
        self.spare: dict[int, int] = {}
        self.direct = not self.free or not _swapdb_available(admin)
        if self.direct:
            log.warning(
                "%s: the server has no spare logical database to stage the restore in (Redis Cluster, "
                "`databases 1`, or all in use): restoring into the live databases directly",
                what,
            )

    def target(self, db: int) -> int:
        """Where the keys of backed-up database ``db`` go while staging."""
        if self.direct:
            return db
        if db not in self.spare:
            if db not in self.backup_dbs and db in self.spare.values():
                raise ComponentError(f"{self.what}: the backup holds database {db}, which staging already used")
            if not self.free:
                raise ComponentError(
                    f"{self.what}: the backup holds more logical databases than the server has spare ones to stage in"
                )
            self.backup_dbs.add(db)
            self.spare[db] = self.free.pop(0)
        return self.spare[db]

    def mapping(self) -> dict[int, int]:
        """Backed-up database -> where its staged keys are (itself when restoring directly)."""
        return {db: db for db in self.backup_dbs} if self.direct else dict(self.spare)

    def check_counts(self, expected: dict[int, int]) -> None:
        """Every key the backup restored is in its staged database (a few may expire meanwhile)."""
        for db, count in expected.items():
            staged = self.client(self.target(db)).dbsize()
            if staged > count or staged < count - _EXPIRY_SLACK * count:
                raise ComponentError(
                    f"{self.what}: {count} keys of database {db} were restored into spare database "
                    f"{self.target(db)}, which holds {staged}; the live data were not touched"
                )

    def prepare_direct(self) -> None:
        """Restoring directly: empty the live server first, as the staged swap would."""
        if self.direct:
            self.admin.flushall()

    def discard(self) -> None:
        """Throw the staged copy away; the live databases were never touched."""
        if self.direct:
            return
        for spare in self.spare.values():
            with contextlib.suppress(redis.RedisError):
                self._flush(spare)

    def swap(self) -> None:
        """Swap every staged database in, then empty what was replaced."""
        if self.direct:
            return
        for db, spare in sorted(self.spare.items()):
            self.admin.swapdb(db, spare)
        for spare in self.spare.values():
            self._flush(spare)
        # A live database the backup does not have ends up empty, as after FLUSHALL.
        for db in sorted(self.live_used - self.backup_dbs - set(self.spare.values())):
            self._flush(db)

    def _flush(self, db: int) -> None:
        flusher = self.client(db)
        try:
            flusher.flushdb()
        finally:
            flusher.close()


def _swapdb_available(client: redis.Redis) -> bool:
    """SWAPDB exists from Redis 4.0; cluster mode rejects it."""
    try:
        info = client.info("server")
        major = int(str(info.get("redis_version", "0")).split(".")[0])
        cluster = client.info("cluster").get("cluster_enabled", 0)
    except (redis.RedisError, ValueError):
        return False
    return major >= 4 and not cluster
