"""Disk space for a logical PostgreSQL restore: refused before it starts, stopped before the disk fills.

A logical restore loads the backup into a side database on the SAME server, beside the
live one (``postgres_restore``), so for a while the server's disk holds both, plus the
WAL the load writes. Nothing checked that it fits. Measured on a PostgreSQL 18 server
with its data directory on a tmpfs: a 28 MB database restored with 8 MB free filled the
disk, the checkpointer PANICked ("could not write to file pg_logical/
replorigin_checkpoint.tmp: No space left on device") and the live server went down: a
restore that made things worse than the damage it came to repair.

So, before anything is created (``preflight``):

* **What the restore needs** is the database's size at backup time
  (``pg_database_size``, recorded as ``database_bytes`` in the set's details). A set
  written before it was recorded has only its dump's size: the need is then estimated
  as ``ESTIMATE_FACTOR`` times the uncompressed dump, and a guess never refuses a
  restore; it is said, and the guard below watches.
* **Where it goes** is the filesystem of the server's data directory, when it is
  reachable from this host: always for the local runtime; for another server, when its
  ``SHOW data_directory`` is a path that exists here *and* is the same cluster: the
  system identifier at the head of that directory's ``global/pg_control`` equals the
  server's ``pg_control_system()``. A path alone proves nothing (a container's
  ``/var/lib/postgresql/data`` may also exist on its host, holding another cluster).
  Where it is not reachable the restore says it could not check, and goes on.
* **The reserve** kept free is 1 GiB of that filesystem (``reserve``): the WAL the load
  writes is held until a checkpoint recycles it, up to ``max_wal_size`` (1 GB by
  default), and the live server keeps serving its own writes meanwhile.
* A directory-format (``jobs > 1``) set is also extracted to a scratch directory
  (``engine.scratch``) in the system temp directory: its filesystem must hold the dump,
  and when it is the data directory's, both needs add up.

A refusal is a ``ComponentError`` naming the server, the filesystem, the needed and
free bytes and the ways out, and nothing was changed.

While the side database is loaded (``watching``), a thread reads the data directory's
free space every ``POLL_SECONDS``; once it falls below the reserve it ends every session
of the side database (pg_restore and its workers fail at once), and the restore's own
clean-up drops the side database. The live database is never touched.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import diskspace
from engine.components import postgres_restore as pg_restore
from engine.components.base import ArtifactSource
from engine.diskspace import Filesystem, filesystem
from engine.errors import ComponentError, InsufficientSpace
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2
    import psycopg2.extensions

    from engine.components.postgres import PostgresComponent
else:
    psycopg2 = lazy("psycopg2")

log = logging.getLogger(__name__)

GIB = 1 << 30
RESERVE_FLOOR = GIB  # bytes kept free at most for WAL: max_wal_size's default
# WAL a load writes per byte of the database it makes, at most, and a margin for the live
# server's own writes meanwhile. Measured (tests/integration/test_postgres_space.py):
# restoring an 18 MB database wrote 11.7 MB of WAL, 0.65 bytes per byte (PostgreSQL 18); 2 leaves
# room for full-page images after a checkpoint and for index builds.
WAL_PER_BYTE = 2
WAL_MARGIN = 16 << 20  # one WAL segment
# Kept free at least on a WAL filesystem of its own (``pg_wal`` a link to another disk):
# room for the live server's WAL while a stopped load's last writes land (4 segments).
WAL_FLOOR = 64 << 20
# Database size per byte of uncompressed pg_dump, for sets that did not record the size.
# Measured: 2.98 for drproof's seeded schema (28 MB database, 9.4 MB dump); row headers
# (24 bytes a row), indexes and free space in pages make a database larger than its dump.
ESTIMATE_FACTOR = 3
SCRATCH_MARGIN = 64 << 20  # kept free on a scratch filesystem that is not the server's
POLL_SECONDS = 0.5  # PostgreSQL loads well under 1 GiB (the reserve) in that time

# The artifacts a directory-format dump is extracted from (``postgres_parallel``).
_EXTRACTED = ("database.dir.data.tar", "database.dir.toc", "database.dir.tar")
_DUMPS = ("database.dump", *_EXTRACTED)


def reserve(fs: Filesystem, need: int | None = None) -> int:
    """Bytes the server's filesystem keeps free through a restore of ``need`` bytes: its WAL, and the applications' reserve.

    Not a share of the filesystem alone: 5 % of a 2 TB disk kept 100 GB back and refused
    a 10 MB restore on a server with 90 GB free, on the day it was needed. The WAL the
    load writes stays until a checkpoint recycles it (``max_wal_size``, 1 GB by
    default), so never more than that is kept for it; but a load writes WAL in
    proportion to what it loads (``WAL_PER_BYTE``), so a small database keeps that
    much, not 1 GiB. Found by review: 1 GiB for every restore refused a 18 MB database
    on a data disk with 84 MiB free, and every restore on a disk with less than 1 GiB
    free. The file-tree restores' reserve (``diskspace.reserve_for``) is kept at least.
    An unknown need keeps the whole 1 GiB.
    """
    wal = RESERVE_FLOOR if need is None else min(RESERVE_FLOOR, WAL_PER_BYTE * need + WAL_MARGIN)
    return max(wal, diskspace.reserve_for(fs.path))


@dataclass(frozen=True)
class Need:
    """What the side database will take, and how that is known."""

    bytes: int
    exact: bool
    how: str


def database_need(source: ArtifactSource) -> Need | None:
    """The size recorded at backup time; else an estimate from the dump; None if neither is known."""
    recorded = source.details.get("database_bytes")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return Need(recorded, True, "the database's size when it was backed up (pg_database_size)")
    dump = dump_bytes(source)
    if dump <= 0:
        return None
    how = (
        f"estimated as {ESTIMATE_FACTOR} x the uncompressed dump's {dump} bytes (the backup set predates "
        "recording the database's size)"
    )
    return Need(dump * ESTIMATE_FACTOR, False, how)


def dump_bytes(source: ArtifactSource) -> int:
    """The uncompressed dump's size: as the details record it, else the artifacts' raw sizes."""
    recorded = source.details.get("dump_bytes")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    return sum(record.raw_size for name, record in source.artifacts.items() if name in _DUMPS)


def scratch_need(source: ArtifactSource) -> int:
    """Bytes the restore extracts to its scratch directory: a directory-format dump whole; a custom one streams."""
    return sum(record.raw_size for name, record in source.artifacts.items() if name in _EXTRACTED)


def database_bytes(conn: psycopg2.extensions.connection) -> int | None:
    """``pg_database_size`` of the connected database, for the set's details; None where it cannot be read."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            row = cur.fetchone()
    except psycopg2.Error:
        conn.rollback()
        return None
    return int(row[0]) if row and row[0] is not None else None


