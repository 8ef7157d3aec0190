"""Where one stream entry ends and the next begins is part of the digest (scheme redis/3).

Found by review: scheme 2 framed each field and value of a stream entry, but not how many
an entry has, so one entry ``1-0 {a: b, 2-0: c, d: 3-0, e: f}`` read the same as three
entries ``1-0 {a: b}``, ``2-0 {c: d}``, ``3-0 {e: f}`` (with the same last id). Scheme 3
frames each entry with its count. Checked on Redis 6.2, 7.0 and Valkey 9; scheme 2, still
computed for backups of earlier versions, cannot tell them apart and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from engine.components.redis import RedisComponent
from engine.fingerprint import compare
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server
from tests.integration.test_redis_fidelity import SERVERS, _binary

pytestmark = pytest.mark.integration

PASSWORD = "streams-secret"


def _one_entry(c: redis.Redis) -> None:
    c.delete("events:1")
    c.execute_command("XADD", "events:1", "1-0", "a", "b", "2-0", "c", "d", "3-0", "e", "f")
    c.execute_command("XSETID", "events:1", "3-0")


def _three_entries(c: redis.Redis) -> None:
    c.delete("events:1")
    for i, (f, v) in enumerate([("a", "b"), ("c", "d"), ("e", "f")], start=1):
        c.execute_command("XADD", "events:1", f"{i}-0", f, v)


@pytest.mark.parametrize("server", SERVERS)
def test_one_entry_of_many_fields_is_not_three_entries(tmp_path: Path, server: str) -> None:
    with redis_server(_binary(server), tmp_path / server, PASSWORD) as port:
        c = redis.Redis(port=port, password=PASSWORD)
        comp: RedisComponent = external_redis(tmp_path, port, PASSWORD)
        _three_entries(c)
        before, old = comp.fingerprint(), comp.legacy_fingerprint("redis/2")
        assert compare(before, comp.fingerprint()) == []  # quiet control
        _one_entry(c)
        assert {d.part for d in compare(before, comp.fingerprint())} == {"db0 keyspace events"}
        assert old is not None and compare(old, comp.fingerprint_like(old)) == []  # scheme 2's blind spot
        assert "stream entry" in (comp.blind_spot("redis/2") or "")
