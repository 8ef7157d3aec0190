"""Redis: key spaces of strings, hashes, lists, sets and sorted sets.

The backup is taken over the network with DUMP (payload in Redis's own serialisation)
and restored with RESTORE ... REPLACE ABSTTL in pipelined batches, so neither needs
access to the server's files, a restart, or a particular persistence setting. Expiry is
kept as an absolute time, so a key that would have expired by restore time stays gone.
The fingerprint, in contrast, is built from values read back by type, because DUMP
payloads depend on internal encodings that may differ between two equal datasets.
"""

from __future__ import annotations

import contextlib
import random
import re
import struct
import time
from array import array
from collections import defaultdict
from collections.abc import Generator
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from pydantic import Field

from engine.components import redis_functions
from engine.components.base import WORKLOAD_MARK, ArtifactSource, Component, Health, SeedParams
from engine.components.redis_digest import BATCH_BYTES, Tally, digested
from engine.components.redis_records import (
    NO_PREFIX,
    WORKLOAD_MARKER,
    WORKLOAD_MARKER_KEY,
    WORKLOAD_SPACE_UNSEEN,
    Decoded,
    Keyspaces,
)
from engine.components.redis_stage import (
    EXPIRY_MARGIN_MS,
    Expected,
    Stage,
    fingerprint_dbs,
    leftover_message,
    server_error,
    staged_leftovers,
)
from engine.errors import ComponentError
from engine.fingerprint import LEGACY_SCHEME, Fingerprint, Part, PartHasher
from engine.lazy import lazy
from engine.manifest import ComponentRecord
from engine.repository.base import BackupSetWriter
from engine.runtime.base import RedisService, ServerWanted

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

_MAGIC = b"DRPROOF-REDIS-DUMP-1\n"
_REC = struct.Struct(">HIqI")  # db, key length, absolute expiry ms (0 = none), payload length
_BATCH = 1000
# Reads of one database for its fingerprint while SCAN keeps returning a key twice (``Tally``).
_READS = 3
TYPES = ("string", "hash", "list", "set", "zset")


class RedisParams(SeedParams):
    keys: int = Field(default=500, ge=0, le=50_000_000, description="Number of keys to create.")
    key_spaces: list[str] = Field(
        default_factory=lambda: ["user", "session", "cart"],
        min_length=1,
        description="Key prefixes; keys are named `<space>:<n>` and fingerprinted per space.",
    )
    value_size: int = Field(default=64, ge=1, le=1_000_000, description="Bytes per string value / field.")
    expiring_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Share of keys given a (long) TTL, to exercise expiry restore."
    )


