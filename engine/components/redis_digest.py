"""Reading every key of a database for its digest, a batch at a time, in one atomic script each.

Scheme 1 read every value back through redis-py and sorted every key space: 48 s per
million keys, 16 times the backup. Since scheme ``redis/2`` a Lua script (``EVALSHA``)
reads each batch of keys where they live. The script here runs the ``SCAN`` step itself,
so the keys it names and the values it reads are one atomic snapshot of that batch, and
no key list travels to the client and back. It reads every string of the batch with one
``MGET`` (other types answer nil and are then asked their ``TYPE``), asks ``PTTL`` only
when the database has keys with a time to live at all (``INFO keyspace``, read in the same
script), and frames the values; the client hashes them (``redis_records``), on its own
core, while the server reads the next batch (``Digester``). At 1M keys of mixed types
this about halved the server's time and the fingerprint's (docs/performance.md).

With ``dump = 1`` the script also returns each key's ``DUMP`` payload: a backup then
writes exactly the keys, values and expiries its fingerprint describes, whatever a live
server does between batches.

``SCAN`` may return a key twice when the key space shrinks while it is read (Redis
documents this; measured here on Redis 6.2, 7.0 and Valkey 9). A key comes back only from
the group of buckets just behind the cursor when the table shrank, so the keys of the last
few batches are remembered and a key among them is not counted again (``Recent``). A
shrink to less than about 1/4000 of the table could reach further back than that; on a
database whose size did not change during the read, such a duplicate shows as more keys
read than the database holds, and the fingerprint reads it again (``Tally``).

Streams carry their entries and their consumer groups: each group's last delivered id
and pending entries (id, consumer, delivery count), and its consumers' pending counts;
times of delivery and of last activity are not compared. Types drproof does not know
(modules) are digested by their ``DUMP`` payload. Both are digested inside the script.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.components.redis_records import Decoded, decode
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

# The moment a key expires, in ms since 1970, exactly as the server stored it (-1: none).
# Redis 7.0 and Valkey answer PEXPIRETIME. Older servers have only PTTL, the stored moment
# minus the clock's millisecond at the call: with the clock read just before and just after
# and both readings in the same millisecond, that millisecond is known and the sum is the
# stored moment (measured on Redis 6.2: 100,000 reads, none off, 269 retried). Where five
# tries straddle a millisecond, or a key is due this very moment (PTTL 0), ``exact``
# becomes false and the batch's expiries are compared only as a sum.
MOMENT_LUA = r"""
local stored, exact = nil, true
local function ms(t) return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
local function moment(k)
  -- Asked of a key the script reads anyway: in a cluster, any other name may live on
  -- another node and fail for that reason alone.
  if stored == nil then stored = type(redis.pcall('PEXPIRETIME', k)) == 'number' end
  if stored then return redis.call('PEXPIRETIME', k) end
  for _ = 1, 5 do
    local before = ms(redis.call('TIME'))
    local p = redis.call('PTTL', k)
    if p < 0 then return -1 end
    if p > 0 and ms(redis.call('TIME')) == before then return before + p end
  end
  exact = false
  local p = redis.call('PTTL', k)
  if p < 0 then return -1 end
  return ms(redis.call('TIME')) + p
end
"""

SCRIPT = (
    MOMENT_LUA
    + r"""
