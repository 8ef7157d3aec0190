"""Each key's expiry moment, compared exactly where the server tells it (issue 13, item 3).

Expiries used to be compared as one sum per key space, within 2 s a key: among 2000
expiring keys one key could gain an hour, or two keys exchange their moments, and the
restore was called whole. Redis 7.0 and Valkey answer ``PEXPIRETIME``, the moment the
server stored, so a healthy restore gives every key the same number and each key is
compared exactly.

That holds only if every way drproof copies a key keeps the moment to the millisecond:
``MIGRATE`` (the ``redis-rdb`` kind's copy from its scratch server) hands over a
remaining time to live, and moved every one of 2000 keys' moments by a millisecond or
more; the copy now sets the exact moments after it. The round trips below are the quiet
controls (every path, exact parts, no difference); the damages after them the negative
controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.backup import backup, restore
from engine.components import redis_rdb
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.fingerprint import Fingerprint, compare
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "moments-secret"
PATHS = [(RedisComponent, "restore"), (RedisRdbComponent, "migrate"), (RedisRdbComponent, "dump-restore")]


def _component(tmp_path: Path, port: int, kind: type[RedisComponent], name: str) -> RedisComponent:
    comp: RedisComponent = external_redis(tmp_path, port, PASSWORD, kind, name)
    return comp


def _client(port: int, db: int = 0) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, db=db)


def _moments(port: int) -> dict[bytes, int]:
    c = _client(port)
    return {k: int(c.pexpiretime(k)) for k in c.scan_iter(count=1000)}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A backed-up server with 2000 keys that expire at moments 1 ms apart, and an empty live one."""
    binary = require_debian_redis()  # Redis 7.0: PEXPIRETIME
    with (
        redis_server(binary, tmp_path / "src", PASSWORD) as src,
        redis_server(binary, tmp_path / "live", PASSWORD) as live,
    ):
        pipe = _client(src).pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"session:{i}", f"s{i}", px=3_600_000 + i)
        for i in range(500):
            pipe.set(f"user:{i}", f"u{i}")
        pipe.execute()
        yield src, live


def _restored(
    servers: tuple[int, int], tmp_path: Path, kind: type[RedisComponent], path: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Fingerprint, RedisComponent]:
    src, live = servers
    if path == "dump-restore":
        monkeypatch.setattr(redis_rdb, "_migrate_batch", lambda *args: False)
    source = _component(tmp_path, src, kind, "src")
    taken = source.fingerprint()
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [source], fingerprints={"cache": taken})
    target = _component(tmp_path, live, kind, "live")
    restore(repo, manifest, target)
    return taken, target


@pytest.mark.parametrize(("kind", "path"), PATHS, ids=["redis", "redis-rdb-migrate", "redis-rdb-dump-restore"])
def test_every_restore_path_keeps_each_moment_to_the_millisecond(
    servers: tuple[int, int], tmp_path: Path, kind: type[RedisComponent], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, live = servers
    taken, target = _restored(servers, tmp_path, kind, path, monkeypatch)
    [expiry] = [p for n, p in taken.parts.items() if n.endswith(" expiry")]
    assert expiry.tolerance == 0 and expiry.count == 2000, "read exactly, with PEXPIRETIME"
    assert _moments(live) == _moments(src)
    assert compare(taken, target.fingerprint()) == []


@pytest.mark.parametrize(
    "damage",
    ["one key an hour later", "two keys exchange their moments", "one key a millisecond later"],
)
def test_a_moment_changed_on_one_key_among_thousands_is_named(
    servers: tuple[int, int], tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old sum allowed 4000 s over 2000 keys: each of these passed it."""
    _, live = servers
    taken, target = _restored(servers, tmp_path, RedisComponent, "restore", monkeypatch)
    c = _client(live)
    at = {k: int(c.pexpiretime(k)) for k in (b"session:1", b"session:2")}
    if damage == "one key an hour later":
        c.pexpireat("session:1", at[b"session:1"] + 3_600_000)
    elif damage == "two keys exchange their moments":
        c.pexpireat("session:1", at[b"session:2"])
        c.pexpireat("session:2", at[b"session:1"])
    else:
        c.pexpireat("session:1", at[b"session:1"] + 1)
    [difference] = compare(taken, target.fingerprint())
    assert difference.part == "db0 keyspace session expiry"
    assert "the expiry moment of at least one key differs" in difference.describe()
