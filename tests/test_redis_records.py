"""The client half of the Redis digest read, without a server.

``decode`` turns the script's framed reply into scheme redis/2 key digests; here it is
held to a plain restatement of that scheme (``_record``), on replies framed the way the
script frames them (``_reply``). The real script against the earlier one is
tests/integration/test_redis_digest.py. Then the sums per key space, and the two guards
against SCAN returning a key twice (``Recent``, ``Tally``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.components.base import WORKLOAD_MARK
from engine.components.redis import RedisComponent, RedisParams
from engine.components.redis_digest import Recent, Tally
from engine.components.redis_records import (
    EXPIRY_TOLERANCE_S,
    NO_PREFIX,
    Decoded,
    Keyspaces,
    KeyspaceSums,
    decode,
    key_space,
    space_name,
)
from engine.errors import ComponentError
from engine.fingerprint import Part, PartDifference

Value = Any  # bytes, list of bytes, list of (member, score), dict, set


def _lp(b: bytes) -> bytes:
    return b"%d:%s" % (len(b), b)


def _canonical(kind: str, value: Value) -> bytes:
    """Scheme redis/2's canonical value of one key, restated from its definition."""
    if kind == "string":
        return bytes(value)
    if kind == "list":
        return b"".join(_lp(e) for e in value)
    if kind == "zset":
        return b"".join(_lp(m) + _lp(s) for m, s in value)
    if kind == "hash":
        return ",".join(sorted(hashlib.sha1(_lp(f) + _lp(v)).hexdigest() for f, v in value.items())).encode()
    assert kind == "set"
    return ",".join(sorted(hashlib.sha1(m).hexdigest() for m in value)).encode()


def _record(key: bytes, kind: str, value: Value) -> int:
    return int(hashlib.sha1(_lp(key) + _lp(kind.encode()) + _canonical(kind, value)).hexdigest(), 16)


LETTER = {"hash": b"h", "set": b"S", "list": b"l", "zset": b"z"}


def _elements(kind: str, value: Value) -> list[bytes]:
    """What the server's command returns for ``value``: HGETALL, SMEMBERS, LRANGE, ZRANGE WITHSCORES."""
    if kind == "hash":
        return [x for pair in value.items() for x in pair]
    if kind == "zset":
        return [x for pair in value for x in pair]
    return list(value)


def _reply(entries: list[tuple[bytes, str, Value, bool]], expiries: list[int | None] | None) -> tuple[bytes, ...]:
    """The script's reply for ``entries`` (key, type, value, digested by the server), in section order."""
    wlens: list[int] = []
    wsizes: list[int] = []
    wkeys: list[bytes] = []
    wdata: list[bytes] = []
    rkinds: list[bytes] = []
    rkeys: list[bytes] = []
    rvalues: list[Any] = []
    gdata: list[bytes] = []
    for key, kind, value, by_server in entries:
        if by_server:
            gdata += [_lp(key), b"%040x" % _record(key, kind, value)]
        elif kind in LETTER:
            rkinds.append(LETTER[kind])
            rkeys.append(key)
            rvalues.append(_elements(kind, value))
        else:
            record = _lp(key) + _lp(kind.encode()) + _canonical(kind, value)
            wlens.append(len(key))
            wkeys.append(key)
            wsizes.append(len(record))
            wdata.append(record)
    blob = b"" if expiries is None else b"".join(b"f" * 16 if e is None else b"%016x" % e for e in expiries)

    def numbers(values: list[int]) -> bytes:
        return b"".join(b"%d:" % n for n in values)

    join = b"".join
    # Lua's cmsgpack packs strings as MessagePack str, never bin.
    rdata = msgpack.packb(rkeys, use_bin_type=False) + msgpack.packb(rvalues, use_bin_type=False) if rkinds else b""
    return (numbers(wlens), join(wkeys), numbers(wsizes), join(wdata), join(rkinds), rdata, join(gdata), blob)


def _in_section_order(entries: list[tuple[bytes, str, Value, bool]]) -> list[tuple[bytes, str, Value, bool]]:
    def section(entry: tuple[bytes, str, Value, bool]) -> int:
        return 2 if entry[3] else 1 if entry[1] in LETTER else 0

    return sorted(entries, key=section)  # stable: the script's order within each section


