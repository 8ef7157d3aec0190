"""Workload rows in a table of their own, one autocommitted INSERT per write."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

from drills.workload.base import WORKLOAD_MARK, Writer
from engine.components.postgres import PostgresComponent
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
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {WORKLOAD_MARK} "
                "(seq bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
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
        try:
            conn = self.component.connect()
        except ComponentError:
            return set()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (WORKLOAD_MARK,))
                row = cur.fetchone()
                if not row or not row[0]:
                    return set()
                cur.execute(f"SELECT seq FROM {WORKLOAD_MARK}")
                return {int(r[0]) for r in cur.fetchall()}
        finally:
            conn.close()

    def close(self) -> None:
        self._drop()
