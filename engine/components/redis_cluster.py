"""redis-cluster: a Redis Cluster, masters sharing the hash slots, each with replicas.

Backed up, restored and fingerprinted like ``redis``, shard by shard: the fingerprint and
the backup read every master (one atomic script per batch, as for one server) and sum
into one fingerprint per key space, which does not depend on which master holds a key;
the restore empties every master and RESTOREs each key through the cluster client, which
sends it to the master of its slot. A Cluster has only database 0 and no spare database
to stage a restore in, so it is restored in place, after the engine proved the whole
artifact (as ``redis`` does on a server without spare databases).
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from typing import Any, ClassVar

from pydantic import Field

from engine.components.base import ArtifactSource, Health, SeedParams
from engine.components.redis import _BATCH, _MAGIC, _READS, RedisComponent, RedisParams, _dump_batch
from engine.components.redis_digest import CLUSTER_SCRIPT, Tally, digested
from engine.components.redis_records import Keyspaces, key_space, workload_key
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint, Part
from engine.lazy import lazy
from engine.repository.base import BackupSetWriter
from engine.runtime.base import REPLICAS
from engine.runtime.topology import ClusterSpec, Topology

redis = lazy("redis")

SLOTS = 16384  # a Redis Cluster's hash slots, 0..16383


def _driver_errors() -> tuple[type[Exception], ...]:
    """What redis-py raises for a cluster that fails: ``RedisClusterException`` is no ``RedisError``.

    Found by review: a cluster client that finds no node, or a slot no master serves
    (``SlotNotCoveredError``), escaped every ``except redis.RedisError`` as a traceback.
    """
    return (redis.RedisError, redis.RedisClusterException)


class RedisClusterParams(RedisParams):
    masters: int = Field(default=3, ge=3, le=9, description="Masters sharing the 16384 hash slots (at least 3).")
    replicas_per_master: int = Field(default=1, ge=1, le=3, description="Replicas of each master.")
    node_timeout_ms: int = Field(
        default=1000,
        ge=100,
        le=60_000,
        description="`cluster-node-timeout`: how long a master may not answer before the others fail it over "
        "(Redis's default is 15000).",
    )


class _InPlace:
    """Where each backed-up database goes: database 0 of the Cluster itself."""

    direct = True

    def target(self, db: int) -> int:
        if db != 0:
            raise ComponentError(f"the backup holds database {db}; a Redis Cluster has only database 0")
        return 0


def _prove_payload(client: Any, payload: bytes, what: str) -> None:
    """The cluster takes one of the backup's keys (restored under a private name, then deleted), or nothing changes."""
    key = f"drproof:restore-probe:{secrets.token_hex(8)}"
    try:
        client.restore(key, 0, payload)
    except redis.RedisError as exc:
        raise ComponentError(
            f"{what}: the cluster refuses the backup's keys: RESTORE of one of them failed: {exc}; nothing was "
            "changed (a cluster has no spare database, so the restore would have emptied it first)"
        ) from None
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(key)