_bytes = st.binary(max_size=40)
_values = {
    "string": _bytes,
    "list": st.lists(_bytes, min_size=1, max_size=5),
    "zset": st.lists(st.tuples(_bytes, st.sampled_from([b"1", b"-0.5", b"1e+100", b"3.25"])), min_size=1, max_size=4),
    "hash": st.dictionaries(_bytes, _bytes, min_size=1, max_size=5),
    "set": st.sets(_bytes, min_size=1, max_size=5),
}
_entry = st.sampled_from(sorted(_values)).flatmap(
    lambda kind: st.tuples(st.binary(min_size=0, max_size=20), st.just(kind), _values[kind], st.booleans())
)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(_entry, max_size=12), expiring=st.booleans())
def test_decoded_digests_are_the_scheme_redis2_records(
    entries: list[tuple[bytes, str, Value, bool]], expiring: bool
) -> None:
    ordered = _in_section_order(entries)
    expiries = [None if i % 2 else 1_700_000_000_000 + i for i in range(len(entries))] if expiring else None
    decoded = decode(*_reply(ordered, expiries))
    assert decoded.keys == [key for key, *_ in ordered]
    assert decoded.digests == [_record(key, kind, value) for key, kind, value, _ in ordered]
    assert decoded.expiries == (expiries or None)  # an empty batch has no expiries to tell


def test_a_reply_whose_expiries_do_not_match_its_keys_is_an_error() -> None:
    *sections, _ = _reply([(b"k", "string", b"v", False)], None)
    with pytest.raises(ValueError, match="32 bytes of expiries for 1 keys"):
        decode(*sections, b"f" * 32)


def test_sums_per_key_space_are_the_per_key_sums() -> None:
    """``Keyspaces`` adds a batch per prefix; the result is what adding key by key gives."""
    keys = [b"user:1", b"user:2", b"cart:1", b"plain", b":x", f"{WORKLOAD_MARK}:1".encode(), b"\xff:bin"]
    digests = [_record(k, "string", b"v%d" % i) for i, k in enumerate(keys)]
    expiries: list[int | None] = [None, 1_700_000_001_500, None, 1_700_000_000_000, None, 5, None]
    spaces = Keyspaces()
    spaces.add(Decoded(keys[:3], digests[:3], expiries[:3], exact=True))
    spaces.add(Decoded(keys[3:], digests[3:], expiries[3:], exact=True))
    one_by_one: dict[str, KeyspaceSums] = {}
    for key, digest, expiry in zip(keys, digests, expiries, strict=True):
        if key_space(key) != WORKLOAD_MARK:
            one_by_one.setdefault(key_space(key), KeyspaceSums()).add(digest, expiry)
    assert spaces.spaces == one_by_one
    assert set(spaces.spaces) == {"user", "cart", NO_PREFIX, "", '"\\udcff"'}
    assert set(spaces.parts(3)) == {
        "db3 keyspace user",
        "db3 keyspace user expiry",
        "db3 keyspace cart",
        f"db3 keyspace {NO_PREFIX}",
        f"db3 keyspace {NO_PREFIX} expiry",
        "db3 keyspace ",
            'db3 keyspace "\\udcff"',
    }


def _expiring(moments: dict[bytes, int], exact: bool = True) -> Part:
    spaces = Keyspaces()
    keys = list(moments)
    spaces.add(Decoded(keys, [_record(k, "string", b"v") for k in keys], list(moments.values()), exact=exact))
    return spaces.parts(0)["db0 keyspace user expiry"]


MOMENTS = {b"user:%d" % i: 1_800_000_000_000 + 3_600_000 * i for i in range(200)}


def test_each_keys_expiry_moment_is_compared_exactly_when_read_exactly() -> None:
    """Negative controls: one key's moment moved by a minute among 200 (the sum's tolerance was
    2 s a key, 400 s), and two keys' moments exchanged (the sum unchanged). Quiet control:
    the same moments read in another order."""
    backup = _expiring(MOMENTS)
    moved = MOMENTS | {b"user:7": MOMENTS[b"user:7"] + 60_000}
    swapped = MOMENTS | {b"user:1": MOMENTS[b"user:2"], b"user:2": MOMENTS[b"user:1"]}
    assert backup.tolerance == 0
    assert not backup.matches(_expiring(moved))
    assert not backup.matches(_expiring(swapped))
    assert backup.matches(_expiring(dict(reversed(list(MOMENTS.items())))))
    finding = PartDifference(
        part="db0 keyspace user expiry", change="changed", expected=backup, actual=_expiring(swapped)
    )
    assert "the expiry moment of at least one key differs; their sum moved +0 s" in finding.describe()


