"""The verification ladder for a restored PostgreSQL database.

A fingerprint that matches proves the rows came back; it does not prove the database
works. A restore can bring every row back and still leave a sequence behind its data (the
next INSERT fails with a duplicate key), a materialized view unpopulated (every query on
it errors), a foreign key that no longer holds, an index whose entries disagree with its
table, or a database without the role its application logs in as. Each rung of this
ladder looks for one such failure and says how bad it is:

- ``critical``: data is lost or wrong, or the application breaks on its next write;
- ``major``: part of the application fails, or the database promises something it does
  not keep;
- ``minor``: worth knowing, harmless as restored.

A check that cannot run says so and why. It is never a pass: a disaster-recovery tool
that reports "could not look" as green hides exactly the failures it exists to find.

The ladder lives in the engine, not in the drills, so the standalone engine can run it
after a production restore as well as a drill can after a rehearsal.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from engine.components import postgres_legacy
from engine.components.postgres import PostgresComponent
from engine.components.postgres_catalog import (
    EXTENSION_OTHER_PARTS,
    EXTENSION_PART,
    ROLE_PART,
    extension_versions,
    role_parts,
)
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2
    import psycopg2.errors
    import psycopg2.extensions
    from psycopg2 import sql
else:
    psycopg2 = lazy("psycopg2")
    sql = lazy("psycopg2.sql")

CheckName = Literal["row_counts", "sequences", "matviews", "constraints", "indexes", "roles_extensions"]
CHECK_NAMES: tuple[CheckName, ...] = get_args(CheckName)

Severity = Literal["critical", "major", "minor"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
BLOCKING: frozenset[Severity] = frozenset({"critical", "major"})

TABLE_PART = "table "
AMCHECK = "amcheck"
# Long enough for a busy database to release a lock, short enough that a check stuck
# behind an application's long transaction reports that instead of hanging the drill.
LOCK_TIMEOUT = "30s"
_USER_SCHEMAS = """n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"""


@dataclass(frozen=True)
class Finding:
    check: CheckName
    severity: Severity
    message: str

    def describe(self) -> str:
        """One line that reads on its own in a terminal, a JUnit message or the report."""
        return f"[{self.severity}] {self.check}: {self.message}"


@dataclass
class CheckResult:
    """One rung: what it looked at, what it found, and whether it could look at all."""

    name: CheckName
    examined: str = ""
    findings: list[Finding] = field(default_factory=list)
    not_run: str | None = None  # why the check could not (fully) run; None if it did

    @property
    def status(self) -> Literal["ok", "findings", "not_run"]:
        if self.not_run is not None:
            return "not_run"
        return "findings" if self.findings else "ok"

    @property
    def blocking(self) -> bool:
        return any(f.severity in BLOCKING for f in self.findings)

    def add(self, severity: Severity, message: str) -> None:
        self.findings.append(Finding(self.name, severity, message))

    def describe(self) -> str:
        """One line per rung in the evidence, so even a pass shows what was actually examined."""
        counts = ", ".join(f"{n} {s}" for s in SEVERITIES if (n := sum(1 for f in self.findings if f.severity == s)))
        if self.not_run is not None:
            head = f"not run: {self.not_run}"
            return f"{head} ({counts} found before it stopped)" if counts else head
        if self.findings:
            return f"{counts}; {self.examined}"
        return f"ok; {self.examined}"


def ladder_status(results: Sequence[CheckResult]) -> Literal["pass", "fail", "not_run"]:
    """Fail on any critical or major finding; otherwise a rung that did not run withholds the pass."""
    if any(r.blocking for r in results):
        return "fail"
    if not results or any(r.not_run is not None for r in results):
        return "not_run"
    return "pass"


@dataclass
class _Context:
    component: PostgresComponent
    conn: psycopg2.extensions.connection
    baseline: Fingerprint | None


def run_checks(
    component: PostgresComponent, baseline: Fingerprint | None, checks: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run the chosen rungs (default: all, in ladder order) against the live database.

    ``baseline`` is the fingerprint recorded when the backup was made; the rungs that
    compare against the backup (row counts, roles and extensions) cannot run without it.
    Each rung runs in its own transaction, rolled back at the end, so the ladder leaves
    nothing behind, not even the amcheck extension it may have had to create.
    """
    chosen = list(CHECK_NAMES) if checks is None else list(checks)
    unknown = [c for c in chosen if c not in CHECK_NAMES]
    if unknown:
        raise ValueError(f"unknown postgres check(s): {', '.join(unknown)} (known: {', '.join(CHECK_NAMES)})")
    names: list[CheckName] = [c for c in CHECK_NAMES if c in chosen]
    try:
        conn = component.connect()
    except ComponentError as exc:
        return [CheckResult(n, not_run=str(exc)) for n in names]
    results: list[CheckResult] = []
    try:
        ctx = _Context(component, conn, baseline)
        for name in names:
            result = CheckResult(name)
            if conn.closed:
                result.not_run = "the connection to the database was lost during an earlier check"
            else:
                try:
                    with conn.cursor() as cur:
                        if name not in _WRITING:
                            cur.execute("SET TRANSACTION READ ONLY")
                        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                    _CHECKS[name](ctx, result)
                except psycopg2.Error as exc:
                    result.not_run = f"query failed: {_error_text(exc)}"
                except ComponentError as exc:
                    result.not_run = str(exc)
                finally:
                    # A server that went away mid-check leaves nothing to roll back.
                    with contextlib.suppress(psycopg2.Error):
                        conn.rollback()
            results.append(result)
    finally:
        conn.close()
    return results