class RedisClusterComponent(RedisComponent):
    name: ClassVar[str] = "redis-cluster"
    server: ClassVar[str | None] = "redis-cluster"
    needs: ClassVar[frozenset[str]] = frozenset({REPLICAS})
    Params: ClassVar[type[SeedParams]] = RedisClusterParams
    description: ClassVar[str] = (
        "A Redis Cluster (masters sharing the hash slots, each with replicas) that fails a master over itself; "
        "backed up, restored and fingerprinted like `redis`, shard by shard."
    )

    params: RedisClusterParams
    # Function libraries live on each master: not backed up, restored or compared here (docs).
    keeps_functions: ClassVar[bool] = False

    def provision(self) -> None:
        p = self.params
        spec = ClusterSpec(
            masters=p.masters, replicas_per_master=p.replicas_per_master, node_timeout_ms=p.node_timeout_ms
        )
        service = self.runtime.server(self.name, self.instance, spec)
        self.service = service
        self.topology: Topology = service

    def _masters(self) -> list[Any]:
        """One client per master of the Cluster's slot map, once every slot is served by one that answers.

        Found by review: every node that answered as a master was read, and a shard that
        did not answer (its master and replica down, a master not yet failed over) was
        simply left out: a backup of two thirds of the keys, with a fingerprint of exactly
        those, was proven and restored as a "match". Now the slot map must cover all 16384
        slots, each master must answer as a master of this Cluster (its node id is the
        map's: not a node of another cluster on a reused port) in ``cluster_state:ok``,
        or nothing is read and ``ComponentError`` says which slots are not served.
        """
        what = f"redis-cluster {self.instance!r}"
        ranges = _slot_map(self.service.addresses(), self.service.password, what)  # type: ignore[attr-defined]
        _check_coverage(ranges, what)
        clients: list[Any] = []
        for (host, port, node_id), served in _by_master(ranges).items():
            client = redis.Redis(host=host, port=port, password=self.service.password, socket_timeout=30)
            problem = _not_serving(client, node_id)
            if problem is not None:
                client.close()
                raise ComponentError(
                    f"{what}: slots {served} are not served: their master {host}:{port} {problem}; nothing was "
                    "read (a reading without that shard would miss its keys)"
                )
            clients.append(client)
        return clients

    def client(self, db: int = 0) -> Any:
        """The cluster client; a Cluster it cannot discover is a ComponentError, not a driver traceback."""
        try:
            return self.service.client(db)
        except redis.RedisClusterException as exc:
            raise ComponentError(f"redis-cluster {self.instance!r}: no node of the Cluster answers: {exc}") from None

    def _dbs(self) -> list[int]:
        return [0]

    def _keyspaces(
        self, db: int, fields: bool = True, counters: bool = True, workload: bool | None = None
    ) -> Keyspaces:
        """Every master's keys summed into one set of key spaces; read again if SCAN returned a key twice."""
        for _ in range(_READS):
            spaces, twice = Keyspaces(workload), False
            for client in self._masters():
                tally = Tally()
                for batch, _ in digested(
                    client, 0, size=_BATCH, tally=tally, script=CLUSTER_SCRIPT, fields=fields, counters=counters
                ):
                    spaces.add(batch)
                twice = twice or tally.read_twice
            if not twice:
                break
        return spaces

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """Each master dumped and digested batch by batch, into one artifact and one fingerprint."""
        count, spaces = 0, Keyspaces(self.workload_marked(0))
        masters = self._masters()
        with writer.artifact(self.instance, "keys.dump") as sink:
            sink.write(_MAGIC)
            for client in masters:
                tally = Tally()
                for batch, payloads in digested(client, 0, dump=True, size=_BATCH, tally=tally, script=CLUSTER_SCRIPT):
                    spaces.add(batch)
                    count += _dump_batch(0, batch, payloads, sink)
                if tally.read_twice:
                    raise ComponentError(
                        f"redis-cluster {self.instance!r}: a master shrank while it was read and a key was read "
                        "twice, so this backup would not match its own fingerprint; run the backup again"
                    )
        details = {
            "keys": count,
            "dbs": [0],
            "masters": len(masters),
            "server_version": self.service.version(),
            "method": "DUMP/RESTORE over the network, master by master; fingerprint from the same atomic reads",
        }
        return details, self._fp(spaces.parts(0))

    def restore(self, source: ArtifactSource) -> None:
        """Every master emptied, then every key RESTOREd through the cluster client (to its slot's master).

        A cluster has no spare database to stage in, so the masters are emptied first; as
        for ``redis`` without a spare, one of the backup's keys must be accepted before
        (found by review: a backup from a newer server emptied the cluster, then failed),
        and a failure says what is left. Found by review too: a Cluster with slots no
        master served was emptied where it answered, then the restore failed with a
        traceback (``SlotNotCoveredError``); now every slot must be served first
        (``_masters``), and a failure while emptying names the masters already emptied.
        """
        self.service.ensure_running()
        what = f"redis-cluster {self.instance!r}"
        try:
            masters = self._masters()
        except ComponentError as exc:
            raise ComponentError(f"refusing to restore (nothing was changed): {exc}") from None
        sample = self._first_record(source)
        try:
            if sample is not None:
                _prove_payload(self.client(0), sample[1], what)
        except _driver_errors() as exc:
            raise ComponentError(f"{what}: the cluster does not answer: {exc}; nothing was changed") from None
        emptied: list[str] = []
        try:
            for client in masters:
                client.flushall()
                kwargs = client.connection_pool.connection_kwargs
                emptied.append(f"{kwargs.get('host')}:{kwargs.get('port')}")
        except redis.RedisError as exc:
            raise ComponentError(
                f"{what}: cannot empty the masters for the restore: {exc}; nothing was restored; masters emptied "
                f"before the failure: {', '.join(emptied) or 'none'}; the others hold their keys as before"
            ) from None
        try:
            self._restore_keys(source, _InPlace())  # type: ignore[arg-type]
        except _driver_errors() as exc:
            raise ComponentError(
                f"{what}: restoring the keys failed: {exc}; the masters were emptied first and hold only the keys "
                "restored before the failure, possibly none: restore again once the cause is fixed"
            ) from None

    def health(self) -> Health:
        """Every slot served by a master that answers (``_masters``), and the workload's shard has one."""
        try:
            masters = self._masters()
            total = sum(int(c.dbsize()) for c in masters)
            state = "ok" if self.service.is_running() else "no master serves the workload's shard"
        except ComponentError as exc:
            return Health(ok=False, detail=str(exc))
        except redis.RedisError as exc:
            return Health(ok=False, detail=f"not answering: {exc}")
        return Health(ok=state == "ok", detail=f"{len(masters)} masters serve all {SLOTS} slots; {total} keys; {state}")

    def fingerprint(self) -> Fingerprint:
        """As for ``redis``, but a Cluster that cannot be read in full is a placeholder part, never a reading.

        Found by review: with every node down the fingerprint was empty (no part, no
        error), which matches a backup of an empty cluster and reads as "every key lost"
        otherwise; with the Cluster down it was a traceback.
        """
        try:
            return super().fingerprint()
        except (ComponentError, redis.RedisError, redis.RedisClusterException) as exc:
            return self._fp({"server": Part(digest=f"unreachable: {exc}", count=0, unit="keys")})

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        try:
            return super().legacy_fingerprint(scheme)
        except (ComponentError, redis.RedisError, redis.RedisClusterException) as exc:
            return self._fp({"server": Part(digest=f"unreachable: {exc}", count=0, unit="keys")}, scheme)

    def on_node(self, node: str) -> RedisComponent:
        """This component reading only ``node`` of the workload's shard (a replica reads with READONLY)."""
        view = copy.copy(self)
        view._masters = lambda: [_node_client(self.topology.node(node).port, self.service.password)]  # type: ignore[method-assign]
        return view

    def node_fingerprints(self, node: str) -> tuple[Fingerprint, Fingerprint]:
        """The shard's master and ``node`` (a replica of it), compared key by key with the server's digests.

        A Cluster replica runs no script that reads keys (Redis 7 refuses it, READONLY or
        not), so this comparison is not the ``redis/2`` fingerprint: per key space, the
        keys and their ``DEBUG DIGEST-VALUE`` (the server's own digest of a value), and the
        exact expiry moment of each expiring key, the workload's keys left out, read
        replica first.
        """
        primary = self.topology.primary()
        if primary is None:
            raise ComponentError(f"redis-cluster {self.instance!r}: the workload's shard has no master")
        try:
            on_node = self._digest_values(node)
            on_primary = self._digest_values(primary)
        except redis.RedisError as exc:  # a node that cannot be read is a finding, not a traceback
            raise ComponentError(f"redis-cluster {self.instance!r}: cannot read {node} or {primary}: {exc}") from None
        return self._fp(on_primary, "redis-cluster/values"), self._fp(on_node, "redis-cluster/values")

    def _digest_values(self, node: str) -> dict[str, Part]:
        """Per key space, each key's value digest and, in a part of its own, each expiring key's moment.

        Found by review: only values were compared, so a rejoined node that had lost a
        key's time to live (or held another moment) read as holding the same content.
        Cluster nodes are Redis 7 or later, which replicate expiries as absolute moments
        (``PEXPIREAT``) and answer ``PEXPIRETIME``, so a healthy replica holds exactly the
        master's moment: compared exactly, as the ``redis`` fingerprint does.
        """
        import hashlib

        client = _node_client(self.topology.node(node).port, self.service.password)
        spaces: dict[str, list[bytes]] = {}
        expiring: dict[str, list[bytes]] = {}
        # The workload's keys exactly, not every key that starts like them (found by review).
        keys = sorted(k for k in client.scan_iter(count=1000) if not workload_key(k))
        fielded = _has_field_expiries(client)
        for at in range(0, len(keys), 500):
            batch = keys[at : at + 500]
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("DEBUG", "DIGEST-VALUE", *batch)
            for key in batch:
                pipe.execute_command("PEXPIRETIME", key)
            digests, *moments = pipe.execute()
            extra = _beyond_digest(client, batch, fielded)
            for key, digest, moment in zip(batch, digests, moments, strict=True):
                spaces.setdefault(key_space(key), []).append(key + b"=" + bytes(digest) + extra.get(key, b""))
                if int(moment) >= 0:
                    expiring.setdefault(key_space(key), []).append(key + b"@" + str(int(moment)).encode())
        parts = {
            f"db0 keyspace {space} values": Part(
                digest=hashlib.sha256(b"\n".join(entries)).hexdigest(), count=len(entries), unit="keys"
            )
            for space, entries in spaces.items()
        }
        for space, entries in expiring.items():
            parts[f"db0 keyspace {space} expiry"] = Part(
                digest=hashlib.sha256(b"\n".join(entries)).hexdigest(), count=len(entries), unit="expiring keys"
            )
        return parts

    def connection_env(self) -> dict[str, str]:
        env = super().connection_env()
        env["NODES"] = ",".join(self.service.addresses())  # type: ignore[attr-defined]
        return env


