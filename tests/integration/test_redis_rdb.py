"""redis-rdb: an RDB snapshot over SYNC, restored through a private scratch server.

Against real servers of the local runtime: the snapshot comes back with every key of
every database and its absolute expiry; damaged or unreadable snapshots are refused
before the live server is flushed; the scratch server never outlives a restore; and no
password ends up in an error message. A scripted fake server covers the ways a SYNC
transfer can go wrong that a healthy Redis never shows.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from engine.backup import backup, restore
from engine.components import redis_rdb
from engine.components.base import ArtifactSource
from engine.components.redis import RedisParams
from engine.components.redis_rdb import ARTIFACT, RedisRdbComponent
from engine.errors import ComponentError, IntegrityError
from engine.fingerprint import Fingerprint, compare
from engine.manifest import Manifest
from engine.repository.local import LocalRepository
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import servers_under, unchanged

pytestmark = pytest.mark.integration

KEY_SPACES = ["session", "cart", "user"]
DB5_PARTS = {"db5 keyspace jobs", "db5 keyspace events", "db5 keyspace (no prefix)"}



@pytest.fixture
def repo(tmp_path: Path) -> LocalRepository:
    return LocalRepository(tmp_path / "repo")


class Scratch:
    """Where scratch servers go, and every one that was started, with its password."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Any] = []
        self.passwords: list[str] = []

    def assert_gone(self) -> None:
        assert list(self.root.iterdir()) == [], "the scratch directory was left behind"
        assert servers_under(self.root) == [], "a scratch redis-server is still running"
        assert all(p.poll() is not None for p in self.procs)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scratch:
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    seen = Scratch(root)
    real_spawn = processes.spawn

    def spawn(argv: Any, **kwargs: Any) -> Any:
        proc = real_spawn(argv, **kwargs)
        if str(argv[-1]).startswith(str(root)):
            seen.procs.append(proc)
            conf = Path(argv[-1]).read_text()
            seen.passwords += [line.split()[1] for line in conf.splitlines() if line.startswith("requirepass ")]
        return proc

    monkeypatch.setattr(processes, "spawn", spawn)
    return seen


def make(runtime: LocalRuntime, keys: int = 3000, expiring: float = 0.3) -> RedisRdbComponent:
    comp = RedisRdbComponent(
        "cache",
        RedisParams(keys=keys, key_spaces=KEY_SPACES, value_size=48, expiring_fraction=expiring, random_seed=7),
        runtime,
    )
    comp.provision()
    comp.seed()
    # Beyond the seed: a second logical database, a stream, and keys with and without TTL there.
    other = comp.client(5)
    other.set("jobs:1", b"\x00binary\xffpayload")
    other.pexpire("jobs:1", 7_200_000)
    other.xadd("events:log", {"type": "login", "user": "42"})
    other.xadd("events:log", {"type": "logout", "user": "42"})
    other.hset("plain", mapping={"a": "1"})
    return comp


def ttls(comp: RedisRdbComponent) -> dict[tuple[int, bytes], int]:
    out = {}
    for db in comp._dbs():
        r = comp.client(db)
        for key in r.scan_iter(count=1000):
            pttl = r.pttl(key)
            if pttl >= 0:
                out[(db, key)] = pttl
    return out


def raw_rdb(repo: LocalRepository, manifest: Manifest) -> bytes:
    [record] = manifest.artifacts_of("cache")
    with repo.open_artifact(manifest, record) as stream:
        return cast(bytes, stream.read())


def source_of(data: bytes) -> ArtifactSource:
    return ArtifactSource({ARTIFACT: cast(Any, None)}, lambda _record: contextlib.nullcontext(io.BytesIO(data)))


def no_secrets(text: str, *passwords: str | None) -> None:
    for password in passwords:
        if password:
            assert password not in text