# --- the rungs -------------------------------------------------------------------------------


def _row_counts(ctx: _Context, result: CheckResult) -> None:
    """Rows per table against the counts the backup's fingerprint recorded.

    Fidelity says that a table's digest changed; the counts say in which direction and
    by how much, which decides the severity: lost rows are critical, extra rows major.
    """
    if ctx.baseline is None:
        result.not_run = "no fingerprint was recorded when the backup was made, so there are no counts to compare"
        return
    expected = {
        name[len(TABLE_PART) :]: part.count
        for name, part in ctx.baseline.parts.items()
        if name.startswith(TABLE_PART) and part.unit == "rows"
    }
    if not expected and not any(n.startswith(TABLE_PART) for n in ctx.baseline.parts):
        unreachable = ctx.baseline.parts.get("database unreachable") or ctx.baseline.parts.get("database")
        if unreachable is not None:
            result.not_run = f"the backup's fingerprint holds no tables ({unreachable.digest})"
            return
    actual: dict[str, int] = {}
    with ctx.conn.cursor() as cur:
        for schema, table in ctx.component.tables(ctx.conn):
            cur.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, table)))
            actual[f"{schema}.{table}"] = _one(cur)
    for table in sorted(set(expected) | set(actual)):
        then, now = expected.get(table), actual.get(table)
        if now is None:
            result.add("critical", f"table {table} is missing (had {then} rows at backup)")
        elif then is None:
            result.add("minor", f"table {table} was not in the backup ({now} rows now)")
        elif now < then:
            result.add("critical", f"table {table} has {now} rows, {then - now} fewer than the {then} at backup")
        elif now > then:
            result.add("major", f"table {table} has {now} rows, {now - then} more than the {then} at backup")
    result.examined = (
        f"{len(expected)} tables compared with the backup ({sum(expected.values())} rows then, "
        f"{sum(actual.values())} now)"
    )


