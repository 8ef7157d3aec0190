"""Turning what the digest script returns into scheme ``redis/2`` key digests, and summing them.

The script (``redis_digest``) reads each key's value where it lives and frames it; the
hashing happens here, on the client's own core, while the server reads the next batch.
In SHA-1 calls inside Lua the server spent about a third of its time; moved here, the two
processes share the work instead of one waiting for the other.

What each key contributes is exactly scheme ``redis/2``'s record, which earlier drproof
versions computed inside the server: the SHA-1 of the framed key (``<length>:<key>``), the
framed type name and the canonical value. Strings, lists and sorted sets are ordered: the
record frames each element (``<length>:<element>``) and is hashed as it is. Hash fields
and set members have no order, so each (framed field and value, or member) is hashed
alone, and the hexadecimal digests, sorted and joined with commas, stand for the value.
Streams and module types are rare and intricate: the script still digests those itself.

The reply comes in three sections, each a few long strings:

- whole records (strings): ``wlens`` (``<length>:`` of each key), ``wkeys`` (the keys
  back to back), ``wsizes`` (``<length>:`` of each record) and ``wdata`` (the records back
  to back), cut and hashed by C loops (``map`` over slices);
- values (lists, sorted sets, hashes, sets): ``rkinds`` (``l``, ``z``, ``h`` or ``S`` per
  key) and ``rdata``, the batch's keys and the elements the server's commands returned,
  as MessagePack, which the script packs in one C call (``cmsgpack``, built into Redis's
  and Valkey's Lua). Framing each element in Lua was a fifth of the server's time; here
  it is framed in this process, which has a core of its own;
- ``gdata``: per key the framed key and the 40 hexadecimal digits of a digest the script
  made itself (values of more than 1 KB, streams, module types);
- ``expiries``: empty when the database had no key with a time to live; else 16
  hexadecimal digits per key, in the order of the sections: the absolute expiry in ms,
  or ``f`` * 16. A leading ``=`` says the server told the moment it stored
  (``PEXPIRETIME``), not a moment derived from the clock and ``PTTL``.

Expiries are compared per key where both sides were read exactly: each expiring key adds
``digest * expiry`` (mod 2**256) to its key space's moment sum, so one key's moment
changed, or two keys' moments exchanged, changes the sum (the difference
``(d1 - d2) * (e2 - e1)`` of an exchange is below 2**224 and not zero, so it cannot
vanish modulo 2**256). Where either side could not read a batch exactly (see
``redis_digest.MOMENT_LUA``), or the manifest predates per-key moments, only the plain
sum is compared, within ``EXPIRY_TOLERANCE_S`` per key; the finding says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from itertools import accumulate
from operator import methodcaller
from typing import TYPE_CHECKING

from engine.components.base import WORKLOAD_MARK
from engine.fingerprint import Part
from engine.lazy import lazy

if TYPE_CHECKING:
    import msgpack
else:
    msgpack = lazy("msgpack")

EXPIRY_WIDTH = 16
NO_EXPIRY = b"f" * EXPIRY_WIDTH
# Two seconds per key: clocks of the server backed up and the one restored into, and the
# millisecond a PTTL is read in, may disagree that much.
EXPIRY_TOLERANCE_S = 2
NO_PREFIX = "(no prefix)"

_sha1 = hashlib.sha1
_digest = methodcaller("digest")
_ORDERED = {ord("l"): b"4:list", ord("z"): b"4:zset"}
_HASH, _SET = ord("h"), ord("S")


@dataclass
class Decoded:
    """The keys of one batch that were there, each with its digest (an integer) and expiry."""

    keys: list[bytes]
    digests: list[int]
    expiries: list[int | None] | None  # None: no key of the database had a time to live
    exact: bool = False  # expiries are the moments the server stored (PEXPIRETIME)


def decode(
    wlens: bytes,
    wkeys: bytes,
    wsizes: bytes,
    wdata: bytes,
    rkinds: bytes,
    rdata: bytes,
    gdata: bytes,
    expiries: bytes,
) -> Decoded:
    """Each key's scheme ``redis/2`` digest, computed from the script's reply; keys in section order."""
    keys = _slices(wkeys, wlens)
    digests = list(map(int.from_bytes, map(_digest, map(_sha1, _slices(wdata, wsizes)))))
    _values(rkinds, rdata, keys, digests)
    _given(gdata, keys, digests)
    exact = expiries[:1] == b"="
    return Decoded(keys, digests, _expiries(expiries[1:] if exact else expiries, len(keys)), exact)


def _slices(blob: bytes, lengths: bytes) -> list[bytes]:
    """``blob`` cut into pieces of the lengths ``<n>:<n>:...`` gives, without a Python loop."""
    ends = list(accumulate(map(int, lengths.split(b":")[:-1])))
    return list(map(blob.__getitem__, map(slice, [0, *ends], ends)))


def _framed(element: bytes) -> bytes:
    return b"%d:%b" % (len(element), element)


def _values(kinds: bytes, data: bytes, keys: list[bytes], digests: list[int]) -> None:
    """Lists, sorted sets, hashes and sets: each key's record made from its elements, then hashed.

    ``data`` packs two arrays, the keys and their values.
    """
    if not kinds:
        return
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data)
    packed = list(unpacker)
    if not (isinstance(packed, list) and len(packed) == 2 and len(packed[0]) == len(packed[1]) == len(kinds)):
        raise ValueError(f"the digest script's packed values do not match its {len(kinds)} keys")
    sha1 = _sha1
    for kind, key, value in zip(kinds, packed[0], packed[1], strict=True):
        keys.append(key)
        value = value or []  # no elements: an empty array, or an empty Lua table packed as a map
        head = b"%d:%b" % (len(key), key)
        if kind == _HASH:
            units = sorted(sha1(_framed(value[j]) + _framed(value[j + 1])).hexdigest() for j in range(0, len(value), 2))
            record = head + b"4:hash" + ",".join(units).encode()
        elif kind == _SET:
            record = head + b"3:set" + ",".join(sorted(sha1(e).hexdigest() for e in value)).encode()
        else:
            record = head + _ORDERED[kind] + b"".join(map(_framed, value))
        digests.append(int.from_bytes(sha1(record).digest()))


def _given(data: bytes, keys: list[bytes], digests: list[int]) -> None:
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        end = colon + 1 + int(data[pos:colon])
        keys.append(data[colon + 1 : end])
        digests.append(int(data[end : end + 40], 16))
        pos = end + 40


def _expiries(blob: bytes, count: int) -> list[int | None] | None:
    if not blob:
        return None
    if len(blob) != count * EXPIRY_WIDTH:
        raise ValueError(f"the digest script returned {len(blob)} bytes of expiries for {count} keys")
    out: list[int | None] = []
    for at in range(0, len(blob), EXPIRY_WIDTH):
        chunk = blob[at : at + EXPIRY_WIDTH]
        out.append(None if chunk == NO_EXPIRY else int(chunk, 16))
    return out


def key_space(key: bytes) -> str:
    head, sep, _ = key.partition(b":")
    return space_name(head if sep else None)


def space_name(head: bytes | None) -> str:
    """The name a key space's parts carry: its prefix, in double quotes where it needs them.

    Part names are ``db<N> keyspace <name>`` and ``... <name> expiry``, so the name must
    be one to one with the prefix. A prefix ``user expiry`` was named like the expiry part
    of ``user`` and overwrote it, ``(no prefix)`` like the keys without one, and the bytes
    ``\\xff`` like the four characters ``\\xff`` (found by review: two key spaces
    reported as one). A prefix of plain text (valid UTF-8, no space, quote or backslash)
    is its own name; any other is quoted as JSON, invalid bytes escaped as ``\\udcXX``
    and a backslash as ``\\\\``, so no two prefixes share a name and no quoted name
    is an unquoted one.
    """
    if head is None:
        return NO_PREFIX
    name = head.decode("utf-8", "surrogateescape")
    if _PLAIN.fullmatch(name):
        return name
    return _ESCAPED.sub(_escape, json.dumps(name, ensure_ascii=False))


_PLAIN = re.compile(r'[^\s"\\\udc80-\udcff]*')
_ESCAPED = re.compile("[\udc80-\udcff]")


def _escape(byte: re.Match[str]) -> str:
    return f"\\u{ord(byte.group()):04x}"


@dataclass
class KeyspaceSums:
    """The order-independent digest of one key space: digests summed, with counts and expiries."""

    total: int = 0
    keys: int = 0
    expiring: int = 0
    expiry_seconds: int = 0
    earliest: int | None = None
    moments: int = 0  # sum of digest * expiry over expiring keys, mod 2**256
    exact: bool = True  # every expiry was read as the stored moment
    _mod: int = field(default=1 << 256, repr=False)

    def add(self, digest: int, expiry_ms: int | None, exact: bool = True) -> None:
        self.total = (self.total + digest) % self._mod
        self.keys += 1
        if expiry_ms is not None:
            self.expire(digest, expiry_ms, exact)

    def expire(self, digest: int, expiry_ms: int, exact: bool) -> None:
        self.expiring += 1
        self.expiry_seconds += expiry_ms // 1000
        self.earliest = expiry_ms if self.earliest is None else min(self.earliest, expiry_ms)
        self.moments = (self.moments + digest * expiry_ms) % self._mod
        self.exact = self.exact and exact

    def parts(self, name: str) -> dict[str, Part]:
        """``name`` (the keys and values) and, where keys expire, ``name + " expiry"``."""
        out = {
            name: Part(
                digest=hashlib.sha256(f"keys {self.keys} {self.total:064x}".encode()).hexdigest(),
                count=self.keys,
                unit="keys",
            )
        }
        if self.expiring:
            # Tolerance 0 marks a part whose digest holds every key's exact moment.
            text = f"expiring {self.expiring}" + (f" moments {self.moments:064x}" if self.exact else "")
            out[name + " expiry"] = Part(
                digest=hashlib.sha256(text.encode()).hexdigest(),
                count=self.expiring,
                unit="expiring keys",
                total=self.expiry_seconds,
                tolerance=0 if self.exact else EXPIRY_TOLERANCE_S,
                earliest=self.earliest,
            )
        return out


# The key the drill workload sets, to this value, in the database it writes to when it
# starts (``drills/workload/redis.py``): the recorded fact scheme ``redis/5`` leaves out,
# with the keys the workload writes (``drproof_workload:<n>``, ``drproof_workload:{w}:<n>``
# in a Cluster) in that database. Schemes 1 to 4 left out the whole key space
# ``drproof_workload`` of every database, even where no workload ever ran (found by
# review: a user's ``drproof_workload:x`` lost by a restore was a match). The marker
# travels with the keys into a backup and out of a restore; a database no workload
# wrote to has none, and nothing of it is left out.
WORKLOAD_MARKER_KEY = WORKLOAD_MARK.encode()
WORKLOAD_MARKER = b"drproof drill workload: keys drproof_workload:<n> here are judged by the recovery point"
# What schemes 1 to 4 cannot see (found by review).
WORKLOAD_SPACE_UNSEEN = (
    "left out every key drproof_workload:... of every database as the drill workload's, even where no "
    "workload ran: a restore that lost or changed such a key of the database's own is not seen"
)
_WORKLOAD_KEY = re.compile(rb"drproof_workload:(?:\{w\}:)?[0-9]+\Z")


def workload_key(key: bytes) -> bool:
    """The workload's marker or one of its numbered keys (in a database that holds the marker)."""
    return key == WORKLOAD_MARKER_KEY or _WORKLOAD_KEY.match(key) is not None


