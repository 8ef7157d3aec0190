"""A ``pg_dump`` backup: custom format (``-Fc``), directory format (``-Fd``) or plain SQL.

What it says about itself: pg_dump's archive header (``pg_restore -l``) records the
database name, when it was created, and the versions of the server and of pg_dump; a
plain SQL dump records the versions in its first comment lines, and its time only as
the file's. The sandbox server is of the version the dump needs: the server's major, or
pg_dump's when pg_dump was newer (its output may use settings older servers refuse).

Owners and grants name roles that a dump of one database does not carry (they are
cluster-wide). Each role the dump refers to is created in the sandbox, without login,
before the load, so the restored objects keep their owners and privileges.

A plain SQL dump is a psql script, and psql's backslash commands run on this host as
drproof's user (``\\!`` runs a shell, ``\\copy``/``\\o``/``\\w`` write files, ``\\connect``
moves the load to another database). A dump another tool wrote is trusted no more than
one an attacker wrote, so it is filtered as it is piped to psql (:class:`_PlainFilter`):
a line outside COPY data starting with a backslash is never sent and stops the load,
except the dump's own ``\\restrict``/``\\unrestrict`` lines, which are dropped; drproof's own
``\\restrict``, with a key the dump cannot know, comes first, so psql itself refuses a
backslash command hidden mid-line or after a fake COPY line inside a quoted string. A psql
without ``\\restrict`` (before 13.22, 14.19, 15.14, 16.10, 17.6 and 18) is refused for
plain dumps: the line filter alone cannot be trusted with them.
The dump must end as pg_dump ends it (``-- PostgreSQL database dump complete``, outside
COPY data): psql takes the end of its input inside COPY as the end of the data, so a dump
cut short would otherwise load partially and pass. A ``pg_dump --create`` dump creates
and connects to its own database, which drproof would not examine: it is refused with
how to restore it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import secrets
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import Field

from engine.components.base import Component
from engine.components.postgres import PostgresComponent, PostgresParams, server_major
from engine.components.tools import capture, run_tool, stream_in
from engine.errors import ComponentError, IntegrityError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import pg_time
from engine.foreign.trees import NOTHING
from engine.streams import CHUNK

_HEADER = {
    "created": re.compile(r"^;\s+Archive created at (.+)$", re.MULTILINE),
    "dbname": re.compile(r"^;\s+dbname: (.+)$", re.MULTILINE),
    "server": re.compile(r"^;\s+Dumped from database version: (.+)$", re.MULTILINE),
    "dumper": re.compile(r"^;\s+Dumped by pg_dump version: (.+)$", re.MULTILINE),
    "format": re.compile(r"^;\s+Format: (.+)$", re.MULTILINE),
}
# TOC lines of ``pg_restore -l``: "<id>; <catalog oid> <oid> <DESCRIPTION> <schema> <name> <owner>".
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (?!DATA )", re.MULTILINE)
_TOC_DATA = re.compile(r"^\d+; \d+ \d+ (?:TABLE DATA|BLOBS|BLOB|LARGE OBJECT) ", re.MULTILINE)
_PLAIN_SERVER = re.compile(r"^-- Dumped from database version (\S+)", re.MULTILINE)
_PLAIN_DUMPER = re.compile(r"^-- Dumped by pg_dump version (\S+)", re.MULTILINE)
# Role names as pg_dump writes them: an identifier, or a double-quoted one.
_ROLE = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ROLE_USES = [
    re.compile(rb"^ALTER .+ OWNER TO " + _ROLE.encode() + rb";", re.MULTILINE),
    re.compile(rb"^GRANT .+ TO " + _ROLE.encode() + rb"( WITH GRANT OPTION)?;", re.MULTILINE),
    re.compile(rb"^ALTER DEFAULT PRIVILEGES FOR ROLE " + _ROLE.encode(), re.MULTILINE),
    re.compile(rb"^ALTER DEFAULT PRIVILEGES .* TO " + _ROLE.encode() + rb";", re.MULTILINE),
    re.compile(rb"^REVOKE .+ FROM " + _ROLE.encode() + rb";", re.MULTILINE),
]
_BUILTIN_ROLES = {"public", "postgres", "current_user", "session_user", "current_role"}
MAX_ROLES = 10_000


class PgDumpParams(ForeignParams):
    database: str | None = Field(
        default=None, description="Database to restore into; default: the name the dump records (plain SQL: `app`)."
    )
    jobs: int = Field(default=2, ge=1, le=64, description="Parallel pg_restore jobs (custom and directory formats).")


class PgDump(ForeignFormat):
    name: ClassVar[str] = "pg_dump"
    kinds: ClassVar[tuple[str, ...]] = ("postgres",)
    server: ClassVar[str | None] = "postgres"
    Params: ClassVar[type[ForeignParams]] = PgDumpParams
    description: ClassVar[str] = "A pg_dump file: custom (-Fc), directory (-Fd) or plain SQL (optionally gzipped)."

    params: PgDumpParams

    def inspect(self, local: Path) -> ForeignFacts:
        shape = _shape(local)
        if shape == "plain":
            return self._inspect_plain(local)
        header = _archive_header(local)
        found = {k: (m.group(1).strip() if (m := rx.search(header)) else None) for k, rx in _HEADER.items()}
        _require_data(local, len(_TOC_DATA.findall(header)))
        taken, taken_from = _created(found["created"]), "the dump's header (Archive created at)"
        if taken is None:
            taken, taken_from = _mtime(local), "the file's modification time"
        facts = self._facts(local, shape, found["server"], found["dumper"], found["dbname"], taken, taken_from)
        facts.details["tables"] = len(_TOC_TABLE.findall(header))
        return facts

    def _inspect_plain(self, local: Path) -> ForeignFacts:
        with _plain_read_errors(local), _open_plain(local) as fh:
            head = fh.read(64 * 1024).decode("utf-8", "replace")
        server, dumper = _PLAIN_SERVER.search(head), _PLAIN_DUMPER.search(head)
        if server is None and "PostgreSQL database dump" not in head:
            raise ComponentError(f"{local}: neither a pg_dump archive nor a plain SQL dump written by pg_dump")
        if _CREATE_DATABASE.search(head):
            raise ComponentError(_created_database(local))
        return self._facts(
            local,
            "plain",
            server.group(1) if server else None,
            dumper.group(1) if dumper else None,
            None,
            _mtime(local),
            "the file's modification time (a plain SQL dump records none)",
        )

    def _facts(
        self,
        local: Path,
        shape: str,
        server: str | None,
        dumper: str | None,
        dbname: str | None,
        taken: datetime,
        taken_from: str,
    ) -> ForeignFacts:
        majors = [m for m in (_major(server), _major(dumper)) if m is not None]
        return ForeignFacts(
            taken_at=taken,
            taken_at_from=taken_from,
            server_version=f"PostgreSQL {server}" if server else None,
            server_major=max(majors) if majors else None,
            size_bytes=_size(local),
            details={
                "format": shape,
                "database": self.params.database or dbname or "app",
                "dumped_from": server,
                "dumped_by": dumper,
            },
        )

    def component_params(self, kind: type[Component], facts: ForeignFacts) -> Any:
        return PostgresParams.model_construct(database=str(facts.details["database"]), jobs=self.params.jobs)

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        if not isinstance(component, PostgresComponent):
            raise ComponentError(f"a pg_dump backup restores into a postgres component, not a {component.name}")
        svc = component.service
        svc.ensure_running()
        env = svc.tool_env()
        shape = str(facts.details["format"])
        roles = self._referenced_roles(component, local, shape, env)
        created = _create_roles(component, roles)
        _psql(component, f'CREATE DATABASE "{component.db.replace(chr(34), chr(34) * 2)}"', "postgres")
        if shape == "plain":
            psql = svc.tool("psql")
            key = _restrict_key(capture([*psql, "--version"], env, "psql --version"), local)
            with _open_plain(local) as fh:
                plain = _PlainFilter(fh, local, key)
                stream_in(
                    [*psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", svc.tool_dsn(component.db)],
                    env,
                    io.BufferedReader(plain, CHUNK),
                    f"psql loading the plain dump {local.name} into {component.instance!r}",
                )
            _require_data(local, plain.data)
            _require_tables(component, local, plain.tables)
        else:
            run_tool(
                [
                    *svc.tool("pg_restore"),
                    "--exit-on-error",
                    f"--jobs={self.params.jobs}",
                    "-d",
                    svc.tool_dsn(component.db),
                    str(local),
                ],
                env,
                f"pg_restore of {local.name} into {component.instance!r}",
            )
            _require_tables(component, local, int(facts.details.get("tables") or 0))
        return {"format": shape, "database": component.db, "roles_created": sorted(created), "jobs": self.params.jobs}

    def _referenced_roles(self, component: PostgresComponent, local: Path, shape: str, env: dict[str, str]) -> set[str]:
        if shape == "plain":
            with _plain_read_errors(local), _open_plain(local) as fh:
                return _roles_in(fh)
        script = capture(
            [*component.service.tool("pg_restore"), "--schema-only", "-f", "-", str(local)],
            env,
            f"reading the owners and grants in {local.name}",
        )
        return _roles_in(io.BytesIO(script.encode("utf-8")))


def _shape(local: Path) -> str:
    if local.is_dir():
        if not (local / "toc.dat").is_file():
            raise ComponentError(f"{local}: a directory, but not a pg_dump directory-format dump (no toc.dat)")
        return "directory"
    with open(local, "rb") as fh:
        magic = fh.read(5)
    return "custom" if magic == b"PGDMP" else "plain"


def _open_plain(local: Path) -> IO[bytes]:
    with open(local, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(local, "rb")  # type: ignore[return-value]
    return open(local, "rb")


_CREATE_DATABASE = re.compile(r"^CREATE DATABASE ", re.MULTILINE)
_COPY_START = re.compile(rb"^COPY .+ FROM stdin;\r?\n?$")
_RESTRICT = re.compile(rb"^\\(un)?restrict [A-Za-z0-9]+\s*$")
_TRAILER = b"-- PostgreSQL database dump complete"


def _created_database(local: Path) -> str:
    return (
        f"{local}: a dump made with `pg_dump --create` (it creates its own database and connects to it with "
        "\\connect), which drproof would not examine: restore tests load a dump into a database drproof creates. "
        "Take the dump without --create (name the database with `database:`), or in the custom format "
        "(`pg_dump -Fc`), whose database name drproof reads"
    )


@contextlib.contextmanager
def _plain_read_errors(local: Path) -> Iterator[None]:
    """A damaged or cut-short gzip file is a domain error naming the file, not a traceback."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ComponentError(f"{local}: the gzip file is damaged or cut short ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise ComponentError(f"{local}: cannot read the dump: {exc}") from None