class RedisComponent(Component):
    name: ClassVar[str] = "redis"
    server: ClassVar[str | None] = "redis"
    Params: ClassVar[type[SeedParams]] = RedisParams
    description: ClassVar[str] = "A Redis server, backed up with DUMP and restored with RESTORE over the network."

    params: RedisParams
    service: RedisService

    def provision(self) -> None:
        self.service = self.runtime.redis(self.instance)

    @classmethod
    def server_wanted(cls, record: ComponentRecord, backup_id: str) -> ServerWanted | None:
        """A server at least as new as the one backed up: older ones refuse its RDB and DUMP formats."""
        version = str(record.details.get("server_version", ""))
        match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version.split("v=", 1)[-1])
        if match is None:
            return None
        numbers = ".".join(g for g in match.groups() if g is not None)
        flavour = "Valkey" if "valkey" in version.lower() else "Redis"
        why = f"backup {backup_id} of {record.name!r} was taken from {flavour} {numbers}"
        return ServerWanted("redis", int(match.group(1)), numbers, why)

    def client(self, db: int = 0) -> redis.Redis:
        return self.service.client(db)

    supports_canary: ClassVar[bool] = True
    CANARY_KEY: ClassVar[str] = "drproof:canary"

    def plant_canary(self, value: str) -> str:
        self.client(0).set(self.CANARY_KEY, value)
        return f"key {self.CANARY_KEY} of database 0"

    def read_canary(self) -> str | None:
        value = self.client(0).get(self.CANARY_KEY)
        if value is None:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def connection_env(self) -> dict[str, str]:
        svc = self.service
        env = {"URL": f"redis://{svc.host}:{svc.port}/0", "HOST": svc.host, "PORT": str(svc.port)}
        if svc.password:
            env["PASSWORD"] = svc.password
        return env

    def network_connection_env(self) -> dict[str, str] | None:
        address = self.service.network_address()
        if address is None:
            return None
        host, port = address
        env = {"URL": f"redis://{host}:{port}/0", "HOST": host, "PORT": str(port)}
        if self.service.password:
            env["PASSWORD"] = self.service.password
        return env

    def seed(self) -> dict[str, Any]:
        p = self.params
        rng = random.Random(p.random_seed)
        r = self.client()
        pipe = r.pipeline(transaction=False)
        for i in range(p.keys):
            space = p.key_spaces[i % len(p.key_spaces)]
            kind = TYPES[i % len(TYPES)]
            key = f"{space}:{i}"
            value = rng.randbytes(p.value_size)
            if kind == "string":
                pipe.set(key, value)
            elif kind == "hash":
                pipe.hset(key, mapping={"a": value, "b": rng.randbytes(p.value_size), "n": str(i)})
            elif kind == "list":
                pipe.rpush(key, value, rng.randbytes(p.value_size), str(i))
            elif kind == "set":
                pipe.sadd(key, value, rng.randbytes(p.value_size), str(i))
            else:
                pipe.zadd(key, {value: rng.random(), str(i).encode(): float(i)})
            if rng.random() < p.expiring_fraction:
                pipe.expire(key, 86400)
            if i % _BATCH == _BATCH - 1:
                pipe.execute()
        pipe.execute()
        return {"keys": p.keys, "key_spaces": p.key_spaces}

    def _dbs(self) -> list[int]:
        info = self.client().info("keyspace")
        return sorted(int(name[2:]) for name in info if name.startswith("db"))

    # Scheme 5: as scheme 4, but only the drill workload's own keys are left out, in a
    # database holding its marker (``redis_records.WORKLOAD_MARKER``), not the key space
    # ``drproof_workload`` of every database. Scheme 4: each stream's entries-added and max-deleted-entry-id. Scheme 3: hash
    # fields' own expiries (HEXPIRE) in the hash's digest, each stream
    # entry framed with its number of fields and values, and the server's function
    # libraries (part ``functions``, ``redis_functions``). Scheme 2:
    # digests computed by the server (``redis_digest``), summed per key space, each key's
    # expiry, streams with their consumer groups. Scheme 1 (sorted key spaces, only
    # whether a key expires), 2 and 3 are still computed for backups of earlier versions.
    fingerprint_scheme: ClassVar[str] = "redis/5"
    legacy_blind_spots: ClassVar[dict[str, str]] = {
        LEGACY_SCHEME: "the backup's fingerprint (scheme 1, from an earlier drproof) recorded whether a key "
        "expires but not when, and no stream consumer groups: those are not compared; "
        + WORKLOAD_SPACE_UNSEEN,
        "redis/2": "the backup's fingerprint (scheme 2, from an earlier drproof) recorded no expiries of hash "
        "fields (HEXPIRE), no function libraries (FUNCTION LOAD), and not where one stream entry ends and the "
        "next begins: those are not compared; "
        + WORKLOAD_SPACE_UNSEEN,
        "redis/3": "the backup's fingerprint (scheme 3, from an earlier drproof) recorded no stream counters "
        "(entries-added, max-deleted-entry-id): those are not compared; "
        + WORKLOAD_SPACE_UNSEEN,
        "redis/4": "the backup's fingerprint (scheme 4, from an earlier drproof) " + WORKLOAD_SPACE_UNSEEN,
    }

    def fingerprint(self) -> Fingerprint:
        try:
            dbs = self._dbs()
        except redis.RedisError as exc:
            return self._fp({"server": Part(digest=f"unreachable: {exc}", count=0, unit="keys")})
        keys = self.fingerprint_of({db: db for db in dbs})
        return self._fp({**keys.parts, **self.function_parts()})

    # Whether this kind backs up, restores and compares the server's function libraries
    # (``redis_functions``); the Cluster kind does not (yet).
    keeps_functions: ClassVar[bool] = True

    def function_parts(self) -> dict[str, Part]:
        """The server's function libraries, global to it: not part of ``fingerprint_of``'s databases."""
        return redis_functions.parts(self.client(0)) if self.keeps_functions else {}

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        if scheme not in self.legacy_blind_spots:
            return None
        try:
            dbs = self._dbs()
        except redis.RedisError as exc:
            return self._fp({"server": Part(digest=f"unreachable: {exc}", count=0, unit="keys")}, scheme)
        if scheme == LEGACY_SCHEME:
            return self._fp(legacy_parts(self.client, dbs), scheme)
        if scheme == "redis/2":
            return self.fingerprint_of({db: db for db in dbs}, fields=False, counters=False, scheme=scheme)
        keys = self.fingerprint_of({db: db for db in dbs}, counters=scheme == "redis/4", scheme=scheme)
        return self._fp({**keys.parts, **self.function_parts()}, scheme)

    def fingerprint_of(
        self, mapping: dict[int, int], fields: bool = True, scheme: str | None = None, counters: bool = True
    ) -> Fingerprint:
        """The fingerprint of the keys, reading each database ``d`` from ``mapping[d]`` (a staged copy).

        Without the server's function libraries (``fingerprint`` adds them): they are
        not per database, and a staged copy has the live server's, not the backup's.

        ``fields`` false and ``scheme`` "redis/2": without hash fields' expiries, as scheme 2 had it.
        ``counters`` false: without streams' entries-added and max-deleted-entry-id, as
        schemes 2 and 3 had them.
        """
        parts: dict[str, Part] = {}
        current = scheme in (None, self.fingerprint_scheme)
        for db, actual in sorted(mapping.items()):
            workload = self.workload_marked(actual) if current else None
            parts.update(self._keyspaces(actual, fields, counters, workload).parts(db))
        return self._fp(parts, scheme)

    def workload_marked(self, db: int) -> bool:
        """Whether a drill workload marked database ``db`` as the one it writes to (``WORKLOAD_MARKER``).

        Read before the keys: a workload that starts while they are read leaves its keys
        in both fingerprints of a backup and its restore, seen alike, or as a difference
        (never hidden).
        """
        try:
            return bool(self.client(db).get(WORKLOAD_MARKER_KEY) == WORKLOAD_MARKER)
        except redis.ResponseError:  # WRONGTYPE: a hash or list of that name is the database's own
            return False

    def _keyspaces(
        self, db: int, fields: bool = True, counters: bool = True, workload: bool | None = None
    ) -> Keyspaces:
        """Database ``db`` summed per key space; read again if SCAN returned a key twice.

        ``workload``: as ``Keyspaces`` takes it (None: schemes 1 to 4's rule).
        """
        for _ in range(_READS):
            spaces, tally = Keyspaces(workload), Tally()
            for batch, _ in digested(self.client(db), db, size=_BATCH, tally=tally, fields=fields, counters=counters):
                spaces.add(batch)
            if not tally.read_twice:
                break
        return spaces

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        return self.backup_fingerprinted(writer)[0]

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """One pass: each batch of keys dumped and digested by one atomic script.

        The fingerprint therefore describes exactly the keys, values and expiries the
        backup holds, however much a live server changes between batches.
        """
        count = 0
        parts: dict[str, Part] = {}
        dbs = self._dbs()
        if leftovers := staged_leftovers(self.client, dbs):
            raise ComponentError(leftover_message(f"redis {self.instance!r}", leftovers))
        with writer.artifact(self.instance, "keys.dump") as sink:
            sink.write(_MAGIC)
            for db in dbs:
                spaces, tally = Keyspaces(self.workload_marked(db)), Tally()
                for batch, payloads in digested(self.client(db), db, dump=True, size=_BATCH, tally=tally):
                    spaces.add(batch)
                    count += _dump_batch(db, batch, payloads, sink)
                if tally.read_twice:
                    raise ComponentError(
                        f"redis {self.instance!r}: database {db} shrank while it was read and a key was read "
                        "twice, so this backup would not match its own fingerprint; run the backup again"
                    )
                parts.update(spaces.parts(db))
        functions = self._backup_functions(writer, parts)
        details = {
            **functions,
            "keys": count,
            "dbs": dbs,
            "server_version": self.service.version(),
            "method": "DUMP/RESTORE over the network; fingerprint from the same atomic reads",
        }
        return details, self._fp(parts)

    def _backup_functions(self, writer: BackupSetWriter, parts: dict[str, Part]) -> dict[str, Any]:
        """FUNCTION DUMP's payload as an artifact when the server has libraries; their part into ``parts``."""
        if not self.keeps_functions:
            return {}
        function_parts, payload, count = redis_functions.dump(self.client(0))
        parts.update(function_parts)
        if payload is not None:
            with writer.artifact(self.instance, redis_functions.ARTIFACT) as sink:
                sink.write(payload)
        return {} if count is None else {redis_functions.DETAIL: count}

    def restore(self, source: ArtifactSource) -> None:
        """RESTORE every key into spare databases, check every one landed, then SWAPDB (``redis_stage``).

        The staged copy is not held to the backup's fingerprint before the swap: on a
        live server that fingerprint is read moments before the keys are dumped, so it
        differs by whatever was written in between, and refusing on that would make
        every busy server unrestorable. The artifact itself was proven in full before
        this began; here every key of it must be in the staged databases. The
        fingerprint comparison comes after, and a difference is reported.

        The function libraries (``redis_functions``) are global to the server: read and
        checked before anything is written, put in only once the keys were swapped in.
        """
        self.service.ensure_running()
        functions = redis_functions.stored(source, self.client(0), f"redis {self.instance!r}")
        record = source.artifacts.get("keys.dump")
        size = (record.raw_size if record else 0) + 64 * int(source.details.get("keys", 0) or 0)
        stage = Stage(self.client, backup_dbs(source), f"redis {self.instance!r}", size)
        try:
            stage.prepare_direct(self._first_record(source) if stage.direct else None)
            try:
                stage.mark()
                restored = self._restore_keys(source, stage)
            except redis.RedisError as exc:
                left = stage.left()
                hint = (
                    "; the backup was taken from a newer server version than this one reads"
                    if "payload version" in str(exc)
                    else ""
                )
                raise ComponentError(
                    f"redis {self.instance!r}: restoring the keys failed: {server_error(exc)}; {left}{hint}"
                ) from None
            if not stage.direct:
                stage.unmark()
                stage.check_counts({db: r.expected for db, r in restored.items()})
        except BaseException:
            stage.discard()
            raise
        stage.swap()
        redis_functions.load(self.client(0), *functions, f"redis {self.instance!r}")

    def _first_record(self, source: ArtifactSource) -> tuple[int, bytes] | None:
        """The first key's database and DUMP payload, for ``Stage.prepare_direct`` to try on the server."""
        with source.open_head("keys.dump") as stream:  # proven whole by the engine already
            header = stream.read(len(_MAGIC) + _REC.size)
            if len(header) < len(_MAGIC) + _REC.size or not header.startswith(_MAGIC):
                return None  # an empty dump, or not one: ``_restore_keys`` says which
            db, klen, _, plen = _REC.unpack(header[len(_MAGIC) :])
            _read_exact(stream, klen)
            return db, _read_exact(stream, plen)

    def _restore_keys(self, source: ArtifactSource, stage: Stage) -> dict[int, Restored]:
        """RESTORE the dump into the stage; return what went into each database.

        A key whose absolute expiry passed since the backup is not restored.
        """
        counts: dict[int, Restored] = defaultdict(Restored)
        with source.open("keys.dump") as stream:
            if _read_exact(stream, len(_MAGIC)) != _MAGIC:
                raise ComponentError(f"redis {self.instance!r}: artifact keys.dump is not a drproof Redis dump")
            pipes: dict[int, Any] = {}
            pending = held = 0
            while header := stream.read(_REC.size):
                if len(header) != _REC.size:
                    raise ComponentError(f"redis {self.instance!r}: keys.dump is truncated")
                db, klen, expires_at, plen = _REC.unpack(header)
                key = _read_exact(stream, klen)
                payload = _read_exact(stream, plen)
                target = stage.target(db)
                if target not in pipes:
                    pipes[target] = self.client(target).pipeline(transaction=False)
                if expires_at and expires_at <= int(time.time() * 1000):
                    continue
                counts[db].add(expires_at)
                if expires_at:
                    pipes[target].restore(key, expires_at, payload, replace=True, absttl=True)
                else:
                    pipes[target].restore(key, 0, payload, replace=True)
                pending += 1
                held += len(payload)
                if pending >= _BATCH or held >= BATCH_BYTES:  # a thousand keys, or 16 MB of values
                    for pipe in pipes.values():
                        pipe.execute()
                    pending = held = 0
            for pipe in pipes.values():
                pipe.execute()
        return counts

    # Whether the backup reads keys with DUMP (in the digest script): redis-rdb's does not.
    backup_dumps: ClassVar[bool] = True

    def health(self) -> Health:
        try:
            r = self.client()
            if not r.ping():
                return Health(ok=False, detail="PING did not answer PONG")
            dbs = self._dbs()
            total = sum(self.client(db).dbsize() for db in dbs)
        except redis.RedisError as exc:
            return Health(ok=False, detail=f"not answering: {exc}")
        refused = self._refused(dbs[0] if dbs else 0)
        return Health(ok=False, detail=refused) if refused else Health(ok=True, detail=f"PING answered; {total} keys")

    def _refused(self, db: int) -> str | None:
        """What the backup needs that the server's user may not run, found by digesting one key.

        Found by review: a user without ``+@scripting`` or ``+dump`` made ``drproof
        backup`` print a traceback, and its dry run said "PING answered".
        """
        try:
            batches = digested(self.client(db), db, dump=self.backup_dumps, size=1)
            with contextlib.closing(cast(Generator[Any, None, None], batches)):
                next(batches, None)
        except redis.ResponseError as exc:
            needs = "a Lua script (SCRIPT LOAD, EVALSHA)" + (" calling DUMP on each key" if self.backup_dumps else "")
            other = "; or back it up with kind `redis-rdb`, which needs no DUMP" if self.backup_dumps else ""
            return (
                f"the server refuses a command drproof needs ({server_error(exc)}): it reads the keys with {needs}; "
                f"allow `+@scripting{' +dump' if self.backup_dumps else ''}` to drproof's user{other}"
            )
        return None

    def tool_versions(self) -> dict[str, str]:
        return {"redis server": self.service.version()}