# -- where the server keeps its data --------------------------------------------------------
def data_directory(comp: PostgresComponent, admin: psycopg2.extensions.connection) -> tuple[Path | None, str]:
    """The server's data directory if this host can see its filesystem, else None; and why."""
    from engine.runtime.local import LocalPostgres

    if isinstance(comp.service, LocalPostgres):
        return comp.service.data_dir(), "the local runtime's own server"
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT current_setting('data_directory'), (SELECT system_identifier FROM pg_control_system())")
            row = cur.fetchone()
    except psycopg2.Error as exc:
        return None, f"the server does not say where its data directory is ({' '.join(str(exc).split())})"
    assert row is not None
    path, ident = Path(str(row[0])), int(row[1])
    return _same_cluster(path, ident)


def _same_cluster(path: Path, ident: int) -> tuple[Path | None, str]:
    """``path`` when its ``global/pg_control`` names cluster ``ident``: the same server, seen from here."""
    try:
        with open(path / "global" / "pg_control", "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return None, f"its data directory {path} cannot be read from this host ({exc.strerror or exc})"
    if len(head) < 8 or struct.unpack("=Q", head)[0] != ident:
        return None, f"{path} on this host holds another cluster than the server's (system identifier {ident})"
    return path, f"its data directory {path} (system identifier {ident}) is on this host"


# -- before the restore ----------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the guard watches while the side database loads; None data directory: nothing to watch.

    ``wal_dir`` and ``wal_floor``: the server's ``pg_wal`` when it is on another
    filesystem than the data directory, and the free space kept there.
    """

    data_dir: Path | None
    reserve: int
    wal_dir: Path | None = None
    wal_floor: int = 0
    # (what, a path on it, kept): a tablespace's filesystem other than the data directory's.
    spaces: tuple[tuple[str, Path, int], ...] = ()

    def watched(self) -> list[tuple[str, Path, int]]:
        """Each filesystem the load writes to: what it holds, a path on it, and the free space it must keep."""
        # Half the reserve: the check asked for all of it, and the load's own WAL, temporary
        # files of index builds and the proof's sorts use part of it (measured: 18 MB written
        # on the data directory's disk by a load whose tables went elsewhere). Stopped at the
        # whole reserve, a restore the check had accepted failed midway, 1 run in 4.
        found = [] if self.data_dir is None else [("data directory", self.data_dir, self.reserve // 2)]
        found += [] if self.wal_dir is None else [("WAL directory", self.wal_dir, self.wal_floor)]
        return found + list(self.spaces)


def preflight(
    comp: PostgresComponent, source: ArtifactSource, admin: psycopg2.extensions.connection, globals_sql: bytes = b""
) -> Plan:
    """Refuse, before anything is created, a restore whose side database or extracted dump cannot fit.

    ``globals_sql``: the set's ``pg_dumpall --globals-only``, whose tablespaces the restore
    creates where the server lacks them.
    """
    where, why = data_directory(comp, admin)
    need = database_need(source)
    scratch = scratch_need(source)
    if scratch:
        _check_scratch(comp, scratch, where)
    if where is None:
        log.warning(
            "postgres %r: free space for the restore was not checked and is not watched: %s. The side "
            "database needs %s beside the live one",
            comp.instance,
            why,
            _amount(need),
        )
        return Plan(None, 0)
    fs = filesystem(where)
    spaces = _tablespaces_elsewhere(comp, admin, source, fs, globals_sql, scratch)
    wal = _wal_elsewhere(where, fs)
    # The WAL the load writes follows the whole database, wherever its tables go; on a
    # disk of its own, the data directory's filesystem keeps the trees' reserve only.
    # The data directory keeps the WAL-sized reserve even with pg_wal elsewhere: the load's
    # temporary files (index builds, the proof's sorts) are written there.
    kept = reserve(fs, None if need is None else need.bytes)
    beside = 0 if wal is None else sum(b for _, space, b in spaces if space.device == wal.device)
    wal_floor = 0 if wal is None else _check_wal(comp, wal, need, beside)
    _check_data(comp, fs, _less(need, sum(b for _, _, b in spaces)), scratch, kept)
    watched = tuple((what, space.path, diskspace.reserve_for(space.path)) for what, space, _ in spaces)
    return Plan(where, kept, None if wal is None else wal.path, wal_floor, watched)


def _check_data(comp: PostgresComponent, fs: Filesystem, need: Need | None, scratch: int, kept: int) -> None:
    """The data directory's filesystem: the side database's bytes there, the scratch copy if it shares it, ``kept``."""
    if need is None:
        log.warning(
            "postgres %r: the backup set records neither the database's nor the dump's size, so free space "
            "could not be checked before the restore; it is watched while the restore loads",
            comp.instance,
        )
    elif need.bytes + _shared_scratch(fs, scratch) + kept > fs.free:
        _refuse_or_warn(comp, fs, need, scratch, kept)
    else:
        log.info(
            "postgres %r: the restore needs %s; %s has %s free and keeps %s",
            comp.instance,
            _amount(need),
            fs.path,
            _size(fs.free),
            _size(kept),
        )


def _less(need: Need | None, elsewhere: int) -> Need | None:
    """The data directory's share of ``need`` once ``elsewhere`` bytes go to tablespaces on other filesystems."""
    if need is None or not elsewhere:
        return need
    return Need(
        max(0, need.bytes - elsewhere), need.exact, f"{need.how}, less {elsewhere} bytes in tablespaces elsewhere"
    )


def tablespace_bytes(conn: psycopg2.extensions.connection) -> dict[str, int]:
    """Bytes of the connected database's relations per tablespace (the database's default for those with none).

    Recorded at backup when any lies outside ``pg_default``: the side database puts each
    relation where the dump says (its ``CREATE DATABASE ... TABLESPACE`` and each
    relation's), so those bytes go to that tablespace's filesystem, not the data
    directory's. Shared catalogs are in no database and are left out.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT t.spcname, sum(pg_relation_size(c.oid, 'main') + pg_relation_size(c.oid, 'fsm') "
            "+ pg_relation_size(c.oid, 'vm') + pg_relation_size(c.oid, 'init'))::bigint "
            "FROM pg_class c JOIN pg_database d ON d.datname = current_database() "
            "JOIN pg_tablespace t ON t.oid = CASE c.reltablespace WHEN 0 THEN d.dattablespace ELSE c.reltablespace END "
            "WHERE NOT c.relisshared GROUP BY t.spcname"
        )
        return {str(name): int(size or 0) for name, size in cur.fetchall()}


def _recorded_spaces(source: ArtifactSource) -> dict[str, int]:
    """The set's ``tablespace_bytes`` outside ``pg_default``, as far as they are well formed."""
    recorded = source.details.get("tablespace_bytes")
    if not isinstance(recorded, dict):
        return {}
    return {
        str(name): size
        for name, size in recorded.items()
        if name != "pg_default" and isinstance(size, int) and not isinstance(size, bool) and size > 0
    }


def _tablespaces_elsewhere(
    comp: PostgresComponent,
    admin: psycopg2.extensions.connection,
    source: ArtifactSource,
    fs: Filesystem,
    globals_sql: bytes = b"",
    scratch: int = 0,
) -> list[tuple[str, Filesystem, int]]:
    """Tablespaces the load writes to on other filesystems than the data directory's, each checked for room.

    Why: the whole database was counted against the data directory's filesystem. A
    database whose large tables live in a tablespace on a disk of their own was refused
    on a small system disk it would barely touch, and the tablespace's disk, which the
    load does fill, was neither checked nor watched. A tablespace the server lacks, or
    whose directory this host cannot see, stays counted on the data directory (the load
    fails on the first, and the second cannot be looked at). A tablespace the server
    lacks but the set's globals create (``creation_only``) is looked at where they create
    it, its directory having to exist for ``CREATE TABLESPACE``; found by review: a server
    rebuilt on the worst day lacks them all, and the restore was refused on its system disk.
    """
    recorded = _recorded_spaces(source)
    if not recorded:
        return []
    with admin.cursor() as cur:
        cur.execute(
            "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = ANY(%s)", (list(recorded),)
        )
        rows = cur.fetchall()
    created = pg_restore.tablespace_locations(globals_sql)
    present = {str(name) for name, _ in rows}
    locations = {name: path for name, path in created.items() if name not in present}
    locations.update({str(name): str(path) for name, path in rows if path})
    found: list[tuple[str, Filesystem, int]] = []
    for name, size in sorted(recorded.items()):
        try:
            space = filesystem(Path(locations[name]))
        except (KeyError, OSError):
            continue
        if space.device != fs.device:
            found.append((f"tablespace {name}", space, size))
    _check_spaces(comp, found, scratch)
    return found


def _check_spaces(comp: PostgresComponent, spaces: list[tuple[str, Filesystem, int]], scratch: int = 0) -> None:
    """Refuse a load whose tablespaces' bytes do not fit their filesystems (added up where they share one).

    ``scratch``: the extracted dump's bytes, added where the scratch directory shares the
    filesystem. Found by review: each was checked alone, so a disk with room for the
    tables or for the extracted dump, not both, passed and the load filled it.
    """
    by_device: dict[int, tuple[Filesystem, int, list[str]]] = {}
    for what, space, size in spaces:
        first, total, names = by_device.get(space.device, (space, 0, []))
        by_device[space.device] = (first, total + size, [*names, what])
    for space, total, names in by_device.values():
        kept = diskspace.reserve_for(space.path)
        shared = _shared_scratch(space, scratch)
        also = f", and the dump extracted to the scratch directory {_size(shared)} there," if shared else ""
        if total + shared + kept > space.free:
            raise InsufficientSpace(
                f"postgres {comp.instance!r}: refusing to restore: the side database puts {_size(total)} in "
                f"{', '.join(names)} (recorded at backup){also} on the filesystem of {space.path}, which has "
                f"{_size(space.free)} free and keeps {_size(kept)} free for the applications there. Free at least "
                f"{_size(total + shared + kept - space.free)} there, or restore to another server (--to). "
                "Nothing was changed"
            )


def _wal_elsewhere(where: Path, fs: Filesystem) -> Filesystem | None:
    """The filesystem of ``pg_wal`` when it is not the data directory's (a link to a disk of its own)."""
    try:
        wal = filesystem((where / "pg_wal").resolve())
    except OSError:
        return None  # not readable from here: the data directory's own check stands
    return None if wal.device == fs.device else wal


def wal_need(need: Need | None) -> int:
    """The WAL a load of ``need`` writes at most before a checkpoint recycles it (``reserve``'s reasoning)."""
    return RESERVE_FLOOR if need is None else min(RESERVE_FLOOR, WAL_PER_BYTE * need.bytes + WAL_MARGIN)


def _check_wal(comp: PostgresComponent, wal: Filesystem, need: Need | None, tables: int = 0) -> int:
    """Refuse a load whose WAL cannot fit on ``pg_wal``'s own filesystem; the floor the guard keeps there.

    Why: with ``pg_wal`` on a disk of its own (a common production layout) the load's WAL
    goes there, not beside the data; nothing looked at that disk, and a server that
    cannot write WAL PANICs. The floor: the trees' reserve, and never less than
    ``WAL_FLOOR``, room for the live server's WAL while a stopped load's last writes land.
    ``tables``: the bytes of tablespaces on that same filesystem. Found by review: each
    was checked alone (the tables against the trees' reserve, the WAL against the floor),
    so a WAL disk that held either but not both passed, and the load ate the WAL's floor.
    """
    floor = max(WAL_FLOOR, diskspace.reserve_for(wal.path))
    written = wal_need(need)
    if written + tables + floor <= wal.free:
        return floor
    also = f", and {_size(tables)} of the side database's tables in tablespaces there (recorded at backup)" if tables else ""
    says = (
        f"the server's WAL directory is on a filesystem of its own ({wal.path}): it has {_size(wal.free)} free, and "
        f"the load writes up to {_size(written)} of WAL there ({_amount(need)}){also} and must leave {_size(floor)} "
        "free for the live server's WAL (PostgreSQL stops when it cannot write WAL)"
    )
    if need is None or not need.exact:
        log.warning(
            "postgres %r: the restore may not fit: %s. It is watched and stopped if it does not", comp.instance, says
        )
        return floor
    raise InsufficientSpace(
        f"postgres {comp.instance!r}: refusing to restore: {says}. Free at least "
        f"{_size(written + tables + floor - wal.free)} there, or restore to another server (--to). Nothing was changed"
    )


def _amount(need: Need | None) -> str:
    return "an unknown amount of space" if need is None else f"{_size(need.bytes)}: {need.how}"


def _size(n: int) -> str:
    """A size as people read it, and exact: 17.1 MiB (17938111 bytes)."""
    return f"{diskspace.size_text(n)} ({n} bytes)"


def _shared_scratch(fs: Filesystem, scratch: int) -> int:
    """The extracted dump's bytes when the scratch directory is on the server's filesystem, else 0."""
    import tempfile

    return scratch if scratch and filesystem(Path(tempfile.gettempdir())).device == fs.device else 0


def _refuse_or_warn(comp: PostgresComponent, fs: Filesystem, need: Need, scratch: int, kept: int) -> None:
    """A recorded need that does not fit is refused; an estimated one is said, and left to the guard.

    Why not refuse on the estimate: the factor is an average, and a database of
    compressible text is smaller than its dump; refusing on a guess could block the one
    restore that fits, while the guard stops one that does not before the disk fills.
    """
    shared = _shared_scratch(fs, scratch)
    total = need.bytes + shared
    extra = f" and {_size(shared)} of the extracted dump in the scratch directory" if shared else ""
    if not need.exact:
        log.warning(
            "postgres %r: the restore may not fit on the filesystem of the server's data directory %s: it needs "
            "about %s (%s)%s and keeps %s free; %s are free. It is watched and stopped, the live database "
            "untouched, if free space falls below that",
            comp.instance,
            fs.path,
            _size(total),
            need.how,
            extra,
            _size(kept),
            _size(fs.free),
        )
        return
    raise InsufficientSpace(
        f"postgres {comp.instance!r}: refusing to restore: the side database it loads beside the live one needs "
        f"{_size(need.bytes)}: {need.how}{extra}; and the filesystem of the server's data directory {fs.path} has "
        f"{_size(fs.free)} free and must keep {_size(kept)} free as a reserve (for WAL "
        "and the live server's own writes: PostgreSQL stops when it cannot write WAL). Free at least "
        f"{_size(total + kept - fs.free)} there, or restore to another server (--to). Nothing was changed"
    )


def _check_scratch(comp: PostgresComponent, scratch: int, where: Path | None) -> None:
    """The scratch directory must hold the extracted dump; on the server's filesystem, ``preflight`` adds it up."""
    import tempfile

    tmp = filesystem(Path(tempfile.gettempdir()))
    if where is not None and filesystem(where).device == tmp.device:
        return
    if scratch + SCRATCH_MARGIN > tmp.free:
        raise InsufficientSpace(
            f"postgres {comp.instance!r}: refusing to restore: the dump is extracted to a scratch directory in "
            f"{tmp.path} and needs {_size(scratch)} there; that filesystem has {_size(tmp.free)} free (and keeps "
            f"{diskspace.size_text(SCRATCH_MARGIN)}). Free space there, or point TMPDIR at a filesystem with room. Nothing was changed"
        )


# -- while the side database loads --------------------------------------------------------------
class Watch:
    """Ends the side database's sessions once the data directory's free space falls below the reserve."""

    def __init__(self, comp: PostgresComponent, plan: Plan, side: str) -> None:
        assert plan.data_dir is not None
        self.side, self.instance = side, comp.instance
        self.watched = plan.watched()
        self.low: int | None = None  # free bytes seen when it stopped the restore
        # What stopped it: the filesystem's role, a path on it, what it keeps (the data directory until then).
        self.what, self.where, self.kept = self.watched[0]
        self.stop = threading.Event()
        self._said: set[str] = set()
        self._comp = comp
        # Connected now: a new session on a nearly full disk may fail to start.
        self.conn = self._session()

    def _session(self) -> psycopg2.extensions.connection:
        conn = self._comp.connect(self._comp.admin_db)
        conn.autocommit = True
        return conn

    def run(self) -> None:
        """Poll until stopped; never ends on an error, which would leave the load unwatched and say nothing."""
        while not self.stop.wait(POLL_SECONDS):
            try:
                if self._short():
                    self._end_sessions()
                else:
                    self._keep_session()
            except Exception as exc:  # a thread's exception is printed nowhere the user reads
                said = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                if said not in self._said:  # once each, not every poll
                    self._said.add(said)
                    log.warning(
                        "postgres %r: the disk space guard of the restore failed (%s); it tries again",
                        self.instance,
                        said,
                    )

    def _short(self) -> bool:
        """Whether a watched filesystem's free space is below what it keeps; the first such is remembered."""
        for what, path, kept in self.watched:
            free = filesystem(path).free
            if free < kept:
                if self.low is None or (path == self.where and free < self.low):
                    self.low, self.where, self.what, self.kept = free, path, what, kept
                return True
        return False

    def _keep_session(self) -> None:
        """Use the guard's session every poll, and replace it at once if the server ended it.

        Why: the guard's session must be ready the moment the disk fills. Left idle, a
        server's ``idle_session_timeout`` or a clean-up job of idle sessions ends it, and
        that is only found when it is needed, one reconnection late, while the load
        keeps writing.
        """
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error:
            self.conn.close()
            self.conn = self._session()

    def _end_sessions(self) -> None:
        """pg_restore and its workers fail on their next statement; every poll, in case one reconnects.

        Found by review: the guard's session sits idle until the disk fills, and a server
        that ends idle sessions (``idle_session_timeout``, a clean-up job) had ended it;
        the guard then only logged, every poll, while the load filled the disk and the
        server PANICked. A session that fails is replaced once, at once (the reserve is
        still free, so a new session starts).
        """
        for attempt in (1, 2):
            try:
                if self.conn.closed:
                    self.conn = self._session()
                with self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()",
                        (self.side,),
                    )
                return
            except (psycopg2.Error, ComponentError) as exc:
                self.conn.close()
                if attempt == 2:
                    log.warning(
                        "postgres %r: could not stop the restore: %s", self.instance, " ".join(str(exc).split())
                    )

    def error(self) -> ComponentError:
        return ComponentError(
            f"postgres {self.instance!r}: restore stopped: free space on the filesystem of the server's "
            f"{self.what} {self.where} fell to "
            f"{_size(self.low or 0)}, below the {_size(self.kept)} kept free "
            "(PostgreSQL stops when it cannot write WAL). The live database was not touched (the side database is "
            "dropped); free space there, or restore to another server (--to)"
        )


@contextmanager
def watching(comp: PostgresComponent, plan: Plan, side: str) -> Iterator[None]:
    """Watch free space while the block loads ``side``; its failure, if the watch stopped it, says why."""
    if plan.data_dir is None:
        yield
        return
    watch = Watch(comp, plan, side)
    thread = threading.Thread(target=watch.run, name="drproof-pg-space", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as exc:
        _finish(watch, thread)
        if watch.low is not None:
            raise watch.error() from exc
        raise
    _finish(watch, thread)
    if watch.low is not None:
        raise watch.error()


def _finish(watch: Watch, thread: threading.Thread) -> None:
    watch.stop.set()
    thread.join()
    watch.conn.close()


def details_of(conn: psycopg2.extensions.connection) -> dict[str, Any]:
    """The set's details that let a restore check its space: ``database_bytes`` when it could be read."""
    size = database_bytes(conn)
    details: dict[str, Any] = {} if size is None else {"database_bytes": size}
    try:
        spaces = tablespace_bytes(conn)
    except psycopg2.Error:
        conn.rollback()
        return details
    if set(spaces) - {"pg_default"}:
        details["tablespace_bytes"] = spaces
    return details