def _restrict_key(version: str, local: Path) -> str:
    """A key for psql's ``\\restrict``, or a refusal where this psql has none.

    Why a refusal: the line filter judges only the start of each line, and a hostile dump
    can hide a line that looks like ``COPY ... FROM stdin;`` inside a dollar-quoted body, so
    that the filter takes what follows for COPY data while psql reads commands (found by
    the helper who wrote the filter). Only psql's own ``\\restrict`` closes that; without
    it, a plain dump could run commands on this host as drproof's user.
    """
    if not _has_restrict(version):
        raise ComponentError(
            f"{local}: a plain SQL dump is a psql script, and this psql ({version.strip()}) lacks \\restrict, "
            "which keeps a dump's backslash commands from running on this host; use psql 13.22, 14.19, 15.14, "
            "16.10, 17.6, 18 or later, or a custom-format dump (`pg_dump -Fc`)"
        )
    return secrets.token_hex(16)


def _has_restrict(version: str) -> bool:
    """Whether this psql has ``\\restrict`` (added in 13.22, 14.19, 15.14, 16.10, 17.6 and 18)."""
    m = re.search(r"\(PostgreSQL\) (\d+)\.(\d+)", version)
    if m is None:
        return False
    major, minor = int(m.group(1)), int(m.group(2))
    return major >= 18 or minor >= {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}.get(major, 1 << 30)