class Keyspaces:
    """Every key space of one database, summed a batch at a time, the drill workload's keys left out.

    ``workload``: True (scheme 5, the database holds the workload's marker), its marker
    and numbered keys left out; False (scheme 5, no marker), nothing left out; None
    (schemes 1 to 4, their own rule), the whole key space ``drproof_workload``.
    """

    def __init__(self, workload: bool | None = None) -> None:
        self.spaces: dict[str, KeyspaceSums] = {}
        self._names: dict[bytes | None, str | None] = {}
        self._workload = workload

    def add(self, batch: Decoded) -> None:
        if self._workload and any(key.startswith(WORKLOAD_MARKER_KEY) for key in batch.keys):
            batch = _without_workload(batch)
        # Summed per raw prefix first: one big-integer sum and one name look-up per key
        # space and batch, not per key.
        totals: dict[bytes | None, list[int]] = {}
        for key, digest in zip(batch.keys, batch.digests, strict=True):
            head, sep, _ = key.partition(b":")
            totals.setdefault(head if sep else None, []).append(digest)
        for prefix, digests in totals.items():
            sums = self._sums(prefix)
            if sums is not None:
                sums.total = (sums.total + sum(digests)) % sums._mod
                sums.keys += len(digests)
        if batch.expiries is not None:
            for key, digest, expiry in zip(batch.keys, batch.digests, batch.expiries, strict=True):
                if expiry is not None and (sums := self._sums(_head(key))) is not None:
                    sums.expire(digest, expiry, batch.exact)

    def _sums(self, head: bytes | None) -> KeyspaceSums | None:
        if head not in self._names:
            decoded = space_name(head)
            self._names[head] = None if decoded == WORKLOAD_MARK and self._workload is None else decoded
        name = self._names[head]
        return None if name is None else self.spaces.setdefault(name, KeyspaceSums())

    def parts(self, db: int) -> dict[str, Part]:
        out: dict[str, Part] = {}
        for space, sums in self.spaces.items():
            out.update(sums.parts(f"db{db} keyspace {space}"))
        return out


def _without_workload(batch: Decoded) -> Decoded:
    """The batch less the workload's marker and numbered keys."""
    keep = [i for i, key in enumerate(batch.keys) if not workload_key(key)]
    return replace(
        batch,
        keys=[batch.keys[i] for i in keep],
        digests=[batch.digests[i] for i in keep],
        expiries=None if batch.expiries is None else [batch.expiries[i] for i in keep],
    )


def _head(key: bytes) -> bytes | None:
    head, sep, _ = key.partition(b":")
    return head if sep else None
