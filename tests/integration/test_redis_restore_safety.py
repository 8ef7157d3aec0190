"""Redis restores that changed live data and said they had not (review-redis2, findings 1-4 and 8).

- CONFIG refused on a server of fewer than 16 databases: drproof guessed spare database
  15; a ``redis-rdb`` restore's MIGRATE into it ran its RESTOREs in live database 0, and
  a ``redis`` restore could never work. Spares are now proven by SELECT.
- SWAPDB or FLUSHDB refused (``rename-command``, an ACL): found only after staging, with
  a raw driver error and the staged copy or the old data left behind. Now checked first.
- No spare database (direct mode): FLUSHALL ran before the server had taken a key, so a
  backup in a format it refuses wiped it. Now one key is RESTOREd first.
- ``maxmemory`` with an eviction policy: staging evicted live keys and the refusal said
  "not touched". Now refused up front, and evictions are always named.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.backup import backup, restore
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.components.redis_stage import Stage
from engine.errors import ComponentError
from engine.manifest import Manifest
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "safety-secret"
KINDS = [RedisComponent, RedisRdbComponent]
IDS = ["redis", "redis-rdb"]


def _client(port: int, db: int = 0) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, db=db)


def _component(tmp_path: Path, port: int, kind: type[RedisComponent], name: str) -> RedisComponent:
    comp: RedisComponent = external_redis(tmp_path, port, PASSWORD, kind, name)
    return comp


def _everything(port: int) -> dict[tuple[int, bytes], bytes]:
    """Every key of every database with its DUMP: what "unchanged" is measured on."""
    out = {}
    for name in _client(port).info("keyspace"):
        c = _client(port, int(name[2:]))
        out.update({(int(name[2:]), k): c.dump(k) for k in c.keys("*")})
    return out


def _backed_up(tmp_path: Path, kind: type[RedisComponent], keys: int = 10, value: bytes = b"") -> tuple[Any, Manifest]:
    """A backup of ``keys`` keys ``user:<n>`` = "backup <n>" (+ ``value``) from a fresh Debian redis-server."""
    with redis_server(require_debian_redis(), tmp_path / "src", PASSWORD) as src:
        pipe = _client(src).pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"user:{i}", f"backup {i}".encode() + value)
        pipe.execute()
        repo = LocalRepository(tmp_path / "repo")
        return repo, backup(repo, [_component(tmp_path, src, kind, "src")])


def _live(port: int, keys: int = 2, value: bytes = b"") -> dict[tuple[int, bytes], bytes]:
    pipe = _client(port).pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"user:{i}", b"LIVE, newer than the backup" + value)
    pipe.set("live:only", "must not be lost")
    pipe.execute()
    return _everything(port)


def _only_the_backup(port: int, keys: int = 10) -> None:
    c = _client(port)
    assert set(c.info("keyspace")) == {"db0"}
    assert {k: c.get(k) for k in c.keys("*")} == {f"user:{i}".encode(): f"backup {i}".encode() for i in range(keys)}


# -- finding 1 and 8: spares proven by SELECT --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
@pytest.mark.parametrize("databases", [4, 16])
def test_with_config_refused_the_restore_stages_in_a_database_that_exists(
    tmp_path: Path, kind: type[RedisComponent], databases: int
) -> None:
    """``databases 4`` and CONFIG renamed away: restored whole, never into live db 0 before the swap.

    Before: redis-rdb overwrote live keys and then said "not touched"; redis could not
    restore at all ("DB index is out of range"). ``databases 16`` is the quiet control.
    """
    repo, manifest = _backed_up(tmp_path, kind)
    extra = f'databases {databases}\nrename-command CONFIG ""\n'
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, extra) as live:
        _live(live)
        restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        _only_the_backup(live)


# -- finding 2: SWAPDB / FLUSHDB refused --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
@pytest.mark.parametrize(
    "refusal",
    ['rename-command SWAPDB ""\n', 'rename-command FLUSHDB ""\n', "acl -swapdb"],
    ids=["swapdb-renamed", "flushdb-renamed", "acl-no-swapdb"],
)
def test_a_server_that_refuses_swapdb_or_flushdb_is_refused_before_anything_is_staged(
    tmp_path: Path, kind: type[RedisComponent], refusal: str
) -> None:
    repo, manifest = _backed_up(tmp_path, kind)
    extra = "" if refusal.startswith("acl") else refusal
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, extra) as live:
        before = _live(live)
        if refusal.startswith("acl"):
            _client(live).execute_command("ACL", "SETUSER", "default", refusal.split()[1])
        with pytest.raises(ComponentError, match=r"refuses a command the staged restore needs.*nothing was changed"):
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        assert _everything(live) == before


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_flush_refused_after_the_swap_says_the_backup_is_live_and_where_the_old_data_are(
    tmp_path: Path, kind: type[RedisComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUSHDB taken away between the check and the swap: a ComponentError with the true state, not a raw error."""
    repo, manifest = _backed_up(tmp_path, kind)
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD) as live:
        before = _live(live)
        original = Stage.check_counts

        def then_refuse_flushdb(self: Stage, expected: dict[int, Callable[[], Any]]) -> None:
            original(self, expected)
            _client(live).execute_command("ACL", "SETUSER", "default", "-flushdb")

        monkeypatch.setattr(Stage, "check_counts", then_refuse_flushdb)
        with pytest.raises(ComponentError, match=r"swapped in and is live.*previous data remain in database 15"):
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        _client(live).execute_command("ACL", "SETUSER", "default", "+flushdb")
        assert {k: v for (db, k), v in _everything(live).items() if db == 15} == {k: v for (_, k), v in before.items()}
        assert _client(live).get("user:3") == b"backup 3"