@pytest.mark.parametrize("path", ["in-place", "migrate", "dump-restore"])
@pytest.mark.parametrize("diskless", ["no", "yes"], ids=["disk", "diskless"])
def test_snapshot_round_trip_keeps_every_key_and_its_absolute_expiry(
    runtime: LocalRuntime,
    repo: LocalRepository,
    scratch: Scratch,
    monkeypatch: pytest.MonkeyPatch,
    diskless: str,
    path: str,
) -> None:
    """Each way the keys can reach the live server gives the same keys and expiry.

    in-place: the runtime's own server loads the checked file (DEBUG RELOAD), no scratch
    server; migrate: a memory limit rules that out, so the scratch server MIGRATEs the
    keys; dump-restore: MIGRATE fails, so the keys go through DUMP and RESTORE.
    """
    comp = make(runtime)
    # Both answers a server can give to SYNC: a counted payload, or one ended by a mark.
    comp.client().config_set("repl-diskless-sync", diskless)
    comp.client().config_set("repl-diskless-sync-delay", "0")
    if path != "in-place":
        comp.client().config_set("maxmemory", "1gb")  # a limit loading would ignore
    if path == "dump-restore":
        monkeypatch.setattr(redis_rdb, "_migrate_batch", lambda *args: False)
    before = comp.fingerprint()
    measured = time.monotonic()
    expiring = ttls(comp)
    assert len(expiring) > 500 and (5, b"jobs:1") in expiring
    assert {name.split()[0] for name in before.parts} == {"db0", "db5"}

    manifest = backup(repo, [comp], fingerprints={"cache": before})
    details = manifest.component("cache").details
    [record] = manifest.artifacts_of("cache")
    assert record.name == ARTIFACT
    assert details["transfer"] == ("diskless" if diskless == "yes" else "disk")
    assert details["rdb_version"] == 9
    assert details["size"] == record.raw_size > 0
    assert details["server_version"] == "6.2.14"
    assert raw_rdb(repo, manifest).startswith(b"REDIS0009")

    # A disk transfer leaves the server's dump.rdb until its replication cron deletes it
    # (rdb-del-sync-files), about a second later; the in-place load must not touch it.
    own_dump = comp.service.base / ARTIFACT
    own = own_dump.read_bytes() if own_dump.exists() else None
    comp.client().flushall()
    assert comp.fingerprint().digest != before.digest
    restore(repo, manifest, comp)

    after = comp.fingerprint()
    assert compare(before, after) == []
    assert after.digest == before.digest
    assert comp.health().ok
    restored = ttls(comp)
    elapsed_ms = (time.monotonic() - measured) * 1000
    assert restored.keys() == expiring.keys()
    for key, was in expiring.items():
        # Absolute expiry: what is left now is what was left at backup, minus the time since.
        assert was - elapsed_ms - 1000 <= restored[key] <= was + 2, key
    scratch.assert_gone()
    assert len(scratch.procs) == (0 if path == "in-place" else 1)
    assert not list(comp.service.base.glob(".drproof-restore-*")), "the loaded RDB was left behind"
    assert comp.client().config_get("dbfilename")["dbfilename"] == ARTIFACT
    if own_dump.exists():
        assert own_dump.read_bytes() == own, "the server's own dump.rdb was changed"
    assert comp.client().config_get("maxmemory")["maxmemory"] == ("0" if path == "in-place" else "1073741824")


def test_a_key_that_expired_since_the_backup_stays_gone(
    runtime: LocalRuntime, repo: LocalRepository, scratch: Scratch
) -> None:
    comp = make(runtime, keys=50, expiring=0.0)
    comp.client().set("short:lived", b"x", px=1500)
    manifest = backup(repo, [comp])
    time.sleep(1.7)
    comp.client().flushall()
    restore(repo, manifest, comp)
    assert comp.client().exists("short:lived") == 0
    assert comp.client().dbsize() == 50
    scratch.assert_gone()


def test_stored_bit_rot_is_refused_before_live_data_are_touched(
    runtime: LocalRuntime, repo: LocalRepository, scratch: Scratch
) -> None:
    comp = make(runtime, keys=2000)
    manifest = backup(repo, [comp])
    [record] = manifest.artifacts_of("cache")
    middle = repo.stored_size(manifest, record) // 2
    repo.overwrite_stored(manifest, record, middle, bytes([repo.read_stored(manifest, record, middle, 1)[0] ^ 0xFF]))
    comp.client().set("written:after-backup", b"live")
    live = comp.fingerprint()
    with pytest.raises(IntegrityError, match=r"dump\.rdb"):
        restore(repo, manifest, comp)
    assert unchanged(live, comp.fingerprint())
    assert scratch.procs == []
    scratch.assert_gone()


