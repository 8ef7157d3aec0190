"""PostgreSQL fingerprint scheme 1, kept to compare backups taken by earlier drproof versions.

Scheme 1 covered each table's rows (sorted by their text) and columns, one ``catalog``
part (indexes, constraints, views and table privileges), one ``sequences`` part, the
roles' main attributes and the extensions. A backup fingerprinted that way is compared
by computing exactly those parts again; what it did not record (functions, triggers,
policies, large objects, owners, comments, role memberships and passwords, database
settings, ...) cannot be compared for it, which a restore of such a backup says.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from engine.components.base import WORKLOAD_MARK
from engine.fingerprint import Part, PartHasher
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2.extensions
else:
    psycopg2 = lazy("psycopg2")

SCHEME = "1"
NOT_COVERED = (
    "the backup's fingerprint (scheme 1, from an earlier drproof) covers rows, indexes, constraints, views, table "
    "grants, sequence values, role attributes and extensions only; functions, triggers, policies, large objects, "
    "owners, comments, role memberships and passwords and database settings were not recorded, so they are not compared"
)
ROLE_PART = "role "
EXTENSION_PART = "extension "


def database_parts(conn: psycopg2.extensions.connection, tables: list[tuple[str, str]]) -> dict[str, Part]:
    parts = {f"table {schema}.{table}": _table_part(conn, schema, table) for schema, table in tables}
    parts["catalog"] = _catalog_part(conn)
    parts["sequences"] = _sequences_part(conn)
    parts.update(
        {
            EXTENSION_PART + n: Part(digest=d, count=1, unit="extensions")
            for n, (_v, d) in extension_digests(conn).items()
        }
    )
    return parts


def cluster_parts(admin: psycopg2.extensions.connection) -> dict[str, Part]:
    h = PartHasher("roles")
    with admin.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolsuper, rolcanlogin, rolinherit, rolcreatedb, rolcreaterole "
            "FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
        )
        for row in cur.fetchall():
            h.add("\0".join(str(v) for v in row).encode())
    parts = {"roles": h.part()}
    parts.update({ROLE_PART + n: Part(digest=d, count=1, unit="roles") for n, d in role_digests(admin).items()})
    return parts


def role_digests(conn: psycopg2.extensions.connection) -> dict[str, str]:
    """SHA-256 of each role's attributes, by role name: the same record the "roles" part hashes."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolsuper, rolcanlogin, rolinherit, rolcreatedb, rolcreaterole "
            "FROM pg_roles WHERE rolname !~ '^pg_'"
        )
        return {row[0]: hashlib.sha256("\0".join(str(v) for v in row).encode()).hexdigest() for row in cur.fetchall()}


def extension_digests(conn: psycopg2.extensions.connection) -> dict[str, tuple[str, str]]:
    """(version, SHA-256 of name and version) of each extension installed in the database, by name."""
    with conn.cursor() as cur:
        cur.execute("SELECT extname, extversion FROM pg_extension")
        return {
            name: (version, hashlib.sha256(f"{name}\0{version}".encode()).hexdigest())
            for name, version in cur.fetchall()
        }


def _table_part(conn: psycopg2.extensions.connection, schema: str, table: str) -> Part:
    h = PartHasher("rows")
    ident = f'"{schema}"."{table}"'
    with conn.cursor() as cur:
        cur.execute(
            """SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                 || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
               FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
            (ident,),
        )
        row = cur.fetchone()
        h.add(("columns: " + (row[0] if row and row[0] else "")).encode(), count=0)
    with conn.cursor(name=f"fp_{abs(hash(ident))}") as cur:
        cur.itersize = 5000
        cur.execute(f'SELECT r FROM (SELECT ROW(t.*)::text COLLATE "C" AS r FROM ONLY {ident} t) s ORDER BY r')
        for (text,) in cur:
            h.add(text.encode("utf-8"))
    return h.part()


def _catalog_part(conn: psycopg2.extensions.connection) -> Part:
    h = PartHasher("objects")
    with conn.cursor() as cur:
        cur.execute(
            """SELECT kind, name, def FROM (
                 SELECT 'index' AS kind, schemaname || '.' || indexname AS name, indexdef AS def FROM pg_indexes
                   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                 UNION ALL
                 SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
                   FROM pg_constraint WHERE connamespace NOT IN
                     (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))
                 UNION ALL
                 SELECT 'view', schemaname || '.' || viewname, definition FROM pg_views
                   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                 UNION ALL
                 SELECT 'grant', c.oid::regclass::text, coalesce(c.relacl::text, '')
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               ) o"""
        )
        for kind, name, definition in sorted(cur.fetchall()):
            if WORKLOAD_MARK in name:
                continue
            h.add(f"{kind}\0{name}\0{definition}".encode())
    return h.part()


def _sequences_part(conn: psycopg2.extensions.connection) -> Part:
    h = PartHasher("sequences")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        for schema, name, last in cur.fetchall():
            h.add(f"{schema}.{name}\0{last}".encode())
    return h.part()
