"""postgres-replicated with ``manager: patroni`` on the local runtime: Patroni nodes and an etcd.

The runtime starts one etcd (Patroni's DCS: it holds the leader key) and one Patroni per
node, each from Debian's packages (``patroni``, ``etcd-server``); Patroni runs initdb on
node0, clones the others with pg_basebackup, elects a leader, and on a failure promotes
a replica by itself and rewinds the old leader when it comes back (``use_pg_rewind``).
drproof only starts and kills processes, as a host failure or an operator would, and
reads roles over SQL like for plain replication (the endpoint is the same multi-host
connection string).

Patroni and PostgreSQL run as the server user (``drproof`` when drproof runs as root);
each node's configuration, which holds the passwords Patroni needs, is a 0600 file of
that user. etcd listens on loopback only, without authentication: it lives as long as
the run, in the run's directory. Patroni starts PostgreSQL in a session of its own, so
PostgreSQL would outlive a SIGKILLed drproof: ``drproof clean`` finds it by the
``DRPROOF_SERVER_OF`` mark it inherits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.childenv import tool_environment
from engine.errors import FaultError, RuntimeStartError
from engine.lazy import lazy
from engine.runtime import processes
from engine.runtime.local import log_since
from engine.runtime.local_replicated import CATCH_UP_TIMEOUT, NODE_SETTINGS, LocalReplicatedPostgres
from engine.runtime.topology import ReplicatedSpec, Role

if TYPE_CHECKING:
    import psycopg2

    from engine.runtime.local import LocalPostgres, LocalRuntime
else:
    psycopg2 = lazy("psycopg2")

# How fast Patroni notices and acts: the leader key lives TTL seconds unless renewed,
# each node runs its loop every LOOP_WAIT seconds. Patroni's defaults are 30 s and 10 s
# (a failover takes up to ~40 s); these make one take seconds, as a tuned cluster would.
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4
START_TIMEOUT = 120.0
REBUILD_TIMEOUT = 120.0
API_PORT_ATTEMPTS = 3  # starts of a node's Patroni whose REST API port was taken, each on a new port  # a rebuilt node's clone by Patroni, then its catching up
INSTALL = "apt-get install patroni etcd-server"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeStartError(f"manager: patroni needs {name}, which is not installed ({INSTALL})")
    return path


class LocalPatroniPostgres(LocalReplicatedPostgres):
    """Nodes run by Patroni, with an etcd of their own; Patroni promotes, drproof watches."""

    automatic = True

    def __init__(self, runtime: LocalRuntime, instance: str, spec: ReplicatedSpec) -> None:
        self._patroni_bin, self._etcd_bin = _tool("patroni"), _tool("etcd")
        super().__init__(runtime, instance, spec)
        self._etcd: subprocess.Popen[bytes] | None = None
        self._etcd_dir = self._nodes["node0"].base.parent / f"etcd-{instance}"
        self._etcd_port = processes.free_port()
        self._patroni: dict[str, subprocess.Popen[bytes]] = {}
        self._api = {name: processes.free_port() for name in self._nodes}

    # -- starting -------------------------------------------------------------------------
    def start(self) -> None:
        self._start_etcd()
        for name in self._nodes:
            self._write_config(name)
        self._start_node("node0")
        if not processes.wait_until(lambda: self.role("node0") == "primary", timeout=START_TIMEOUT, interval=0.2):
            raise RuntimeStartError("Patroni did not bring node0 up as leader. Log:\n" + self._log_tail("node0"))
        for name in self.nodes()[1:]:
            self._start_node(name)
        for name in self.nodes()[1:]:
            if not processes.wait_until(lambda n=name: self.caught_up(n), timeout=START_TIMEOUT, interval=0.2):  # type: ignore[misc]
                raise RuntimeStartError(f"Patroni did not bring {name} up as a replica. Log:\n" + self._log_tail(name))
        if self.spec.synchronous and not processes.wait_until(self._synchronous, timeout=START_TIMEOUT, interval=0.2):
            raise RuntimeStartError(f"Patroni did not make a replica of {self.instance!r} synchronous")

    def _synchronous(self) -> bool:
        """Patroni's synchronous_mode is in effect: a replica commits are waiting for.

        Patroni names the synchronous standby in its loop, after the replica streams;
        until then commits are asynchronous (a drill that killed the leader that early
        lost a write, 2 runs in 5).
        """
        try:
            row = self._query(
                "node0", "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"
            )
        except psycopg2.Error:
            return False
        return bool(row and row[0])

    def _start_etcd(self) -> None:
        self._etcd_dir.mkdir(mode=0o700)
        peer = processes.free_port()
        argv = [
            self._etcd_bin,
            "--name=drproof",
            f"--data-dir={self._etcd_dir / 'data'}",
            f"--listen-client-urls=http://127.0.0.1:{self._etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self._etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=drproof=http://127.0.0.1:{peer}",
            "--initial-cluster-state=new",
        ]
        self._etcd = processes.spawn(argv, log=self._etcd_dir / "etcd.log")
        if not processes.wait_until(self._etcd_answers, timeout=30, interval=0.1):
            raise RuntimeStartError(
                "etcd did not answer within 30 s. Log:\n" + processes.tail(self._etcd_dir / "etcd.log")
            )

    def _etcd_answers(self) -> bool:
        if self._etcd is not None and self._etcd.poll() is not None:
            raise RuntimeStartError("etcd exited while starting. Log:\n" + processes.tail(self._etcd_dir / "etcd.log"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._etcd_port}/health", timeout=1) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _write_config(self, name: str) -> None:
        """The node's Patroni configuration, written as JSON (which YAML readers, Patroni's too, accept)."""
        node = self._nodes[name]
        config = {
            "scope": f"drproof-{self.instance}",
            "namespace": "/drproof/",
            "name": name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{self._api[name]}", "connect_address": f"127.0.0.1:{self._api[name]}"},
            "etcd3": {"hosts": f"127.0.0.1:{self._etcd_port}"},
            "bootstrap": self._bootstrap(),
            "postgresql": self._postgresql(name, node),
        }
        path = node.base / "patroni.yml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the passwords
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh, indent=1)
        owner = node.server_file_owner()
        if owner is not None:
            os.chown(path, *owner)

    def _bootstrap(self) -> dict[str, Any]:
        parameters = {k: v for k, v in NODE_SETTINGS.items() if k != "hot_standby"}
        return {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1 << 30,
                "synchronous_mode": self.spec.synchronous,
                "postgresql": {"use_pg_rewind": True, "use_slots": False, "parameters": parameters},
            },
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C"},
                "data-checksums",
                {"auth-host": "scram-sha-256"},
                {"auth-local": "peer"},
            ],
            "pg_hba": [
                "local all all peer",
                "host all all 127.0.0.1/32 scram-sha-256",
                "host replication all 127.0.0.1/32 scram-sha-256",
            ],
        }

    def _postgresql(self, name: str, node: LocalPostgres) -> dict[str, Any]:
        login = {"username": self.superuser, "password": self.password}
        return {
            "listen": f"127.0.0.1:{node.port}",
            "connect_address": f"127.0.0.1:{node.port}",
            "data_dir": str(node.data_dir()),
            "bin_dir": str(node.server_bin),
            "pgpass": str(node.base / "pgpass-patroni"),
            "authentication": {"superuser": login, "replication": login, "rewind": login},
            "parameters": {"unix_socket_directories": str(node.socket_dir), "cluster_name": name},
        }

    def _start_node(self, name: str) -> None:
        """Start the node's Patroni; if its REST API port was taken meanwhile, again on a new one.

        Why: the port is picked once, when the topology is made, and bound at every start
        of the node's Patroni (the replicas' first start comes once the leader is up; a
        rebuild's, whole steps after the node was killed). Anything that took it meanwhile
        made Patroni exit at once ("Address already in use"), and drproof waited out its
        whole start or rebuild timeout (120 s) to report a node that never came back
        (shown by taking the port before a rebuild).
        """
        node = self._nodes[name]
        env = tool_environment({"PATH": f"{node.server_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
        log = node.base / "patroni.log"
        for attempt in range(API_PORT_ATTEMPTS):
            offset = log.stat().st_size if log.exists() else 0
            proc = processes.spawn([self._patroni_bin, str(node.base / "patroni.yml")], log=log, user=node.user, env=env)
            self._patroni[name] = proc
            processes.wait_until(
                lambda p=proc: p.poll() is not None or self._api_state(name) is not None,  # type: ignore[misc]
                timeout=30,
                interval=0.2,
            )
            if proc.poll() is None or attempt + 1 == API_PORT_ATTEMPTS or not self._api_port_taken(log, offset):
                return
            self._api[name] = processes.free_port()
            self._write_config(name)

    @staticmethod
    def _api_port_taken(log: Path, offset: int) -> bool:
        """Whether Patroni's log, from ``offset`` on, says it could not bind its REST API."""
        said = log_since(log, offset)
        return b"Couldn't start a service on" in said and b"Address already in use" in said

    def _log_tail(self, name: str) -> str:
        return processes.tail(self._nodes[name].base / "patroni.log", 25)

    # -- processes of a node ----------------------------------------------------------------
    def _postmaster(self, name: str) -> int | None:
        """The pid of the node's PostgreSQL (Patroni's child, in a session of its own), if it runs."""
        try:
            pid = int((self._nodes[name].data_dir() / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _signal_node(self, name: str, sig: signal.Signals) -> list[str]:
        """Send ``sig`` to the node's Patroni and to its PostgreSQL's process group; what it reached."""
        reached = []
        proc = self._patroni.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
                reached.append(f"patroni {proc.pid}")
        postmaster = self._postmaster(name)
        if postmaster is not None:
            # Every child of the postmaster leads a process group of its own (setsid): the
            # postmaster's group alone left a paused replica streaming (found by review).
            pids = processes.signal_server(postmaster, sig)
            if pids:
                reached.append(f"postgres {postmaster} and {len(pids) - 1} child process(es)")
        return reached

    def _alive(self, name: str) -> bool:
        proc = self._patroni.get(name)
        return (proc is not None and proc.poll() is None) or self._postmaster(name) is not None

    def role(self, node: str) -> Role:
        if self._postmaster(node) is None:
            return "down"
        if node in self._paused:
            return "no answer"
        try:
            row = self._query(node, "SELECT pg_is_in_recovery()")
        except psycopg2.Error:
            return "no answer"
        return "replica" if row and row[0] else "primary"

    def kill_node(self, node: str) -> dict[str, Any]:
        self._paused.discard(node)
        reached = self._signal_node(node, signal.SIGKILL)
        processes.wait_until(lambda: not self._alive(node), timeout=10, interval=0.05)
        return {"node": node, "address": self.address(node), "signal": "SIGKILL", "processes": reached}

    def stop_node(self, node: str) -> dict[str, Any]:
        proc = self._patroni.get(node)
        if proc is not None:
            processes.stop(proc, signal.SIGTERM, timeout=60)  # Patroni stops PostgreSQL, then releases the key
        return {"node": node, "address": self.address(node), "shutdown": "Patroni stopped (SIGTERM)"}

    def pause_node(self, node: str) -> dict[str, Any]:
        reached = self._signal_node(node, signal.SIGSTOP)
        if not reached:
            raise FaultError(f"{node} of {self.instance!r} is not running: there is nothing to pause")
        self._paused.add(node)
        return {"node": node, "address": self.address(node), "signal": "SIGSTOP", "processes": reached}

    def resume_node(self, node: str) -> dict[str, Any]:
        reached = self._signal_node(node, signal.SIGCONT)
        self._paused.discard(node)
        return {"node": node, "signal": "SIGCONT", "processes": reached}

    def promote(self, failed: str) -> dict[str, Any]:
        """The runbook with Patroni: ask it to fail over to the most advanced replica (``patronictl failover``)."""
        candidates = [n for n in self.nodes() if n != failed and self.role(n) == "replica"]
        if not candidates:
            raise FaultError(f"no replica of {self.instance!r} answers: there is nothing to promote")
        try:
            chosen = max(candidates, key=lambda n: self._lsn(n, "pg_last_wal_receive_lsn()"))
        except psycopg2.Error as exc:  # a candidate that died or hung meanwhile
            raise FaultError(f"reading the replicas of {self.instance!r} failed: {str(exc).strip()}") from exc
        body = json.dumps({"candidate": chosen}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._api[chosen]}/failover", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                answer = reply.read().decode(errors="replace")
        except OSError as exc:
            raise FaultError(f"Patroni refused the failover to {chosen}: {exc}") from exc
        self.current = chosen
        return {"promoted": chosen, "how": "Patroni REST API POST /failover", "answer": answer[:200]}

    def rejoin(self, node: str) -> dict[str, Any]:
        """Start the old leader's Patroni again: it finds another leader, rewinds and follows it."""
        if node in self._paused:
            self.kill_node(node)
        started = time.monotonic()
        self._start_node(node)
        if not processes.wait_until(lambda: self._settled(node), timeout=CATCH_UP_TIMEOUT * 2, interval=0.5):
            raise FaultError(
                f"{node} of {self.instance!r} did not rejoin as a caught-up replica. Log:\n{self._log_tail(node)}"
            )
        primary = self.primary()
        return {
            "node": node,
            "how": "Patroni restarted: it rewinds the old leader (use_pg_rewind) and follows the new one",
            "seconds": round(time.monotonic() - started, 3),
            "timeline": self.timeline(node),
            "primary_timeline": self.timeline(primary) if primary else None,
        }

    def rebuild(self, node: str) -> dict[str, Any]:
        """Empty ``node``'s data directory and start its Patroni: it bootstraps a replica from the leader.

        Patroni clones a node with no data from the leader itself (pg_basebackup, its
        ``create_replica_methods`` default), so drproof only clears what was left and
        starts it, as an operator would. A node whose Patroni still runs is Patroni's to
        bring back, and is left alone.
        """
        primary = self.primary()
        if primary is None or primary == node:
            raise RuntimeStartError(f"{node} of {self.instance!r} cannot be rebuilt: the leader is {primary or 'not answering'}")
        role = self.role(node)
        if role != "down":
            raise RuntimeStartError(f"{node} of {self.instance!r} is not rebuilt: it is {role}, not down")
        proc = self._patroni.get(node)
        if proc is not None and proc.poll() is None:
            # Its Patroni runs and manages the node (it may be starting or cloning it right now):
            # never taken from under it; health judges what it brings back.
            raise RuntimeStartError(f"{node} of {self.instance!r} is not rebuilt: its Patroni runs and brings it back itself")
        started = time.monotonic()
        self.kill_node(node)  # a PostgreSQL left without its Patroni
        data = self._nodes[node].data_dir()
        shutil.rmtree(data, ignore_errors=True)
        if data.exists():
            raise RuntimeStartError(f"{node} of {self.instance!r} cannot be rebuilt: {data} could not be emptied")
        self._start_node(node)
        if not processes.wait_until(lambda: self._settled(node), timeout=REBUILD_TIMEOUT, interval=0.5):
            raise RuntimeStartError(
                f"Patroni did not bring {node} of {self.instance!r} back as a caught-up replica of {primary} within "
                f"{REBUILD_TIMEOUT:.0f} s. Log:\n{self._log_tail(node)}"
            )
        return {
            "node": node,
            "from": primary,
            "how": "Patroni's replica bootstrap from the leader",
            "seconds": round(time.monotonic() - started, 3),
        }

    def _settled(self, node: str) -> bool:
        """Patroni is done with the node: a running replica on the leader's timeline, caught up, twice in a row.

        Patroni first starts a crashed old leader on its own to finish crash recovery,
        then stops it, rewinds it and starts it again: in between it can look like a
        caught-up replica for a moment (a fingerprint read then was cut off by the
        restart, 1 run in 4). Patroni's own view (its REST API) and the timeline tell the end.
        """
        for attempt in range(2):
            state = self._api_state(node)
            primary = self.primary()
            if (
                state is None
                or state.get("state") != "running"
                or state.get("role") != "replica"
                or primary is None
                or self.timeline(node) != self.timeline(primary)
                or not self.caught_up(node)
            ):
                return False
            if attempt == 0:
                time.sleep(1.0)
        return True

    def manager_problems(self) -> list[str]:
        """A running PostgreSQL whose Patroni does not answer is unmanaged: no failover to or from it.

        Why: Patroni starts PostgreSQL in a session of its own, so a dead Patroni leaves its
        server running and health answered ok (found by review); the cluster had quietly
        lost its automatic failover for that node.
        """
        return [
            f"{name}'s Patroni does not answer while its PostgreSQL runs (unmanaged: no automatic failover)"
            for name in self.nodes()
            if self._postmaster(name) is not None and name not in self._paused and not self._api_answers(name)
        ]

    def _api_answers(self, node: str) -> bool:
        """Whether the node's Patroni REST API answers within a few seconds (a busy one may miss one call)."""
        return processes.wait_until(lambda: self._api_state(node) is not None, timeout=5, interval=0.5)

    def _api_state(self, node: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._api[node]}/patroni", timeout=2) as reply:
                state: dict[str, Any] = json.loads(reply.read())
                return state
        except (OSError, ValueError):
            return None

    def primary(self) -> str | None:
        found = super().primary()
        if found is not None:
            self.current = found
        return found

    def ensure_running(self) -> None:
        """Patroni keeps its nodes running; drproof starts the Patroni of every node that is down."""
        if self.primary() is not None:
            return
        if self._etcd is not None and self._etcd.poll() is not None:
            # Without its DCS Patroni demotes every leader and elects none: waiting would only
            # end in "no leader" two minutes later, without the cause (found by review).
            raise RuntimeStartError(
                f"etcd, Patroni's DCS for {self.instance!r}, is not running (exit {self._etcd.returncode}): Patroni "
                "keeps no leader without it. Log:\n" + processes.tail(self._etcd_dir / "etcd.log")
            )
        for name in self.nodes():
            if not self._alive(name):
                self._start_node(name)
        if not processes.wait_until(lambda: self.primary() is not None, timeout=START_TIMEOUT, interval=0.2):
            raise RuntimeStartError(
                f"Patroni brought no leader of {self.instance!r} up. Log:\n{self._log_tail('node0')}"
            )

    def wipe_data(self) -> None:
        node = self.current
        self.kill_node(node)
        shutil.rmtree(self._nodes[node].data_dir(), ignore_errors=True)

    def is_running(self) -> bool:
        return self.primary() is not None

    def stop(self) -> None:
        """SIGKILL every node's Patroni and PostgreSQL, then etcd (the run's files are deleted next)."""
        for name in self.nodes():
            self._paused.discard(name)
            self._signal_node(name, signal.SIGCONT)
            self._signal_node(name, signal.SIGKILL)
        if self._etcd is not None:
            processes.kill(self._etcd)
        for name in self.nodes():
            processes.wait_until(lambda n=name: not self._alive(n), timeout=10, interval=0.05)  # type: ignore[misc]

    def watchers(self) -> list[str]:
        return []

    def version(self) -> str:
        return f"{super().version()} managed by {_patroni_version(self._patroni_bin)}"

    def describe(self) -> str:
        mode = "synchronous_mode" if self.spec.synchronous else "asynchronous"
        return f"Patroni ({mode}) with etcd: leader {self.current} + {self.spec.replicas} replica(s)"


def _patroni_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, env=tool_environment())
    except (OSError, subprocess.SubprocessError):
        return "Patroni"
    return out.stdout.strip() or "Patroni"
