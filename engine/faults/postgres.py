"""Faults that hit a PostgreSQL component."""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg2
from pydantic import Field

from engine.components.postgres import PostgresComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams


def _pg(ctx: FaultContext) -> PostgresComponent:
    assert isinstance(ctx.component, PostgresComponent)
    return ctx.component


class DropTableParams(FaultParams):
    table: str = Field(default="orders", description="Table to drop (CASCADE), as an operator's mistake would.")
    schema_name: str = Field(default="public", alias="schema", description="Schema of the table.")


class DropTable(Fault):
    name: ClassVar[str] = "drop_table"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres"})
    Params: ClassVar[type[FaultParams]] = DropTableParams
    description: ClassVar[str] = "DROP TABLE ... CASCADE on a live database: the classic operator error."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, DropTableParams)
        comp = _pg(ctx)
        conn = comp.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s", (p.schema_name, p.table)
                )
                row = cur.fetchone()
                if not row or row[0] == 0:
                    raise FaultError(
                        f"drop_table: table {p.schema_name}.{p.table} does not exist in {comp.instance!r}; "
                        f"tables: {', '.join(f'{s}.{t}' for s, t in comp.tables(conn))}"
                    )
                cur.execute(f'SELECT count(*) FROM "{p.schema_name}"."{p.table}"')
                rows = cur.fetchone()
                cur.execute(f'DROP TABLE "{p.schema_name}"."{p.table}" CASCADE')
        except psycopg2.Error as exc:
            raise FaultError(f"drop_table failed: {str(exc).strip()}") from exc
        finally:
            conn.close()
        return {"table": f"{p.schema_name}.{p.table}", "rows_lost": rows[0] if rows else None}


class DeleteDataDir(Fault):
    name: ClassVar[str] = "delete_data_dir"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres"})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = (
        "Kill the server (SIGKILL) and delete its whole data directory: total loss of the cluster."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        comp = _pg(ctx)
        location = comp.service.data_location()
        comp.service.wipe_data()
        return {"data_dir": location, "server_running": comp.service.is_running()}
