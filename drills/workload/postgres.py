"""Workload rows in a table of their own, one autocommitted INSERT per write."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from drills.workload.base import WORKLOAD_MARK, Writer
from engine.components.postgres import PostgresComponent
from engine.components.postgres_catalog import WORKLOAD_COMMENT
from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2
else:
    psycopg2 = lazy("psycopg2")


class PostgresWriter(Writer):
    name: ClassVar[str] = "postgres"

    def open(self) -> None:
        assert isinstance(self.component, PostgresComponent)
        self.pg = self.component
        self.conn: Any = None
        conn = self.pg.connect()
        conn.autocommit = True  # a commit per write: acknowledged means durable
        self.conn = conn
        with conn.cursor() as cur:
            # One simple query, one transaction: the table never exists without the comment
            # that tells fingerprints it is the workload's (and only it: a user's table named
            # like it elsewhere is compared, found by review).
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {WORKLOAD_MARK} "
                "(seq bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp()); "
                f"COMMENT ON TABLE {WORKLOAD_MARK} IS %s",
                (WORKLOAD_COMMENT,),
            )

    def _connect(self) -> None:
        self.conn = self.pg.connect()
        self.conn.autocommit = True  # a commit per write: acknowledged means durable

    def write(self, seq: int) -> str | None:
        """One autocommitted INSERT; returns the server that took it (host:port of the connection).

        Through a multi-host endpoint that is the primary libpq found, so a failover's
        writes say which node acknowledged them.
        """
        try:
            if self.conn is None or self.conn.closed:
                self._connect()
            with self.conn.cursor() as cur:
                cur.execute(f"INSERT INTO {WORKLOAD_MARK} (seq) VALUES (%s)", (seq,))
        except psycopg2.Error:
            self._drop()
            raise
        return f"{self.conn.info.host}:{self.conn.info.port}"

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None

    def survivors(self) -> set[int]:
        assert isinstance(self.component, PostgresComponent)
        conn = self.component.connect()  # unreachable is not "nothing survived": it raises
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (WORKLOAD_MARK,))
                row = cur.fetchone()
                if not row or not row[0]:
                    return set()
                cur.execute(f"SELECT seq FROM {WORKLOAD_MARK}")
                return {int(r[0]) for r in cur.fetchall()}
        except psycopg2.Error as exc:
            # Found by review: a SELECT that fails (a damaged page, a permission) ended the
            # drill as an internal error; it is a recovery point that could not be read.
            text = " ".join(str(exc).split())
            raise ComponentError(
                f"postgres {self.component.instance!r}: cannot read the workload's rows: {type(exc).__name__}: {text}"
            ) from None
        finally:
            conn.close()

    def close(self) -> None:
        self._drop()


class ReplicatedPostgresWriter(PostgresWriter):
    """The workload of a replicated PostgreSQL: like an application's connection pool.

    Two things an application's pool does that a single long connection does not, and
    that a failover drill needs: a write that gets no answer within ``TIMEOUT`` seconds
    is abandoned (the socket is shut, as a driver's socket timeout does) instead of
    waiting for a frozen primary forever; and a connection is replaced after
    ``RECYCLE`` writes (a pool's maximum lifetime), each new one found through the
    endpoint. So after a failover the writes reach whichever node accepts them now, and
    if two nodes accept writes at once, both get some: a split brain shows in the
    acknowledgements instead of hiding behind one connection.
    """

    name: ClassVar[str] = "postgres-replicated"
    TIMEOUT = 2.0
    RECYCLE = 8

    def open(self) -> None:
        super().open()
        self._uses = 0

    def _connect(self) -> None:
        """Through the endpoint, its nodes tried in random order (libpq 16 and later), as a fleet of clients would.

        If two nodes accept writes at once, new connections then reach both, and the
        split brain shows in the acknowledgements.
        """
        service = self.pg.service
        balance = " load_balance_hosts=random" if int(psycopg2.extensions.libpq_version()) >= 160000 else ""
        self.conn = psycopg2.connect(service.dsn(self.pg.db) + balance, password=service.tool_env().get("PGPASSWORD"))
        self.conn.autocommit = True

    def write(self, seq: int) -> str | None:
        if self._uses >= self.RECYCLE:
            self._drop()
            self._uses = 0
        conn = self.conn
        timer = threading.Timer(self.TIMEOUT, _shut, args=(conn,))
        timer.daemon = True
        timer.start()
        try:
            return super().write(seq)
        finally:
            timer.cancel()
            self._uses += 1


def _shut(conn: Any) -> None:
    """Shut the connection's socket: a write blocked on a server that does not answer fails at once."""
    if conn is None or conn.closed:
        return
    with contextlib.suppress(OSError, psycopg2.Error):
        dup = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
