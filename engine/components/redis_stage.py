"""Staging a Redis restore in the live server's spare logical databases, then swapping.

A Redis restore cannot be built beside the live data the way a directory or a database
can be, except in the server itself: Redis has numbered logical databases, and
``SWAPDB a b`` (Redis 4.0 and later) exchanges two of them atomically for every client.
So the keys of each backed-up database ``d`` are restored into a database ``s`` that
holds nothing and that the backup does not use; every key of the backup must be in the
staged copy (counted; the fingerprint is compared after the swap); only then is
``SWAPDB d s`` run, and ``s`` (now the old data) flushed. Any failure before the swap
flushes the spares and leaves every live key as it was, unless the server evicted keys
meanwhile (``maxmemory`` with an eviction policy), which the failure then says. While a
spare is staged it holds the key ``MARKER``, so what a killed restore left there is never
backed up as live data (``staged_leftovers``); the next restore empties it.

Where the server has no spare database (Redis Cluster has only database 0, a server
may be configured with ``databases 1``, or every database is in use), the restore goes
into the live databases directly, after the engine proved the whole artifact; the
restore says so, because a failure part-way would then leave a partial copy.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
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
# Redis's default `databases`: the spares probed when the server refuses CONFIG.
DEFAULT_DATABASES = 16


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


def database_count(client: redis.Redis) -> int | None:
    """How many logical databases the server has; None if it refuses CONFIG.

    Found by review: this used to guess Redis's default of 16, so a server of
    ``databases 4`` that refuses CONFIG got "spare database 15", which does not exist.
    """
    try:
        reply = client.config_get("databases")
        return int(str(reply["databases"]))
    except (redis.RedisError, ValueError, KeyError):
        return None


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


# The key a staged copy carries until it is complete and checked (``Stage.mark``).
MARKER = b"drproof:restore-staging"


def staged_leftovers(client: Callable[[int], redis.Redis], dbs: Iterable[int]) -> list[int]:
    """The databases of ``dbs`` holding a copy a killed restore staged (they carry ``MARKER``).

    Why: found by review, a restore killed while staging left a partial copy of the
    backup in a spare database (four kills: databases 12 to 15, 21,000 to 193,000 keys
    each); the next backup took them for live data (365,001 keys instead of 200,001) and
    the restore after it put them back and said "match".
    """
    found = []
    for db in dbs:
        probe = client(db)
        try:
            if probe.exists(MARKER):
                found.append(db)
        finally:
            probe.close()
    return found


def leftover_message(what: str, dbs: list[int]) -> str:
    names = ", ".join(str(db) for db in dbs)
    return (
        f"{what}: database {names} holds a partial copy a killed drproof restore staged there (key "
        f"{MARKER.decode()!r}), not live data; refusing to back it up as live data. Empty it (SELECT <n>; FLUSHDB), "
        "or run the restore again, which does; nothing was backed up"
    )


class Stage:
    """Maps each backed-up database to a spare one of the live server, and swaps them in.

    Everything the staged restore will ask of the server is proven before a key is
    written (review findings): that each spare database exists (SELECT on a connection),
    that SWAPDB and FLUSHDB are allowed, and that a second copy fits in ``maxmemory``
    where the server would otherwise evict keys, live ones among them.
    """

    def __init__(self, client: Callable[[int], redis.Redis], backup_dbs: set[int], what: str, size: int = 0) -> None:
        self.client = client
        admin = self.admin = client(0)
        self.what = what
        self.backup_dbs = set(backup_dbs)
        self.count = database_count(admin)
        self._reachable(self.backup_dbs)
        self.live_used = used_databases(admin)
        taken = self.live_used | self.backup_dbs
        top = (self.count if self.count is not None else DEFAULT_DATABASES) - 1
        self.free = [n for n in range(top, -1, -1) if n not in taken]  # candidates, each proven when taken
        self.refused: list[int] = []  # candidates that SELECT refused
        self.spare: dict[int, int] = {}
        self.evicted = 0
        with contextlib.suppress(redis.RedisError):
            self.evicted = _evicted(admin)
        first = self._next_spare() if _swapdb_available(admin) else None
        self.direct = first is None
        if first is None:
            log.warning(
                "%s: the server has no spare logical database to stage the restore in (Redis Cluster, "
                "`databases 1`, or all in use%s): restoring into the live databases directly",
                what,
                self._why_no_spare(),
            )
            return
        self._check_commands(first)
        self.free.insert(0, first)
        for db in sorted(self.backup_dbs):
            if (spare := self._next_spare()) is None:
                raise ComponentError(
                    f"{what}: the backup holds {len(self.backup_dbs)} logical databases and the server has only "
                    f"{len(self.spare)} spare ones to stage them in{self._why_no_spare()}; nothing was changed"
                )
            self.spare[db] = spare
        self._check_memory(size)

    def mark(self) -> None:
        """Put ``MARKER`` in every spare before a key is staged there: a kill leaves it named.

        Called by the restore inside the block whose server errors it reports (and that
        discards the stage): a full server refuses this write as it would the keys.
        """
        for spare in self.spare.values():
            marker = self.client(spare)
            try:
                marker.set(MARKER, "a restore stages a copy here; if no restore runs, it was killed: FLUSHDB")
            finally:
                marker.close()

    def unmark(self) -> None:
        """Remove ``MARKER`` once everything is staged, just before the count and the swap."""
        for spare in self.spare.values():
            marker = self.client(spare)
            try:
                marker.delete(MARKER)
            finally:
                marker.close()

    def _reachable(self, dbs: Iterable[int]) -> None:
        """Refuse, before anything is written, a backup with a database the server does not have.

        Found by review: a backup of databases 0 and 12 restored into a server of
        ``databases 8`` staged both, swapped database 0 in, then failed on 12, leaving the
        live data half swapped. Each database is also selected once: ``count`` is None
        when CONFIG is refused (managed services, ``rename-command``).
        """
        count = self.count
        for db in sorted(dbs):
            problem = f"it has {count} (`databases {count}`)" if count is not None and db >= count else None
            if problem is None and not self._selectable(db):
                problem = "selecting it fails"
                if count is None:
                    problem += " (the server refuses CONFIG, so its `databases` setting could not be read)"
            if problem is not None:
                raise ComponentError(
                    f"{self.what}: the backup holds logical database {db}, which the server does not have: "
                    f"{problem}. Raise `databases` in the server's configuration to at least {db + 1} and "
                    "restore again; the live data were not touched"
                )

    def _selectable(self, db: int) -> bool:
        """Whether a connection can SELECT ``db``: proof that it exists, whatever CONFIG says.

        Found by review: MIGRATE into a database the server lacks sends its RESTOREs after
        the refused SELECT, and the server ran them in database 0, the live one.
        """
        try:
            probe = self.client(db)
            probe.ping()
            probe.close()
        except redis.ResponseError:
            return False
        return True

    def _next_spare(self) -> int | None:
        """The highest free database that SELECT proves exists; None when none is left."""
        while self.free:
            candidate = self.free.pop(0)
            if self._selectable(candidate):
                return candidate
            self.refused.append(candidate)
        return None

    def _why_no_spare(self) -> str:
        if not self.refused:
            return ""
        names = ", ".join(str(n) for n in sorted(self.refused))
        why = (
            "; the server refuses CONFIG, so drproof could not read its `databases` setting and probed "
            f"databases 0-{DEFAULT_DATABASES - 1}"
            if self.count is None
            else ""
        )
        return f"; selecting database {names} failed{why}"

    def _check_commands(self, spare: int) -> None:
        """Run, on an empty spare, what the swap will run: SWAPDB inside MULTI/EXEC, and FLUSHDB.

        Found by review: a server that refuses either (``rename-command``, an ACL) was
        found out only after staging: the staged copy was left behind, or the swap done
        and the old data left in the spare, with a raw driver error.
        """
        try:
            swaps = self.admin.pipeline(transaction=True)
            swaps.swapdb(spare, spare)
            swaps.execute()
            self._flush(spare)
        except redis.RedisError as exc:
            if "maxmemory" in str(exc):  # a full server refuses writes, these too: staging says so plainly
                return
            raise ComponentError(
                f"{self.what}: the server refuses a command the staged restore needs ({server_error(exc)}): the "
                "backup is restored into a spare database, swapped in with SWAPDB inside MULTI/EXEC, and what it "
                "replaced is emptied with FLUSHDB. Allow those to drproof's user (ACL `+swapdb +flushdb +multi "
                "+exec`, no `rename-command` for them) and restore again; nothing was changed"
            ) from None

    def _check_memory(self, size: int) -> None:
        """Refuse when a second copy of about ``size`` bytes would make the server evict keys.

        Found by review: staging on a cache with ``maxmemory`` and an eviction policy
        evicted live keys, while the refused restore said the live data were not touched.
        A backup's DUMP payloads are compressed (LZF), so they understate its memory: the
        live data set's own size counts too, a restore being mostly of the same data.
        """
        info = self.admin.info("memory")
        maxmemory = int(info.get("maxmemory", 0) or 0)
        policy = str(info.get("maxmemory_policy", "noeviction"))
        used = int(info.get("used_memory", 0) or 0)
        need = max(size, used - int(info.get("used_memory_startup", 0) or 0))
        if maxmemory and policy != "noeviction" and used + need > maxmemory:
            raise ComponentError(
                f"{self.what}: the server evicts keys when full (maxmemory {maxmemory} bytes, maxmemory-policy "
                f"{policy}) and uses {used} bytes: staging a second copy of about {need} bytes (the larger of the "
                "backup and the live data) beside the live data could make it evict keys, live ones among them. "
                "Raise `maxmemory` for the restore (CONFIG "
                "SET maxmemory) or free memory, then restore again; nothing was changed"
            )

    def evictions(self) -> int:
        """Keys the server evicted since staging began (0 when INFO cannot say)."""
        try:
            return _evicted(self.admin) - self.evicted
        except redis.RedisError:
            return 0

    def target(self, db: int) -> int:
        """Where the keys of backed-up database ``db`` go while staging."""
        if self.direct:
            return db
        if db not in self.spare:
            self._reachable([db])
            if db not in self.backup_dbs and db in self.spare.values():
                raise ComponentError(f"{self.what}: the backup holds database {db}, which staging already used")
            self.free = [n for n in self.free if n != db]
            spare = self._next_spare()
            if spare is None:
                raise ComponentError(
                    f"{self.what}: the backup holds more logical databases than the server has spare ones to "
                    f"stage in{self._why_no_spare()}"
                )
            self.backup_dbs.add(db)
            self.spare[db] = spare
        return self.spare[db]

    def mapping(self) -> dict[int, int]:
        """Backed-up database -> where its staged keys are (itself when restoring directly)."""
        return {db: db for db in self.backup_dbs} if self.direct else dict(self.spare)

    def check_counts(self, expected: dict[int, Callable[[], Expected]]) -> None:
        """Every key the backup restored is in its staged database, but those whose time ran out.

        The staged databases are counted first, and what they must hold is worked out
        after: a key that expired before the count is then never required. Any key the
        server evicted meanwhile refuses the swap: it may have been a live one.
        """
        found = keyspace(self.admin)
        for db, expect in expected.items():
            want = expect()
            keys, expires = found.get(self.target(db), (0, 0))
            if not want.holds(keys, expires):
                raise ComponentError(
                    f"{self.what}: {want.describe()} of database {db} were restored into spare database "
                    f"{self.target(db)}, which holds {keys - expires} without and {expires} with one; {self.left()}"
                )
        if self.evictions():
            raise ComponentError(f"{self.what}: the staged copy was not swapped in; {self.left()}")

    def left(self) -> str:
        """What a failure before the swap left, said truly."""
        if self.direct:
            return (
                "the server had no spare database to stage in, so it was emptied first and now holds only the "
                "keys restored before the failure, possibly none"
            )
        evicted = self.evictions()
        if evicted:
            return (
                f"the server evicted {evicted} keys while the backup was staged (maxmemory-policy), and live keys "
                "may be among them: the live data may have been changed; raise `maxmemory` before restoring again"
            )
        return "the live data were not touched"

    def prepare_direct(self, sample: tuple[int, bytes] | None = None) -> None:
        """Restoring directly: prove the server takes the backup's keys, then empty it, as the swap would.

        ``sample`` is one key's DUMP payload and its database. Found by review: FLUSHALL
        ran first, and a backup from a newer server, whose payloads the target refuses,
        wiped the live server.
        """
        if not self.direct:
            return
        if sample is not None:
            self._prove_payload(*sample)
        try:
            self.admin.flushall()
        except redis.ResponseError as exc:
            raise ComponentError(
                f"{self.what}: the server has no spare database to stage the restore in, and refuses FLUSHALL "
                f"({server_error(exc)}), which restoring into it directly needs; nothing was changed"
            ) from None

    def _prove_payload(self, db: int, payload: bytes) -> None:
        key = f"drproof:restore-probe:{secrets.token_hex(8)}"
        probe = self.client(db)
        try:
            probe.restore(key, 0, payload)
        except redis.RedisError as exc:
            hint = (
                " (the backup was taken from a newer server version than this one reads)"
                if "payload version" in str(exc)
                else ""
            )
            raise ComponentError(
                f"{self.what}: the server refuses the backup's keys: RESTORE of one of them failed: "
                f"{server_error(exc)}{hint}; nothing was changed (with no spare database to stage in, the restore "
                "would have emptied the live server first)"
            ) from None
        finally:
            with contextlib.suppress(redis.RedisError):
                probe.delete(key)
            probe.close()

    def discard(self) -> None:
        """Throw the staged copy away; the live databases were never written."""
        if self.direct:
            return
        for spare in self.spare.values():
            with contextlib.suppress(redis.RedisError):
                self._flush(spare)

    def swap(self) -> None:
        """Swap every staged database in, then empty what was replaced; any failure says what is where."""
        if self.direct:
            return
        # One transaction: every database is swapped in, or none (a failure part-way
        # would leave the live server half old, half restored).
        pairs = sorted(self.spare.items())
        swaps = self.admin.pipeline(transaction=True)
        for db, spare in pairs:
            swaps.swapdb(db, spare)
        try:
            swaps.execute()
        except redis.ResponseError as exc:
            if len(pairs) == 1:  # refused, so not run
                self.discard()
                raise ComponentError(
                    f"{self.what}: swapping the staged copy in failed: {server_error(exc)}; the staged copy was "
                    "thrown away and the live data were not touched"
                ) from None
            raise self._unknown_swap(exc) from None
        except redis.RedisError as exc:
            raise self._unknown_swap(exc) from None
        replaced = sorted(self.spare.values())
        # A live database the backup does not have ends up empty, as after FLUSHALL.
        replaced += sorted(self.live_used - self.backup_dbs - set(self.spare.values()))
        failed: list[str] = []
        for db in replaced:
            try:
                self._flush(db)
            except redis.RedisError as exc:
                failed.append(f"{db} ({server_error(exc)})")
        if failed:
            raise ComponentError(
                f"{self.what}: the backup was swapped in and is live, but emptying what it replaced failed: the "
                f"previous data remain in database {', '.join(failed)}; empty it (FLUSHDB) once no longer needed"
            )
        if evicted := self.evictions():
            raise ComponentError(
                f"{self.what}: the backup was swapped in, but the server evicted {evicted} keys while it was "
                "staged and swapped (maxmemory-policy): the restored data may lack some keys"
            )

    def _unknown_swap(self, exc: BaseException) -> ComponentError:
        pairs = ", ".join(f"{db} and {spare}" for db, spare in sorted(self.spare.items()))
        return ComponentError(
            f"{self.what}: swapping the staged copy in failed ({server_error(exc)}) and may have been done in part: "
            f"of databases {pairs}, one each holds the previous data and the other the restored copy; nothing was "
            "flushed; check which before emptying one"
        )

    def _flush(self, db: int) -> None:
        flusher = self.client(db)
        try:
            flusher.flushdb()
        finally:
            flusher.close()


def _evicted(client: redis.Redis) -> int:
    return int(client.info("stats").get("evicted_keys", 0) or 0)


def _swapdb_available(client: redis.Redis) -> bool:
    """SWAPDB exists from Redis 4.0; cluster mode rejects it."""
    try:
        info = client.info("server")
        major = int(str(info.get("redis_version", "0")).split(".")[0])
        cluster = client.info("cluster").get("cluster_enabled", 0)
    except (redis.RedisError, ValueError):
        return False
    return major >= 4 and not cluster
