"""A ``pg_dump`` backup: custom format (``-Fc``), directory format (``-Fd``) or plain SQL.

What it says about itself: pg_dump's archive header (``pg_restore -l``) records the
database name, when it was created, and the versions of the server and of pg_dump; a
plain SQL dump records the versions in its first comment lines, and its time only as
the file's. The sandbox server is of the version the dump needs: the server's major, or
pg_dump's when pg_dump was newer (its output may use settings older servers refuse).

Owners and grants name roles that a dump of one database does not carry (they are
cluster-wide). Each role the dump refers to is created in the sandbox, without login,
before the load, so the restored objects keep their owners and privileges.
"""

from __future__ import annotations

import gzip
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import Field

from engine.components.base import Component
from engine.components.postgres import PostgresComponent, PostgresParams, server_major
from engine.components.tools import capture, run_tool, stream_in
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import pg_time

_HEADER = {
    "created": re.compile(r"^;\s+Archive created at (.+)$", re.MULTILINE),
    "dbname": re.compile(r"^;\s+dbname: (.+)$", re.MULTILINE),
    "server": re.compile(r"^;\s+Dumped from database version: (.+)$", re.MULTILINE),
    "dumper": re.compile(r"^;\s+Dumped by pg_dump version: (.+)$", re.MULTILINE),
    "format": re.compile(r"^;\s+Format: (.+)$", re.MULTILINE),
}
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
        taken, taken_from = _created(found["created"]), "the dump's header (Archive created at)"
        if taken is None:
            taken, taken_from = _mtime(local), "the file's modification time"
        return self._facts(local, shape, found["server"], found["dumper"], found["dbname"], taken, taken_from)

    def _inspect_plain(self, local: Path) -> ForeignFacts:
        with _open_plain(local) as fh:
            head = fh.read(64 * 1024).decode("utf-8", "replace")
        server, dumper = _PLAIN_SERVER.search(head), _PLAIN_DUMPER.search(head)
        if server is None and "PostgreSQL database dump" not in head:
            raise ComponentError(f"{local}: neither a pg_dump archive nor a plain SQL dump written by pg_dump")
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
            with _open_plain(local) as fh:
                stream_in(
                    [*svc.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", svc.tool_dsn(component.db)],
                    env,
                    fh,
                    f"psql loading the plain dump {local.name} into {component.instance!r}",
                )
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
        return {"format": shape, "database": component.db, "roles_created": sorted(created), "jobs": self.params.jobs}

    def _referenced_roles(self, component: PostgresComponent, local: Path, shape: str, env: dict[str, str]) -> set[str]:
        if shape == "plain":
            with _open_plain(local) as fh:
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