class Restored:
    """The keys restored into one database: how many without a time to live, and each other's expiry.

    The expiries say, when the staged copy is counted, how many keys may have expired
    meanwhile: a healthy restore of a server whose sessions run out was refused (review).
    """

    def __init__(self) -> None:
        self.persistent = 0
        self.expiries = array("q")  # 8 bytes a key, absolute ms on the backed-up server's clock

    def add(self, expires_at: int) -> None:
        if expires_at:
            self.expiries.append(expires_at)
        else:
            self.persistent += 1

    def expected(self) -> Expected:
        alive_after = int(time.time() * 1000) + EXPIRY_MARGIN_MS
        still = sum(1 for e in self.expiries if e > alive_after)
        return Expected(self.persistent, len(self.expiries), still)


def _dump_batch(db: int, batch: Decoded, payloads: list[bytes], sink: IO[bytes]) -> int:
    # One write per batch, not three per key: each write passes the artifact's
    # counting and zstd layers (1.4 s of an 18 s profiled 200k-key backup).
    out: list[bytes] = []
    expiries = batch.expiries or [None] * len(batch.keys)
    for key, expires_at, payload in zip(batch.keys, expiries, payloads, strict=True):
        # Absolute expiry on the server's own clock, read in the same script.
        out += (_REC.pack(db, len(key), expires_at or 0, len(payload)), key, payload)
    sink.write(b"".join(out))
    return len(batch.keys)