def _has_field_expiries(client: Any) -> bool:
    """Whether the node holds hash fields with a time to live of their own (HEXPIRE: Valkey 9, Redis 7.4)."""
    info = client.info("keyspace").get("db0", {})
    return any(int(info.get(name, 0) or 0) > 0 for name in ("keys_with_volatile_items", "subexpiry"))


def _beyond_digest(client: Any, batch: list[bytes], fielded: bool) -> dict[bytes, bytes]:
    """What ``DEBUG DIGEST-VALUE`` does not see of the keys of ``batch``, per key that has any.

    Found by review (Redis 7.0 and Valkey 9): a stream's digest is its entries only, not
    its consumer groups, last id or counters; a hash's does not include its fields' own
    expiries. A node that lost those read as holding the same. One pipelined round trip
    for the types, then one per kind present.
    """
    pipe = client.pipeline(transaction=False)
    for key in batch:
        pipe.type(key)
    kinds = [kind.decode() if isinstance(kind, bytes) else str(kind) for kind in pipe.execute()]
    out = _streams(client, [key for key, kind in zip(batch, kinds, strict=True) if kind == "stream"])
    if fielded:
        out.update(_field_moments(client, [key for key, kind in zip(batch, kinds, strict=True) if kind == "hash"]))
    return out


