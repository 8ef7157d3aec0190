"""Servers and directories drproof did not create: the targets of standalone backups.

The standalone engine (``drproof backup`` / ``drproof recovery``) works on a real stack.
drproof never starts, stops, kills or wipes these servers: it connects, backs up and
restores. A server that does not answer is an error telling the operator to start it,
except for a physical restore of one that is certainly down (a lost disk): see
``PhysicalTarget.restore_when_down``.
Client tools come from the embedded PostgreSQL 18 wheel, which can dump and restore any
server from PostgreSQL 9.2 on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from engine import pgtools
from engine.childenv import operator_environment, tool_environment
from engine.errors import RuntimeStartError
from engine.lazy import lazy
from engine.privatedir import make_private
from engine.runtime import processes
from engine.runtime.base import (
    HOST_RDB,
    PHYSICAL_ACCESS,
    RECOVERY_SETTINGS,
    SERVER_CONFIGURATION,
    PhysicalAccess,
    PostgresService,
    RedisService,
    Runtime,
    comment_out_outward,
    forget_recovery,
    login_refused,
    prepare_recovery,
    promoted,
)

if TYPE_CHECKING:
    import psycopg2
    import redis
else:
    psycopg2 = lazy("psycopg2")
    redis = lazy("redis")

log = logging.getLogger(__name__)


def not_answering(what: str, failure: str, protocol: str) -> str:
    """Why a configured server cannot be used, told from the client's own error.

    "Does not answer" was all an operator got, also for a Redis URL pointing at a
    PostgreSQL port: something answered there, in another protocol.
    """
    lowered = failure.lower()
    if "refused" in lowered:
        return f"{what} does not answer (connection refused): start it, or check the host and port in the URL"
    if "closed by server" in lowered or "protocol" in lowered or "invalid response" in lowered:
        return (
            f"{what}: something on that host and port accepted the connection but does not speak the {protocol} "
            f"protocol ({failure}); check the port in the URL (is it another service's?)"
        )
    if "timeout" in lowered or "timed out" in lowered:
        return (
            f"{what} did not answer within 10 s ({failure}): the host is unreachable or filtered, or the port "
            f"belongs to a server that is not {protocol}; check the host and port in the URL"
        )
    reason = failure or "connection refused or timed out after 10 s"
    return f"{what} does not answer ({reason}); start it, or check the host and port in the URL"


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None
    bindir: Path | None = None  # client tools to use; found by the server's major version when None


@dataclass(frozen=True)
class PhysicalTarget:
    """What a physical restore of an existing server needs, all declared by the operator.

    drproof never decides on its own to stop a server it did not start; it runs the
    operator's own stop and start commands (systemctl, pg_ctlcluster, ...) around the
    one operation that cannot be done on a running server.
    """

    data_directory: Path
    wal_archive: Path | None  # None where WAL is archived by something else (pgBackRest)
    stop: list[str]
    start: list[str]
    keep_replaced: int = 2  # data directories replaced by restores that are kept, newest first
    # True where the backups restored here come from another server (``recovery restore
    # --to``): the restored cluster then keeps this server's own configuration (port,
    # sockets, archiving, access rules) and never runs the backup's. False in place: the
    # backup's configuration is this server's own.
    foreign_backups: bool = False
    # True for ``recovery restore``: a server that is down (stopped, or its disk lost) may
    # be restored, since a physical restore replaces its data directory anyway; only when
    # its URL refuses connections and no server process holds the data directory.
    restore_when_down: bool = False


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    db: int
    password: str | None


class _NotOurs:
    """Refusals for operations drproof only performs on servers it created."""

    what: str

    def _refuse(self, action: str) -> RuntimeStartError:
        return RuntimeStartError(f"drproof does not {action} {self.what}: it did not start it")


class ExternalPostgres(_NotOurs, PostgresService):
    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.superuser = target.user
        self.what = f"the PostgreSQL server at {target.host}:{target.port}"
        self._version = "unknown"
        self._tools: pgtools.ToolSet | None = None
        self._major: int | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        t = self.target
        return f"host={t.host} port={t.port} user={t.user} dbname={dbname} connect_timeout=10"

    # The tools every operation on this server may run; physical access adds its own.
    needed_tools: ClassVar[tuple[str, ...]] = pgtools.LOGICAL_TOOLS

    def tool(self, name: str) -> list[str]:
        """A client tool of the server's own major version (see ``engine.pgtools``)."""
        if self._tools is None:
            self._tools = pgtools.for_server(
                self.server_major(), configured=self.target.bindir, names=self.needed_tools, what=self.what
            )
        return self._tools.tool(name)

    def client_tools(self) -> str:
        """Which client tools this server gets, for manifests and messages."""
        self.tool("pg_dump")
        assert self._tools is not None
        return f"{self._tools.version} from {self._tools.bindir} ({self._tools.source})"

    def server_major(self) -> int:
        if self._major is None:
            try:
                conn = psycopg2.connect(self.dsn("postgres"), password=self.target.password)
            except psycopg2.OperationalError:
                conn = psycopg2.connect(self.dsn(self.target.dbname), password=self.target.password)
            try:
                self._major = pgtools.major_of(conn.server_version)
            finally:
                conn.close()
        return self._major

    def tool_env(self) -> dict[str, str]:
        # libpq's own settings (PGSSLMODE, PGSSLROOTCERT, ...) apply; nothing else of ours does.
        extra = {"PGCONNECT_TIMEOUT": "10"}
        if self.target.password is not None:
            extra["PGPASSWORD"] = self.target.password
        return tool_environment(extra, prefixes=("PG",))

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        """Whether the server answers; a login it refuses is an error, not "not running"."""
        try:
            conn = psycopg2.connect(self.dsn(self.target.dbname), password=self.target.password)
        except psycopg2.OperationalError:
            try:
                conn = psycopg2.connect(self.dsn("postgres"), password=self.target.password)
            except psycopg2.OperationalError as exc:
                self._refused(exc)
                self._failure = " ".join(str(exc).split())
                return False
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                row = cur.fetchone()
                self._version = f"PostgreSQL {row[0]}" if row else "unknown"
        finally:
            conn.close()
        return True

    def ensure_running(self) -> None:
        if not self.is_running():
            raise RuntimeStartError(not_answering(self.what, getattr(self, "_failure", ""), "PostgreSQL"))

    def _refused(self, exc: Exception) -> None:
        refused = login_refused(exc)
        if refused is not None and "the database system is" not in refused:
            raise RuntimeStartError(
                f"{self.what} answers but refuses the login as {self.target.user!r}: {refused}. Check the user in "
                "the URL and the password (password_env / password_file)"
            ) from None

    def kill(self) -> None:
        raise self._refuse("kill")

    def wipe_data(self) -> None:
        raise self._refuse("wipe")

    def data_location(self) -> str:
        return f"{self.target.host}:{self.target.port}"


