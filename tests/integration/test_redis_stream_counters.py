"""A stream's entries-added and max-deleted-entry-id are compared (scheme redis/4).

Found by review: scheme 3 compared a stream's entries, last id and consumer groups but not
these two counters, so a restore that rebuilt a stream entry by entry (XADD with the same
ids, as a key-by-key copy tool does) lost them and fidelity said "match": after an XDEL,
entries-added 5 and max-deleted-entry-id 2-0 came back as 4 and 0-0, and consumer lag
(XINFO) with them. Redis 6.2 keeps neither; a 6.2 payload restored onto Redis 7 or Valkey
gets entries-added = length and max-deleted-entry-id 0-0, which is what the fingerprint
reads on 6.2, so that cross-version restore stays a match (checked here on both).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from engine.components.redis import RedisComponent
from engine.fingerprint import compare
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server
from tests.integration.test_redis_fidelity import _binary

pytestmark = pytest.mark.integration

PASSWORD = "counters-secret"
KEY = "events:1"


def _stream(c: redis.Redis) -> None:
    """Five entries, the second deleted: entries-added 5, max-deleted-entry-id 2-0 on Redis 7."""
    c.delete(KEY)
    for i in range(1, 6):
        c.xadd(KEY, {"f": str(i)}, id=f"{i}-0")
    c.xdel(KEY, "2-0")
    c.xgroup_create(KEY, "workers", id="0")
    c.xreadgroup("workers", "alice", {KEY: ">"}, count=2)


def _rebuilt(c: redis.Redis) -> None:
    """What a copy entry by entry gives: the same entries, last id and group, the counters lost."""
    entries = c.xrange(KEY)
    c.delete(KEY)
    for entry_id, fields in entries:
        c.xadd(KEY, fields, id=entry_id)
    c.execute_command("XSETID", KEY, "5-0")
    c.xgroup_create(KEY, "workers", id="0")
    c.xreadgroup("workers", "alice", {KEY: ">"}, count=2)


@pytest.mark.parametrize("server", ["redis-7.0", "valkey-9"])
def test_stream_counters_lost_by_a_rebuild_are_a_difference(tmp_path: Path, server: str) -> None:
    with redis_server(_binary(server), tmp_path / server, PASSWORD) as port:
        c = redis.Redis(port=port, password=PASSWORD)
        comp: RedisComponent = external_redis(tmp_path, port, PASSWORD)
        _stream(c)
        c.function_load("#!lua name=lib\nredis.register_function('f', function() return 1 end)")
        before, old = comp.fingerprint(), comp.legacy_fingerprint("redis/3")
        assert before.scheme == "redis/5"
        payload = c.dump(KEY)
        c.restore(KEY, 0, payload, replace=True)
        assert compare(before, comp.fingerprint()) == []  # quiet control: a DUMP/RESTORE round trip

        _rebuilt(c)
        assert [d.part for d in compare(before, comp.fingerprint())] == ["db0 keyspace events"]
        assert old is not None and compare(old, comp.fingerprint_like(old)) == []  # scheme 3's blind spot
        assert "functions" in old.parts  # a scheme-3 set still has its libraries compared
        assert "entries-added" in (comp.blind_spot("redis/3") or "")

        for change in (("ENTRIESADDED", 6, "MAXDELETEDID", "2-0"), ("ENTRIESADDED", 5, "MAXDELETEDID", "3-0")):
            c.restore(KEY, 0, payload, replace=True)
            c.execute_command("XSETID", KEY, "5-0", *change)
            assert [d.part for d in compare(before, comp.fingerprint())] == ["db0 keyspace events"], change


@pytest.mark.parametrize("server", ["redis-7.0", "valkey-9"])
def test_a_redis_62_stream_restored_onto_a_newer_server_matches(tmp_path: Path, server: str) -> None:
    with (
        redis_server(_binary("redis-6.2"), tmp_path / "old", PASSWORD) as old_port,
        redis_server(_binary(server), tmp_path / server, PASSWORD) as port,
    ):
        old = redis.Redis(port=old_port, password=PASSWORD)
        _stream(old)
        on_old = external_redis(tmp_path / "a", old_port, PASSWORD).fingerprint()
        new = redis.Redis(port=port, password=PASSWORD)
        new.restore(KEY, 0, old.dump(KEY))
        assert compare(on_old, external_redis(tmp_path / "b", port, PASSWORD).fingerprint()) == []