def _streams(client: Any, keys: list[bytes]) -> dict[bytes, bytes]:
    """Each stream's last id, counters and consumer groups (pending entries with consumer and delivery count).

    As the ``redis`` fingerprint reads them (``redis_digest``), from ``XINFO STREAM FULL``;
    times of delivery and activity left out (they move by themselves).
    """
    if not keys:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("XINFO", "STREAM", key, "FULL", "COUNT", "0", NEVER_DECODE=True)
    return {key: b"|stream:" + _stream_text(info) for key, info in zip(keys, pipe.execute(), strict=True)}


def _flat(reply: Any) -> dict[bytes, Any]:
    """A RESP2 flat list of names and values (or a dict) as a dict keyed by bytes."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in pairs}


def _lp(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"%d:%s" % (len(data), data)


def _stream_text(reply: Any) -> bytes:
    info = _flat(reply)
    head = b"".join(_lp(info.get(name, b"")) for name in (b"last-generated-id", b"entries-added", b"max-deleted-entry-id"))
    groups = []
    for raw in info.get(b"groups") or []:
        group = _flat(raw)
        pending = b"".join(_lp(p[0]) + _lp(p[1]) + _lp(p[3]) for p in group.get(b"pending") or [])
        consumers = sorted(
            _lp(c[b"name"]) + _lp(c[b"pel-count"]) for c in (_flat(x) for x in group.get(b"consumers") or [])
        )
        groups.append(_lp(group[b"name"]) + _lp(group[b"last-delivered-id"]) + pending + b"|" + b"".join(consumers))
    return head + b"#" + b";".join(sorted(groups))


def _field_moments(client: Any, hashes: list[bytes]) -> dict[bytes, bytes]:
    """Per hash with a field that expires: every field's moment (HPEXPIRETIME), sorted by field.

    Found by review: ``DEBUG DIGEST-VALUE`` does not see a field's time to live (Valkey 9:
    added or moved, the digest stays), so a node that lost one read as the same. Asked
    only where the node counts such hashes.
    """
    if not hashes:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in hashes:
        pipe.hkeys(key)
    names = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for key, fields in zip(hashes, names, strict=True):
        pipe.execute_command("HPEXPIRETIME", key, "FIELDS", len(fields), *fields)
    out: dict[bytes, bytes] = {}
    for key, fields, moments in zip(hashes, names, pipe.execute(), strict=True):
        if any(int(m) >= 0 for m in moments):
            pairs = sorted(b"%d:%s@%d" % (len(f), bytes(f), int(m)) for f, m in zip(fields, moments, strict=True))
            out[key] = b"|fields:" + b"".join(pairs)
    return out


def _node_client(port: int, password: str | None) -> Any:
    """A client of one Cluster node whose connections may read a replica's keys (``READONLY``)."""

    # Found by review: redis-py 6 and later connect through ``on_connect_check_health``,
    # not ``on_connect``, so READONLY was never sent; only SCAN and DEBUG (no key) were
    # asked, which a replica answers anyway. A key's PEXPIRETIME got MOVED.
    class ReadOnlyConnection(redis.Connection):  # type: ignore[misc,name-defined]
        def on_connect_check_health(self, check_health: bool = True) -> None:
            redis.Connection.on_connect_check_health(self, check_health)
            self.send_command("READONLY")
            self.read_response()

        def on_connect(self) -> None:
            if hasattr(redis.Connection, "on_connect_check_health"):  # calls the method above
                redis.Connection.on_connect(self)
                return
            redis.Connection.on_connect(self)  # redis-py 5
            self.send_command("READONLY")
            self.read_response()

    pool = redis.ConnectionPool(
        host="127.0.0.1", port=port, password=password, socket_timeout=30, connection_class=ReadOnlyConnection
    )
    return redis.Redis(connection_pool=pool)


