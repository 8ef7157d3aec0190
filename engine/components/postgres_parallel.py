"""Parallel logical backups and restores (pg_dump and pg_restore ``--jobs``), overlapped with the archive.

**Backup.** ``pg_dump --format=directory --jobs=N --compress=0 --no-sync`` writes into a
private temporary directory while ``pgdir_stream.follow`` archives each data file as
pg_dump completes it: artifacts ``database.dir.data.tar`` (the data files),
``database.dir.toc`` (``toc.dat``) and ``database.dir.files.json`` (every data file's
size, in the order the stream completes them).

**Restore**, into the side database of ``postgres_restore``, with the data stream
extracted while pg_restore runs instead of before it:

1. ``toc.dat`` is copied out (proven as it is read) and every data file is created at
   its final size, still empty: ``pg_restore --jobs`` orders its work by the sizes of
   the files, largest first, as it would after a full extraction.
2. The side database is created and pg_restore runs the pre-data items (tables,
   types, functions; they need ``toc.dat`` only) while the data stream is extracted
   in a thread.
3. The gate. One connection to the side database locks every table a data file is
   copied into (``LOCK TABLE ... IN SHARE MODE``), each under a savepoint of its own,
   nested in the order the stream completes their files. Then ``pg_restore --jobs``
   runs every other item. A worker sends ``COPY ... FROM stdin``, which waits for the
   table's lock, and opens the data file only once the server accepted it; the lock
   is released (``ROLLBACK TO SAVEPOINT``) as soon as the extraction wrote that file
   whole. So pg_restore never reads a file before it is complete, and loads each
   table as soon as its file is.
4. Damage the stream reveals only at its end (the zstd checksum, a GCM tag, the
   stored digest) fails the restore after pg_restore finished, before the proof: the
   side database is dropped and the live one was never touched.

Splitting pre-data from the rest is how pg_restore's own ``--section`` works; the
pre-data run leaves out ACLs, which a single run applies after the data, so the
order is the same. Where the gate cannot be taken (a role without the privilege to
lock the tables, a dump with large objects, whose files no table lock guards), the
files it does not cover are extracted before pg_restore starts on the data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.components import pgdir_stream
from engine.components import postgres_restore as pg_restore
from engine.components.base import ArtifactSource
from engine.components.tools import _errors, capture, run_tool
from engine.errors import ComponentError
from engine.lazy import lazy
from engine.repository.base import BackupSetWriter
from engine.scratch import scratch_dir

if TYPE_CHECKING:
    import psycopg2
    import psycopg2.extensions

    from engine.components.postgres import PostgresComponent
else:
    psycopg2 = lazy("psycopg2")

DATA = "database.dir.data.tar"
TOC = "database.dir.toc"
LISTING = "database.dir.files.json"
ARCHIVED = "database.dir.tar"  # drproof before issue 14: the whole directory, archived after pg_dump
MAX_GATED = 10_000  # tables locked at once; beyond, the server's lock table would overflow
_WAIT = 0.05


# -- backup -------------------------------------------------------------------------------
Sequences = dict[tuple[str, str], str | None] | None


def backup(
    comp: PostgresComponent,
    writer: BackupSetWriter,
    env: dict[str, str],
    options: list[str],
    read_sequences: Callable[[Path], Sequences] | None,
) -> tuple[dict[str, Any], Sequences]:
    """pg_dump -Fd -jN (and ``options``), archived while it runs.

    Returns the details for the manifest and, if ``read_sequences`` is given, the
    sequence values it reads from the dump's ``toc.dat``.
    """
    jobs = comp.params.jobs
    with scratch_dir("drproof-pgdump-") as tmp:
        target = Path(tmp) / "dump"
        target.mkdir(mode=0o700)  # pg_dump takes an empty directory; the watch needs it to exist first
        argv = [
            *comp.service.tool("pg_dump"),
            "--format=directory",
            f"--jobs={jobs}",
            "--compress=0",
            *options,
            "-f",
            str(target),
            "-d",
            comp.service.tool_dsn(comp.db),
        ]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
            with writer.artifact(comp.instance, DATA) as sink:
                order = pgdir_stream.follow(target, proc, sink)
            _check_exit(proc.wait(), err, f"pg_dump -j {jobs} of {comp.instance!r}")
        toc = target / pgdir_stream.TOC
        with writer.artifact(comp.instance, TOC) as sink, toc.open("rb") as fh:
            shutil.copyfileobj(fh, sink)
        with writer.artifact(comp.instance, LISTING) as sink:
            sink.write(pgdir_stream.listing_json(order))
        sequences = read_sequences(target) if read_sequences is not None else None
        toc_size = toc.stat().st_size
    details = {
        "database": comp.db,
        "server_version": comp.service.version(),
        "dump_bytes": toc_size + sum(size for _, size in order),
        "dump_files": len(order) + 1,
        "method": f"pg_dump directory format, {jobs} jobs, archived while it runs + pg_dumpall --globals-only",
    }
    return details, sequences


def _check_exit(code: int, err: IO[bytes], what: str) -> None:
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    problems = _errors(stderr, ())
    if code != 0 or problems:
        detail = "\n".join(problems) or stderr.strip()[-2000:]
        raise ComponentError(f"{what} failed (exit {code}): {detail}")


# -- restore ------------------------------------------------------------------------------
def load_side(comp: PostgresComponent, source: ArtifactSource, side: str, env: dict[str, str]) -> None:
    """Create the side database from the dump and load it with pg_restore -j, extracting as it goes."""
    jobs = max(comp.params.jobs, 2)
    listing = pgdir_stream.read_listing(source.read_small(LISTING, pgdir_stream.MAX_LISTING))
    restore = [*comp.service.tool("pg_restore"), "--format=directory"]
    with scratch_dir("drproof-pgrestore-") as tmp:
        target = Path(tmp) / "dump"
        target.mkdir(mode=0o700)
        _stage_toc(source, target)
        for name, size in listing:
            fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        script = capture(
            [*restore, "--create", "--schema-only", "-f", "-", str(target)],
            env,
            f"reading the database definition in the dump of {comp.instance!r}",
        )
        sql = pg_restore.database_sql(script, side)
        comp._run_sql(sql.create, env, f"creating the side database for {comp.instance!r}")
        first, rest = _phases(restore, target, Path(tmp), env)
        targets = _copy_targets(restore, target, Path(tmp), listing, env)
        extractor = pgdir_stream.StreamExtractor(target, listing)
        thread = threading.Thread(target=extractor.run, args=(lambda: source.open(DATA),), daemon=True)
        thread.start()
        try:
            run_tool(
                [*restore, "-L", str(first), "--exit-on-error", "-d", comp.service.tool_dsn(side), str(target)],
                env,
                f"pg_restore of the pre-data items of {comp.instance!r}",
            )
            with _Gate.taken(comp, side, listing, targets) as gate:
                _wait_for(extractor, [n for n, _ in listing if gate is None or n not in targets])
                argv = [
                    *restore,
                    f"--jobs={jobs}",
                    "-L",
                    str(rest),
                    "--exit-on-error",
                    "-d",
                    comp.service.tool_dsn(side),
                ]
                _restore_rest([*argv, str(target)], env, f"pg_restore -j {jobs} of {comp.instance!r}", extractor, gate)
                if gate is not None:
                    gate.held()
            thread.join()
            if extractor.error is not None:
                raise extractor.error
        finally:
            extractor.cancelled = True
            thread.join()
        comp._run_sql(sql.properties, env, f"restoring the database properties of {comp.instance!r}")


def _stage_toc(source: ArtifactSource, target: Path) -> None:
    """toc.dat, read whole (so proven) before pg_restore reads any of it."""
    fd = os.open(target / pgdir_stream.TOC, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh, source.open(TOC) as stream:
        shutil.copyfileobj(stream, fh)


_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


def _entries(listing: str) -> list[str]:
    return [line for line in listing.splitlines() if _ENTRY.match(line)]


def is_acl(line: str) -> bool:
    """The entries a single pg_restore applies after the data (``ACL``, ``DEFAULT ACL``)."""
    m = _ENTRY.match(line)
    assert m is not None
    tableoid, rest = m.group(2), m.group(4)
    return (tableoid == "0" and rest.startswith(("ACL ", "ACL LANGUAGE "))) or (
        tableoid == "826" and rest.startswith("DEFAULT ACL ")  # pg_default_acl's oid
    )


def _phases(restore: list[str], target: Path, tmp: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """pg_restore lists: the pre-data items without ACLs, then every other item."""
    every = _entries(capture([*restore, "-l", str(target)], env, "listing the dump's items"))
    pre = _entries(capture([*restore, "-l", "--section=pre-data", str(target)], env, "listing the pre-data items"))
    first = [line for line in pre if not is_acl(line)]
    chosen = set(first)
    paths = tmp / "pre-data.list", tmp / "rest.list"
    paths[0].write_text("\n".join(first) + "\n", encoding="utf-8")
    paths[1].write_text("\n".join(line for line in every if line not in chosen) + "\n", encoding="utf-8")
    return paths


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_COPY = re.compile(rf"^COPY ({_IDENT}(?:\.{_IDENT})?) ")
_FILE = re.compile(r"^-- File: (\S+)$")


def _copy_targets(
    restore: list[str], target: Path, tmp: Path, listing: list[tuple[str, int]], env: dict[str, str]
) -> dict[str, str]:
    """Data file -> the table its ``COPY`` goes into (quoted as pg_dump wrote it).

    Read from pg_restore's own script of the data items, over empty copies of the files
    (``-v`` names each item's file). A file no COPY reads (large objects) is absent.
    """
    empty = tmp / "describe"
    empty.mkdir(mode=0o700)
    os.link(target / pgdir_stream.TOC, empty / pgdir_stream.TOC)
    for name, _ in listing:
        (empty / name).touch(mode=0o600)
    script = capture(
        [*restore, "--data-only", "-v", "-f", "-", str(empty)], env, "reading which table each data file fills"
    )
    shutil.rmtree(empty)
    return targets_in(script, {name for name, _ in listing})


def targets_in(script: str, names: set[str]) -> dict[str, str]:
    """Of a ``pg_restore -v`` script of data items: each listed file's ``COPY`` target table."""
    out: dict[str, str] = {}
    current = None
    for line in script.splitlines():
        if (m := _FILE.match(line)) is not None:
            current = m.group(1)
        elif current is not None and (c := _COPY.match(line)) is not None:
            if current in names:
                out[current] = c.group(1)
            current = None
        elif line.startswith("-- TOC entry"):
            current = None
    return out


def _wait_for(extractor: pgdir_stream.StreamExtractor, names: list[str]) -> None:
    """Until every file in ``names`` is whole (the files no lock guards)."""
    wanted = set(names)
    with extractor.changed:
        extractor.changed.wait_for(lambda: extractor.done or wanted <= set(extractor.completed))
    if extractor.error is not None:
        raise extractor.error


def gate_levels(listing: list[tuple[str, int]], targets: dict[str, str]) -> list[tuple[int, str]]:
    """(index in the stream of the table's last file, table), the table released last first.

    A table filled from several files (partitions loaded through their root) is held
    until the last of them is whole. Locks nest in this order, one savepoint each, so
    the innermost is always the next one the extraction frees.
    """
    last: dict[str, int] = {}
    for index, (name, _) in enumerate(listing):
        if name in targets:
            last[targets[name]] = index
    return sorted(((i, t) for t, i in last.items()), reverse=True)


class _Gate:
    """Table locks that hold each ``COPY`` back until the extraction wrote its file whole."""

    def __init__(self, conn: psycopg2.extensions.connection, levels: list[tuple[int, str]]) -> None:
        self.conn = conn
        self.levels = levels  # (index of the table's last file in the stream, table), outermost first
        with conn.cursor() as cur:
            # A server that ends idle transactions (or long statements) would drop the locks
            # early, and pg_restore would read files still being written: none of that here.
            cur.execute("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0")
            for depth, (_, table) in enumerate(levels):
                cur.execute(f"SAVEPOINT gate_{depth}")
                cur.execute(f"LOCK TABLE {table} IN SHARE MODE")

    @classmethod
    @contextlib.contextmanager
    def taken(
        cls, comp: PostgresComponent, side: str, listing: list[tuple[str, int]], targets: dict[str, str]
    ) -> Iterator[_Gate | None]:
        """The gate over every table a data file fills; None if it cannot be taken here."""
        levels = gate_levels(listing, targets)
        gate = None
        if 0 < len(levels) <= MAX_GATED:
            conn = comp.connect(side)
            try:
                gate = cls(conn, levels)
            except psycopg2.Error:  # no privilege to lock them, or too many for the lock table
                conn.close()
        try:
            yield gate
        finally:
            if gate is not None:
                gate.conn.close()  # every lock left goes with the transaction

    def held(self) -> None:
        """Refuse a restore whose locks went away before they were released (a session ended by someone)."""
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error as exc:
            raise ComponentError(
                "the session that held pg_restore back until each data file was whole ended early "
                f"({str(exc).strip()}); the restore is not trusted, and the live database was not touched"
            ) from exc

    def release(self, completed: int) -> None:
        """Let pg_restore load each table whose files are among the first ``completed`` of the stream."""
        with self.conn.cursor() as cur:
            while self.levels and self.levels[-1][0] < completed:
                self.levels.pop()
                cur.execute(f"ROLLBACK TO SAVEPOINT gate_{len(self.levels)}")


def _restore_rest(
    argv: list[str],
    env: dict[str, str],
    what: str,
    extractor: pgdir_stream.StreamExtractor,
    gate: _Gate | None,
) -> None:
    """Run pg_restore (every item but the pre-data), opening the gate as the extraction completes files."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,  # its workers go with it if the restore is abandoned
        )
        try:
            while proc.poll() is None:
                with extractor.changed:
                    extractor.changed.wait(_WAIT)
                if extractor.error is not None:
                    raise extractor.error
                if gate is not None:
                    gate.release(len(extractor.completed))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        _check_exit(proc.returncode, err, what)