def legacy_parts(client: Any, dbs: list[int]) -> dict[str, Part]:
    """Scheme 1: each key space's keys sorted, values read back by type, whether each key expires."""
    parts: dict[str, Part] = {}
    for db in dbs:
        r = client(db)
        spaces: dict[str, list[bytes]] = defaultdict(list)
        for key in r.scan_iter(count=1000):
            spaces[legacy_space(key)].append(key)
        spaces.pop(WORKLOAD_MARK, None)
        for space, keys in spaces.items():
            h = PartHasher("keys")
            keys.sort()
            for start in range(0, len(keys), _BATCH):
                for key, value in zip(
                    keys[start : start + _BATCH], _values(r, keys[start : start + _BATCH]), strict=True
                ):
                    if value is not None:
                        h.add(key + b"\0" + value)
            parts[f"db{db} keyspace {space}"] = h.part()
    return parts


def legacy_space(key: bytes) -> str:
    """Scheme 1's key space name: the prefix as it was, quoted or not."""
    head, sep, _ = key.partition(b":")
    return head.decode("utf-8", "backslashreplace") if sep else NO_PREFIX


def _values(r: redis.Redis, keys: list[bytes]) -> list[bytes | None]:
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.type(k)
        pipe.pttl(k)
    meta = pipe.execute()
    pipe = r.pipeline(transaction=False)
    kinds = [meta[i].decode() for i in range(0, len(meta), 2)]
    for k, kind in zip(keys, kinds, strict=True):
        if kind == "string":
            pipe.get(k)
        elif kind == "hash":
            pipe.hgetall(k)
        elif kind == "list":
            pipe.lrange(k, 0, -1)
        elif kind == "set":
            pipe.smembers(k)
        elif kind == "zset":
            pipe.zrange(k, 0, -1, withscores=True)
        elif kind == "stream":
            pipe.xrange(k)
        else:
            pipe.echo(b"")
    raw = pipe.execute()
    out: list[bytes | None] = []
    for i, (kind, value) in enumerate(zip(kinds, raw, strict=True)):
        if kind == "none":
            out.append(None)
            continue
        expiring = b"ttl" if meta[2 * i + 1] >= 0 else b"persistent"
        out.append(kind.encode() + b"\0" + expiring + b"\0" + _canonical(value))
    return out


def backup_dbs(source: ArtifactSource) -> set[int]:
    """The logical databases a backup holds: recorded at backup time, else named by its fingerprint."""
    recorded = source.details.get("dbs")
    if isinstance(recorded, list) and all(isinstance(d, int) for d in recorded):
        return set(recorded)
    return fingerprint_dbs(source.fingerprint.parts) if source.fingerprint is not None else set()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise ComponentError("redis dump artifact is truncated")
        data += chunk
    return data


def _canonical(value: Any) -> bytes:
    if value is None:
        return b"\x00nil"
    if isinstance(value, bytes):
        return b"b" + len(value).to_bytes(8, "big") + value
    if isinstance(value, str):
        return _canonical(value.encode())
    if isinstance(value, int | float):
        return b"n" + repr(value).encode()
    if isinstance(value, dict):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        return b"d" + b"".join(k + v for k, v in items)
    if isinstance(value, set):
        return b"s" + b"".join(sorted(_canonical(v) for v in value))
    if isinstance(value, list | tuple):
        return b"l" + b"".join(_canonical(v) for v in value)
    raise TypeError(f"unexpected redis value type {type(value).__name__}")