Range = tuple[int, int, str, int, str]  # first slot, last slot, master host, port, node id


def _slot_map(addresses: list[str], password: str | None, what: str) -> list[Range]:
    """``CLUSTER SLOTS`` as the first node that answers it gives it."""
    failures: list[str] = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=5)
        try:
            reply = client.execute_command("CLUSTER", "SLOTS")
        except redis.RedisError as exc:
            failures.append(f"{address}: {exc}")
            continue
        finally:
            client.close()
        return [_range(entry, host) for entry in reply]
    raise ComponentError(f"{what}: no node of the Cluster answers ({'; '.join(failures) or 'no nodes'})")


def _range(entry: Any, default_host: str) -> Range:
    start, end, master = entry[0], entry[1], entry[2]
    host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
    node_id = master[2].decode() if isinstance(master[2], bytes) else str(master[2])
    return int(start), int(end), host or default_host, int(master[1]), node_id


def _check_coverage(ranges: list[Range], what: str) -> None:
    """Every slot 0..16383 in exactly one range, or ComponentError naming the gaps."""
    served = [0] * SLOTS
    for start, end, *_ in ranges:
        for slot in range(start, end + 1):
            served[slot] += 1
    gaps = _spans([slot for slot in range(SLOTS) if served[slot] != 1])
    if gaps:
        raise ComponentError(
            f"{what}: the Cluster's slot map serves slots {gaps} by no master (or by two); nothing was read: "
            "a reading without them would miss their keys"
        )


def _by_master(ranges: list[Range]) -> dict[tuple[str, int, str], str]:
    """Each master (host, port, node id) with the slots it serves, as text for messages."""
    slots: dict[tuple[str, int, str], list[int]] = {}
    for start, end, host, port, node_id in ranges:
        slots.setdefault((host, port, node_id), []).extend(range(start, end + 1))
    return {master: _spans(served) for master, served in slots.items()}


def _spans(slots: list[int]) -> str:
    """``0-5460, 10923-16383`` for a sorted list of slots."""
    spans: list[str] = []
    for slot in slots:
        if spans and int(spans[-1].rsplit("-", 1)[-1]) == slot - 1:
            spans[-1] = f"{spans[-1].split('-')[0]}-{slot}"
        else:
            spans.append(str(slot))
    return ", ".join(spans)


def _not_serving(client: Any, node_id: str) -> str | None:
    """Why this master of the slot map cannot be read as the master of its slots, or None."""
    try:
        role = client.execute_command("ROLE")
        myid = client.execute_command("CLUSTER", "MYID")
        info = client.execute_command("CLUSTER", "INFO")
    except redis.RedisError as exc:
        return f"does not answer ({exc})"
    myid = myid.decode() if isinstance(myid, bytes) else str(myid)
    info = info.decode() if isinstance(info, bytes) else str(info)
    kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if myid != node_id:
        return f"is another node (id {myid}, the map names {node_id})"
    if kind != "master":
        return f"answers as a {kind}, not a master"
    if "cluster_state:ok" not in info:
        return "says its cluster is down (cluster_state is not ok)"
    return None
