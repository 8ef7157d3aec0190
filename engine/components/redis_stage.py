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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

log = logging.getLogger(__name__)

_DB_PART = re.compile(r"^db(\d+) ")
# A key is counted as still alive if its expiry is this far past the moment of the count:
# the backup's clock and the live server's may differ a little, and expiry is lazy.
EXPIRY_MARGIN_MS = 2000


@dataclass
class Expected:
    """What a staged database must hold: its keys without a time to live exactly, and
    between ``expiring_min`` and ``expiring_max`` of those with one (they may expire
    while the restore runs, and a server reclaims expired keys lazily)."""

    persistent: int = 0
    expiring_max: int = 0
    expiring_min: int = 0

    def describe(self) -> str:
        if self.expiring_max == 0:
            return f"{self.persistent} keys"
        span = (
            f"{self.expiring_max}"
            if self.expiring_min == self.expiring_max
            else f"{self.expiring_min}-{self.expiring_max}"
        )
        return f"{self.persistent} keys without a time to live and {span} with one"

    def holds(self, keys: int, expires: int) -> bool:
        return keys - expires == self.persistent and self.expiring_min <= expires <= self.expiring_max


def server_error(exc: BaseException) -> str:
    """What the server said, without the command that drew it.

    redis-py prefixes an error inside a pipeline with the whole command, and a
    ``RESTORE``'s arguments are a key's serialized value: a secret stored in Redis was
    printed, logged and written to the audit trail (found by review).
    """
    text = str(exc)
    marker = "caused error: "
    if marker in text:
        return text.split(marker, 1)[1][:300]
    if isinstance(exc, redis.ResponseError):
        return text[:300]
    return f"{type(exc).__name__}: {text[:300]}"


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
    return set(keyspace(client))


def keyspace(client: redis.Redis) -> dict[int, tuple[int, int]]:
    """Each database that holds keys -> (keys, keys with a time to live), from one INFO."""
    info = client.info("keyspace")
    return {
        int(name[2:]): (int(v.get("keys", 0)), int(v.get("expires", 0)))
        for name, v in info.items()
        if name.startswith("db") and isinstance(v, dict)
    }


class Stage:
    """Maps each backed-up database to a spare one of the live server, and swaps them in."""

    def __init__(self, client: Callable[[int], redis.Redis], backup_dbs: set[int], what: str) -> None:
        self.client = client
        admin = self.admin = client(0)
        self.what = what
        self.backup_dbs = set(backup_dbs)
        count = database_count(admin)
        self._reachable(self.backup_dbs, count)
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

    def _reachable(self, dbs: Iterable[int], count: int) -> None:
        """Refuse, before anything is written, a backup with a database the server does not have.

        Found by review: a backup of databases 0 and 12 restored into a server of
        ``databases 8`` staged both, swapped database 0 in, then failed on 12, leaving the
        live data half swapped. ``count`` may be Redis's default when CONFIG is refused
        (managed services), so each database is also selected once.
        """
        for db in sorted(dbs):
            problem = f"it has {count} (`databases {count}`)" if db >= count else None
            if problem is None:
                try:
                    probe = self.client(db)
                    probe.ping()
                    probe.close()
                except redis.ResponseError as exc:
                    problem = f"selecting it fails ({str(exc)[:200]})"
            if problem is not None:
                raise ComponentError(
                    f"{self.what}: the backup holds logical database {db}, which the server does not have: "
                    f"{problem}. Raise `databases` in the server's configuration to at least {db + 1} and "
                    "restore again; the live data were not touched"
                )

    def target(self, db: int) -> int:
        """Where the keys of backed-up database ``db`` go while staging."""
        if self.direct:
            return db
        if db not in self.spare:
            self._reachable([db], database_count(self.admin))
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

    def check_counts(self, expected: dict[int, Callable[[], Expected]]) -> None:
        """Every key the backup restored is in its staged database, but those whose time ran out.

        The staged databases are counted first, and what they must hold is worked out
        after: a key that expired before the count is then never required.
        """
        found = keyspace(self.admin)
        for db, expect in expected.items():
            want = expect()
            keys, expires = found.get(self.target(db), (0, 0))
            if not want.holds(keys, expires):
                raise ComponentError(
                    f"{self.what}: {want.describe()} of database {db} were restored into spare database "
                    f"{self.target(db)}, which holds {keys - expires} without and {expires} with one; "
                    "the live data were not touched"
                )

    def left(self) -> str:
        """What a failure before the swap left: restoring directly writes into the live databases."""
        return "it now holds only part of the keys" if self.direct else "the live data were not touched"

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
        # One transaction: every database is swapped in, or none (a failure part-way
        # would leave the live server half old, half restored).
        swaps = self.admin.pipeline(transaction=True)
        for db, spare in sorted(self.spare.items()):
            swaps.swapdb(db, spare)
        swaps.execute()
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