class ExternalPhysicalPostgres(ExternalPostgres, PhysicalAccess):
    """An existing server whose data directory and WAL archive drproof may use."""

    needed_tools: ClassVar[tuple[str, ...]] = (*pgtools.LOGICAL_TOOLS, "pg_basebackup")

    stop_timeout: ClassVar[float] = 120.0  # seconds the server may take to stop answering

    def __init__(self, target: PostgresTarget, physical: PhysicalTarget) -> None:
        super().__init__(target)
        self.physical = physical
        self.replaced: Path | None = None
        self.pruned: list[Path] = []  # replaced data directories the last restore deleted (keep_replaced)
        self._pid_seen = False
        self._started = 0.0
        self._owner: tuple[int, int] | None = None
        self._answered = 0.0
        self.adopted: list[str] = []  # what a restore from another server took from this one (foreign_backups)

    @property
    def restores_foreign_backups(self) -> bool:
        return self.physical.foreign_backups

    def wal_archive(self) -> Path:
        if self.physical.wal_archive is None:
            raise RuntimeStartError(
                f"{self.what}: no `wal_archive` is configured; kind postgres-physical needs the directory the "
                "server's archive_command copies WAL into"
            )
        return self.physical.wal_archive

    def cluster_directory(self) -> Path | None:
        return self.physical.data_directory

    def server_file_owner(self) -> tuple[int, int] | None:
        # Read once, from the server's own directory, before a restore replaces it with
        # one drproof creates (and would otherwise own). After an interrupted restore the
        # directory at the server's path may be drproof's half-built one: the pre-restore
        # directory it set aside is the server's own.
        if self._owner is None:
            data = self.physical.data_directory
            marker = self._read_marker()
            kept = data.with_name(marker["replaced"]) if marker and marker["replaced"] else None
            source = kept if kept is not None and kept.is_dir() else data if data.exists() else data.parent
            st = source.stat()
            self._owner = (st.st_uid, st.st_gid)
        return self._owner

    def _run(self, argv: list[str], what: str) -> None:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=operator_environment())
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeStartError(f"the {what} command {argv[0]!r} could not run: {exc}") from exc
        if result.returncode != 0:
            raise RuntimeStartError(
                f"the {what} command {argv[0]!r} failed (exit {result.returncode}): {result.stderr.strip()[-1000:]}"
            )

    def ensure_running(self) -> None:
        if self.is_running():
            return
        marker = self._read_marker()
        if marker is None:
            if self.physical.restore_when_down and self._down():
                log.warning(
                    "%s does not answer and no server process holds %s: the restore replaces that data directory "
                    "(set aside if it exists) and starts the server with its start command",
                    self.what,
                    self.physical.data_directory,
                )
                return
            super().ensure_running()
            return
        # A restore killed after it ran the stop command leaves the server down on purpose;
        # the next restore resumes it (see ``replace_cluster``) instead of refusing.
        log.warning(
            "%s does not answer: a restore interrupted at %s stopped it (%s exists); running the restore again "
            "resumes it",
            self.what,
            marker["started"],
            self._marker_path(),
        )

    # -- the restore-in-progress marker ---------------------------------------------------------
    #
    # ``<data>.drproof-restore-in-progress`` exists from just before the operator's stop
    # command until the restore succeeded or was rolled back. It names the directory the
    # live data are (or are about to be) set aside to, so a run killed at any moment
    # leaves enough for the next one to resume, and never loses the pre-restore data.
    # ``phase``: "stopping" (the live data may still be at the server's path), "restoring"
    # (they were set aside; the server's path holds drproof's new directory, if any),
    # "rolling-back" (they are being put back).

    def _marker_path(self) -> Path:
        data = self.physical.data_directory
        return data.with_name(f"{data.name}.drproof-restore-in-progress")

    def _read_marker(self) -> dict[str, Any] | None:
        path = self._marker_path()
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeStartError(f"cannot read {path}, left by an interrupted restore: {exc}") from exc
        try:
            marker = json.loads(raw)
            valid = (
                isinstance(marker, dict)
                and marker.get("phase") in {"stopping", "restoring", "rolling-back"}
                and isinstance(marker.get("started"), str)
                and (marker.get("replaced") is None or _plain_name(marker.get("replaced")))
            )
        except ValueError:
            valid = False
        if not valid:
            raise RuntimeStartError(
                f"{path}, left by an interrupted restore, is not one drproof can read; drproof changed nothing. "
                f"Look next to it for {self.physical.data_directory.name}.drproof-replaced-* (the data the "
                f"interrupted restore set aside), make sure the data you want is at {self.physical.data_directory}, "
                "then delete the marker and run the restore again"
            )
        result: dict[str, Any] = marker
        return result

    def _write_marker(self, phase: str, replaced: Path | None, started: str) -> None:
        path = self._marker_path()
        body = json.dumps({"phase": phase, "replaced": replaced.name if replaced else None, "started": started})
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(body + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _sync_dir(path.parent)

    def _remove_marker(self) -> None:
        self._marker_path().unlink(missing_ok=True)
        _sync_dir(self._marker_path().parent)

    def _server_process_alive(self) -> bool:
        """Whether the pid in the data directory's postmaster.pid is a live process."""
        try:
            first = (self.physical.data_directory / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first.strip())
        except (OSError, ValueError):
            return False
        return processes.pid_alive(pid)

    def _down(self) -> bool:
        """Whether the server is certainly not running: its URL refuses connections, no live pid file.

        A timeout or a filtered port says nothing (the server may run behind it), and a
        pid file whose process is alive means it runs whatever the URL says.
        """
        failure = getattr(self, "_failure", "").lower()
        refused = "refused" in failure or "no such file or directory" in failure
        return refused and not self._server_process_alive()

    def _stop(self) -> None:
        self._run(self.physical.stop, "stop")
        if not processes.wait_until(lambda: not self.is_running(), timeout=self.stop_timeout, interval=0.2):
            raise RuntimeStartError(f"{self.what} still answers after its stop command; nothing was changed")

    def _resume(self, marker: dict[str, Any]) -> tuple[Path | None, str]:
        """Take over from a restore that was killed: the directory to keep, and its start time.

        Stops the server if it runs (the killed attempt may have started it on its new
        directory) and moves whatever drproof had built at the server's path aside. The
        pre-restore directory is never touched except to be set aside under the marker's
        name when the killed attempt had not got that far.
        """
        data = self.physical.data_directory
        started: str = marker["started"]
        kept = data.with_name(marker["replaced"]) if marker["replaced"] else None
        if kept is not None and not kept.exists() and not (marker["phase"] != "restoring" and data.exists()):
            raise RuntimeStartError(
                f"a restore interrupted at {started} set the data directory aside as {kept}, which no longer "
                f"exists (its marker is {self._marker_path()}); drproof changed nothing. Check where that directory "
                f"went: if it was moved, put it back at {kept}; if you already moved it back to {data} yourself, "
                "delete the marker. Then run the restore again"
            )
        log.warning(
            "found a restore of %s interrupted at %s (%s): resuming it; the pre-restore data are %s",
            self.what,
            started,
            self._marker_path(),
            f"kept at {kept}" if kept is not None else "none (there was no data directory)",
        )
        if self.is_running() or self._server_process_alive():
            self._stop()
        if kept is not None and not kept.exists():
            # Killed before the live data were set aside (or after they were put back):
            # what is at the server's path is still the pre-restore directory.
            data.rename(kept)
            _sync_dir(data.parent)
        elif data.exists():
            partial = _unused(data, "partial")
            data.rename(partial)
            _sync_dir(data.parent)
            log.warning("the interrupted restore's unfinished data directory was moved to %s", partial)
        return kept, started

    def replace_cluster(self, populate: Callable[[Path], None], settings: dict[str, str]) -> float:
        data = self.physical.data_directory
        owner = self.server_file_owner()
        marker = self._read_marker()
        if marker is not None:
            kept, begun = self._resume(marker)
            was_running = True  # as before: the interrupted restore had stopped a running server
        else:
            begun = datetime.now(UTC).isoformat(timespec="seconds")
            # The replaced directory is kept, not deleted: after a restore the operator may
            # still need the state it replaced (forensics, a missed table). drproof says where.
            kept = _unused(data, "replaced") if data.exists() else None
            down = self.physical.restore_when_down and not self.is_running() and self._down()
            self._write_marker("stopping", kept, begun)
            try:
                self._stop()
            except RuntimeStartError:
                # The stop command failed or the server still answers: the live data were
                # not touched. (Interrupted here, the marker stays: a re-run resumes.) On
                # a server that was down already, a stop command may fail for that very
                # reason (pg_ctl: "Is server running?"); it still runs, so that an init
                # system stops restarting it.
                if not down or self.is_running() or self._server_process_alive():
                    self._remove_marker()
                    raise
            was_running = not down
            if kept is not None:
                data.rename(kept)
                _sync_dir(data.parent)
            elif data.exists():  # appeared while stopping: not the operator's to lose either
                data.rename(_unused(data, "partial"))
        self._write_marker("restoring", kept, begun)
        try:
            data.mkdir(mode=0o700)
            make_private(data)  # no group, set-group-ID bit or ACL from a shared parent (prepare_recovery gives the owner)
            populate(data)
            if self.physical.foreign_backups:
                self.adopted = keep_own_configuration(data, kept)
            prepare_recovery(data, settings, owner)
            started = time.monotonic()
            self._run(self.physical.start, "start")
            self._pid_seen, self._started, self._answered = False, time.monotonic(), time.monotonic()
            if not processes.wait_until(
                self._promoted, timeout=3600, interval=0.2, progress=f"{self.what} to finish recovery"
            ):
                raise RuntimeStartError(f"{self.what} did not finish recovery within an hour")
            elapsed = time.monotonic() - started
            forget_recovery(data)
            self.replaced = kept if kept is not None and kept.exists() else None
            self._remove_marker()
            self.pruned = prune_replaced(data, self.physical.keep_replaced)
            return elapsed
        except BaseException:
            with contextlib.suppress(OSError):
                self._write_marker("rolling-back", kept, begun)
            with contextlib.suppress(RuntimeStartError):
                self._run(self.physical.stop, "stop")
            shutil.rmtree(data, ignore_errors=True)
            if kept is not None and kept.exists() and not data.exists():
                kept.rename(data)
                _sync_dir(data.parent)
                self._remove_marker()
                if was_running:  # a server that was down stays down, on its own data
                    self._run(self.physical.start, "start")
            elif kept is None:
                self._remove_marker()
            raise

    # Seconds the restored server may run without anything listening at the URL's host and
    # port. A server in recovery answers at once ("the database system is starting up"),
    # so silence means it listens elsewhere: a scratch restore that kept production's port
    # waited the whole hour on the scratch's (found by review).
    silent_timeout: ClassVar[float] = 120.0

    def _promoted(self) -> bool:
        if promoted(self.dsn("postgres"), self.target.password):
            return True
        # drproof did not start this server and cannot watch its process; its pid file
        # says whether it still runs. A start command may return once the server accepts
        # read-only connections, and recovery can still fail after that: without this
        # check the wait would last the whole hour.
        if (self.physical.data_directory / "postmaster.pid").exists():
            self._pid_seen = True
            now = time.monotonic()
            if self._listening():
                self._answered = now
            elif now - self._answered > self.silent_timeout:
                raise RuntimeStartError(self._listens_elsewhere())
        elif self._pid_seen:
            raise RuntimeStartError(f"{self.what} stopped during recovery; see the server's log")
        elif time.monotonic() - self._started > 120:
            raise RuntimeStartError(f"{self.what} did not start within 120 s of its start command")
        return False

    def _listening(self) -> bool:
        """Whether anything accepts a connection at the URL's host and port (a socket, for a path)."""
        host, port = self.target.host, self.target.port
        if host.startswith("/"):
            return Path(host, f".s.PGSQL.{port}").exists()
        try:
            with socket.create_connection((host, port), timeout=5):
                return True
        except OSError:
            return False

    def _listens_elsewhere(self) -> str:
        """Why the wait ended: where the restored server's pid file says it listens."""
        try:
            lines = (self.physical.data_directory / "postmaster.pid").read_text().splitlines()
        except OSError:
            lines = []
        where = ""
        if len(lines) >= 6:
            where = f" Its pid file says it listens on port {lines[3]} (addresses {lines[5] or 'none'}, sockets in {lines[4] or 'none'})."
        return (
            f"the restored server runs, but nothing has listened at {self.target.host}:{self.target.port} for "
            f"{self.silent_timeout:.0f} s.{where} The port, listen_addresses and unix_socket_directories it uses come "
            f"from {self.physical.data_directory}/postgresql.conf and postgresql.auto.conf (restored from the backup "
            "in place) or from its start command: make them match the URL"
        )


# A server's own configuration files in its data directory, beside any other *.conf it
# includes; the SSL files are the defaults ``ssl_cert_file`` and the rest name there.
_OWN_FILES = (
    *SERVER_CONFIGURATION,
    "pg_hba.conf",
    "pg_ident.conf",
    "server.crt",
    "server.key",
    "root.crt",
    "root.crl",
)


def keep_own_configuration(data: Path, own: Path | None) -> list[str]:
    """Give a cluster restored from another server's backup this server's configuration.

    ``own`` is this server's data directory as it was before the restore (set aside, or
    None when there was none). Each of its configuration files replaces the backup's,
    which is kept beside it as ``<name>.from-backup``; whatever of the backup's server
    configuration stays (this server had no such file, its postgresql.conf lives in /etc,
    or its data directory was lost) has ``OUTWARD_SETTINGS`` commented out, so it never
    listens on the backup's port, archives into the backup's archive or replicates from
    its server. Returns the names taken from ``own``.
    """
    source = own if own is not None and own.is_dir() else None
    names = set(_OWN_FILES)
    if source is not None:
        names |= {p.name for p in source.iterdir() if p.suffix == ".conf" and p.is_file()}
    # A restore tool's own recovery settings (pgBackRest writes its archive-get
    # restore_command there) are this restore's, not the backup's server's: they stay.
    auto = data / "postgresql.auto.conf"
    carried = [line for line in _lines(auto) if line.split("=", 1)[0].strip() in RECOVERY_SETTINGS]
    adopted = []
    for name in sorted(names):
        mine = source / name if source is not None else None
        if mine is None or not mine.is_file():
            continue
        restored = data / name
        if restored.exists() or restored.is_symlink():
            restored.rename(data / f"{name}.from-backup")
        shutil.copy2(mine, restored)
        adopted.append(name)
    comment_out_outward(data, "not on this restore target", tuple(n for n in SERVER_CONFIGURATION if n not in adopted))
    if carried:
        with auto.open("a", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("# recovery settings the restore wrote\n" + "".join(line.rstrip("\n") + "\n" for line in carried))
    # A standby.signal from the backup would keep the cluster a standby of the backup's
    # primary (drproof asks for a recovery that ends); the server decides on the rest.
    (data / "standby.signal").unlink(missing_ok=True)
    return adopted


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)


def _plain_name(value: object) -> bool:
    """A directory name next to the data directory, nothing that could point elsewhere."""
    return isinstance(value, str) and value not in {"", ".", ".."} and "/" not in value and "\0" not in value


def prune_replaced(data: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` data directories earlier restores replaced; the deleted.

    Each physical restore keeps the directory it replaced (``<data>.drproof-replaced-<time>``)
    for forensics; kept forever, a nightly restore test filled the disk. Only names drproof
    itself gives them are touched, never a link.
    """
    pattern = re.compile(re.escape(data.name) + r"\.drproof-replaced-(\d{8}T\d{6}Z)(?:-(\d+))?")
    found = []
    for entry in data.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and entry.is_dir() and not entry.is_symlink():
            found.append((m.group(1), int(m.group(2) or 0), entry))
    found.sort(reverse=True)
    doomed = [entry for _, _, entry in found[keep:]]
    for entry in doomed:
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s: older than the %d replaced data directories kept", entry, keep)
    return doomed


def _unused(data: Path, what: str) -> Path:
    """``<data>.drproof-<what>-<UTC time>``, with a suffix if a directory already has that name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = data.with_name(f"{data.name}.drproof-{what}-{stamp}")
    n = 1
    while path.exists():
        path = data.with_name(f"{data.name}.drproof-{what}-{stamp}-{n}")
        n += 1
    return path


def _sync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (power loss, not only a killed process)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ExternalRedis(_NotOurs, RedisService):
    def __init__(self, target: RedisTarget) -> None:
        self.host = target.host
        self.port = target.port
        self.password = target.password
        self.what = f"the Redis server at {target.host}:{target.port}"
        self._version = "unknown"

    def version(self) -> str:
        return self._version

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, password=self.password, db=db, socket_timeout=30, socket_connect_timeout=10
        )

    def is_running(self) -> bool:
        """Whether the server answers; a password it refuses is an error, not "not running"."""
        try:
            info = self.client().info("server")
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            raise RuntimeStartError(
                f"{self.what} answers but refuses drproof: {login_refused(exc) or exc}. Check the password "
                "(password_env / password_file)"
            ) from None
        except redis.RedisError as exc:
            self._failure = " ".join(str(exc).split())
            return False
        valkey = info.get("valkey_version")  # Valkey answers redis_version 7.2.4 for compatibility
        self._version = f"Valkey {valkey}" if valkey else f"Redis {info.get('redis_version', '?')}"
        return True

    def ensure_running(self) -> None:
        if not self.is_running():
            raise RuntimeStartError(not_answering(self.what, getattr(self, "_failure", ""), "Redis"))

    def kill(self) -> None:
        raise self._refuse("kill")


class ExternalRuntime(Runtime):
    """Maps component instances to existing servers and directories."""

    name: ClassVar[str] = "external"
    capabilities: ClassVar[frozenset[str]] = frozenset({PHYSICAL_ACCESS, HOST_RDB})

    def __init__(
        self,
        workdir: Path,
        images: dict[str, str] | None = None,
        *,
        postgres: dict[str, PostgresTarget] | None = None,
        physical: dict[str, PhysicalTarget] | None = None,
        redis_targets: dict[str, RedisTarget] | None = None,
        directories: dict[str, Path] | None = None,
    ) -> None:
        self._pg: dict[str, ExternalPostgres] = {}
        for name, target in (postgres or {}).items():
            extra = (physical or {}).get(name)
            self._pg[name] = ExternalPhysicalPostgres(target, extra) if extra else ExternalPostgres(target)
        self._redis = {k: ExternalRedis(v) for k, v in (redis_targets or {}).items()}
        self._dirs = dict(directories or {})

    def postgres(self, instance: str) -> ExternalPostgres:
        svc = self._pg[instance]
        svc.ensure_running()
        return svc

    def redis(self, instance: str) -> ExternalRedis:
        svc = self._redis[instance]
        svc.ensure_running()
        return svc

    def directory(self, instance: str) -> Path:
        return self._dirs[instance]

    def describe(self) -> dict[str, str]:
        facts = {"runtime": self.name}
        facts.update({f"postgres:{k}": v.version() for k, v in self._pg.items()})
        facts.update({f"redis:{k}": v.version() for k, v in self._redis.items()})
        return facts

    def close(self) -> None:
        """Nothing to stop: drproof started nothing."""
