"""postgres-replicated: a PostgreSQL primary with streaming replicas, optionally managed by Patroni.

It is a ``postgres`` component in every other respect: seeded, backed up with pg_dump,
restored and fingerprinted through the topology's endpoint, which reaches whichever node
is primary now. So a backup is always taken from the current primary, a restore goes
into it (and on to its replicas by replication), and every fault and check of the
``postgres`` kind works on it too. What it adds is the topology (``Topology``): nodes,
roles, and the operations failover faults and the ``failover`` step perform on one node.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from engine.components.base import ArtifactSource, Health, SeedParams
from engine.components.connections import libpq_fields
from engine.components.nodes import NodeViews
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError, DrproofError
from engine.lazy import lazy
from engine.runtime import processes
from engine.runtime.base import REPLICAS
from engine.runtime.topology import ReplicatedSpec, Topology

if TYPE_CHECKING:
    import psycopg2
else:
    psycopg2 = lazy("psycopg2")

# How many down nodes a restore rebuilds at once (each a base backup of the primary).
REBUILD_CONCURRENCY = 3
# Seconds a replica may take to replay what the primary had written when health was asked.
REPLICA_CATCH_UP = 10.0
_PRIMARY_POSITION = (
    "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)
# Whether a commit on the primary can return: it waits for a synchronous standby when the
# primary names any (plain 'ANY 1 (*)', or Patroni's synchronous_mode naming one), and the
# latest reply of a synchronous standby. A frozen standby stays listed as 'streaming' until
# wal_sender_timeout (60 s) ends its WAL sender, and commits wait for it meanwhile: only a
# standby whose reply time moves on while we watch is one a commit can count on (every node
# reports every second: the runtime sets wal_receiver_status_interval = 1s).
_COMMITS_WAIT = (
    "SELECT current_setting('synchronous_standby_names'), (SELECT max(reply_time)::text FROM pg_stat_replication "
    "WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))"
)
_REPLICA_POSITION = (
    "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn, pg_is_wal_replay_paused(), r.status, r.received_tli, "
    "r.sender_host, r.sender_port FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true"
)


def _one_line(text: str, limit: int = 400) -> str:
    """An error (a log tail, a tool's stderr) as one line, cut at ``limit`` characters, for health's detail."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class PostgresReplicatedParams(PostgresParams):
    replicas: int = Field(default=1, ge=1, le=5, description="Streaming replicas beside the primary.")
    synchronous: bool = Field(
        default=False,
        description="`true`: a commit returns only once a replica has flushed it (`synchronous_standby_names = "
        "'ANY 1 (*)'`; with Patroni, `synchronous_mode`), so a failover loses no acknowledged write. `false`: "
        "asynchronous replication, which may lose what the replicas had not received.",
    )
    manager: Literal["none", "patroni"] = Field(
        default="none",
        description="`none`: plain streaming replication; drproof is the operator who promotes a replica "
        "(`failover` strategy `promote`). `patroni`: Patroni with an etcd of its own, started by the runtime, "
        "elects and promotes a replica by itself (strategy `automatic`) and rewinds a returning old leader.",
    )


class PostgresReplicatedComponent(PostgresComponent, NodeViews):
    name: ClassVar[str] = "postgres-replicated"
    server: ClassVar[str | None] = "postgres-replicated"
    needs: ClassVar[frozenset[str]] = frozenset({REPLICAS})
    Params: ClassVar[type[SeedParams]] = PostgresReplicatedParams
    description: ClassVar[str] = (
        "A PostgreSQL primary with streaming replicas (synchronous or not), optionally managed by Patroni with "
        "etcd; backed up, restored and fingerprinted like `postgres` through the endpoint that reaches the "
        "current primary."
    )

    params: PostgresReplicatedParams
    # Set once a restore went into the cluster: from then on every declared node must answer.
    restored: bool = False
    # After the last restore: nodes rebuilt (how, seconds) and nodes that could not be (why).
    rebuilt: dict[str, str]
    not_rebuilt: dict[str, str]

    def provision(self) -> None:
        p = self.params
        spec = ReplicatedSpec(
            replicas=p.replicas, synchronous=p.synchronous, manager=None if p.manager == "none" else p.manager
        )
        service = self.runtime.server(self.name, self.instance, spec)
        self.service = service
        self.topology: Topology = service
        self.rebuilt, self.not_rebuilt = {}, {}

    def connection_env(self) -> dict[str, str]:
        """The endpoint as a multi-host URL (``HOST`` and ``PORT`` are libpq's comma lists)."""
        env = super().connection_env()
        f = libpq_fields(self.service.dsn(self.db))
        hosts = ",".join(f"{h}:{p}" for h, p in zip(f["host"].split(","), f["port"].split(","), strict=True))
        env["URL"] = f"postgresql://{quote(f['user'])}@{hosts}/{quote(self.db)}?target_session_attrs=read-write"
        return env

    def health(self) -> Health:
        """The endpoint's health, and every answering replica streaming from the primary, caught up.

        Why: the endpoint reaches only the primary, so a replica whose replay was paused or
        whose WAL receiver stopped kept serving the data from before a restore while health
        said ok (found by review), and the restore's RTO stopped before the replicas had the
        restored data. The primary's WAL position is read once; each replica must replay up
        to it within ``REPLICA_CATCH_UP`` seconds, on the primary's timeline, streaming from
        the primary. A node that is down or does not answer serves nothing stale: before any
        restore it is named in the detail, not failed (a failover drill may leave its old
        primary down on purpose). After a restore it fails health: a restore brings back the
        declared cluster, and one with a node down is not whole (found by review: a replica
        killed before the restore stayed down, and the restore, its RTO and the drill passed).
        """
        endpoint = super().health()
        if not endpoint.ok:
            return endpoint
        primary = self.topology.primary()
        if primary is None:
            return Health(ok=False, detail=f"{endpoint.detail}; but no node answers as primary now")
        try:
            target, timeline = (int(v) for v in self._on(primary, _PRIMARY_POSITION))
        except ComponentError as exc:
            return Health(ok=False, detail=f"primary {primary} cannot tell its WAL position: {exc}")
        problems: list[str] = []
        absent: dict[str, str] = {}  # node: "down" or "no answer"
        for node in (n for n in self.topology.nodes() if n != primary):
            role = self.topology.role(node)
            if role in ("down", "no answer"):
                absent[node] = role
            elif role == "primary":
                problems.append(f"{node} answers as a second primary beside {primary}")
            else:
                problem = self._replica_problem(node, primary, target, timeline)
                if problem is not None:
                    problems.append(problem)
        streaming = len(self.topology.nodes()) - 1 - len(absent) - len(problems)
        blocked = self._commit_problem(primary)
        if blocked is not None:
            problems.append(blocked)
        problems += self.topology.manager_problems()
        detail = f"{endpoint.detail}; primary {primary}, {streaming} replica(s) streaming and caught up"
        if self.rebuilt:
            detail += "; rebuilt after the restore: " + ", ".join(f"{n} ({how})" for n, how in self.rebuilt.items())
        if absent:
            detail += "; " + ", ".join(f"{n} {role}" for n, role in absent.items())
            if self.restored:
                declared = len(self.topology.nodes())
                why = [f"{n} {role}" + (f": {self.not_rebuilt[n]}" if n in self.not_rebuilt else "") for n, role in absent.items()]
                problems.append(
                    f"{len(absent)} of the {declared} declared nodes down after the restore "
                    f"({', '.join(why)}): the cluster is not whole"
                )
        if problems:
            return Health(ok=False, detail=f"{detail}; but {'; '.join(problems)}")
        return Health(ok=True, detail=detail)

    def restore(self, source: ArtifactSource) -> None:
        """Refuse, before anything is touched, a restore whose commits could never return.

        Why: with synchronous replication and no synchronous standby connected, every
        commit waits for ever; the restore hung on its first CREATE DATABASE (found by
        review) instead of saying why.
        """
        self.service.ensure_running()
        primary = self.topology.primary()
        blocked = self._commit_problem(primary) if primary is not None else None
        if blocked is not None:
            raise ComponentError(
                f"refusing to restore {self.instance!r} (nothing was touched): {blocked}; bring a replica back "
                "(or turn synchronous replication off) first"
            )
        super().restore(source)
        self.restored = True
        self._rebuild_down_nodes(source)

    def _rebuild_down_nodes(self, source: ArtifactSource) -> None:
        """Re-clone every declared node that is down (killed, or its data wiped) from the restored primary.

        Why: a restore brings back the declared cluster; one that leaves a killed or wiped
        replica down is not whole (health says so), and a DR drill that lost a node could
        never be green. This runs only once the restore into the primary returned, i.e.
        was proven and swapped in: a down node's copy is older than the primary's, and a
        refused restore never reaches here, so no node's data is touched before then.
        Nodes that answer are never rebuilt (a lagging one is health's finding); a node
        that cannot be rebuilt stays down, and health names it with the reason. A restore
        whose proof was left to its caller (a restore test's sandbox) rebuilds nothing:
        the proof comes after, and nothing may be re-cloned before it.
        """
        self.rebuilt, self.not_rebuilt = {}, {}
        primary = self.topology.primary()
        roles = {n: self.topology.role(n) for n in self.topology.nodes() if n != primary}
        for node in (n for n, role in roles.items() if role == "no answer"):
            # Its server runs (paused, hung): never re-cloned from under it. Health names it.
            self.not_rebuilt[node] = "not rebuilt: its server runs but answers nothing (paused or hung)"
        down = [n for n, role in roles.items() if role == "down"]
        if source.proof_deferred:
            for node in down:
                self.not_rebuilt[node] = "not rebuilt: the restore's proof was left to the caller"
            return
        if not down:
            return
        # Concurrently, a few at a time: each is a base backup of the primary and a wait for
        # its catch-up, mostly waiting on the primary and the disk; one after the other, the
        # RTO grew by a whole rebuild per down node. Each node's outcome is its own.
        with ThreadPoolExecutor(max_workers=min(REBUILD_CONCURRENCY, len(down))) as pool:
            outcomes = {node: pool.submit(self._rebuild_one, node) for node in down}
        for node, outcome in outcomes.items():
            done, why = outcome.result()
            if why is not None:
                self.not_rebuilt[node] = why
            else:
                self.rebuilt[node] = done

    def _rebuild_one(self, node: str) -> tuple[str, str | None]:
        """Rebuild ``node``: (how it was rebuilt, None), or ("", why it could not be)."""
        try:
            done = self.topology.rebuild(node)
        except (DrproofError, OSError) as exc:
            return "", f"could not be rebuilt: {_one_line(str(exc))}"
        return f"re-cloned from {done['from']}: {done['how']}, {done['seconds']:.1f} s", None

    def _commit_problem(self, primary: str) -> str | None:
        """Why a commit on ``primary`` cannot return now (no synchronous standby to wait for), or None."""
        found: list[str | None] = [None]
        first: list[str | None] = []  # the latest synchronous reply time when the check began

        def commits() -> bool:
            try:
                names, latest = self._on(primary, _COMMITS_WAIT)
            except ComponentError as exc:
                found[0] = f"primary {primary} cannot be read: {exc}"
                return False
            if not str(names).strip():
                return True
            if not first:
                first.append(latest)
            if latest is None or latest == first[0]:
                found[0] = (
                    f"primary {primary} waits for a synchronous standby ({names}) and none streams and answers "
                    f"within {REPLICA_CATCH_UP:.0f} s: it takes no write"
                )
                return False
            return True

        return None if processes.wait_until(commits, timeout=REPLICA_CATCH_UP, interval=0.1) else found[0]

    def _replica_problem(self, node: str, primary: str, target: int, timeline: int) -> str | None:
        """Why ``node`` does not hold what the primary held at ``target``, or None once it does."""
        found: list[str | None] = [None]

        def state() -> bool:
            try:
                replayed, paused, status, received_tli, host, port = self._on(node, _REPLICA_POSITION)
            except ComponentError as exc:
                found[0] = f"{node} cannot be read: {exc}"
                return False
            source = f"{host}:{port}" if host is not None else None
            if status != "streaming":
                found[0] = f"{node} is not streaming from the primary (WAL receiver: {status or 'none'})"
            elif source != self.topology.address(primary):
                found[0] = f"{node} streams from {source}, not from the primary {primary}"
            elif received_tli != timeline:
                found[0] = f"{node} follows timeline {received_tli}, the primary writes timeline {timeline}"
            elif paused:
                found[0] = f"{node} has its WAL replay paused"
            elif replayed is None or int(replayed) < target:
                found[0] = f"{node} has not replayed the primary's WAL within {REPLICA_CATCH_UP:.0f} s"
            else:
                return True
            return False

        return None if processes.wait_until(state, timeout=REPLICA_CATCH_UP, interval=0.1) else found[0]

    def _on(self, node: str, sql: str) -> tuple[Any, ...]:
        """One row of ``sql`` read on ``node`` itself, not through the endpoint."""
        conn = self.on_node(node).connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
        except psycopg2.Error as exc:
            raise ComponentError(f"{node}: {str(exc).strip()}") from exc
        finally:
            conn.close()
        if row is None:
            raise ComponentError(f"{node}: no answer to {sql!r}")
        return tuple(row)
