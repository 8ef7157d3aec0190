"""A whole PostgreSQL cluster from another tool's physical backup, recovered in a sandbox.

A base backup (``pg_basebackup``, pgBackRest) brings its own cluster: its roles, its
passwords, its ``pg_hba.conf``, its ``postgresql.conf``. drproof holds none of those
passwords, and must never let a sandbox act on anything of production's. So, after the
backup's files are in the sandbox's fresh data directory and before the server starts:

- ``pg_hba.conf`` is replaced by the sandbox's own (peer on the socket, SCRAM on
  loopback); the backup's is kept beside it as ``pg_hba.conf.from-backup``;
- lines of ``postgresql.conf`` that point outside the data directory or at production's
  certificates (``data_directory``, ``hba_file``, ``include``, ``ssl``, ...) are
  commented out; a backup without one (Debian keeps it in /etc) gets an empty one;
- any symlink in the restored files (a WAL directory or tablespace elsewhere) refuses
  the restore: the sandbox would write through it into another cluster's files;
- the cluster is recovered by PostgreSQL in single-user mode, which needs no login, and
  in the same session the role drproof connects as gets this sandbox's random password
  (created if the backup has no such role): only then can drproof log in, as after any
  restore of its own.

That recovery is the one a base backup's ``backup_label`` asks for: from the backup's
checkpoint through every WAL segment in ``pg_wal`` (the backup's own, or those a format
copies there from an archive), without a new timeline. Why not an archive recovery to
``recovery_target = 'immediate'``: it ends on a new timeline, and the runtime's own
recovery that follows (``replace_cluster`` always asks for one) would then start a
third; PostgreSQL 17 and later (``summarize_wal``) wait forever at that promotion for
summaries of WAL the switch renamed away. So formats copy only the segments the backup
needs into ``pg_wal``; the replay stops at their end, at most one segment past the end of
the backup.

The runtime's ``replace_cluster`` then starts the server (an empty archive recovery) and
waits until it accepts drproof's login. A password changed on the connecting role
leaves the fingerprint alone: that role's password is never compared.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.childenv import tool_environment
from engine.components.base import Component
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError, DrproofError
from engine.foreign.base import ForeignParams
from engine.runtime import processes
from engine.runtime.base import PhysicalAccess, comment_out_outward

SANDBOX_HBA = (
    "# written by drproof: the sandbox's own access rules (the backup's are in pg_hba.conf.from-backup)\n"
    "local all all peer\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)
_RECOVERY_TIMEOUT = 6 * 3600
SKIPPED_DATABASES = ("postgres", "template0", "template1")
# Production's certificates are not in the sandbox.
_SANDBOX_SETTINGS = {"ssl": "off"}
_ROLE_OUTCOMES = {
    "kept": "{role}: a superuser in the backup, given this sandbox's password",
    "changed": "{role}: made a superuser with login and this sandbox's password (its fingerprint part differs "
    "from production's)",
    "created": "{role}: created, the backup has no such role (the fingerprint shows it)",
}


class ClusterParams(ForeignParams):
    database: str | None = Field(
        default=None,
        description="The database the sandbox fingerprints (and `drift` compares); default: the cluster's only "
        "database besides postgres and the templates.",
    )


def cluster_component(component: Component, what: str) -> tuple[PostgresComponent, PhysicalAccess]:
    """The sandbox component, and the physical access its restore needs."""
    if not isinstance(component, PostgresComponent) or not isinstance(component.service, PhysicalAccess):
        raise ComponentError(
            f"{what} restores a whole cluster, which needs a postgres-physical (or postgres) component on the "
            f"local runtime, not a {component.name}"
        )
    return component, component.service


def sandbox_params(database: str | None) -> PostgresParams:
    """Parameters of the sandbox component; the database is settled once the cluster is restored."""
    return PostgresParams.model_construct(database=database or "postgres")


def restore_cluster(
    component: PostgresComponent,
    physical: PhysicalAccess,
    fill: Callable[[Path], dict[str, Any]],
    database: str | None,
    page_checksums: bool = False,
) -> dict[str, Any]:
    """Replace the sandbox's cluster with the backup's: ``fill`` puts its files and WAL in, then recovery.

    ``page_checksums``: after recovery (the cluster then is cleanly shut down, as
    ``pg_checksums`` needs) and before the server starts, check every page's checksum
    where the cluster has them (``check_page_checksums``).
    """
    details: dict[str, Any] = {}
    svc = component.service

    def populate(data: Path) -> None:
        details.update(fill(data))
        refuse_links(data)
        _sandbox_config(data)
        _own(data, physical.server_file_owner())
        details["connecting_role"] = _recover_single_user(
            data, svc, physical, svc.superuser, svc.tool_env().get("PGPASSWORD", "")
        )
        if page_checksums:
            details["page_checksums"] = check_page_checksums(data, svc, physical)

    # The runtime always asks for a recovery: the cluster is already recovered and cleanly
    # shut down, so this one only starts it (there is no archive left to read).
    settings = {**_SANDBOX_SETTINGS, "restore_command": "false", "recovery_target_action": "promote"}
    try:
        details["replay_seconds"] = round(physical.replace_cluster(populate, settings), 3)
    except DrproofError as exc:
        raise ComponentError(f"restore of {component.instance!r} failed: {exc}") from exc
    details["database"] = settle_database(component, database)
    return details


def refuse_links(data: Path) -> None:
    """No symlink may stay in a restored data directory: the server would write through it."""
    for dirpath, dirnames, filenames in os.walk(data, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise ComponentError(
                    f"the backup holds a symlink {path.relative_to(data)} -> {os.readlink(path)} (a WAL directory or "
                    "tablespace kept elsewhere); a sandbox must not write through it, so it is not restored"
                )


def _sandbox_config(data: Path) -> None:
    """The sandbox's access rules; production's outward settings and signal files out."""
    hba = data / "pg_hba.conf"
    if hba.exists():
        hba.rename(data / "pg_hba.conf.from-backup")
    hba.write_text(SANDBOX_HBA, encoding="utf-8")
    ident = data / "pg_ident.conf"
    if not ident.exists():
        ident.write_text("", encoding="utf-8")
    conf = data / "postgresql.conf"
    if not conf.exists():
        conf.write_text("# written by drproof: the backup held no postgresql.conf\n", encoding="utf-8")
    comment_out_outward(data, "not in the drproof sandbox")
    for signal_file in ("standby.signal", "recovery.signal", "postmaster.pid"):
        (data / signal_file).unlink(missing_ok=True)


def _own(data: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for path in [data, *data.rglob("*")]:
        os.lchown(path, *owner)


def check_page_checksums(data: Path, svc: Any, physical: PhysicalAccess) -> str:
    """``pg_checksums --check`` of a recovered, shut-down cluster whose control file says checksums are on.

    Why: a base backup nothing else verified (no ``backup_manifest``) with a few bytes
    overwritten in a relation file recovers, starts and answers queries; the page checksum
    is the one record left of what those bytes were. A cluster without checksums (initdb's
    default before PostgreSQL 18) is said to be unchecked, never passed. A ComponentError
    names the pages that differ.
    """
    owner = physical.server_file_owner()
    user = pwd.getpwuid(owner[0]).pw_name if owner is not None else None
    bin_dir = _server_binary(svc).parent
    env = tool_environment({"LC_ALL": "C", "LANG": "C"})

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
                argv, capture_output=True, text=True, errors="replace", env=env, timeout=_RECOVERY_TIMEOUT,
                **processes.run_as(user),
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise ComponentError(f"{Path(argv[0]).name} could not run on the restored cluster: {exc}") from exc
        return done

    control = run([str(bin_dir / "pg_controldata"), "-D", str(data)])
    found = re.search(r"^Data page checksum version:\s+(\d+)", control.stdout, re.MULTILINE)
    if control.returncode != 0 or found is None:
        return "not checked: pg_controldata did not say whether the cluster has page checksums"
    if found.group(1) == "0":
        return "not checked: the cluster has no page checksums (initdb without --data-checksums)"
    started = time.monotonic()
    result = run([str(bin_dir / "pg_checksums"), "--check", "-D", str(data)])
    if result.returncode != 0:
        problems = [line.strip() for line in (result.stderr + result.stdout).splitlines() if "error" in line.lower()]
        problems = problems or [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise ComponentError(
            "the restored cluster's page checksums do not match (pg_checksums --check): the backup's files are "
            "damaged: " + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        )
    return f"pg_checksums --check: every page's checksum matches ({time.monotonic() - started:.1f} s)"


def _server_binary(svc: Any) -> Path:
    """The ``postgres`` the runtime runs this server with (the sandbox's major)."""
    server_bin = getattr(svc, "server_bin", None)
    return Path(server_bin) / "postgres" if server_bin else Path(svc.tool("postgres")[0])


def _admission(role: str, password: str) -> str:
    """Single-user statements (one a line) that let drproof in as ``role``, saying what they found."""
    quoted = '"' + role.replace('"', '""') + '"'
    name = "'" + role.replace("'", "''") + "'"
    secret = "'" + password.replace("'", "''") + "'"
    return (
        "SELECT 'drproof-role ' || coalesce((SELECT CASE WHEN rolsuper AND rolcanlogin THEN 'kept' ELSE 'changed' "
        f"END FROM pg_roles WHERE rolname = {name}), 'created')\n"
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN CREATE ROLE {quoted}; END IF; "
        "END$$\n"
        "SET password_encryption = 'scram-sha-256'\n"
        f"ALTER ROLE {quoted} WITH SUPERUSER LOGIN PASSWORD {secret}\n"
    )


def _recover_single_user(data: Path, svc: Any, physical: PhysicalAccess, role: str, password: str) -> str:
    """Recover the backup (``backup_label``, WAL in ``pg_wal``) in single-user mode; let drproof's role in."""
    owner = physical.server_file_owner()
    user = pwd.getpwuid(owner[0]).pw_name if owner is not None else None
    script = _admission(role, password)
    settings = {"archive_mode": "off", **_SANDBOX_SETTINGS}
    argv = [str(_server_binary(svc)), "--single", "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    try:
        result = subprocess.run(  # type: ignore[call-overload]
            [*argv, "template1"],
            input=script,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=data,
            env=tool_environment(),
            timeout=_RECOVERY_TIMEOUT,
            **processes.run_as(user),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ComponentError(f"PostgreSQL could not recover the backup in single-user mode: {exc}") from exc
    output = result.stdout + "\n" + result.stderr
    if password:
        output = output.replace(password, "***")
    problems = [line.strip() for line in output.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", line)]
    found = re.search(r"drproof-role (\w+)", output)
    if result.returncode != 0 or problems or found is None:
        shown = "; ".join(problems[-4:]) or " ".join(output.split())[-800:]
        if re.search(r"required checkpoint record|WAL ends before|could not open file .*pg_wal", output):
            shown += " (the WAL the backup needs is missing: a backup taken without WAL needs its archive)"
        raise ComponentError(f"PostgreSQL could not recover the backup (exit {result.returncode}): {shown}")
    return _ROLE_OUTCOMES[found.group(1)].format(role=role)


def settle_database(component: PostgresComponent, wanted: str | None) -> str:
    """The database the sandbox fingerprints: the one named, or the cluster's only one."""
    conn = component.connect(component.admin_db if component.db != "postgres" else "template1")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
            names = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    if wanted is not None:
        if wanted not in names:
            raise ComponentError(f"the restored cluster has no database {wanted!r} (it has: {', '.join(names)})")
        chosen = wanted
    else:
        candidates = [n for n in names if n not in SKIPPED_DATABASES]
        if len(candidates) != 1:
            raise ComponentError(
                f"the restored cluster holds the databases {', '.join(candidates) or 'none but postgres'}; name the "
                "one to fingerprint with `database:`"
            )
        chosen = candidates[0]
    component.params = component.params.model_copy(update={"database": chosen})
    return chosen


def copy_wal(archive: Path, pg_wal: Path, first: str, last: str | None) -> int:
    """Copy the archived WAL the backup needs into its ``pg_wal``; return how many files.

    Segments of the backup's timeline from ``first`` through ``last`` (every later one on
    that timeline when the end is unknown: the replay then goes on to the archive's end),
    and every timeline history file. Segments already there (the backup's own) are kept.
    """
    count = 0
    for path in sorted(archive.iterdir()):
        name = path.name
        segment = re.fullmatch(r"[0-9A-F]{24}", name) is not None
        wanted = (segment and name[:8] == first[:8] and first <= name and (last is None or name <= last)) or (
            re.fullmatch(r"[0-9A-F]{8}\.history", name) is not None
        )
        if wanted and path.is_file() and not path.is_symlink() and not (pg_wal / name).exists():
            shutil.copyfile(path, pg_wal / name)
            count += 1
    return count