def test_expiries_read_from_the_clock_fall_back_to_the_sum_and_say_so() -> None:
    """A server without PEXPIRETIME (Redis 6.2) on either side: moments carry the clock's
    jitter, so only the sum is compared, within 2 s a key, and the finding names the limit."""
    backup = _expiring(MOMENTS)
    jittered = _expiring({k: v + 3 for k, v in MOMENTS.items()}, exact=False)
    assert jittered.tolerance == EXPIRY_TOLERANCE_S
    assert backup.matches(jittered) and jittered.matches(backup)
    far = _expiring({k: v + 3_000 for k, v in MOMENTS.items()}, exact=False)
    assert not backup.matches(far)
    text = PartDifference(part="p", change="changed", expected=backup, actual=far).describe()
    assert "beyond 2 s each" in text and "compared as a sum only" in text


def test_decode_reads_the_exact_mark() -> None:
    *sections, _ = _reply([(b"k", "string", b"v", False)], None)
    exact = decode(*sections, b"=" + b"%016x" % 1_800_000_000_000)
    clock = decode(*sections, b"%016x" % 1_800_000_000_000)
    assert exact.exact and exact.expiries == [1_800_000_000_000]
    assert not clock.exact and clock.expiries == [1_800_000_000_000]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12), st.booleans()), min_size=1, max_size=12))
def test_every_key_space_and_its_expiry_part_have_names_of_their_own(heads: list[tuple[bytes, bool]]) -> None:
    """Prefixes such as ``user expiry`` or ``(no prefix)`` named another space's part (review).

    Whatever the prefixes, each distinct one has its own parts, so no part overwrites
    another; prefixes are drawn with spaces and the words of part names in them.
    """
    words = [b"user", b"user expiry", b"(no prefix)", b"expiry", b'"user expiry"', b" "]
    keys = [(words[len(h) % len(words)] if flag else h.replace(b":", b"")) for h, flag in heads]
    spaces = Keyspaces()
    batch = [k + b":1" for k in keys] + [b"no-colon"]
    spaces.add(Decoded(batch, [1] * len(batch), [1_700_000_000_000] * len(batch)))
    distinct = {k for k in keys if k != WORKLOAD_MARK.encode()}
    names = {space_name(k) for k in distinct}
    assert len(names) == len(distinct)
    for name in names:
        name.encode("utf-8")  # writable in a manifest: no lone surrogate left
    parts = spaces.parts(0)
    assert len(parts) == 2 * len(spaces.spaces), sorted(parts)


def test_a_prefix_with_a_space_is_quoted_and_the_others_are_not() -> None:
    assert key_space(b"user expiry:1") == '"user expiry"'
    assert key_space(b"(no prefix):1") == '"(no prefix)"'
    assert key_space(b"user:1") == "user" and key_space(b"plain") == NO_PREFIX


def test_invalid_bytes_and_their_text_name_two_key_spaces() -> None:
    """The byte 0xff and the four characters ``\\xff`` were one key space (review)."""
    spaces = Keyspaces()
    spaces.add(_batch(b"\xff:1", b"\\xff:1", b"a\\b:1", b"caf\xc3\xa9:1"))
    assert sorted(spaces.spaces) == ['"\\\\xff"', '"\\udcff"', '"a\\\\b"', "café"]
    assert all(s.keys == 1 for s in spaces.spaces.values())


def _batch(*keys: bytes) -> Decoded:
    return Decoded(list(keys), [len(k) for k in keys], [None] * len(keys))


def test_recent_drops_a_key_read_again_within_the_window_and_keeps_the_rest() -> None:
    recent = Recent(batches=2)
    assert recent.fresh(_batch(b"a", b"b"), [b"A", b"B"])[0].keys == [b"a", b"b"]
    batch, payloads = recent.fresh(_batch(b"c", b"a", b"c", b"d"), [b"C", b"A", b"C", b"D"])
    assert (batch.keys, batch.digests, payloads) == ([b"c", b"d"], [1, 1], [b"C", b"D"])
    assert batch.expiries == [None, None]
    recent.fresh(_batch(b"e"), [])
    # "b" was three batches back: out of a window of two, so it is counted again (the limit).
    assert recent.fresh(_batch(b"b", b"e"), [])[0].keys == [b"b"]


def test_recent_hands_an_unrepeated_batch_over_as_it_is() -> None:
    recent, batch = Recent(), _batch(b"x", b"y")
    assert recent.fresh(batch, [])[0] is batch


@pytest.mark.parametrize(
    ("sizes", "keys", "twice"),
    [
        ({10}, 10, False),  # quiet control
        ({10}, 11, True),  # one key more than an unchanging database holds
        ({10, 11}, 12, False),  # the database changed: the count proves nothing
        ({10}, 9, False),  # fewer (keys expired meanwhile): not a duplicate
    ],
)
def test_tally_says_read_twice_only_for_a_surplus_on_an_unchanging_database(
    sizes: set[int], keys: int, twice: bool
) -> None:
    assert Tally(keys=keys, sizes=sizes).read_twice is twice


