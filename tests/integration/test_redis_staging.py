"""Staged Redis restores: refused before anything is touched, or swapped in whole (found by review).

- A backup holding a database the server does not have (databases 0 and 12, a server of
  ``databases 8``) staged both, swapped database 0 in, then failed on 12 with a raw
  ``DB index is out of range``: the live data were left half swapped. Now refused up
  front, with what to change, and the live data stay exactly as they were.
- Keys whose time to live runs out while the restore runs made a healthy restore be
  refused (the staged count allowed 1% fewer keys, none under 100). Now keys without a
  time to live must all be there, and those with one may have expired; a missing key
  without one is still refused (negative control).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from engine.backup import backup, restore
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.components.redis_stage import Stage
from engine.errors import DrproofError
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "staging-secret"
KINDS = [RedisComponent, RedisRdbComponent]


def _component(tmp_path: Path, port: int, kind: type[RedisComponent], name: str) -> RedisComponent:
    comp: RedisComponent = external_redis(tmp_path, port, PASSWORD, kind, name)
    return comp


def _client(port: int, db: int = 0) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, db=db)


def _everything(port: int, dbs: int) -> dict[int, dict[bytes, bytes]]:
    out = {}
    for db in range(dbs):
        c = _client(port, db)
        out[db] = {k: c.dump(k) for k in c.keys("*")}
    return out


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A source server of 16 databases and a live one of 8."""
    binary = require_debian_redis()
    with (
        redis_server(binary, tmp_path / "src", PASSWORD) as src,
        redis_server(binary, tmp_path / "live", PASSWORD, extra="databases 8\n") as live,
    ):
        yield src, live


@pytest.mark.parametrize("kind", KINDS, ids=["redis", "redis-rdb"])
def test_a_backup_of_a_database_the_server_lacks_is_refused_before_anything_is_touched(
    servers: tuple[int, int], tmp_path: Path, kind: type[RedisComponent]
) -> None:
    src, live = servers
    _client(src).set("user:1", "backed-up db0")
    _client(src, 12).set("user:2", "backed-up db12")
    _client(live).set("live:1", "must survive")
    _client(live, 3).set("live:3", "must survive too")
    before = _everything(live, 8)
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [_component(tmp_path, src, kind, "src")])
    with pytest.raises(DrproofError, match=r"database 12.*databases 8.*at least 13.*not touched"):
        restore(repo, manifest, _component(tmp_path, live, kind, "live"))
    assert _everything(live, 8) == before


def _expiring_then(act: Callable[[Stage], None]) -> Callable[..., None]:
    """``Stage.check_counts`` run after ``act`` on the staged copy (keys expired, or one lost)."""
    original = Stage.check_counts

    def check(self: Stage, expected: dict) -> None:  # type: ignore[type-arg]
        act(self)
        original(self, expected)

    return check


def _expire_staged(stage: Stage) -> None:
    """Wait until the sessions' time ran out, then touch them so the server reclaims them now."""
    time.sleep(max(0.0, SESSIONS_END - time.time()) + 0.2)
    for spare in stage.spare.values():
        c = stage.client(spare)
        for key in c.keys("session:*"):
            c.exists(key)


def _lose_one(stage: Stage) -> None:
    for spare in stage.spare.values():
        stage.client(spare).delete("user:3")


SESSIONS_END = 0.0


@pytest.mark.parametrize("kind", KINDS, ids=["redis", "redis-rdb"])
def test_keys_that_expire_while_restoring_do_not_refuse_a_healthy_restore(
    servers: tuple[int, int], tmp_path: Path, kind: type[RedisComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    global SESSIONS_END
    src, live = servers
    c = _client(src)
    for i in range(10):
        c.set(f"user:{i}", f"v{i}")
    SESSIONS_END = time.time() + 4
    for i in range(40):
        c.set(f"session:{i}", "s", px=4000)
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [_component(tmp_path, src, kind, "src")])
    monkeypatch.setattr(Stage, "check_counts", _expiring_then(_expire_staged))
    restore(repo, manifest, _component(tmp_path, live, kind, "live"))
    restored = _client(live)
    assert sorted(restored.keys("user:*")) == sorted(f"user:{i}".encode() for i in range(10))
    assert restored.keys("session:*") == []


@pytest.mark.parametrize("kind", KINDS, ids=["redis", "redis-rdb"])
def test_a_key_without_a_time_to_live_missing_from_the_stage_is_refused(
    servers: tuple[int, int], tmp_path: Path, kind: type[RedisComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, live = servers
    for i in range(10):
        _client(src).set(f"user:{i}", f"v{i}")
    _client(live).set("live:1", "must survive")
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [_component(tmp_path, src, kind, "src")])
    before = _everything(live, 8)
    monkeypatch.setattr(Stage, "check_counts", _expiring_then(_lose_one))
    with pytest.raises(DrproofError, match=r"10 keys.*holds 9 without.*not touched"):
        restore(repo, manifest, _component(tmp_path, live, kind, "live"))
    assert _everything(live, 8) == before


SECRET = "sk-live-HUNTER2-very-secret"


@pytest.mark.parametrize("kind", KINDS, ids=["redis", "redis-rdb"])
def test_a_restore_into_an_older_server_is_refused_without_printing_a_value(
    tmp_path: Path, kind: type[RedisComponent]
) -> None:
    """Valkey 9 keys into Redis 7.0: a domain error naming the cause; no stored value in it (review)."""
    from tests.integration.test_redis_fidelity import _binary

    with (
        redis_server(_binary("valkey-9"), tmp_path / "src", PASSWORD) as src,
        redis_server(_binary("redis-7.0"), tmp_path / "live", PASSWORD) as live,
    ):
        _client(src).set("api:key", SECRET)
        _client(live).set("live:1", "must survive")
        repo = LocalRepository(tmp_path / "repo")
        manifest = backup(repo, [_component(tmp_path, src, kind, "src")])
        with pytest.raises(DrproofError) as refused:
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        assert SECRET not in str(refused.value) and "HUNTER2" not in repr(refused.value)
        assert "not touched" in str(refused.value)
        assert _everything(live, 16) == {**{db: {} for db in range(16)}, 0: {b"live:1": _client(live).dump("live:1")}}


def test_a_valkey_hash_with_field_expiries_is_refused_by_the_rdb_kind_with_the_cause(tmp_path: Path) -> None:
    """Valkey 9 drops the replication link when a hash has field TTLs (RDB 11 cannot hold them): the error says so."""
    from tests.integration.test_redis_fidelity import _binary

    with redis_server(_binary("valkey-9"), tmp_path / "src", PASSWORD) as port:
        r = _client(port)
        r.hset("h:1", mapping={"a": "1", "b": "2"})
        r.execute_command("HEXPIRE", "h:1", 3600, "FIELDS", 1, "a")
        repo = LocalRepository(tmp_path / "repo")
        with pytest.raises(DrproofError, match=r"HEXPIRE.*kind `redis`"):
            backup(repo, [_component(tmp_path, port, RedisRdbComponent, "src")])
        assert repo.list() == []
        assert len(backup(repo, [_component(tmp_path, port, RedisComponent, "src2")]).components) == 1
