"""Logical PostgreSQL restores that never leave the live database worse than they found it.

``pg_restore --clean --create`` drops the live database first and then loads the dump;
a dump that turns out damaged, or that this server cannot load, leaves an empty or
half-built database behind (measured on a PostgreSQL 15 server: every table 0 rows,
then a traceback). So drproof restores beside the live database instead:

1. **Side database.** The dump's own ``CREATE DATABASE`` (encoding, locale, template)
   is run under a private name, ``drproof_restore_<random>``; the data go in with
   ``pg_restore --exit-on-error`` (``-j`` for directory-format dumps); then the
   database's owner, comments, privileges and settings (the entries ``--create``
   would restore) are applied to it.
2. **Proof.** The side database is fingerprinted and compared with the fingerprint
   taken at backup time, part for part (tables, catalog, sequences, extensions). Any
   difference, or any failure before this point, drops the side database and leaves
   the live one exactly as it was.
3. **Swap.** New connections to the live database are refused for the moment of the
   swap (``ALLOW_CONNECTIONS false``), its sessions are ended, it is renamed aside and
   the side database takes its name in one transaction (a restore killed in between
   leaves the live database where it was), and only then is the old one dropped. A
   rename that fails puts everything back.

Roles are cluster-wide, and the side database needs them to exist (owners, grants). So
roles the backup has and the server lacks are created first: additive, no existing role
is touched, and they are dropped again if the restore is refused. Attributes, passwords
and memberships of roles (``ALTER ROLE``, ``GRANT role``) are set from the backup only
after the swap, with the password of the role drproof connects as kept
(``keep_own_password``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.components.postgres_catalog import USER_NS
from engine.errors import ComponentError
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2
    import psycopg2.extensions
else:
    psycopg2 = lazy("psycopg2")

log = logging.getLogger(__name__)

SIDE_PREFIX = "drproof_restore_"
REPLACED_PREFIX = "drproof_replaced_"

_STATEMENT_HEAD = re.compile(r"^(?:CREATE|ALTER|COMMENT|GRANT|REVOKE|SECURITY LABEL)\b")
# pg_dump's header of each entry: "-- Name: shop; Type: DATABASE; Schema: -; Owner: bob".
_ENTRY = re.compile(r"^-- Name: (.*); Type: ([A-Z ]+); Schema: ")
_RESTRICT = re.compile(r"^\\restrict (\S+)$")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ident_pattern(name: str) -> str:
    """How pg_dump may have written ``name``: quoted, or bare when it is a plain identifier."""
    forms = [re.escape(quote_ident(name))]
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        forms.append(re.escape(name) + r"(?![A-Za-z0-9_$])")
    return "(?:" + "|".join(forms) + ")"


def _is_database_entry(name: str, kind: str) -> bool:
    """The entries ``pg_restore --create`` restores and a restore into an existing database does not."""
    return kind in ("DATABASE", "DATABASE PROPERTIES") or (
        name.startswith("DATABASE ") and kind in ("COMMENT", "ACL", "SECURITY LABEL")
    )


@dataclass(frozen=True)
class DatabaseSql:
    create: str  # CREATE DATABASE under the side name
    properties: str  # owner, comment, privileges, settings: applied once the data are in


_CREATED = re.compile(r'^CREATE DATABASE ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)[ ;]', re.MULTILINE)


def dumped_name(script: str) -> str | None:
    """The name of the database the dump was taken from, as its ``CREATE DATABASE`` says."""
    found = _CREATED.search(script)
    if found is None:
        return None
    name = found.group(1)
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def database_sql(script: str, side: str) -> DatabaseSql:
    """The database-level statements of a dump, renamed from the dumped database's name to ``side``.

    The dumped name, not the target's: a restore into a database of another name (a
    scratch server's ``shop_scratch`` from a backup of ``shop``) ran the dump's own
    ``CREATE DATABASE shop`` unrenamed, left that database behind and loaded nothing
    (found by review).

    ``script`` is ``pg_restore --create --schema-only -f -`` output (read from the
    archive's table of contents alone, so from a stream it costs the head of the dump).
    Only the entries of the database itself are kept, with the ``SET`` lines before
    them. Only the first ``DATABASE <name>`` of a statement line is renamed, so text that
    mentions the name keeps it. psql meta-commands (``\\connect`` and the like) are
    dropped, except the dump's ``\\restrict`` guard, which is put around the whole
    script so nothing in a name or comment can run one.
    """
    live = dumped_name(script)
    if live is None:
        raise ComponentError("the dump holds no CREATE DATABASE statement; it is not a pg_dump of one database")
    target = re.compile(r"\bDATABASE " + _ident_pattern(live))
    create: list[str] = []
    properties: list[str] = []
    key = None
    keep = True  # the preamble (SET lines) is kept
    for line in script.splitlines():
        if line.startswith("\\"):
            match = _RESTRICT.match(line)
            key = key or (match.group(1) if match else None)
            continue
        entry = _ENTRY.match(line)
        if entry:
            keep = _is_database_entry(entry.group(1), entry.group(2))
        if not keep:
            continue
        if _STATEMENT_HEAD.match(line):
            line = target.sub("DATABASE " + quote_ident(side), line, count=1)
        (create if line.startswith("CREATE DATABASE ") else properties).append(line)
    if not create:
        raise ComponentError(f"the dump holds no CREATE DATABASE for {live!r}; it is not a pg_dump of that database")
    if key is not None:
        properties = [f"\\restrict {key}", *properties, f"\\unrestrict {key}"]
    return DatabaseSql("\n".join(create) + "\n", "\n".join(properties) + "\n")


_CREATE_ROLE = re.compile(rb"^CREATE ROLE (?:\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_$]*);$", re.MULTILINE)
_CREATE_TABLESPACE = re.compile(rb"^CREATE TABLESPACE [^\n]*;$", re.MULTILINE)


_TABLESPACE_AT = re.compile(
    r"""^CREATE TABLESPACE ("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*) .*LOCATION '((?:[^']|'')*)';$""", re.MULTILINE
)


def tablespace_locations(globals_sql: bytes) -> dict[str, str]:
    """Each tablespace ``creation_only`` creates, by name: the directory ``pg_dumpall`` recorded for it.

    Why: a server rebuilt on the worst day lacks the tablespaces; the restore creates them
    there, so the room check must look at that directory's filesystem, not count their
    tables against the data directory's (found by review: a false refusal on a small
    system disk, and the tablespace's own disk unchecked).
    """
    found: dict[str, str] = {}
    for match in _TABLESPACE_AT.finditer(globals_sql.decode("utf-8", "replace")):
        name, location = match.group(1), match.group(2).replace("''", "'")
        found[name[1:-1].replace('""', '"') if name.startswith('"') else name] = location
    return found


def creation_only(globals_sql: bytes) -> bytes:
    """Of ``pg_dumpall --globals-only`` output, what only adds: CREATE ROLE and CREATE TABLESPACE.

    Run before the side database is loaded, so its owners and grants resolve; every
    other statement (attributes, passwords, memberships, settings) waits for the swap.
    """
    lines = [m.group(0) for m in _CREATE_ROLE.finditer(globals_sql)]
    lines += [m.group(0) for m in _CREATE_TABLESPACE.finditer(globals_sql)]
    return b"SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n" + b"\n".join(lines) + b"\n"


# Anything a restore could replace: relations of every kind, routines, large objects.
_HOLDS_OBJECTS = f"""
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_NS})
    OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_NS})
    OR EXISTS (SELECT 1 FROM pg_largeobject_metadata)
"""


def database_exists(conn: psycopg2.extensions.connection, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def holds_objects(conn: psycopg2.extensions.connection) -> bool:
    """Whether the connected database holds anything a restore would replace."""
    with conn.cursor() as cur:
        cur.execute(_HOLDS_OBJECTS)
        row = cur.fetchone()
    return bool(row and row[0])


def role_names(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles")
        return {row[0] for row in cur.fetchall()}


def warn_of_leftovers(conn: psycopg2.extensions.connection) -> list[str]:
    """Name the side databases an earlier restore left (killed while loading): each a full copy.

    Not dropped here: another restore may be loading one right now. Only those nobody is
    connected to are named. Found by review: a restore killed with SIGKILL left one for
    ever, and nothing ever mentioned it.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT d.datname FROM pg_database d WHERE starts_with(d.datname, %s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid) ORDER BY 1",
            (SIDE_PREFIX,),
        )
        names = [row[0] for row in cur.fetchall()]
    if names:
        log.warning(
            "this server holds %d database(s) left by interrupted restores, each a full copy: %s; drop them "
            "(DROP DATABASE) once no restore is running",
            len(names),
            ", ".join(names),
        )
    return names


def side_name() -> str:
    return SIDE_PREFIX + secrets.token_hex(6)


def drop_database(conn: psycopg2.extensions.connection, name: str) -> None:
    """Drop drproof's own database ``name`` (a side or replaced copy) and its sessions; a no-op if it does not exist.

    A template database cannot be dropped: found by review, a restore of a database with
    ``IS_TEMPLATE true`` kept the database it replaced as a full copy under
    ``drproof_replaced_*``, and a refused one silently kept its side copy, which had the
    flag once the database's properties were applied. The copy is un-templated first;
    only copies are (the restored database keeps the flag the backup recorded).
    """
    if not name.startswith((SIDE_PREFIX, REPLACED_PREFIX)):
        raise ValueError(f"drop_database drops only drproof's own copies, not {name!r}")
    with conn.cursor() as cur:
        cur.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,))
        row = cur.fetchone()
        if row is not None and row[0]:
            cur.execute(f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false")
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        if conn.server_version >= 130000:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        else:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


def refuse_prepared(conn: psycopg2.extensions.connection, live: str) -> None:
    """Refuse, before anything is loaded, a live database that holds prepared transactions.

    They keep it in use until committed or rolled back, so the swap could never rename it:
    found by review, a restore spent two minutes refusing every new connection to it, then
    failed. Nothing is changed by the refusal.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_prepared_xacts WHERE database = %s", (live,))
        row = cur.fetchone()
    count = int(row[0]) if row else 0
    if count:
        raise ComponentError(
            f"cannot restore database {live!r}: it holds {count} prepared transaction(s) (pg_prepared_xacts), which "
            "keep it in use; COMMIT PREPARED or ROLLBACK PREPARED them first. Nothing was changed"
        )


def drop_roles(conn: psycopg2.extensions.connection, names: set[str]) -> list[str]:
    """Drop roles this restore created; return those that could not be dropped."""
    kept = []
    for name in sorted(names):
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
        except psycopg2.Error:
            kept.append(name)
    return kept


_RENAME_ATTEMPTS = 20


def swap(conn: psycopg2.extensions.connection, live: str, side: str) -> str | None:
    """Give ``side`` the name ``live``; return the name the old database was dropped under.

    The old database is renamed aside and ``side`` renamed in within one transaction, and
    the old one dropped only after it committed; any failure on the way rolls back and
    re-allows connections. Returns None when there was no live database; if dropping the
    old one fails after a successful swap, it is kept under that name and a warning says so.
    """
    replaced = REPLACED_PREFIX + secrets.token_hex(6)
    with conn.cursor() as cur:
        cur.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (live,))
        row = cur.fetchone()
    if row is None:
        _execute(conn, f"ALTER DATABASE {quote_ident(side)} RENAME TO {quote_ident(live)}")
        return None
    allowed = bool(row[0])
    _execute(conn, f"ALTER DATABASE {quote_ident(live)} WITH ALLOW_CONNECTIONS false")
    try:
        _swap_names(conn, live, side, replaced)
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            _execute(conn, f"ALTER DATABASE {quote_ident(live)} WITH ALLOW_CONNECTIONS {str(allowed).lower()}")
        raise
    try:
        drop_database(conn, replaced)
    except psycopg2.Error as exc:
        # The restore itself succeeded; what is left is space, and the operator's to free.
        log.warning(
            "restored %r; the database it replaced could not be dropped and is kept as %r (%s): drop it when "
            "you no longer need it",
            live,
            replaced,
            " ".join(str(exc).split()),
        )
    return replaced


def _swap_names(conn: psycopg2.extensions.connection, live: str, side: str, replaced: str) -> None:
    """Rename ``live`` to ``replaced`` and ``side`` to ``live`` in one transaction, ending the sessions that hold it.

    Why one transaction: found by review, a restore killed (SIGKILL, OOM, a lost SSH
    session) between the two renames, each committed on its own, left no database under
    the live name at all, the data under a random ``drproof_replaced_`` name that nothing
    ever mentioned again, and the next backup failing on a database that "does not
    exist". A transaction the server rolls back when its client dies leaves the live
    database where it was. Sessions that reconnect make a rename fail: it is retried.
    """
    for attempt in range(_RENAME_ATTEMPTS):
        _execute(conn, "BEGIN")
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (live,),
                )
            _execute(conn, f"ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(replaced)}")
            _execute(conn, f"ALTER DATABASE {quote_ident(side)} RENAME TO {quote_ident(live)}")
            _execute(conn, "COMMIT")
            return
        except BaseException as exc:
            with contextlib.suppress(psycopg2.Error):
                _execute(conn, "ROLLBACK")
            if not isinstance(exc, psycopg2.errors.ObjectInUse) or attempt == _RENAME_ATTEMPTS - 1:
                raise
        time.sleep(0.1 * (attempt + 1))


def _execute(conn: psycopg2.extensions.connection, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
