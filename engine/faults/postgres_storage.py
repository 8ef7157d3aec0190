"""Faults that damage a PostgreSQL server's files rather than its SQL-visible state.

SQL faults show what an operator can do through a connection. The damage here comes
from below the server: a disk that returns different bytes than were written, or a
cleanup job that removes archived WAL. Both need the server's files, which only a
runtime that owns the server (local) gives drproof; elsewhere they refuse clearly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import Field

from engine.components.postgres import PostgresComponent
from engine.components.postgres_physical import SEGMENT
from engine.errors import DrproofError, FaultError
from engine.faults.base import Fault, FaultContext, FaultParams, flip_bytes
from engine.lazy import lazy
from engine.runtime.base import OWNED_PROCESSES, PhysicalAccess

if TYPE_CHECKING:
    import psycopg2
    from psycopg2 import sql
else:
    psycopg2 = lazy("psycopg2")
    sql = lazy("psycopg2.sql")

# PostgreSQL's page header (pd_lsn .. pd_prune_xid). Bytes after it are the page body;
# damaging them keeps the header plausible, so the server reports the checksum mismatch
# itself instead of a malformed header.
PAGE_HEADER = 24
DATA_CORRUPTED = "XX001"  # SQLSTATE of "invalid page in block ..."


def _pg(ctx: FaultContext) -> PostgresComponent:
    assert isinstance(ctx.component, PostgresComponent)
    return ctx.component


@runtime_checkable
class _OwnedServer(Protocol):
    """A server whose data directory drproof can reach and which it may stop and start."""

    def data_dir(self) -> Path: ...

    def stop(self) -> None: ...

    def ensure_running(self) -> None: ...

    def is_running(self) -> bool: ...


class CorruptPageParams(FaultParams):
    table: str | None = Field(
        default=None, description="Table whose data file is damaged; default: the largest user table."
    )
    schema_name: str = Field(default="public", alias="schema", description="Schema of `table`.")
    block: int | None = Field(
        default=None, ge=0, description="Page (block) number to damage; default: a random page of the table."
    )
    bytes: int = Field(default=8, ge=1, le=1024, description="How many bytes of the page body to invert.")


class CorruptPage(Fault):
    """A disk or controller that silently changes bytes of a table's data file.

    Data checksums (the local runtime runs ``initdb --data-checksums``) are how
    PostgreSQL notices; without them it would return the damaged rows as if they were
    real. The fault proves the server notices: it reads the table back and keeps the
    server's own error as evidence.

    The server is stopped cleanly (fast shutdown, which checkpoints every dirty page)
    before the file is touched and started again afterwards. Writing under a running
    server would be unreliable both ways: the page may sit in shared buffers, so reads
    never see the damage, and a later checkpoint may write the cached page over it.
    """

    name: ClassVar[str] = "corrupt_page"
    needs: ClassVar[frozenset[str]] = frozenset({OWNED_PROCESSES})  # stops and edits the server's files
    targets: ClassVar[frozenset[str]] = frozenset({"postgres"})
    Params: ClassVar[type[FaultParams]] = CorruptPageParams
    description: ClassVar[str] = (
        "Invert bytes inside one page of a table's data file (server stopped cleanly, then restarted); "
        "the data checksum makes reads of the table fail."
    )

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, CorruptPageParams)
        comp = _pg(ctx)
        server = comp.service
        if not isinstance(server, _OwnedServer):
            raise FaultError(
                f"{self.name} needs the server's data directory and the right to restart it, which only the "
                f"local runtime gives drproof; {comp.instance!r} runs elsewhere"
            )
        schema, table, relpath, block_size, blocks = self._locate(comp, p)
        path = server.data_dir() / relpath
        if p.block is not None and p.block >= blocks:
            raise FaultError(f"{self.name}: {schema}.{table} has {blocks} pages, so block {p.block} does not exist")
        try:
            server.stop()
        except DrproofError as exc:
            raise FaultError(f"{self.name}: could not stop {comp.instance!r} cleanly: {exc}") from exc
        if server.is_running():
            raise FaultError(f"{self.name}: {comp.instance!r} is still running after a clean stop; nothing was changed")
        try:
            offsets, block = self._damage(ctx, path, p, block_size, blocks)
        finally:
            server.ensure_running()  # a failed write must not leave the server down
        error = self._read_back(comp, schema, table)
        return {
            "table": f"{schema}.{table}",
            "file": str(path),
            "block": block,
            "offsets": offsets[:50],
            "bytes_changed": len(offsets),
            "server_restarted": server.is_running(),
            "error": error,
        }

    def _locate(self, comp: PostgresComponent, p: CorruptPageParams) -> tuple[str, str, str, int, int]:
        """Schema, table, file path relative to the data directory, page size, page count."""
        conn = comp.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT current_setting('data_checksums'), current_setting('block_size')::int")
                checksums, block_size = cur.fetchone() or ("off", 8192)
                if checksums != "on":
                    raise FaultError(
                        f"{self.name}: data checksums are off in {comp.instance!r}, so the server could not "
                        "notice a damaged page; the drill would break data without any proof"
                    )
                sizes = []
                for schema, table in comp.tables(conn):
                    if p.table is not None and (schema, table) != (p.schema_name, p.table):
                        continue
                    cur.execute("SELECT pg_relation_size(format('%%I.%%I', %s, %s)::regclass)", (schema, table))
                    row = cur.fetchone()
                    sizes.append((int(row[0]) if row else 0, schema, table))
                if not sizes:
                    known = ", ".join(f"{s}.{t}" for s, t in comp.tables(conn))
                    raise FaultError(
                        f"{self.name}: table {p.schema_name}.{p.table} does not exist in {comp.instance!r}; "
                        f"tables: {known or 'none'}"
                    )
                size, schema, table = sorted(sizes, key=lambda s: (-s[0], s[1], s[2]))[0]
                if size == 0:
                    raise FaultError(f"{self.name}: {schema}.{table} has no data pages to damage")
                cur.execute("SELECT pg_relation_filepath(format('%%I.%%I', %s, %s)::regclass)", (schema, table))
                row = cur.fetchone()
        except psycopg2.Error as exc:
            raise FaultError(f"{self.name}: cannot locate the table's file: {str(exc).strip()}") from exc
        finally:
            conn.close()
        if not row or not row[0]:
            raise FaultError(f"{self.name}: {schema}.{table} has no data file")
        return schema, table, str(row[0]), int(block_size), size // int(block_size)

    def _damage(
        self, ctx: FaultContext, path: Path, p: CorruptPageParams, block_size: int, blocks: int
    ) -> tuple[list[int], int]:
        """Invert bytes of one page body; returns their file offsets and the page number."""
        try:
            file_blocks = path.stat().st_size // block_size
        except FileNotFoundError:
            raise FaultError(f"{self.name}: the table's data file {path} does not exist") from None
        # Past 1 GiB a table continues in further files (.1, .2, ...); this one holds the first pages.
        usable = min(blocks, file_blocks)
        if usable == 0 or (p.block is not None and p.block >= usable):
            raise FaultError(f"{self.name}: {path} holds {file_blocks} pages; nothing to damage at the chosen page")
        block = p.block if p.block is not None else ctx.rng.randrange(usable)
        body = range(PAGE_HEADER, block_size)
        offsets = sorted(block * block_size + o for o in ctx.rng.sample(body, min(p.bytes, len(body))))
        with open(path, "r+b") as fh:
            for off in offsets:
                fh.seek(off)
                original = fh.read(1)
                fh.seek(off)
                fh.write(flip_bytes(original))
            fh.flush()
            os.fsync(fh.fileno())
        return offsets, block

    def _read_back(self, comp: PostgresComponent, schema: str, table: str) -> str:
        """Read every page of the table; the server must refuse with a checksum failure.

        Index scans are switched off so ``count(*)`` cannot be answered from an index
        without visiting the damaged heap page.
        """
        conn = comp.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off; "
                    "SET ignore_checksum_failure = off; SET zero_damaged_pages = off"
                )
                cur.execute(
                    sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                )
                row = cur.fetchone()
        except psycopg2.Error as exc:
            if exc.pgcode != DATA_CORRUPTED:
                raise FaultError(
                    f"{self.name}: reading {schema}.{table} back failed, but not with a checksum failure: "
                    f"{str(exc).strip()}"
                ) from exc
            return str(exc).strip()
        finally:
            conn.close()
        raise FaultError(
            f"{self.name}: bytes of {schema}.{table} were inverted, yet the server still counts "
            f"{row[0] if row else '?'} rows without a checksum failure; the damage did not take"
        )


class DeleteWalSegmentsParams(FaultParams):
    fraction: float = Field(
        default=1.0, gt=0, le=1, description="Share of archived segments deleted (ignored if `count` is set)."
    )
    count: int | None = Field(default=None, ge=1, description="Exact number of archived segments deleted.")


class DeleteWalSegments(Fault):
    """A cleanup job or a full disk takes archived WAL segments with it.

    Point-in-time recovery replays WAL segment by segment; one missing segment ends the
    replay there, and every moment after it becomes unreachable. The drill shows which
    restores still work: a backup set carries the WAL it needs, so restoring a set must
    not depend on the server's archive.
    """

    name: ClassVar[str] = "delete_wal_segments"
    targets: ClassVar[frozenset[str]] = frozenset({"postgres-physical"})
    Params: ClassVar[type[FaultParams]] = DeleteWalSegmentsParams
    description: ClassVar[str] = "Delete archived WAL segments from the server's WAL archive."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, DeleteWalSegmentsParams)
        comp = _pg(ctx)
        if not isinstance(comp.service, PhysicalAccess):
            raise FaultError(f"{self.name}: {comp.instance!r} gives drproof no access to its WAL archive")
        archive = comp.service.wal_archive()
        try:
            segments = sorted(f for f in archive.iterdir() if SEGMENT.match(f.name))
        except OSError as exc:
            raise FaultError(f"{self.name}: cannot list the WAL archive {archive}: {exc.strerror}") from exc
        if not segments:
            raise FaultError(
                f"{self.name}: the WAL archive {archive} holds no segments yet; the server archives a segment "
                "once it is full or switched (every backup switches one)"
            )
        n = p.count if p.count is not None else max(1, round(len(segments) * p.fraction))
        victims = sorted(ctx.rng.sample(segments, min(n, len(segments))))
        for segment in victims:
            segment.unlink()
        survivors = [v.name for v in victims if v.exists()]
        if survivors:
            raise FaultError(f"{self.name}: segments still in {archive} after deletion: {', '.join(survivors)}")
        names = [v.name for v in victims]
        return {
            "wal_archive": str(archive),
            "segments_deleted": len(names),
            "deleted": names[:100],
            "segments_left": sum(1 for f in archive.iterdir() if SEGMENT.match(f.name)),
        }
