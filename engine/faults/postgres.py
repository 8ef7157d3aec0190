"""Faults that hit a PostgreSQL component."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from engine.components.postgres import PostgresComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
else:
    psycopg2 = lazy("psycopg2")
    sql = lazy("psycopg2.sql")


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


# -- bad migrations ---------------------------------------------------------------------------


class TableParams(FaultParams):
    table: str = Field(default="orders", description="Table the bad migration hits.")
    schema_name: str = Field(default="public", alias="schema", description="Schema of the table.")


def _ident(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _require_table(
    cur: psycopg2.extensions.cursor, comp: PostgresComponent, schema: str, table: str, fault: str
) -> None:
    """Refuse to pretend: a migration against a table that is not there breaks nothing."""
    cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, table))
    row = cur.fetchone()
    if not row or row[0] == 0:
        known = ", ".join(f"{s}.{t}" for s, t in comp.tables(cur.connection))
        raise FaultError(f"{fault}: table {schema}.{table} does not exist in {comp.instance!r}; tables: {known}")


def _count(cur: psycopg2.extensions.cursor, schema: str, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(schema, table)))
    row = cur.fetchone()
    return int(row[0]) if row else 0


class DeleteAllRows(Fault):
    """A migration's ``DELETE`` that lost its ``WHERE`` clause.

    Unlike a dropped table, the schema survives intact: every index, grant and view is
    still there and the application keeps running against an empty table, so nothing
    but a row-level comparison notices. That is exactly the loss a backup must undo.
    """

    name: ClassVar[str] = "delete_all_rows"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres"})
    Params: ClassVar[type[FaultParams]] = TableParams
    description: ClassVar[str] = "DELETE without WHERE on a live table: a bad migration that keeps the schema."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, TableParams)
        comp = _pg(ctx)
        qualified = f"{p.schema_name}.{p.table}"
        conn = comp.connect()
        try:
            with conn, conn.cursor() as cur:
                _require_table(cur, comp, p.schema_name, p.table, self.name)
                before = _count(cur, p.schema_name, p.table)
                if before == 0:
                    raise FaultError(f"{self.name}: {qualified} is already empty, so deleting from it loses nothing")
                cur.execute(sql.SQL("DELETE FROM {}").format(_ident(p.schema_name, p.table)))
                deleted = cur.rowcount
            with conn, conn.cursor() as cur:  # a new transaction: the DELETE is committed
                after = _count(cur, p.schema_name, p.table)
        except psycopg2.Error as exc:
            raise FaultError(f"{self.name} on {qualified} failed: {str(exc).strip()}") from exc
        finally:
            conn.close()
        if after != 0:
            raise FaultError(f"{self.name}: {qualified} still holds {after} of {before} rows after the DELETE")
        return {"table": qualified, "rows_before": before, "rows_deleted": deleted, "rows_after": after}


class TruncateParams(TableParams):
    cascade: bool = Field(
        default=False,
        description="`TRUNCATE ... CASCADE`: also empty every table with a foreign key to this one.",
    )


class TruncateTable(Fault):
    """``TRUNCATE`` in a migration run against the wrong database.

    TRUNCATE does not scan or log rows one by one, so it is instant on any size of
    table; with CASCADE it silently empties every referencing table too. The schema
    and sequences stay, so the damage is invisible to anything but the data.
    """

    name: ClassVar[str] = "truncate_table"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres"})
    Params: ClassVar[type[FaultParams]] = TruncateParams
    description: ClassVar[str] = "TRUNCATE a live table (optionally CASCADE): every row gone, the schema intact."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, TruncateParams)
        comp = _pg(ctx)
        qualified = f"{p.schema_name}.{p.table}"
        conn = comp.connect()
        try:
            with conn, conn.cursor() as cur:
                _require_table(cur, comp, p.schema_name, p.table, self.name)
                # With CASCADE the server decides which tables follow; counting all of them
                # before and after is what proves which ones lost their rows.
                watched = comp.tables(conn) if p.cascade else [(p.schema_name, p.table)]
                before = {f"{s}.{t}": _count(cur, s, t) for s, t in watched}
                if sum(before.values()) == 0:
                    raise FaultError(f"{self.name}: {qualified} is already empty, so truncating it loses nothing")
                statement = sql.SQL("TRUNCATE TABLE {}").format(_ident(p.schema_name, p.table))
                cur.execute(statement + sql.SQL(" CASCADE") if p.cascade else statement)
            with conn, conn.cursor() as cur:
                after = {f"{s}.{t}": _count(cur, s, t) for s, t in watched}
        except psycopg2.Error as exc:
            raise FaultError(f"{self.name} on {qualified} failed: {str(exc).strip()}") from exc
        finally:
            conn.close()
        if after[qualified] != 0:
            raise FaultError(f"{self.name}: {qualified} still holds {after[qualified]} rows after TRUNCATE")
        effect: dict[str, Any] = {"table": qualified, "rows_before": before[qualified], "rows_after": 0}
        if p.cascade:
            effect["also_emptied"] = {
                name: rows for name, rows in before.items() if name != qualified and rows and after[name] == 0
            }
        return effect