class _Service:
    def client(self, db: int = 0) -> None:
        return None


def _component(monkeypatch: pytest.MonkeyPatch, surplus_reads: int) -> tuple[RedisComponent, list[int]]:
    """A Redis component whose reads of database 0 are faked; the first ``surplus_reads`` count a key twice."""
    comp = RedisComponent("cache", RedisParams(), runtime=None)  # type: ignore[arg-type]
    comp.service = _Service()  # type: ignore[assignment]
    monkeypatch.setattr(comp, "_dbs", lambda: [0])
    monkeypatch.setattr(comp, "function_parts", dict)  # no server: no function libraries to read
    monkeypatch.setattr("engine.components.redis.staged_leftovers", lambda client, dbs: [])  # nor staged copies
    monkeypatch.setattr(comp, "workload_marked", lambda db: False)  # nor a drill workload's marker
    reads: list[int] = []

    def fake(
        client: None,
        db: int,
        dump: bool = False,
        size: int = 1000,
        tally: Tally | None = None,
        fields: bool = True,
        counters: bool = True,
    ) -> Iterator[Any]:
        reads.append(db)
        assert tally is not None
        keys = [b"user:1", b"user:2"] + ([b"user:1"] if len(reads) <= surplus_reads else [])
        tally.sizes.add(2)
        tally.keys += len(keys)
        yield Decoded(keys, [7] * len(keys), None), [b"payload"] * len(keys)

    monkeypatch.setattr("engine.components.redis.digested", fake)
    return comp, reads


def test_a_fingerprint_read_with_a_surplus_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    comp, reads = _component(monkeypatch, surplus_reads=1)
    [(name, part)] = comp.fingerprint().parts.items()
    assert (name, part.count, len(reads)) == ("db0 keyspace user", 2, 2)


def test_a_fingerprint_stops_reading_again_after_three_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    comp, reads = _component(monkeypatch, surplus_reads=99)
    assert comp.fingerprint().parts["db0 keyspace user"].count == 3
    assert len(reads) == 3


def test_a_backup_whose_read_had_a_surplus_fails_and_says_to_run_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from engine.repository.local import LocalRepository

    comp, _ = _component(monkeypatch, surplus_reads=1)
    writer = LocalRepository(tmp_path / "repo").begin()
    try:
        with pytest.raises(ComponentError, match=r"read twice.*run the backup again"):
            comp.backup_fingerprinted(writer)
    finally:
        writer.abort()


def test_batches_shrink_on_large_replies_and_grow_back_to_the_asked_size() -> None:
    """``Digester._adapt``: a reply far over ``BATCH_BYTES`` cuts the batch to fit; small ones double it up to the limit."""
    from engine.components import redis_digest

    d = object.__new__(redis_digest.Digester)
    d.limit, d.size = 1000, redis_digest.FIRST_BATCH
    small = [b"0", 5] + [b""] * 8 + [10]
    for _ in range(10):
        d._adapt(small)
    assert d.size == 1000
    d._adapt([b"0", 5] + [b""] * 8 + [redis_digest.BATCH_BYTES * 50])  # the script read 50 times the aim
    assert d.size == 20
    d._adapt([b"0", 5, b"x" * (redis_digest.BATCH_BYTES * 2)] + [b""] * 7 + [0])  # or the reply itself is large
    assert 9 <= d.size <= 10


def test_only_the_workloads_own_keys_are_left_out_where_it_marked_the_database() -> None:
    """Scheme 5: the marker and ``drproof_workload:<n>`` (``:{w}:<n>``) only; look-alikes are data (found by review)."""
    own = [WORKLOAD_MARK.encode(), f"{WORKLOAD_MARK}:1".encode(), f"{WORKLOAD_MARK}:{{w}}:2".encode()]
    alike = [f"{WORKLOAD_MARK}:x".encode(), f"{WORKLOAD_MARK}_archive:1".encode(), f"{WORKLOAD_MARK}:1:2".encode()]
    keys = own + alike + [b"user:1"]
    batch = Decoded(keys, list(range(1, len(keys) + 1)), [None] * len(keys))
    marked, unmarked = Keyspaces(workload=True), Keyspaces(workload=False)
    marked.add(batch)
    unmarked.add(batch)
    assert {s: v.keys for s, v in marked.spaces.items()} == {WORKLOAD_MARK: 2, f"{WORKLOAD_MARK}_archive": 1, "user": 1}
    assert sum(v.keys for v in unmarked.spaces.values()) == len(keys)  # no workload ran: nothing left out