def _sequences(ctx: _Context, result: CheckResult) -> None:
    """Each sequence against the data of the columns it feeds.

    A sequence restored behind its column (a dump taken while inserts ran, a sequence
    reset by hand, a physical restore of the wrong moment) hands out values that already
    exist: the next INSERT fails on a unique key, or silently duplicates without one.
    """
    with ctx.conn.cursor() as cur:
        # Owned sequences (serial, identity, OWNED BY) depend on their column; sequences
        # merely used as a column default are depended on by the default expression.
        cur.execute(
            f"""
            WITH links AS (
                SELECT d.objid AS seq, d.refobjid AS tbl, d.refobjsubid AS col FROM pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
                UNION
                SELECT d.refobjid, ad.adrelid, ad.adnum FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
                 WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.deptype = 'n'
            )
            SELECT n.nspname, s.relname, tn.nspname, t.relname, t.relkind, a.attname, q.seqincrement,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisunique
                             AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum) AS is_unique
              FROM links l
              JOIN pg_class s ON s.oid = l.seq AND s.relkind = 'S'
              JOIN pg_namespace n ON n.oid = s.relnamespace
              JOIN pg_sequence q ON q.seqrelid = s.oid
              JOIN pg_class t ON t.oid = l.tbl AND t.relkind IN ('r', 'p')
              JOIN pg_namespace tn ON tn.oid = t.relnamespace
              JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = l.col AND NOT a.attisdropped
              JOIN pg_type ty ON ty.oid = a.atttypid
             WHERE ty.typcategory = 'N' AND {_USER_SCHEMAS}
             ORDER BY 1, 2, 3, 4, 6"""
        )
        links = cur.fetchall()
        for seq_schema, seq, schema, table, relkind, column, increment, unique in links:
            cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(seq_schema, seq)))
            row = cur.fetchone()
            assert row is not None
            last, called = row
            upcoming = last + increment if called else last
            cur.execute(
                sql.SQL("SELECT max({c}), min({c}) FROM {only}{t}").format(
                    c=sql.Identifier(column),
                    only=sql.SQL("ONLY " if relkind == "r" else ""),
                    t=sql.Identifier(schema, table),
                )
            )
            bounds = cur.fetchone()
            assert bounds is not None
            highest, lowest = bounds
            if increment > 0 and highest is not None and upcoming <= highest:
                edge = f"already holds values up to {highest}"
            elif increment < 0 and lowest is not None and upcoming >= lowest:
                edge = f"already holds values down to {lowest}"
            else:
                continue
            consequence = (
                "the next INSERT that uses it fails with a duplicate key"
                if unique
                else "the next INSERT that uses it duplicates an existing value"
            )
            result.add(
                "critical" if unique else "major",
                f"{seq_schema}.{seq} hands out {upcoming} next, but {schema}.{table}.{column} {edge}: {consequence}",
            )
    result.examined = f"{len(links)} sequence(s) compared with the columns they feed"


def _matviews(ctx: _Context, result: CheckResult) -> None:
    """An unpopulated materialized view makes every query on it fail until it is refreshed."""
    with ctx.conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, matviewname, ispopulated FROM pg_matviews "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        views = cur.fetchall()
    for schema, name, populated in views:
        if not populated:
            result.add(
                "major",
                f"materialized view {schema}.{name} is not populated: every query on it fails "
                "until REFRESH MATERIALIZED VIEW",
            )
    result.examined = f"{len(views)} materialized view(s)"