# -- finding 3: direct mode proves a payload before FLUSHALL -----------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_direct_mode_proves_the_server_takes_the_keys_before_emptying_it(
    tmp_path: Path, kind: type[RedisComponent]
) -> None:
    """Valkey 9 keys into a Redis 7.0 of ``databases 1``: refused, every live key kept (before: all gone)."""
    from tests.integration.test_redis_fidelity import _binary

    with (
        redis_server(_binary("valkey-9"), tmp_path / "src", PASSWORD) as src,
        redis_server(_binary("redis-7.0"), tmp_path / "live", PASSWORD, "databases 1\n") as live,
    ):
        _client(src).set("user:1", "from valkey")
        before = _live(live)
        repo = LocalRepository(tmp_path / "repo")
        manifest = backup(repo, [_component(tmp_path, src, kind, "src")])
        with pytest.raises(ComponentError, match=r"refuses the backup's keys.*nothing was changed"):
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        assert _everything(live) == before


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_direct_mode_restores_a_compatible_backup_and_leaves_no_probe_key(
    tmp_path: Path, kind: type[RedisComponent]
) -> None:
    """Quiet control: ``databases 1`` still restores, and the payload probe's key is gone."""
    repo, manifest = _backed_up(tmp_path, kind)
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, "databases 1\n") as live:
        _live(live)
        restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        _only_the_backup(live)


# -- finding 4: eviction while staging ----------------------------------------------------------

_BIG = bytes(range(256)) * 4  # 1 KiB that LZF does not shrink much


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_staging_that_could_evict_live_keys_is_refused_first(tmp_path: Path, kind: type[RedisComponent]) -> None:
    repo, manifest = _backed_up(tmp_path, kind, 3000, _BIG)
    extra = "maxmemory 7mb\nmaxmemory-policy allkeys-random\n"
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, extra) as live:
        before = _live(live, 3000, _BIG)
        with pytest.raises(ComponentError, match=r"evicts keys when full.*nothing was changed"):
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        assert _everything(live) == before
        assert _client(live).info("stats")["evicted_keys"] == 0


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_keys_evicted_while_staging_are_named_never_not_touched(
    tmp_path: Path, kind: type[RedisComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The up-front estimate switched off: the evictions that follow are reported, not hidden."""
    repo, manifest = _backed_up(tmp_path, kind, 3000, _BIG)
    monkeypatch.setattr(Stage, "_check_memory", lambda self, size: None)
    extra = "maxmemory 7mb\nmaxmemory-policy allkeys-random\n"
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, extra) as live:
        _live(live, 3000, _BIG)
        with pytest.raises(ComponentError) as refused:
            restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        assert _client(live).info("stats")["evicted_keys"] > 0
        assert "not touched" not in str(refused.value)
        assert "evicted" in str(refused.value) and "may have been changed" in str(refused.value)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_cache_with_room_for_both_copies_restores(tmp_path: Path, kind: type[RedisComponent]) -> None:
    """Quiet control: maxmemory with an eviction policy and room to spare."""
    repo, manifest = _backed_up(tmp_path, kind)
    extra = "maxmemory 64mb\nmaxmemory-policy allkeys-lru\n"
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD, extra) as live:
        _live(live)
        restore(repo, manifest, _component(tmp_path, live, kind, "live"))
        _only_the_backup(live)


def test_redis_rdb_asks_the_scratch_server_about_its_own_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 12: whether keys expire was asked of the scratch server's db 15 (the live spare's number)."""
    from engine.components import redis_rdb

    asked: list[int] = []
    original = redis_rdb._has_expiring

    def recording(src: redis.Redis, db: int) -> bool:
        asked.append(db)
        return original(src, db)

    monkeypatch.setattr(redis_rdb, "_has_expiring", recording)
    repo, manifest = _backed_up(tmp_path, RedisRdbComponent)
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD) as live:
        _live(live)
        restore(repo, manifest, _component(tmp_path, live, RedisRdbComponent, "live"))
        _only_the_backup(live)
    assert asked == [0]