def _without_checker(monkeypatch: pytest.MonkeyPatch, piped: bool = False) -> None:
    """Pretend redis-check-rdb cannot run over the file, and unless ``piped``, not beside the write either."""
    real_run, real_popen = subprocess.run, subprocess.Popen

    def run(*args: Any, **kwargs: Any) -> Any:
        if "executable" in kwargs:
            raise FileNotFoundError("redis-check-rdb")
        return real_run(*args, **kwargs)

    def popen(*args: Any, **kwargs: Any) -> Any:
        if "executable" in kwargs and not piped:
            raise FileNotFoundError("redis-check-rdb")
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(subprocess, "Popen", popen)


@pytest.mark.parametrize("checker", ["checked", "piped-only", "loader-only"])
def test_a_damaged_rdb_is_refused_by_the_scratch_server_and_live_data_stay(
    runtime: LocalRuntime,
    repo: LocalRepository,
    scratch: Scratch,
    monkeypatch: pytest.MonkeyPatch,
    checker: str,
) -> None:
    """With "piped-only", the check that reads beside the write is the one that finds the damage."""
    comp = make(runtime, keys=3000)
    manifest = backup(repo, [comp])
    data = bytearray(raw_rdb(repo, manifest))
    data[len(data) // 2] ^= 0xFF
    comp.client().set("written:after-backup", b"live")
    live = comp.fingerprint()
    if checker != "checked":
        _without_checker(monkeypatch, piped=checker == "piped-only")

    with pytest.raises(ComponentError) as caught:
        comp.restore(source_of(bytes(data)))
    message = str(caught.value)
    if checker != "loader-only":
        assert "damaged" in message and "redis-check-rdb reports" in message, message
    else:
        assert "could not load the backed-up RDB" in message, message
    assert "Nothing live was touched" in message
    assert unchanged(live, comp.fingerprint())
    no_secrets(message, comp.service.password, *scratch.passwords)
    scratch.assert_gone()
    assert len(scratch.procs) == (1 if checker == "loader-only" else 0)


@pytest.mark.parametrize("checker", [True, False], ids=["checked", "loader-only"])
def test_an_rdb_newer_than_the_scratch_server_names_both_versions_and_kind_redis(
    runtime: LocalRuntime,
    repo: LocalRepository,
    scratch: Scratch,
    monkeypatch: pytest.MonkeyPatch,
    checker: bool,
) -> None:
    comp = make(runtime, keys=100)
    manifest = backup(repo, [comp])
    data = raw_rdb(repo, manifest)
    newer = b"REDIS0099" + data[9:]  # a format no server here reads (Valkey 9 reads even Redis 7.4's 12)
    live = comp.fingerprint()
    if not checker:
        _without_checker(monkeypatch)

    with pytest.raises(ComponentError) as caught:
        comp.restore(source_of(newer))
    message = str(caught.value)
    assert "format version 99" in message and "written by Redis 6.2.14" in message, message
    assert "no scratch server on this host can read" in message and "redis-server 6.2.14" in message, message
    assert "kind `redis`" in message and "Nothing live was touched" in message, message
    assert unchanged(live, comp.fingerprint())
    no_secrets(message, comp.service.password, *scratch.passwords)
    scratch.assert_gone()


def test_a_live_server_that_refuses_the_keys_fails_the_restore_clearly(
    runtime: LocalRuntime, repo: LocalRepository, scratch: Scratch
) -> None:
    comp = make(runtime, keys=500)
    manifest = backup(repo, [comp])
    comp.client().delete(*list(comp.client().scan_iter(count=1000))[:100])
    live = comp.fingerprint()
    comp.client().config_set("maxmemory", "1")  # a full server: every RESTORE answers OOM
    with pytest.raises(ComponentError) as caught:
        restore(repo, manifest, comp)
    message = str(caught.value)
    assert "copying the snapshot into the live server failed" in message and "maxmemory" in message, message
    # Staged in spare databases: the failure left every live key as it was.
    assert "the live data were not touched" in message
    comp.client().config_set("maxmemory", "0")
    assert unchanged(live, comp.fingerprint())
    no_secrets(message, comp.service.password, *scratch.passwords)
    scratch.assert_gone()
    assert len(scratch.procs) == 1


def test_an_artifact_that_is_no_rdb_at_all_is_refused(runtime: LocalRuntime, scratch: Scratch) -> None:
    comp = make(runtime, keys=10)
    live = comp.fingerprint()
    with pytest.raises(ComponentError, match="not an RDB file"):
        comp.restore(source_of(b"DRPROOF-REDIS-DUMP-1\n" + bytes(200)))
    assert unchanged(live, comp.fingerprint())
    scratch.assert_gone()


def test_wrong_password_is_refused_without_showing_either_password(
    runtime: LocalRuntime, repo: LocalRepository
) -> None:
    comp = make(runtime, keys=10)
    right = comp.service.password
    comp.service.password = "not-the-password-0123456789"
    with pytest.raises(ComponentError) as caught:
        backup(repo, [comp])
    message = str(caught.value)
    assert "authentication refused" in message, message
    no_secrets(message, right, "not-the-password-0123456789")
    assert repo.list() == []


# -- a scripted server for transfers that go wrong ---------------------------------------

GOOD_RDB_HEAD = b"REDIS0009\xfa\tredis-ver\x059.9.9"
MARK = b"0123456789abcdefghij0123456789abcdefghij"
SECRET = "fake-server-password-zzz"


def _good_rdb(size: int = 300_000) -> bytes:
    body = bytes(range(256)) * (size // 256)
    return GOOD_RDB_HEAD + body + b"\xff" + bytes(8)


class FakeServer:
    """Answers AUTH, INFO and REPLCONF like Redis, then plays ``script`` for SYNC."""

    def __init__(self, script: Callable[[socket.socket], None], auth_reply: bytes = b"+OK\r\n") -> None:
        self.script = script
        self.auth_reply = auth_reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as reader:
            while True:
                header = reader.readline()
                if not header:
                    return
                args = []
                for _ in range(int(header[1:])):
                    size = int(reader.readline()[1:])
                    args.append(reader.read(size + 2)[:-2])
                command = args[0].upper()
                if command == b"AUTH":
                    conn.sendall(self.auth_reply)
                    if self.auth_reply.startswith(b"-"):
                        return
                elif command == b"INFO":
                    info = b"# Server\r\nredis_version:9.9.9\r\n"
                    conn.sendall(b"$%d\r\n%s\r\n" % (len(info), info))
                elif command == b"REPLCONF":
                    conn.sendall(b"+OK\r\n")
                elif command == b"SYNC":
                    self.script(conn)
                    return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


class FakeService:
    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.password = SECRET

    def version(self) -> str:
        return "Redis server v=9.9.9"

    def client(self, db: int = 0) -> Any:
        # The fake speaks only the replication handshake, not commands (the backup's look
        # for a restore's staged leftovers asks one, and goes on when it cannot).
        raise redis.ConnectionError("the fake server answers no commands")


def _fake_backup(tmp_path: Path, server: FakeServer) -> tuple[LocalRepository, Manifest | ComponentError]:
    comp = RedisRdbComponent("cache", RedisParams(), cast(Any, None))
    comp.service = cast(Any, FakeService(server.port))
    repository = LocalRepository(tmp_path / "fake-repo")
    try:
        # The fake speaks only the replication handshake: no fingerprint can be read from it.
        return repository, backup(repository, [comp], fingerprints={"cache": Fingerprint.build("cache", comp.name, {})})
    except ComponentError as exc:
        return repository, exc
    finally:
        server.close()


def _keepalives_then(payload: bytes, *, header: bytes | None = None, cut: int | None = None) -> Callable[..., None]:
    def script(conn: socket.socket) -> None:
        for _ in range(3):
            conn.sendall(b"\n")
            time.sleep(0.01)
        conn.sendall(header if header is not None else b"$%d\r\n" % len(payload))
        conn.sendall(payload[:cut] if cut is not None else payload)

    return script


def test_counted_transfer_after_keepalives_is_stored_byte_for_byte(tmp_path: Path) -> None:
    payload = _good_rdb()
    # The write stream that follows the payload on a replica link must not be stored.
    script = _keepalives_then(payload + b"*1\r\n$4\r\nPING\r\n", header=b"$%d\r\n" % len(payload))
    repository, result = _fake_backup(tmp_path, FakeServer(script))
    assert isinstance(result, Manifest), result
    assert raw_rdb(repository, result) == payload
    details = result.component("cache").details
    assert details["transfer"] == "disk" and details["server_version"] == "9.9.9" and details["size"] == len(payload)


def test_diskless_transfer_ends_at_the_mark_even_when_it_arrives_in_pieces(tmp_path: Path) -> None:
    payload = _good_rdb()

    def script(conn: socket.socket) -> None:
        conn.sendall(b"\n$EOF:" + MARK + b"\r\n")
        conn.sendall(payload[:100_000])
        time.sleep(0.02)
        conn.sendall(payload[100_000:] + MARK[:13])
        time.sleep(0.05)
        conn.sendall(MARK[13:] + b"*1\r\n$4\r\nPING\r\n")  # the write stream that follows is not stored

    repository, result = _fake_backup(tmp_path, FakeServer(script))
    assert isinstance(result, Manifest), result
    assert raw_rdb(repository, result) == payload
    assert result.component("cache").details["transfer"] == "diskless"


FAILURES: dict[str, tuple[Callable[..., None], str]] = {
    "cut-counted": (
        _keepalives_then(_good_rdb(), cut=150_000),
        f"connection lost after 150000 of {len(_good_rdb())} bytes",
    ),
    "cut-diskless": (
        _keepalives_then(_good_rdb(), header=b"$EOF:" + MARK + b"\r\n", cut=150_000),
        "before its end-of-transfer mark",
    ),
    "short-rdb": (_keepalives_then(_good_rdb()[:-9]), "does not end with the RDB end-of-file marker"),
    "not-rdb": (_keepalives_then(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 20), "not an RDB file"),
    "tiny": (_keepalives_then(b"REDIS"), "too few for an RDB file"),
    "refused": (lambda conn: conn.sendall(b"-ERR unknown command `SYNC`\r\n"), "refused SYNC: ERR unknown command"),
    "garbage-header": (lambda conn: conn.sendall(b"+FULLRESYNC abc 0\r\n"), "unexpected answer to SYNC"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_broken_transfers_fail_clearly_and_leave_no_backup(tmp_path: Path, case: str) -> None:
    script, expected = FAILURES[case]
    repository, result = _fake_backup(tmp_path, FakeServer(script))
    assert isinstance(result, ComponentError), result
    assert expected in str(result), str(result)
    no_secrets(str(result), SECRET)
    assert repository.list() == []


def test_auth_refused_by_the_fake_server_does_not_echo_the_password(tmp_path: Path) -> None:
    server = FakeServer(lambda conn: None, auth_reply=f"-WRONGPASS invalid password {SECRET}\r\n".encode())
    repository, result = _fake_backup(tmp_path, server)
    assert isinstance(result, ComponentError)
    assert "authentication refused" in str(result)
    no_secrets(str(result), SECRET)
    assert repository.list() == []


def test_unreachable_server_is_a_component_error(tmp_path: Path) -> None:
    comp = RedisRdbComponent("cache", RedisParams(), cast(Any, None))
    comp.service = cast(Any, FakeService(processes.free_port()))
    with pytest.raises(ComponentError, match="cannot connect"):
        backup(
            LocalRepository(tmp_path / "r"), [comp], fingerprints={"cache": Fingerprint.build("cache", comp.name, {})}
        )


def test_fingerprint_of_the_kind_is_the_redis_one(runtime: LocalRuntime) -> None:
    comp = make(runtime, keys=20)
    fp = comp.fingerprint()
    assert isinstance(fp, Fingerprint) and fp.kind == "redis-rdb"
    keyspaces = {p for p in fp.parts if not p.endswith(" expiry")}
    assert keyspaces == {"db0 keyspace cart", "db0 keyspace session", "db0 keyspace user", *DB5_PARTS}
    # Keys with a time to live add a key space's expiry part, each key's moment read exactly.
    assert {p.removesuffix(" expiry") for p in fp.parts} == keyspaces
    assert all(fp.parts[p].tolerance == 0 for p in fp.parts if p.endswith(" expiry"))