class _PlainFilter(io.RawIOBase):
    """A plain dump as psql may read it: no backslash command sent, and the end proven to be pg_dump's.

    Lines are read at most CHUNK bytes at a time (a COPY row may be huge); only the start
    of a line is judged. Outside COPY data a line starting with a backslash stops the
    load (an exception here kills psql before it reads the line), save the dump's own
    ``\\restrict``/``\\unrestrict``, dropped in favour of drproof's key. At the end the
    trailer must have been seen with nothing but comments after it, outside COPY data.
    """

    def __init__(self, source: IO[bytes], local: Path, key: str | None) -> None:
        self._source = source
        self._local = local
        self._out = f"\\restrict {key}\n".encode() if key else b""
        self._line = 0
        self._at_start = True
        self._in_copy = False
        self._trailer = False
        self._done = False
        self.tables = 0  # CREATE TABLE statements outside COPY data
        self.data = 0  # COPY, INSERT and large-object statements: rows or objects the dump carries

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._out and not self._done:
            with _plain_read_errors(self._local):
                piece = self._source.readline(CHUNK)
            if not piece:
                self._finish()
            else:
                self._out = self._judged(piece)
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _judged(self, piece: bytes) -> bytes:
        start, self._at_start = self._at_start, piece.endswith(b"\n")
        if not start:
            return piece
        self._line += 1
        if self._in_copy:
            self._in_copy = piece.rstrip(b"\r\n") != b"\\."
            return piece
        text = piece.lstrip(b" \t")
        if text.startswith(b"\\"):
            if _RESTRICT.match(text):
                return b""
            raise IntegrityError(self._refusal(text))
        if text.startswith(b"CREATE DATABASE "):
            raise ComponentError(_created_database(self._local))
        if text.startswith(b"CREATE TABLE "):
            self.tables += 1
        if _COPY_START.match(piece):
            self._in_copy = True
            self.data += 1
        elif text.startswith((b"INSERT INTO ", b"SELECT pg_catalog.lo_create(")):
            self.data += 1
        if piece.startswith(_TRAILER):
            self._trailer = True
        elif text.strip() and not text.startswith(b"--"):
            self._trailer = False  # SQL after the trailer: not where pg_dump ends
        return piece

    def _refusal(self, text: bytes) -> str:
        command = text.split(None, 1)[0].decode("utf-8", "replace")[:40]
        if command in ("\\connect", "\\c"):
            return (
                f"{self._local} line {self._line}: {command} moves the load to another database; "
                + _created_database(self._local).split(": ", 1)[1]
            )
        return (
            f"{self._local} line {self._line}: the psql command {command!r} outside COPY data; psql would run it on "
            "this host, as drproof's user (a shell, a file written or read, another connection). pg_dump writes "
            "none: refused, the dump was not loaded further"
        )

    def _finish(self) -> None:
        self._done = True
        if self._in_copy:
            raise IntegrityError(
                f"{self._local}: cut short inside COPY data (line {self._line}): the dump is not whole"
            )
        if not self._trailer:
            raise IntegrityError(
                f"{self._local}: cut short: it does not end with pg_dump's `{_TRAILER.decode()}` (line {self._line} is "
                "the last): the dump is not whole"
            )


