"""Digests of every row of a database, computed by the server in one pass, without sorting.

The first fingerprint scheme sorted each table's rows by their text on the server
(``ORDER BY t::text``) and hashed them in this process: 2.7 to 3.9 times the time of
the dump itself on pgbench data, and every row crossed the network. A digest that does
not depend on row order needs no sort: each row's text is hashed by the server
(``hashtextextended``, 64 bits per row) and the hashes are summed (exact, as
``numeric``). One hash, not two: a second seed cost a third of the time (every numeric
sum is as dear as the hash), and a changed row already keeps its table's sum only with
odds of 2^-64. The defence is against faulty restores, not forgers, whom no
non-cryptographic hash would stop. The sum of a table is the same whatever order its rows come
in, differs when any row differs, and the count of rows goes with it. Only one row per
table crosses the network.

The hash is the one PostgreSQL uses for hash partitioning; like hash partitioning, it is
computed the same on every little-endian host (all x86-64 and ARM servers drproof
supports). Servers older than PostgreSQL 11, which lack it, get MD5 of each row, slower.

Since scheme ``postgres/3``, a table whose every column is of a type in ``TYPED`` is
digested without turning rows into text (``typed``), which cost about 40 % of the whole
(pgbench scale 60: 1.8 s against 1.1 s on two connections). Each value is hashed by its
type's own hash function, chosen because for these types two values hash alike only if
they are the same value, text for text, with odds of 2^-64 (no ``numeric`` ``1.0``
against ``1.00``, no floating-point ``-0``, no interval ``24:00`` against ``1 day``, no
arrays, whose hash skips their bounds, no text under a non-deterministic collation, and
no 64-bit integers or times, whose hashes keep 32 bits). PostgreSQL combines a
row's column hashes linearly (``hash_record_extended``): summed over a table, that would
describe each column's values but not which row holds them, so two rows swapping one
column's values would sum alike. The combination is hashed once more before the sum,
which makes each row's digest depend on the whole row, as the text's hash does: by
``hashint8extended`` with the combination as its seed too, since that function alone
folds 64 bits into 32 and would leave a changed row unseen once in 2^32. Other tables
keep the text.

Tables are read in parallel over ``jobs`` connections that all share one exported
snapshot, the way ``pg_dump -j`` does, so the digests describe one moment; a large
table is split into block ranges so that one big table is read by every connection.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from engine.fingerprint import Part
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2.extensions
    from psycopg2 import sql
else:
    psycopg2 = lazy("psycopg2")
    sql = lazy("psycopg2.sql")

Connect = Callable[[], "psycopg2.extensions.connection"]


# Built-in types whose hash function (PostgreSQL's, the one hash joins and hash partitions
# use) tells apart every two values whose text differs: bool, bytea, "char", int2, int4,
# text, oid, bpchar (with a length: its hash ignores trailing blanks, which a char(n)
# column pads to n anyway), varchar, date, uuid. Collatable ones only under a
# deterministic collation. Not bigint, time, timestamp or timestamptz: their hashes fold
# 64 bits into 32 (so that int8 hashes like int4), and -1 and 4294967295 hash alike.
TYPED = (16, 17, 18, 21, 23, 25, 26, 1042, 1043, 1082, 2950)
BPCHAR = 1042
TYPED_SINCE = 140000  # hash_record_extended
# ``ROW(t.*)``, not ``t``: in a table with a column named ``t``, a bare ``t`` is that column.
TYPED_ROW = "hash_record_extended({}, 0) AS h"
TEXT_ROW = "{}::text AS r"

# An inheritance child's columns in an order a dump and restore keeps. pg_dump writes a
# child as ``CREATE TABLE child (its own columns) INHERITS (parent)``, so the parent's
# columns come first after a restore, wherever they were before (a column added to the
# parent later was last): inherited columns by name, then the child's own in their order.
# Partitions are not children here: pg_dump keeps their column order.
CHILD_ORDER = """a.attinhcount = 0, CASE WHEN a.attinhcount > 0 THEN a.attname END COLLATE "C", a.attnum"""
CHILD_COLUMNS = f"""SELECT r.n, array_agg(a.attname::text ORDER BY {CHILD_ORDER})
  FROM unnest(%s::regclass[]) WITH ORDINALITY AS r(oid, n)
  JOIN pg_class c ON c.oid = r.oid
  JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  WHERE NOT c.relispartition AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = r.oid)
  GROUP BY r.n"""

# Settings that change how values print, pinned for scheme 3 on every connection that
# reads (found by review): a timestamptz restored into a server of another time zone,
# or read where IntervalStyle or extra_float_digits differ, printed differently and a
# healthy restore was refused; a float printed with fewer digits hid a changed value.
PINNED_OUTPUT = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET xmloption = 'content'"
)

# ``money`` prints in the session's lc_monetary (symbol, separators, decimal places), which
# comes from the server's configuration: read on a server of another lc_monetary, every
# money value printed differently and a healthy restore (even a physical copy) was refused,
# and a value that a restore into such a server misread (12,345 with no decimal places read
# back as 12,345.00) was judged by text that had changed for both reasons (found by review).
# Pinned to "C" for scheme 7, every money value prints as its exact amount in hundredths
# (``$1,234.56``: two places, one symbol), so equal text is an equal stored value, whatever
# the server's locale. Catalog text (a money default) is read in the same session.
PINNED_MONEY = "SET lc_monetary = 'C'"

# Every row or an error, never the rows a policy lets this role see (found by review): with
# row security on, a role subject to a policy (a table owner under FORCE ROW LEVEL SECURITY)
# digests a subset, which would match a restore that lost the rest; only a later catalog
# read such a role cannot make stopped it. Off, as pg_dump sets it, the row read fails.
ALL_ROWS = "SET row_security = off"

# A table of more blocks than this is digested in block ranges, several connections at a
# time (TID range scans, PostgreSQL 14+): one large table is most databases' whole cost.
SPLIT_BLOCKS = 8192  # 64 MB of 8 kB pages


def dotted(name: str, full: bool = False) -> str:
    """A name as part names print it: in double quotes if it holds a dot or a quote, or (``full``) a space.

    As ``postgres_catalog._dotted``, which says why.
    """
    quoted = "." in name or '"' in name or (full and " " in name)
    return '"' + name.replace('"', '""') + '"' if quoted else name


@dataclass(frozen=True)
class Method:
    """How one relation's rows are read: by their values' hashes or their text, and in which column order.

    ``columns`` None: the table's own order (``ROW(t.*)``); else these columns, in this order.
    """

    typed: bool = False
    columns: tuple[str, ...] | None = None
    # An extension's configuration table: only the rows pg_dump takes (``WHERE <its
    # filter>`` given to ``pg_extension_config_dump``), and read whole, not in block ranges.
    where: str | None = None

    def row(self) -> sql.Composable:
        if self.columns is None:
            return sql.SQL("ROW(t.*)")
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in self.columns))


@dataclass(frozen=True)
class Task:
    """Rows of one relation, or of a range of its blocks (``stop`` None: to its end)."""

    index: int
    start: int = 0
    stop: int | None = None


def _row_digest_query(schema: str, table: str, server_num: int, task: Task, method: Method = Method()) -> sql.Composed:
    typed = method.typed
    relation: sql.Composable = sql.SQL("ONLY {}").format(sql.Identifier(schema, table))
    if method.where is not None:
        relation = sql.SQL("(SELECT * FROM ONLY {} {})").format(sql.Identifier(schema, table), sql.SQL(method.where))
    source = sql.SQL("SELECT " + (TYPED_ROW if typed else TEXT_ROW) + " FROM {} t").format(method.row(), relation)
    if task.start or task.stop is not None:
        bounds = [sql.SQL("t.ctid >= {}::tid").format(sql.Literal(f"({task.start},0)"))]
        if task.stop is not None:
            bounds.append(sql.SQL("t.ctid < {}::tid").format(sql.Literal(f"({task.stop},0)")))
        source = sql.SQL("{} WHERE {}").format(source, sql.SQL(" AND ").join(bounds))
    if typed:
        # The row's hash seeds a hash of itself: hashint8extended alone would fold it to 32
        # bits. OFFSET 0 keeps the subquery whole, or the planner would compute h twice.
        source = sql.SQL("{} OFFSET 0").format(source)
        lane = sql.SQL("coalesce(sum(hashint8extended(h, h)), 0)")
    elif server_num >= 110000:
        lane = sql.SQL("coalesce(sum(hashtextextended(r, 0)), 0)")
    else:
        lane = sql.SQL("coalesce(sum(('x' || substr(md5(r), 1, 16))::bit(64)::bigint), 0)")
    return sql.SQL("SELECT count(*), {} FROM ({}) s").format(lane, source)


def rows_part(count: int, total: object) -> Part:
    digest = hashlib.sha256(f"rows {count} {total}".encode()).hexdigest()
    return Part(digest=digest, count=count, unit="rows")


Sums = tuple[int, int]  # rows, the sum of their hashes


def _digest(conn: psycopg2.extensions.connection, relation: tuple[str, str, str], task: Task, method: Method) -> Sums:
    with conn.cursor() as cur:
        cur.execute(_row_digest_query(relation[1], relation[2], conn.server_version, task, method))
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def row_parts(
    conn: psycopg2.extensions.connection,
    relations: Sequence[tuple[str, str, str]],
    *,
    connect: Connect | None = None,
    jobs: int = 1,
    typed: bool = False,
    full: bool = False,
    filters: dict[int, str] | None = None,
    money: bool = False,
) -> dict[str, Part]:
    """``<label> <schema>.<table>`` -> rows part, for (label, schema, table) in ``relations``.

    ``conn`` is in a REPEATABLE READ transaction; with ``jobs`` > 1 and ``connect``,
    extra connections import its snapshot and take tasks (tables, or block ranges of
    large ones) from one queue, largest first. The sums of a table's ranges add up to
    the sum of the table, so the parts are the same however the work was split.
    ``typed`` (scheme ``postgres/3``, PostgreSQL 14 or later): tables of ``TYPED``
    columns only are digested by their values' hashes instead of their text, and
    inheritance children in the column order a restore keeps (``CHILD_ORDER``).
    ``full`` (scheme ``postgres/4``): names that hold a space are quoted (``dotted``).
    ``filters``: index of a relation -> the ``WHERE`` clause its rows are read with.
    ``money`` (scheme ``postgres/7``): workers read money in lc_monetary "C" (``PINNED_MONEY``),
    as ``conn`` must already.
    """
    if typed and conn.server_version < TYPED_SINCE:
        raise ValueError("typed row digests need PostgreSQL 14 or later (hash_record_extended)")
    names = [f"{label} {dotted(schema, full)}.{dotted(table, full)}" for label, schema, table in relations]
    methods = _methods(conn, relations) if typed else [Method()] * len(relations)
    for index, where in (filters or {}).items():
        methods[index] = replace(methods[index], where=where)
    tasks = _tasks(conn, relations, jobs if connect is not None else 1, set(filters or {}))
    if jobs <= 1 or connect is None or len(tasks) < 2:
        done = [(t.index, _digest(conn, relations[t.index], t, methods[t.index])) for t in tasks]
    else:
        pins = ((PINNED_OUTPUT,) if typed else ()) + ((PINNED_MONEY,) if money else ())
        done = _in_parallel(conn, connect, relations, methods, tasks, jobs, pins)
    totals: dict[int, list[int]] = {i: [0, 0] for i in range(len(relations))}
    for index, sums in done:
        totals[index] = [a + b for a, b in zip(totals[index], sums, strict=True)]
    return {names[i]: rows_part(*totals[i]) for i in range(len(relations))}


def _methods(conn: psycopg2.extensions.connection, relations: Sequence[tuple[str, str, str]]) -> list[Method]:
    orders = child_columns(conn, relations)
    return [Method(typed, orders.get(i)) for i, typed in enumerate(typed_relations(conn, relations))]


def child_columns(conn: psycopg2.extensions.connection, relations: Sequence[tuple[str, str, str]]) -> dict[int, tuple[str, ...]]:
    """Index of each inheritance child among ``relations`` -> its columns in ``CHILD_ORDER``."""
    if not relations:
        return {}
    names = [sql.Identifier(schema, table).as_string(conn) for _label, schema, table in relations]
    with conn.cursor() as cur:
        cur.execute(CHILD_COLUMNS, (names,))
        return {int(n) - 1: tuple(columns) for n, columns in cur.fetchall()}


def typed_relations(conn: psycopg2.extensions.connection, relations: Sequence[tuple[str, str, str]]) -> list[bool]:
    """For each relation: are all its columns of a ``TYPED`` type (and a deterministic collation)?

    Decided from the catalog alone, so a healthy restore decides alike; a restore that
    changed a column's type changes the table's method and so its digest, as well as its
    definition's part.
    """
    out = []
    with conn.cursor() as cur:
        for _label, schema, table in relations:
            cur.execute(
                """SELECT NOT EXISTS (
                     SELECT 1 FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation
                     WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
                       AND NOT (a.atttypid = ANY(%s::oid[]) AND (a.atttypid <> %s OR a.atttypmod > 0)
                                AND (a.attcollation = 0 OR coalesce(co.collisdeterministic, false))))""",
                (sql.Identifier(schema, table).as_string(conn), list(TYPED), BPCHAR),
            )
            row = cur.fetchone()
            out.append(bool(row and row[0]))
    return out


def _in_parallel(
    conn: psycopg2.extensions.connection,
    connect: Connect,
    relations: Sequence[tuple[str, str, str]],
    methods: Sequence[Method],
    tasks: list[Task],
    jobs: int,
    pins: tuple[str, ...],
) -> list[tuple[int, Sums]]:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_export_snapshot()")
        row = cur.fetchone()
    assert row is not None
    snapshot = str(row[0])
    workers = [_importing(connect, snapshot, pins) for _ in range(min(jobs, len(tasks)) - 1)]
    queue = iter(tasks)
    lock = threading.Lock()

    def drain(c: psycopg2.extensions.connection) -> list[tuple[int, Sums]]:
        out: list[tuple[int, Sums]] = []
        while True:
            with lock:
                task = next(queue, None)
            if task is None:
                return out
            out.append((task.index, _digest(c, relations[task.index], task, methods[task.index])))

    try:
        with ThreadPoolExecutor(max_workers=1 + len(workers)) as executor:
            futures = [executor.submit(drain, c) for c in (conn, *workers)]
            return [item for f in futures for item in f.result()]
    finally:
        for worker in workers:
            worker.close()


def _importing(connect: Connect, snapshot: str, pins: tuple[str, ...]) -> psycopg2.extensions.connection:
    conn = connect()
    conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        cur.execute("SET search_path = ''")
        cur.execute(ALL_ROWS)
        for pin in pins:
            cur.execute(pin)
    return conn


def _tasks(
    conn: psycopg2.extensions.connection, relations: Sequence[tuple[str, str, str]], jobs: int, whole: Collection[int] = ()
) -> list[Task]:
    """Every relation once, largest first; with ``jobs`` > 1 on PostgreSQL 14+, large ones in block ranges.

    The last range of a table has no end: rows this snapshot sees are in blocks that
    existed when it was taken, but the size is read a moment later and only grows.
    """
    if jobs <= 1:
        return [Task(i) for i in range(len(relations))]
    blocks = _blocks(conn, relations)
    tasks: list[tuple[int, Task]] = []
    for i, n in enumerate(blocks):
        if conn.server_version < 140000 or n <= SPLIT_BLOCKS or i in whole:
            tasks.append((n, Task(i)))
            continue
        pieces = max(jobs * 2, -(-n // (SPLIT_BLOCKS * 4)))
        step = -(-n // pieces)
        for start in range(0, n, step):
            stop = start + step if start + step < n else None
            tasks.append((min(step, n - start), Task(i, start, stop)))
    return [task for _size, task in sorted(tasks, key=lambda t: -t[0])]


def _blocks(conn: psycopg2.extensions.connection, relations: Sequence[tuple[str, str, str]]) -> list[int]:
    with conn.cursor() as cur:
        sizes = []
        for _label, schema, table in relations:
            cur.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                (sql.Identifier(schema, table).as_string(conn),),
            )
            row = cur.fetchone()
            sizes.append(int(row[0]) if row else 0)
    return sizes