local call, sha1, concat, sort, fmt = redis.call, redis.sha1hex, table.concat, table.sort, string.format
-- '<n>:' for each length n, made once per run: turning a number into text costs a printf,
-- and the same few lengths recur thousands of times in a batch.
local LEN = setmetatable({}, {__index = function(t, n) local s = n .. ':'; t[n] = s; return s end})
local function lp(s) return LEN[#s] .. s end
local function kv(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end
-- One XINFO STREAM FULL (COUNT 0: every entry and every pending entry, not the first
-- 10) gives the entries, the last generated id and each group with its pending entries
-- (id, consumer, delivery count): the list is called 'pending'; reading 'pel' (found by
-- review) compared no pending entry at all.
-- Scheme redis/3 (ARGV[5]) frames each entry with its number of fields and values: in
-- scheme 2 one entry of fields a b 2-0 c d 3-0 e f read the same as three entries
-- (found by review).
local framed_entries = ARGV[5] == '1'
-- Scheme redis/4 (ARGV[6]) adds the stream's entries-added and max-deleted-entry-id
-- (found by review: a restore that rebuilt a stream entry by entry, XADD with the same
-- ids, lost them and matched). Redis 6.2 keeps neither; Redis 7 and Valkey, given a 6.2
-- payload, set entries-added to the length and max-deleted-entry-id to 0-0, so on 6.2
-- those are what is digested, and a restore from 6.2 onto 7 still matches.
local counters = ARGV[6] == '1'
local function stream(k)
  local parts = {}
  local info = kv(call('XINFO', 'STREAM', k, 'FULL', 'COUNT', '0'))
  for _, e in ipairs(info['entries'] or {}) do
    local fields = {}
    for _, f in ipairs(e[2]) do fields[#fields + 1] = lp(f) end
    if framed_entries then parts[#parts + 1] = lp(e[1]) .. LEN[#e[2]] .. concat(fields)
    else parts[#parts + 1] = lp(e[1]) .. concat(fields) end
  end
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
    sort(consumers)
    groups[#groups + 1] = lp(gt['name']) .. lp(gt['last-delivered-id']) .. concat(pel) .. '|' .. concat(consumers)
  end
  sort(groups)
  local head = lp(info['last-generated-id'] or '')
  if counters then
    head = head .. '+' .. lp(fmt('%d', info['entries-added'] or info['length'] or 0))
      .. lp(info['max-deleted-entry-id'] or '0-0')
  end
  return concat(parts) .. '#' .. head .. concat(groups, ';')
end

local dump, db = ARGV[3] == '1', ARGV[4]
local scan = call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local keys = scan[2]
local n = #keys
local out = {scan[1], call('DBSIZE'), '', '', '', '', '', '', '', '', 0}
if n == 0 then return out end

-- Atomically, within this script: no key of the database has a time to live, so none of
-- this batch has one either, and PTTL need not be asked key by key.
local expiring = true
local info = redis.pcall('INFO', 'keyspace')
if type(info) == 'string' and info:match('\ndb' .. db .. ':keys=%d+,expires=0[,\r]') then expiring = false end
-- Hash fields with a time to live of their own (HEXPIRE: Valkey 9, Redis 7.4): asked of
-- a hash only when the database has such keys at all (Valkey counts them as
-- keys_with_volatile_items, Redis as subexpiry), and only in scheme redis/3 (ARGV[5]).
local fielded = false
if ARGV[5] == '1' and type(info) == 'string' then
  local line = info:match('\ndb' .. db .. ':([^\r\n]*)')
  local count = line and (line:match('keys_with_volatile_items=(%d+)') or line:match('subexpiry=(%d+)'))
  fielded = count ~= nil and tonumber(count) > 0
end
local NONE = string.rep('f', 16)
-- Each expiry is the moment the server stored (``moment``): a healthy restore gives every
-- key the same number, so each key's expiry can be compared exactly. A batch marked '='
-- was read exactly; one without it only as a sum, within a tolerance.

local vals
if n <= 4000 then vals = call('MGET', unpack(keys))
else
  vals = {}
  for s = 1, n, 4000 do
    local part = call('MGET', unpack(keys, s, math.min(s + 3999, n)))
    for j = 1, #part do vals[s + j - 1] = part[j] end
  end
end

-- Bytes of values this batch read (strings and collections' elements): the client sizes
-- the next batch by them, so a batch of large values holds little more than one.
local readbytes = 0
for i = 1, n do local v = vals[i]; if v then readbytes = readbytes + #v end end

-- Three sections (see redis_records): whole framed records (strings), the values of
-- lists, sorted sets, hashes and sets as the server returned them (MessagePack, the whole
-- batch packed in one C call: framing each element in Lua was a fifth of the server's
-- time), and digests made here.
local WHOLE, RAW, GIVEN = 1, 2, 3
local wlens, wkeys, wsizes, wdata, nw, nwd = {}, {}, {}, {}, 0, 0
local rkinds, rk, rv, nr = {}, {}, {}, 0
local gdata, ngd = {}, 0
-- A key whose value takes more than this is digested here instead: what crosses the
-- network per key stays small, whatever the size of the values.
local BIG = 1024
local mpack = cmsgpack.pack

local function given(k, lk, digest)
  gdata[ngd + 1] = lk; gdata[ngd + 2] = k; gdata[ngd + 3] = digest; ngd = ngd + 3
  return GIVEN
end
local function string_(k, lk, v)
  local total = #lk + #k + 8 + #v
  if total > BIG then return given(k, lk, sha1(lk .. k .. '6:string' .. v)) end
  wdata[nwd + 1] = lk; wdata[nwd + 2] = k; wdata[nwd + 3] = '6:string'; wdata[nwd + 4] = v; nwd = nwd + 4
  nw = nw + 1; wlens[nw] = lk; wkeys[nw] = k; wsizes[nw] = LEN[total]
  return WHOLE
end
-- The scheme redis/2 record of a large value, made here exactly as the client makes it
-- for the others (redis_records): ordered values framed element by element; hash fields
-- and set members each hashed, the hexadecimal digests sorted and joined by commas.
local function framed(list)
  local t = {}
  for j = 1, #list do local e = list[j]; t[j] = LEN[#e] .. e end
  return concat(t)
end
local function sorted_pairs(flat, moments)
  local d, m = {}, 0
  for j = 1, #flat, 2 do
    local f, x = flat[j], flat[j + 1]
    m = m + 1
    local at = moments and moments[m]
    if at and at >= 0 then d[m] = sha1(LEN[#f] .. f .. LEN[#x] .. x .. '@' .. fmt('%d', at))
    else d[m] = sha1(LEN[#f] .. f .. LEN[#x] .. x) end
  end
  sort(d)
  return concat(d, ',')
end
-- Each field's expiry moment (ms since 1970, -1: none) where any field of the hash has
-- one; nil where none has. A field's record then ends with '@<moment>': the moment is
-- what the server stored, so a healthy restore gives the same number, and one that
-- lost, moved or added a field's expiry changes the hash's digest. A hash without such
-- fields digests as in scheme redis/2.
local function field_moments(k, flat)
  local fields, got, any = {}, {}, false
  for j = 1, #flat, 2 do fields[#fields + 1] = flat[j] end
  for s = 1, #fields, 4000 do
    local e = math.min(s + 3999, #fields)
    local part = call('HPEXPIRETIME', k, 'FIELDS', e - s + 1, unpack(fields, s, e))
    for j = 1, #part do got[s + j - 1] = part[j]; if part[j] >= 0 then any = true end end
  end
  if any then return got end
  return nil
end
local function sorted_digests(items)
  local d = {}
  for j = 1, #items do d[j] = sha1(items[j]) end
  sort(d)
  return concat(d, ',')
end
local NAMES = {l = '4:list', z = '4:zset'}
local function here(k, lk, kind, v)
  if kind == 'h' then return sha1(lk .. k .. '4:hash' .. sorted_pairs(v)) end
  if kind == 'S' then return sha1(lk .. k .. '3:set' .. sorted_digests(v)) end
  return sha1(lk .. k .. NAMES[kind] .. framed(v))
end
-- A value is sent only if its elements take at most BIG bytes, counted before it is kept
-- (not Lua's memory, which shares equal strings): a larger one is digested here at once,
-- so a batch holds about BIG a key, whatever the size of the values.
local function raw(k, lk, kind, v)
  local size = #k
  for j = 1, #v do size = size + #v[j] end
  readbytes = readbytes + size
  if size > BIG then return given(k, lk, here(k, lk, kind, v)) end
  nr = nr + 1; rkinds[nr] = kind; rk[nr] = k; rv[nr] = v
  return RAW
end

local function hash(k, lk, v)
  local moments = fielded and field_moments(k, v)
  if not moments then return raw(k, lk, 'h', v) end
  for j = 1, #v do readbytes = readbytes + #v[j] end
  return given(k, lk, sha1(lk .. k .. '4:hash' .. sorted_pairs(v, moments)))
end

-- A score is a double, and servers print it differently: Redis 7.0 with 17 digits
-- (0.10000000000000001), Valkey and later Redis as the shortest text that reads back
-- (0.1). Printed again here with 17 digits, the same double is the same text on every
-- server, so a restore across versions is not a false alarm.
local function scores(v)
  for j = 2, #v, 2 do
    local x = tonumber(v[j])
    if x then v[j] = fmt('%.17g', x) end
  end
  return v
end

-- Expiries and DUMP payloads go with their key's section, in the same order.
local expiries, payloads = {{}, {}, {}}, {{}, {}, {}}
for i = 1, n do
  local k = keys[i]
  local v = vals[i]
  local lk = LEN[#k]
  local kind = 'string'
  if not v then
    kind = call('TYPE', k)['ok']
    if kind == 'string' then v = call('GET', k) end
  end
  local section
  if kind == 'string' then section = string_(k, lk, v)
  elseif kind == 'list' then section = raw(k, lk, 'l', call('LRANGE', k, '0', '-1'))
  elseif kind == 'zset' then section = raw(k, lk, 'z', scores(call('ZRANGE', k, '0', '-1', 'WITHSCORES')))
  elseif kind == 'hash' then section = hash(k, lk, call('HGETALL', k))
  elseif kind == 'set' then section = raw(k, lk, 'S', call('SMEMBERS', k))
  elseif kind == 'stream' then section = given(k, lk, sha1(lk .. k .. '6:stream' .. stream(k)))
  elseif kind ~= 'none' then section = given(k, lk, sha1(lk .. k .. LEN[#kind] .. kind .. call('DUMP', k))) end
  if section then
    if expiring then
      local at = moment(k)
      local e = expiries[section]
      if at >= 0 then e[#e + 1] = fmt('%016x', at) else e[#e + 1] = NONE end
    end
    if dump then local p = payloads[section]; p[#p + 1] = call('DUMP', k) or '' end
  end
end
out[3] = concat(wlens, '', 1, nw); out[4] = concat(wkeys, '', 1, nw); out[5] = concat(wsizes, '', 1, nw)
out[6] = concat(wdata, '', 1, nwd)
out[7] = concat(rkinds, '', 1, nr); out[8] = nr > 0 and mpack(rk, rv) or ''
out[9] = concat(gdata, '', 1, ngd)
out[11] = readbytes
out[10] = (exact and '=' or '') .. concat(expiries[1]) .. concat(expiries[2]) .. concat(expiries[3])
for s = 1, 3 do
  local p = payloads[s]
  for j = 1, #p do out[#out + 1] = p[j] end
end
return out
"""
)


def _for_cluster(script: str) -> str:
    """The script as a node of a Redis Cluster (Redis 7 or later) runs it.

    A cluster node refuses one command over keys of several hash slots (the batch's
    MGET), and a script that touches several slots at all unless its first line says it
    may. So the strings are read key by key (a key that is not a string reads as false,
    as in MGET's reply), and the script says so, and that it writes nothing (so a replica
    runs it too). Everything else is the same script.
    """
    batched = (
        "local vals\nif n <= 4000 then vals = call('MGET', unpack(keys))\nelse\n  vals = {}\n"
        "  for s = 1, n, 4000 do\n    local part = call('MGET', unpack(keys, s, math.min(s + 3999, n)))\n"
        "    for j = 1, #part do vals[s + j - 1] = part[j] end\n  end\nend"
    )
    one_by_one = (
        "local vals = {}\nfor i = 1, n do\n  local v = redis.pcall('GET', keys[i])\n"
        "  if type(v) == 'table' then v = false end\n  vals[i] = v\nend"
    )
    if batched not in script:
        raise AssertionError("the digest script changed: update _for_cluster")
    return "#!lua flags=no-writes,allow-cross-slot-keys\n" + script.replace(batched, one_by_one)


CLUSTER_SCRIPT = _for_cluster(SCRIPT)

Batch = tuple[Decoded, list[bytes]]  # the batch's keys with digests and expiries; their DUMP payloads (or none)
Reply = tuple[bytes, int, list[bytes], list[bytes]]  # cursor, DBSIZE, the sections, DUMP payloads
RECENT_BATCHES = 4
FIRST_BATCH = 16  # keys asked for first; doubled while replies are small
BATCH_BYTES = 16 * 1024 * 1024  # a reply's size the batches aim at
FIXED = 11  # the reply's cursor, DBSIZE, sections and bytes read; DUMP payloads follow


class Digester:
    """Runs the script on one connection of the client's pool, one request always in flight.

    Why not redis-py's ``evalsha``: it waits for each reply before the next request can
    go out, and the server would sit idle while this process hashes and sums a batch.
    Here the next batch is requested the moment a reply arrives, before that reply is
    handled, by the one thread involved: a reader thread would need Python's lock to
    send each request, which the hashing thread may hold for 5 ms at a time.
    """

    def __init__(
        self,
        client: redis.Redis,
        db: int,
        size: int,
        dump: bool,
        script: str = SCRIPT,
        fields: bool = True,
        counters: bool = True,
    ) -> None:
        self.client = client
        self.limit = size
        self.size = min(size, FIRST_BATCH)
        self.rest = ("1" if dump else "0", db, "1" if fields else "0", "1" if counters else "0")
        self.script = script
        self.sha = str(client.script_load(script))
        self.pool = client.connection_pool
        self.conn: Any  # redis-py's Connection: its methods are not annotated
        try:
            self.conn = self.pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            self.conn = self.pool.get_connection("EVALSHA")
        self.cursor: bytes | None = None  # the one whose reply is awaited

    def send(self, cursor: bytes) -> None:
        self.conn.send_command("EVALSHA", self.sha, 0, cursor, self.size, *self.rest)
        self.cursor = cursor

    def _adapt(self, reply: list[Any]) -> None:
        """Size the next batch so that its reply stays near ``BATCH_BYTES``.

        A batch is about ``size`` keys whatever their values: 1000 strings of 1 MiB made
        the script hold 1 GB and a backup's reply as much (found by review). Halved or
        cut to fit when a reply is large, doubled up to the asked size while small.
        """
        used = max(sum(len(x) for x in reply if isinstance(x, bytes)), int(reply[FIXED - 1]))
        if used > BATCH_BYTES:
            self.size = max(1, int(self.size * BATCH_BYTES / used))
        elif used < BATCH_BYTES // 4 and self.size < self.limit:
            self.size = min(self.limit, self.size * 2)

    def receive(self) -> Reply:
        """The reply to the request in flight: next cursor, DBSIZE, and the framed batch."""
        assert self.cursor is not None
        try:
            reply = self.conn.read_response()
        except redis.exceptions.NoScriptError:  # the server was restarted or flushed its scripts
            self.sha = str(self.client.script_load(self.script))
            self.send(self.cursor)
            reply = self.conn.read_response()
        self.cursor = None
        self._adapt(reply)
        cursor, dbsize, *sections, _read = reply[:FIXED]
        return cursor, int(dbsize), sections, reply[FIXED:]

    def close(self) -> None:
        if self.cursor is not None:  # a reply is still on its way: the connection cannot be reused
            self.conn.disconnect()
        self.pool.release(self.conn)


@dataclass
class Tally:
    """What one read of a database saw: the keys it counted, and the database's size at each batch."""

    keys: int = 0
    sizes: set[int] = field(default_factory=set)

    @property
    def read_twice(self) -> bool:
        """The database kept one size throughout, yet more keys were read than it holds.

        On an unchanging database SCAN returns every key at least once, so the surplus
        are keys returned twice. A database written to while it is read can also keep
        its size (as many keys created as deleted); then this may say so wrongly, and the
        caller's extra read is the whole cost.
        """
        return len(self.sizes) == 1 and self.keys > next(iter(self.sizes))


class Recent:
    """The keys of the last few batches, to count a key SCAN returns twice only once."""

    def __init__(self, batches: int = RECENT_BATCHES) -> None:
        self.window: deque[set[bytes]] = deque(maxlen=batches)

    def fresh(self, batch: Decoded, payloads: list[bytes]) -> Batch:
        """``batch`` without the keys already read in it or in the batches before."""
        keys = set(batch.keys)
        if len(keys) == len(batch.keys) and all(keys.isdisjoint(old) for old in self.window):
            self.window.append(keys)
            return batch, payloads
        seen: set[bytes] = set().union(*self.window)
        keep = []
        for i, key in enumerate(batch.keys):
            if key not in seen:
                seen.add(key)
                keep.append(i)
        self.window.append(set(batch.keys))
        expiries = batch.expiries
        return (
            Decoded(
                [batch.keys[i] for i in keep],
                [batch.digests[i] for i in keep],
                None if expiries is None else [expiries[i] for i in keep],
                batch.exact,
            ),
            [payloads[i] for i in keep] if payloads else payloads,
        )


def digested(
    client: redis.Redis,
    db: int,
    dump: bool = False,
    size: int = 1000,
    tally: Tally | None = None,
    script: str = SCRIPT,
    fields: bool = True,
    counters: bool = True,
) -> Iterator[Batch]:
    """Every key of database ``db`` (the one ``client`` uses), a batch at a time, with digests.

    The server reads the next batch while the caller handles this one (``Digester``);
    one batch is held at a time, so memory stays bounded. ``script`` is ``SCRIPT``, or
    ``CLUSTER_SCRIPT`` for a node of a Redis Cluster. ``fields``: scheme redis/3's records
    (hash fields' own expiries, stream entries framed with their field count); false
    gives scheme redis/2's, for backups of earlier versions. ``counters``: scheme redis/4's
    streams (with entries-added and max-deleted-entry-id); false gives redis/3's or 2's.
    """
    tally = tally if tally is not None else Tally()
    recent = Recent()
    digester = Digester(client, db, size, dump, script, fields, counters)
    try:
        digester.send(b"0")
        while True:
            cursor, dbsize, sections, payloads = digester.receive()
            last = cursor in (b"0", 0, "0")
            if not last:
                digester.send(cursor)
            tally.sizes.add(dbsize)
            batch, payloads = recent.fresh(decode(*sections), payloads)
            tally.keys += len(batch.keys)
            yield batch, payloads
            if last:
                return
    finally:
        digester.close()