def _require_data(local: Path, entries: int) -> None:
    """A dump that carries no row and no large object proves nothing once restored: never a pass.

    pg_dump writes a data entry (``COPY``, or ``INSERT`` with ``--inserts``) for every table
    it dumps with data, even an empty one, so none at all means a dump of an empty database
    or one made with ``--schema-only``.
    """
    if not entries:
        raise ComponentError(
            f"{local}: {NOTHING}: the dump carries no table data and no large object (a dump of an empty "
            "database, or one made with --schema-only): a restore of it proves nothing about your data"
        )


def _require_tables(component: PostgresComponent, local: Path, dumped: int) -> None:
    """A load that leaves no table where the dump created some went somewhere else: never a pass."""
    if not dumped:
        return
    conn = component.connect(component.db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%'"
            )
            row = cur.fetchone()
    finally:
        conn.close()
    if not row or not row[0]:
        raise IntegrityError(
            f"{local}: the dump creates {dumped} table(s) but database {component.db!r} has none after the load"
        )


def _archive_header(local: Path) -> str:
    """``pg_restore -l`` of the archive, with the newest pg_restore here (it reads every older format)."""
    from engine.childenv import tool_environment
    from engine.runtime.local import postgres_bin_dir

    try:
        return capture([str(postgres_bin_dir() / "pg_restore"), "-l", str(local)], tool_environment(), "pg_restore -l")
    except ComponentError as exc:
        raise ComponentError(f"{local}: not a pg_dump archive this drproof can read ({exc})") from None


def _created(text: str | None) -> datetime | None:
    """pg_dump's "2026-12-05 02:00:12 UTC" (local time with a zone abbreviation); None when unsure."""
    return pg_time(text)


def _mtime(local: Path) -> datetime:
    return datetime.fromtimestamp(local.stat().st_mtime, UTC)


def _major(version: str | None) -> int | None:
    return server_major(f"PostgreSQL {version}") if version else None


def _size(local: Path) -> int:
    if local.is_dir():
        return sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    return local.stat().st_size


def _roles_in(stream: IO[bytes]) -> set[str]:
    """Every role an owner, grant or default-privilege line of a dump script names."""
    found: set[str] = set()
    for line in stream:
        if not line.startswith((b"ALTER ", b"GRANT ", b"REVOKE ")):
            continue
        for rx in _ROLE_USES:
            m = rx.match(line)
            if m:
                name = m.group(1).decode("utf-8", "replace")
                name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
                if name.lower() not in _BUILTIN_ROLES:
                    found.add(name)
        if len(found) > MAX_ROLES:
            raise ComponentError(f"the dump names more than {MAX_ROLES} roles; that is not a dump of one database")
    return found


def _create_roles(component: PostgresComponent, roles: set[str]) -> set[str]:
    """Create, without login, each role the dump refers to that the sandbox lacks."""
    conn = component.connect("postgres")
    conn.autocommit = True
    created: set[str] = set()
    try:
        with conn.cursor() as cur:
            for role in sorted(roles):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE ROLE "{role.replace(chr(34), chr(34) * 2)}" NOLOGIN')
                    created.add(role)
    finally:
        conn.close()
    return created


def _psql(component: PostgresComponent, sql: str, dbname: str) -> None:
    conn = component.connect(dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()