def _constraints(ctx: _Context, result: CheckResult) -> None:
    """Constraints are validated, and every foreign key really holds.

    Orphans are counted with one anti-join per foreign key, built from pg_constraint's
    own column and operator lists, rather than with ``ALTER TABLE ... VALIDATE
    CONSTRAINT`` in a rolled-back transaction: VALIDATE does nothing on a constraint
    already marked valid, which is exactly the state a restore (or ``SET
    session_replication_role = replica``) leaves orphans behind; it takes a lock that
    blocks DDL and stops at the first violation, while the query only reads, counts them
    all, and also works on a read-only replica.
    """
    with ctx.conn.cursor() as cur:
        cur.execute(
            f"""SELECT tn.nspname || '.' || t.relname, c.conname, c.contype FROM pg_constraint c
                  JOIN pg_namespace n ON n.oid = c.connamespace
                  JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
                 WHERE NOT c.convalidated AND {_USER_SCHEMAS} ORDER BY 1, 2"""
        )
        for table, name, kind in cur.fetchall():
            what = "foreign key" if kind == "f" else "constraint"
            result.add("minor", f"{what} {name} on {table} is NOT VALID: rows older than it were never checked")
        period = "c.conperiod" if ctx.conn.server_version >= 180000 else "false"
        cur.execute(
            f"""SELECT c.conname, c.convalidated, c.confmatchtype, {period},
                       cn.nspname || '.' || cr.relname, cr.relkind, cn.nspname, cr.relname,
                       fn.nspname || '.' || fr.relname, fr.relkind, fn.nspname, fr.relname,
                       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(num, ord)
                               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.ord),
                       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(num, ord)
                               JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.ord),
                       ARRAY(SELECT o.nspname::text FROM unnest(c.conpfeqop) WITH ORDINALITY k(op, ord)
                               JOIN pg_operator p ON p.oid = k.op JOIN pg_namespace o ON o.oid = p.oprnamespace
                              ORDER BY k.ord),
                       ARRAY(SELECT p.oprname::text FROM unnest(c.conpfeqop) WITH ORDINALITY k(op, ord)
                               JOIN pg_operator p ON p.oid = k.op ORDER BY k.ord)
                  FROM pg_constraint c
                  JOIN pg_namespace n ON n.oid = c.connamespace
                  JOIN pg_class cr ON cr.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace
                  JOIN pg_class fr ON fr.oid = c.confrelid JOIN pg_namespace fn ON fn.oid = fr.relnamespace
                 WHERE c.contype = 'f' AND c.conparentid = 0 AND {_USER_SCHEMAS}
                 ORDER BY 5, 1"""
        )
        fkeys = cur.fetchall()
        for fk in fkeys:
            name, validated, match, temporal, child, child_kind, child_schema, child_name = fk[:8]
            parent, parent_kind, parent_schema, parent_name, cols, pcols, op_schemas, op_names = fk[8:]
            ops = [_operator(nsp, op) for nsp, op in zip(op_schemas, op_names, strict=True)]
            cur.execute(
                _orphan_query(
                    match,
                    temporal,
                    (child_kind, child_schema, child_name, cols),
                    (parent_kind, parent_schema, parent_name, pcols),
                    ops,
                )
            )
            orphans = _one(cur)
            if orphans:
                result.add(
                    "critical" if validated else "major",
                    f"foreign key {name}: {orphans} row(s) of {child} ({', '.join(cols)}) reference no row of "
                    f"{parent} ({', '.join(pcols)})" + ("" if validated else "; the key is NOT VALID"),
                )
    result.examined = f"every constraint's validation flag, and {len(fkeys)} foreign key(s) queried for orphan rows"


_Relation = tuple[str, str, str, list[str]]  # relkind, schema, name, key columns


def _orphan_query(
    match: str, temporal: bool, child: _Relation, parent: _Relation, ops: list[sql.Composable]
) -> sql.Composed:
    """Count the referencing rows that no referenced row matches, as the key defines matching.

    MATCH SIMPLE exempts a row with any NULL key column; MATCH FULL exempts only an
    all-NULL key, so a partly NULL key (which can never match) counts. Columns are
    compared with the key's own PK = FK operators, not with ``=``, so cross-type keys and
    custom operator classes are judged as PostgreSQL judges them. A temporal key (PG 18,
    ``PERIOD``) needs the referenced rows' periods to cover the referencing one.
    """
    c = [sql.SQL("c.{}").format(sql.Identifier(col)) for col in child[3]]
    p = [sql.SQL("p.{}").format(sql.Identifier(col)) for col in parent[3]]
    present = sql.SQL(" OR " if match == "f" else " AND ").join(sql.SQL("{} IS NOT NULL").format(x) for x in c)
    equal = [sql.SQL("{} {} {}").format(p[i], ops[i], c[i]) for i in range(len(c) - (1 if temporal else 0))]
    child_rel = sql.SQL("ONLY {}" if child[0] == "r" else "{}").format(sql.Identifier(child[1], child[2]))
    parent_rel = sql.SQL("ONLY {}" if parent[0] == "r" else "{}").format(sql.Identifier(parent[1], parent[2]))
    where = sql.SQL(" AND ").join(equal) if equal else sql.SQL("true")
    if temporal:
        matched = sql.SQL("coalesce((SELECT range_agg({pp}) FROM {parent} p WHERE {where}) @> {cp}, false)").format(
            pp=p[-1], parent=parent_rel, where=where, cp=c[-1]
        )
    else:
        matched = sql.SQL("EXISTS (SELECT 1 FROM {parent} p WHERE {where})").format(parent=parent_rel, where=where)
    return sql.SQL("SELECT count(*) FROM {child} c WHERE ({present}) AND NOT {matched}").format(
        child=child_rel, present=present, matched=matched
    )


def _indexes(ctx: _Context, result: CheckResult) -> None:
    """Every valid btree index agrees with itself and with its table (amcheck).

    ``heapallindexed`` makes amcheck also prove that every row of the table has its
    index entry, and ``checkunique`` that a unique index holds no duplicates, which are
    the two ways an index restored physically, or built under a different collation
    library, lies to queries. Without amcheck the rung cannot look, and says so.
    """
    conn = ctx.conn
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
            (AMCHECK,),
        )
        row = cur.fetchone()
        if row is not None:
            schema = row[0]
        else:
            cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (AMCHECK,))
            if cur.fetchone() is None:
                result.not_run = (
                    "the amcheck extension is not available on this server (no amcheck.control in its "
                    "share/extension directory), so no index was verified"
                )
                return
            # In a private schema, inside this rung's transaction: rolled back afterwards,
            # so the verified database ends exactly as the restore left it.
            schema = f"drproof_amcheck_{secrets.token_hex(4)}"
            try:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                cur.execute(
                    sql.SQL("CREATE EXTENSION {} SCHEMA {}").format(sql.Identifier(AMCHECK), sql.Identifier(schema))
                )
            except psycopg2.Error as exc:
                result.not_run = f"could not create the amcheck extension: {_error_text(exc)}"
                return
        cur.execute(
            "SELECT max(p.pronargs) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = 'bt_index_check' AND n.nspname = %s",
            (schema,),
        )
        nargs = _one(cur)
        options = {1: "", 2: ", true", 3: ", true, true"}[min(max(nargs, 1), 3)]
        cur.execute(
            f"""SELECT i.indexrelid, n.nspname, ic.relname, tn.nspname || '.' || t.relname,
                       i.indisvalid AND i.indisready
                  FROM pg_index i
                  JOIN pg_class ic ON ic.oid = i.indexrelid
                  JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
                  JOIN pg_am am ON am.oid = ic.relam
                  JOIN pg_namespace n ON n.oid = ic.relnamespace
                 WHERE am.amname = 'btree' AND ic.relkind = 'i' AND ic.relpersistence <> 't' AND {_USER_SCHEMAS}
                 ORDER BY 2, 3"""
        )
        indexes = cur.fetchall()
        unchecked: list[str] = []
        checked = 0
        for oid, nsp, name, table, usable in indexes:
            label = f"{nsp}.{name} on {table}"
            if not usable:
                result.add(
                    "major",
                    f"index {label} is INVALID (an interrupted CREATE INDEX CONCURRENTLY or REINDEX): "
                    "queries ignore it, and a unique one enforces nothing",
                )
                continue
            cur.execute("SAVEPOINT drproof_index")
            try:
                cur.execute(
                    sql.SQL("SELECT {}.bt_index_check(%s::oid::regclass" + options + ")").format(
                        sql.Identifier(schema)
                    ),
                    (oid,),
                )
                checked += 1
            except psycopg2.Error as exc:
                cur.execute("ROLLBACK TO SAVEPOINT drproof_index")
                # SQLSTATE class XX: data_corrupted, index_corrupted, internal_error.
                if (exc.pgcode or "").startswith("XX"):
                    checked += 1
                    result.add("critical", f"index {label}: amcheck: {_error_text(exc)}")
                else:
                    unchecked.append(f"{label}: {_error_text(exc)}")
            finally:
                cur.execute("RELEASE SAVEPOINT drproof_index")
    how = {1: "", 2: " (heapallindexed)", 3: " (heapallindexed, checkunique)"}[min(max(nargs, 1), 3)]
    result.examined = f"{checked} of {len(indexes)} btree index(es) verified with amcheck's bt_index_check{how}"
    if unchecked:
        result.not_run = f"{len(unchecked)} index(es) could not be verified: " + "; ".join(unchecked)


def _roles_extensions(ctx: _Context, result: CheckResult) -> None:
    """The roles and extensions recorded at backup are all here, unchanged.

    A logical restore into a fresh cluster without ``pg_dumpall --globals-only`` loses
    roles silently (their grants are skipped with a warning), and a server missing an
    extension's files cannot run the functions that use it.
    """
    if ctx.baseline is None:
        result.not_run = "no fingerprint was recorded when the backup was made, so there is nothing to compare with"
        return
    parts = ctx.baseline.parts
    roles_then = {n[len(ROLE_PART) :]: p.digest for n, p in parts.items() if n.startswith(ROLE_PART)}
    exts_then = {
        n[len(EXTENSION_PART) :]: p.digest
        for n, p in parts.items()
        if n.startswith(EXTENSION_PART) and not n.startswith(EXTENSION_OTHER_PARTS)
    }
    if ctx.baseline.scheme == postgres_legacy.SCHEME:
        roles_now = postgres_legacy.role_digests(ctx.conn)
        exts_now = postgres_legacy.extension_digests(ctx.conn)
    else:
        connecting = ctx.component.service.superuser
        comp, scheme = ctx.component, ctx.baseline.scheme
        labels = comp.records(scheme, comp.labels_scheme)
        grantors = comp.records(scheme, comp.attachments_scheme)
        roles = role_parts(ctx.conn, connecting, labels, grantors)
        roles_now = {n[len(ROLE_PART) :]: p.digest for n, p in roles.items()}
        full = comp.records(scheme, comp.full_catalog_scheme)
        exts_now = extension_versions(ctx.conn, full=full)
    if not roles_then and not exts_then:
        # A fingerprint taken before role and extension names were recorded.
        result.not_run = "the backup's fingerprint records no role or extension names (taken by an older drproof)"
        return
    for role in sorted(set(roles_then) | set(roles_now)):
        if role not in roles_now:
            result.add("major", f"role {role} is missing: its logins fail and its grants are gone")
        elif role not in roles_then:
            result.add("minor", f"role {role} exists but was not in the backup")
        elif roles_now[role] != roles_then[role]:
            result.add("major", f"role {role}: attributes, memberships, settings or password differ from the backup")
    for ext in sorted(set(exts_then) | set(exts_now)):
        if ext not in exts_now:
            result.add("major", f"extension {ext} is missing: its types and functions are gone")
        elif ext not in exts_then:
            result.add("minor", f"extension {ext} (version {exts_now[ext][0]}) was not in the backup")
        elif exts_now[ext][1] != exts_then[ext]:
            result.add("minor", f"extension {ext} is at version {exts_now[ext][0]}, not the version at backup")
    result.examined = f"{len(roles_then)} role(s) and {len(exts_then)} extension(s) compared with the backup"


# Rungs that need a read-write transaction (to create amcheck); all others run read-only.
_WRITING: frozenset[CheckName] = frozenset({"indexes"})
_CHECKS: dict[CheckName, Callable[[_Context, CheckResult], None]] = {
    "row_counts": _row_counts,
    "sequences": _sequences,
    "matviews": _matviews,
    "constraints": _constraints,
    "indexes": _indexes,
    "roles_extensions": _roles_extensions,
}


def _operator(schema: str, name: str) -> sql.Composable:
    """``OPERATOR(schema.op)``; an operator name is symbols only, so anything else is refused."""
    if not re.fullmatch(r"[+\-*/<>=~!@#%^&|`?]+", name):
        raise ComponentError(f"unexpected operator name {name!r} in a foreign key")
    return sql.SQL("OPERATOR({}." + name + ")").format(sql.Identifier(schema))


def _one(cur: Any) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0] or 0)


def _error_text(exc: psycopg2.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return (primary or str(exc)).strip().splitlines()[0]
