"""A logical restore never fills the server's disk: refused before it starts, stopped before the disk is full.

Real embedded PostgreSQL servers whose data directory is on a small tmpfs (root only;
under CI=true a failure, never a skip). Found: a restore whose side database did not fit
beside the live one filled the disk, the checkpointer PANICked and the live server went
down, where before it was only damaged.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from engine import backup as engine_backup
from engine import diskspace
from engine.components import postgres_space
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError
from engine.manifest import Manifest
from engine.repository import LocalRepository
from engine.runtime.external import ExternalPostgres, PostgresTarget
from engine.runtime.local import LocalPostgres, LocalRuntime
from tests.integration.helpers import mounted_tmpfs, pg_sql

pytestmark = [pytest.mark.integration]

MIB = 1 << 20


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 512 MiB tmpfs for the server's data directory; unmounted afterwards, also on failure.

    Mounted in the system temp directory, not pytest's: the server's user must reach its
    data directory through every parent, and pytest's are private (the runtime would put
    the server elsewhere, on the ordinary disk). 512 MiB: a run whose server wheel the
    server's user cannot reach (tox's ``.tox``) copies its install tree, about 100 MB,
    into the run's directory on this disk (at 160 MiB the tests failed under CI's tox).
    """
    mountpoint = Path(tempfile.mkdtemp(prefix="drproof-test-space-"))
    mountpoint.chmod(0o711)
    try:
        with mounted_tmpfs(mountpoint, "512m") as disk:
            yield disk
    finally:
        mountpoint.rmdir()


@pytest.fixture(params=[1, 2], ids=["custom", "directory"])
def small_db(small_disk: Path, request: pytest.FixtureRequest) -> Iterator[PostgresComponent]:
    """A seeded database (about 14 MB) of a server whose data directory is on ``small_disk``.

    Dumped in custom format (streamed into pg_restore) and in directory format (jobs 2,
    extracted to a scratch directory while pg_restore -j loads it).
    """
    with LocalRuntime(small_disk / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=20_000, jobs=request.param), rt)
        comp.provision()
        assert cast(LocalPostgres, comp.service).data_dir().is_relative_to(small_disk)
        comp.seed()
        yield comp


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill_to(disk: Path, free: int) -> None:
    """Leave ``free`` bytes of ``disk`` free, in a file of its own."""
    with open(disk / "filler", "ab") as fh:
        fh.write(b"\0" * max(_free(disk) - free, 0))
        fh.flush()
        os.fsync(fh.fileno())


def _leave_just_room(disk: Path, manifest: Manifest) -> None:
    """Fill ``disk`` before the restore to just above what the check asks (the database and a 96 MiB reserve).

    So that filling it below the reserve during the load writes tens of megabytes, not the
    whole disk: on a large disk the filler was still writing when the load had finished.
    """
    _fill_to(disk, manifest.component("db").details["database_bytes"] + 100 * MIB)


def _side_databases(comp: PostgresComponent) -> list[str]:
    rows = pg_sql(comp, "SELECT datname FROM pg_database WHERE starts_with(datname, 'drproof_')", db="postgres")
    return [row[0] for row in rows]


def _backup(comp: PostgresComponent, tmp_path: Path) -> tuple[LocalRepository, Manifest]:
    repo = LocalRepository(tmp_path / "repo")  # on the ordinary disk: only the server's is small
    return repo, engine_backup.backup(repo, [comp])


def _server_log(comp: PostgresComponent) -> str:
    return cast(LocalPostgres, comp.service).log.read_text(errors="replace")


def _small_reserve(monkeypatch: pytest.MonkeyPatch, floor: int) -> None:
    """The reserve of a 512 MiB disk, not of a production one (1 GiB would refuse every restore here)."""
    monkeypatch.setattr(postgres_space, "RESERVE_FLOOR", floor)
    monkeypatch.setattr(diskspace, "RESERVE_FRACTION", 0.0)


def _guarded_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 96 MiB reserve (WAL counted at 6 bytes a byte): the guard stops the load at half of it, 48 MiB,
    which leaves room, once the filler has taken the disk to 32 MiB, for what the load writes until it is
    ended and for the clean-up's checkpoint."""
    _small_reserve(monkeypatch, 96 * MIB)
    monkeypatch.setattr(postgres_space, "WAL_PER_BYTE", 6)


def test_a_set_bigger_than_the_free_space_is_refused_before_anything_is_created(
    small_db: PostgresComponent, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the side database filled the disk and the server PANICked (measured: the live server went down)."""
    _small_reserve(monkeypatch, 8 * MIB)
    repo, manifest = _backup(small_db, tmp_path)
    size = manifest.component("db").details["database_bytes"]
    assert isinstance(size, int) and size > 10 * MIB
    before = small_db.fingerprint()
    _fill_to(small_disk, size + 4 * MIB)  # room for the live server, not for a second copy and the reserve
    with pytest.raises(ComponentError, match="refusing to restore") as refused:
        engine_backup.restore(repo, manifest, small_db)
    message = str(refused.value)
    assert f"({size} bytes)" in message and "MiB" in message and "free" in message and "Nothing was changed" in message
    assert "--to" in message and str(cast(LocalPostgres, small_db.service).data_dir()) in message
    assert _side_databases(small_db) == []
    assert small_db.health().ok
    assert small_db.fingerprint().parts == before.parts
    assert "PANIC" not in _server_log(small_db)


def _stopped_once_loading(comp: PostgresComponent, disk: Path, repo: LocalRepository, manifest: Manifest) -> str:
    """Restore, filling ``disk`` to 32 MiB free once the side database exists (another writer); the guard's error.

    32 MiB: below the guard's floor, with room for what the load writes until it is ended and for the
    clean-up's checkpoint (16 MiB left the DROP of the side database failing on a full disk, 1 run in 4).
    """
    filled = threading.Event()

    def fill_once_loading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _side_databases(comp):
            time.sleep(0.01)
        _fill_to(disk, 32 * MIB)
        filled.set()

    filler = threading.Thread(target=fill_once_loading, daemon=True)
    filler.start()
    with pytest.raises(ComponentError, match="restore stopped: free space") as stopped:
        engine_backup.restore(repo, manifest, comp)
    filler.join()
    assert filled.is_set()
    return str(stopped.value)


def test_a_restore_the_disk_fills_under_is_stopped_and_the_live_database_keeps_serving(
    small_db: PostgresComponent, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something else fills the disk while the side database loads: the guard ends pg_restore and drops it."""
    _guarded_reserve(monkeypatch)
    monkeypatch.setattr(postgres_space, "POLL_SECONDS", 0.05)
    repo, manifest = _backup(small_db, tmp_path)
    before = small_db.fingerprint()
    _leave_just_room(small_disk, manifest)
    assert _free(small_disk) > manifest.component("db").details["database_bytes"] + 96 * MIB  # the check passes
    stopped = _stopped_once_loading(small_db, small_disk, repo, manifest)
    assert "live database was not touched" in stopped
    assert _side_databases(small_db) == []
    assert small_db.health().ok
    assert small_db.fingerprint().parts == before.parts
    assert "PANIC" not in _server_log(small_db)


def test_a_guard_whose_session_was_ended_still_stops_the_restore(
    small_db: PostgresComponent, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: the guard's own connection sits idle until the disk fills; a server that ends idle
    sessions (``idle_session_timeout``, a pgbouncer, a DBA's clean-up job) left the guard unable to end the load.
    It said "could not stop the restore" every poll while pg_restore filled the disk, and the server PANICked.
    """
    _guarded_reserve(monkeypatch)
    monkeypatch.setattr(postgres_space, "POLL_SECONDS", 0.05)
    watches: list[postgres_space.Watch] = []
    real_init = postgres_space.Watch.__init__

    def init(self: postgres_space.Watch, *args: Any) -> None:
        real_init(self, *args)
        watches.append(self)

    monkeypatch.setattr(postgres_space.Watch, "__init__", init)
    repo, manifest = _backup(small_db, tmp_path)
    before = small_db.fingerprint()
    _leave_just_room(small_disk, manifest)
    filled = threading.Event()
    ended: list[int] = []
    replaced: list[bool] = []

    def end_the_guards_session_then_fill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not watches:  # the guard starts before the side database
            time.sleep(0.001)
        guard = watches[0]
        session = guard.conn
        ended.append(session.get_backend_pid())
        pg_sql(small_db, f"SELECT pg_terminate_backend({ended[0]})", db="postgres")
        until = time.monotonic() + 5
        while guard.conn is session and time.monotonic() < until:  # the guard finds its session gone
            time.sleep(0.005)
        replaced.append(guard.conn is not session)
        # Filled as soon as the load has begun: ending and replacing the session first left a small
        # load finished before the disk was filled, 1 run in 10.
        while time.monotonic() < deadline and not _side_databases(small_db):
            time.sleep(0.01)
        # Below the reserve, with room for what the load writes until it is ended and the clean-up's checkpoint.
        _fill_to(small_disk, 32 * MIB)
        filled.set()

    filler = threading.Thread(target=end_the_guards_session_then_fill, daemon=True)
    filler.start()
    with pytest.raises(ComponentError, match="restore stopped: free space"):
        engine_backup.restore(repo, manifest, small_db)
    filler.join()
    assert filled.is_set()
    assert replaced == [True]  # before: the guard found out only when it needed the session, and then only logged
    log = _server_log(small_db)
    assert _side_databases(small_db) == [], log[-3000:]
    assert small_db.health().ok
    assert small_db.fingerprint().parts == before.parts
    assert "PANIC" not in log


def test_a_restore_that_fits_is_checked_quietly_and_restores(
    small_db: PostgresComponent,
    small_disk: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The control: free space enough for the side database and the reserve; no warning, restored."""
    _small_reserve(monkeypatch, 8 * MIB)
    repo, manifest = _backup(small_db, tmp_path)
    pg_sql(small_db, "DELETE FROM orders WHERE id % 2 = 0")
    with caplog.at_level("WARNING", logger="engine"):
        engine_backup.restore(repo, manifest, small_db)
    assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
    assert small_db.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
    assert _side_databases(small_db) == []


def test_a_small_database_restores_on_a_small_disk_with_the_production_reserve(
    small_db: PostgresComponent, small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: the reserve was 1 GiB whatever the database, so every restore on a data disk with less
    than 1 GiB free was refused: here a 14 MB database with 130 MiB free. The reserve is now the WAL the load
    can write (measured below), at most 1 GiB, never less than the trees' reserve.
    """
    repo, manifest = _backup(small_db, tmp_path)
    need = manifest.component("db").details["database_bytes"]
    assert _free(small_disk) > 4 * need  # room for it several times over
    pg_sql(small_db, "DELETE FROM orders WHERE id % 2 = 0")
    [(start,)] = pg_sql(small_db, "SELECT pg_current_wal_lsn()::text")
    with caplog.at_level("WARNING", logger="engine"):
        engine_backup.restore(repo, manifest, small_db)
    [(wal,)] = pg_sql(small_db, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint")
    assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
    assert small_db.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
    fs = postgres_space.filesystem(small_disk)
    print(f"database {need} bytes, WAL written by the restore {wal} bytes, reserve {postgres_space.reserve(fs, need)}")
    assert wal <= postgres_space.reserve(fs, need) - diskspace.reserve_for(small_disk) // 2


def test_a_production_sized_reserve_passes_on_an_ordinary_disk(
    seeded_postgres: PostgresComponent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default reserve, max(1 GiB, 5%), on the machine's own disk: a small set restores without a word."""
    repo, manifest = _backup(seeded_postgres, tmp_path)
    recorded = manifest.component("db").details["database_bytes"]
    live = pg_sql(seeded_postgres, "SELECT pg_database_size(current_database())")[0][0]
    assert abs(recorded - live) < 1 * MIB
    with caplog.at_level("WARNING", logger="engine"):
        engine_backup.restore(repo, manifest, seeded_postgres)
    assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]


def test_another_servers_data_directory_counts_only_when_it_is_the_same_cluster(
    seeded_postgres: PostgresComponent,
) -> None:
    """An external server is checked where its data directory is on this host and holds its own cluster."""
    local = cast(LocalPostgres, seeded_postgres.service)
    target = PostgresTarget("127.0.0.1", local.port, local.superuser, "app", local.password)
    outside: Any = type("Outside", (), {"service": ExternalPostgres(target)})()
    admin = seeded_postgres.connect("postgres")
    try:
        found, why = postgres_space.data_directory(outside, admin)
        with admin.cursor() as cur:
            cur.execute("SELECT system_identifier FROM pg_control_system()")
            row = cur.fetchone()
    finally:
        admin.close()
    assert found is not None and found.resolve() == local.data_dir().resolve(), why
    assert row is not None
    other, why = postgres_space._same_cluster(local.data_dir(), int(row[0]) + 1)
    assert other is None and "another cluster" in why


def test_a_side_database_the_clean_up_could_not_drop_is_named_in_the_failure(
    seeded_postgres: PostgresComponent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review (1 run in 4 of the guard's test with 16 MiB left): DROP DATABASE of the side database
    failed on the full disk ("checkpoint request failed"), the error was swallowed, and the failure said
    "the side database is dropped" while a whole copy stayed on the disk. The drop's failure is now said.
    """
    import psycopg2

    from engine.components import postgres_restore

    repo, manifest = _backup(seeded_postgres, tmp_path)
    real_drop = postgres_restore.drop_database

    def drop_fails(_conn: Any, _name: str) -> None:
        raise psycopg2.errors.InternalError("checkpoint request failed")

    monkeypatch.setattr(PostgresComponent, "_load_side", lambda self, source, side, env: _create_then_fail(self, side))
    monkeypatch.setattr(postgres_restore, "drop_database", drop_fails)
    with pytest.raises(ComponentError) as failed:
        engine_backup.restore(repo, manifest, seeded_postgres)
    [side] = _side_databases(seeded_postgres)
    message = str(failed.value)
    assert "restore stopped" in message and f"{side!r}" in message and "could not be dropped" in message, message
    assert "checkpoint request failed" in message and f"DROP DATABASE {side}" in message
    monkeypatch.setattr(postgres_restore, "drop_database", real_drop)
    conn = seeded_postgres.connect("postgres")
    conn.autocommit = True
    real_drop(conn, side)
    conn.close()


def _create_then_fail(comp: PostgresComponent, side: str) -> None:
    """The side database exists, then the load fails (as when the guard ends it)."""
    conn = comp.connect("postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{side}"')
    conn.close()
    raise ComponentError("postgres 'db': restore stopped: free space fell (as the guard says it)")


# -- pg_wal on a filesystem of its own ---------------------------------------------------------
@pytest.fixture
def wal_disk() -> Iterator[Path]:
    """A 512 MiB tmpfs for the server's WAL, in the system temp directory (the server's user reaches it)."""
    mountpoint = Path(tempfile.mkdtemp(prefix="drproof-test-wal-"))
    mountpoint.chmod(0o711)
    try:
        with mounted_tmpfs(mountpoint, "512m", "0711") as disk:
            yield disk
    finally:
        mountpoint.rmdir()


@pytest.fixture
def wal_db(runtime: LocalRuntime, wal_disk: Path) -> PostgresComponent:
    """A seeded database (about 14 MB) of a server whose ``pg_wal`` links to ``wal_disk``, a common layout."""

    comp = PostgresComponent("db", PostgresParams(customers=20_000), runtime)
    comp.provision()
    _move_wal(comp, wal_disk / "pg_wal")
    comp.seed()
    return comp


def _move_wal(comp: PostgresComponent, moved: Path) -> None:
    """The server's ``pg_wal`` moved to ``moved`` and linked from the data directory (the server stopped meanwhile)."""
    import shutil

    server = cast(LocalPostgres, comp.service)
    server.stop()
    wal = server.data_dir() / "pg_wal"
    shutil.copytree(wal, moved, symlinks=True)
    owner = server.server_file_owner()
    if owner is not None:
        for path in [moved, *moved.rglob("*")]:
            os.lchown(path, *owner)
    shutil.rmtree(wal)
    wal.symlink_to(moved)
    server.ensure_running()


def test_a_load_whose_wal_cannot_fit_on_the_wal_disk_is_refused(
    wal_db: PostgresComponent, wal_disk: Path, tmp_path: Path
) -> None:
    """Before: only the data directory's filesystem was looked at; the WAL disk was neither checked nor watched."""
    repo, manifest = _backup(wal_db, tmp_path)
    need = postgres_space.Need(manifest.component("db").details["database_bytes"], True, "recorded")
    before = wal_db.fingerprint()
    _fill_to(wal_disk, postgres_space.wal_need(need) + postgres_space.WAL_FLOOR - 8 * MIB)
    with pytest.raises(ComponentError, match="refusing to restore") as refused:
        engine_backup.restore(repo, manifest, wal_db)
    message = str(refused.value)
    assert "WAL directory" in message and str(wal_disk) in message and "Nothing was changed" in message, message
    assert _side_databases(wal_db) == []
    assert wal_db.health().ok and wal_db.fingerprint().parts == before.parts
    assert "PANIC" not in _server_log(wal_db)


def test_a_wal_disk_filled_during_the_load_stops_it_and_the_live_database_keeps_serving(
    wal_db: PostgresComponent, wal_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something else fills the WAL disk while the side database loads: the guard ends the load there too."""
    monkeypatch.setattr(postgres_space, "POLL_SECONDS", 0.05)
    repo, manifest = _backup(wal_db, tmp_path)
    need = postgres_space.Need(manifest.component("db").details["database_bytes"], True, "recorded")
    before = wal_db.fingerprint()
    _fill_to(wal_disk, postgres_space.wal_need(need) + postgres_space.WAL_FLOOR + 16 * MIB)
    stopped = _stopped_once_loading(wal_db, wal_disk, repo, manifest)
    assert "WAL directory" in stopped and "live database was not touched" in stopped
    assert _side_databases(wal_db) == []
    assert wal_db.health().ok and wal_db.fingerprint().parts == before.parts
    assert "PANIC" not in _server_log(wal_db)


def test_a_load_that_fits_the_wal_disk_restores_quietly(
    wal_db: PostgresComponent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Quiet control: the same layout with room; no warning, restored."""
    repo, manifest = _backup(wal_db, tmp_path)
    pg_sql(wal_db, "DELETE FROM orders WHERE id % 2 = 0")
    with caplog.at_level("WARNING", logger="engine"):
        engine_backup.restore(repo, manifest, wal_db)
    assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
    assert wal_db.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]


# -- tables in a tablespace on another filesystem ----------------------------------------------
def _into_tablespace(comp: PostgresComponent, where: Path) -> None:
    """Every table and index of the database moved into a new tablespace ``fast`` at ``where`` (made for the server)."""
    where.mkdir()
    owner = cast(LocalPostgres, comp.service).server_file_owner()
    if owner is not None:
        os.chown(where, *owner)
    pg_sql(comp, f"CREATE TABLESPACE fast LOCATION '{where}'", db="postgres")
    pg_sql(comp, "ALTER TABLE ALL IN TABLESPACE pg_default SET TABLESPACE fast")
    pg_sql(comp, "ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE fast")


def _drop_tablespace(comp: PostgresComponent) -> None:
    pg_sql(comp, "ALTER TABLE ALL IN TABLESPACE fast SET TABLESPACE pg_default")
    pg_sql(comp, "ALTER INDEX ALL IN TABLESPACE fast SET TABLESPACE pg_default")
    pg_sql(comp, "DROP TABLESPACE fast", db="postgres")


@pytest.fixture
def roomy_place() -> Iterator[Path]:
    """A directory on the machine's own disk the server's user reaches (not pytest's private tree)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="drproof-test-ts-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_tables_in_a_tablespace_elsewhere_are_not_counted_against_the_data_directory(
    small_disk: Path, roomy_place: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by reading the check: the whole database was counted on the data directory's filesystem, so a small
    system disk refused the restore of a database whose tables live in a tablespace on a disk of their own.

    The WAL is on the roomy disk too (a layout of a small system disk): with it on the small one, the load's
    own WAL took the guard below the reserve the check had asked for, 1 run in 4 (the guard's floor is
    counted from the whole reserve; an open question, in the notes).
    """
    with LocalRuntime(small_disk / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=40_000), rt)
        comp.provision()
        _move_wal(comp, roomy_place / "pg_wal")
        comp.seed()
        _into_tablespace(comp, roomy_place / "fast")
        repo, manifest = _backup(comp, tmp_path)
        details = manifest.component("db").details
        whole, elsewhere = details["database_bytes"], details["tablespace_bytes"]["fast"]
        assert elsewhere > whole // 2, details
        kept = postgres_space.reserve(postgres_space.filesystem(small_disk), whole)
        # Room for the side database's share here and the reserve, not for the whole database.
        _fill_to(small_disk, whole - elsewhere + kept + elsewhere // 2)
        pg_sql(comp, "DELETE FROM orders WHERE id % 2 = 0")
        with caplog.at_level("WARNING", logger="engine"):
            engine_backup.restore(repo, manifest, comp)
        assert comp.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
        assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
        assert "PANIC" not in _server_log(comp)
        _drop_tablespace(comp)


def test_a_tablespace_disk_without_room_for_its_tables_is_refused(
    seeded_postgres: PostgresComponent, tmp_path: Path
) -> None:
    """Before: the tablespace's filesystem was neither checked nor watched; the load filled it."""
    mountpoint = Path(tempfile.mkdtemp(prefix="drproof-test-tsdisk-"))
    mountpoint.chmod(0o711)
    try:
        with mounted_tmpfs(mountpoint, "64m", "0711") as disk:
            comp = seeded_postgres
            pg_sql(
                comp,
                "INSERT INTO orders (customer_id, amount, status, placed_at) "
                "SELECT 1, g % 1000, 'placed', now() FROM generate_series(1, 200000) g",
            )
            _into_tablespace(comp, disk / "fast")
            repo, manifest = _backup(comp, tmp_path)
            elsewhere = manifest.component("db").details["tablespace_bytes"]["fast"]
            before = comp.fingerprint()
            _fill_to(disk, elsewhere)  # the tables' bytes, not the reserve as well
            with pytest.raises(ComponentError, match="refusing to restore") as refused:
                engine_backup.restore(repo, manifest, comp)
            message = str(refused.value)
            assert "tablespace fast" in message and "Nothing was changed" in message, message
            assert _side_databases(comp) == []
            assert comp.health().ok and comp.fingerprint().parts == before.parts
            (disk / "filler").unlink()
            _drop_tablespace(comp)
    finally:
        mountpoint.rmdir()


@pytest.mark.parametrize("room", ["short", "enough"])
def test_a_tablespace_on_the_wal_disk_is_counted_with_the_wal(
    wal_db: PostgresComponent, wal_disk: Path, tmp_path: Path, room: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: with a tablespace on pg_wal's own disk, the tables were checked against that disk's small
    reserve and the WAL against its floor, each alone; a disk with room for either but not both passed, and the
    load would eat the floor kept for the live server's WAL. Control: with room for both, it restores quietly."""
    _into_tablespace(wal_db, wal_disk / "fast")
    try:
        repo, manifest = _backup(wal_db, tmp_path)
        details = manifest.component("db").details
        tables = details["tablespace_bytes"]["fast"]
        wal = postgres_space.wal_need(postgres_space.Need(details["database_bytes"], True, "recorded"))
        before = wal_db.fingerprint()
        _fill_to(wal_disk, wal + postgres_space.WAL_FLOOR + (tables // 2 if room == "short" else tables + 16 * MIB))
        if room == "short":
            with pytest.raises(ComponentError, match="refusing to restore") as refused:
                engine_backup.restore(repo, manifest, wal_db)
            message = str(refused.value)
            assert "WAL directory" in message and "tablespaces there" in message, message
            assert "Nothing was changed" in message and _side_databases(wal_db) == []
            assert wal_db.health().ok and wal_db.fingerprint().parts == before.parts
        else:
            pg_sql(wal_db, "DELETE FROM orders WHERE id % 2 = 0")
            with caplog.at_level("WARNING", logger="engine"):
                engine_backup.restore(repo, manifest, wal_db)
            assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
            assert wal_db.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
        assert "PANIC" not in _server_log(wal_db)
    finally:
        (wal_disk / "filler").unlink(missing_ok=True)
        _drop_tablespace(wal_db)


def test_a_tablespace_the_restore_creates_on_a_rebuilt_server_is_counted_on_its_own_disk(
    small_disk: Path, roomy_place: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: the room check ran before the restore creates the set's tablespaces, so on a server that
    lacks them (rebuilt on the worst day) their tables were counted on the data directory: a small system disk
    refused a restore it would barely touch, and the tablespace's disk was neither checked nor watched."""
    with LocalRuntime(small_disk / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=40_000), rt)
        comp.provision()
        comp.seed()
        _into_tablespace(comp, roomy_place / "fast")
        repo, manifest = _backup(comp, tmp_path)
        details = manifest.component("db").details
        whole, elsewhere = details["database_bytes"], details["tablespace_bytes"]["fast"]
        _drop_tablespace(comp)  # the server no longer has it; its (empty) directory is still there
        fs = postgres_space.filesystem(small_disk)
        _fill_to(small_disk, whole - elsewhere + postgres_space.reserve(fs, whole) + elsewhere // 2)
        with caplog.at_level("WARNING", logger="engine"):
            engine_backup.restore(repo, manifest, comp)
        assert comp.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
        assert not [r for r in caplog.records if r.name.startswith("engine.components.postgres_space")]
        on_fast = pg_sql(
            comp, "SELECT count(*) FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE spcname = 'fast'"
        )
        assert on_fast[0][0] > 0  # the load did put them there
        assert "PANIC" not in _server_log(comp)
        _drop_tablespace(comp)


@pytest.mark.parametrize("room", ["short", "enough"])
def test_a_tablespace_on_the_scratch_disk_is_counted_with_the_extracted_dump(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: str
) -> None:
    """Found by review: a directory-format set is extracted to the system temp directory; with a tablespace on that
    same disk, the tables and the extracted dump were each checked alone, so a disk with room for either, not
    both, passed. Control: with room for both, it restores."""
    comp = PostgresComponent("db", PostgresParams(customers=20, jobs=2), runtime)
    comp.provision()
    comp.seed()
    pg_sql(
        comp,
        "INSERT INTO orders (customer_id, amount, status, placed_at) "
        "SELECT 1, g % 1000, 'placed', now() FROM generate_series(1, 1500000) g",
    )
    mountpoint = Path(tempfile.mkdtemp(prefix="drproof-test-scratchdisk-"))
    mountpoint.chmod(0o711)
    try:
        with mounted_tmpfs(mountpoint, "384m", "0711") as disk:
            _into_tablespace(comp, disk / "fast")
            repo, manifest = _backup(comp, tmp_path)
            tables = manifest.component("db").details["tablespace_bytes"]["fast"]
            scratch = postgres_space.scratch_need(engine_backup._source(repo, manifest, "db"))
            # Tables larger than the scratch check's own margin: only then does adding up tell.
            assert tables > postgres_space.SCRATCH_MARGIN and scratch > 4 * MIB, (tables, scratch)
            (disk / "tmp").mkdir()
            monkeypatch.setattr(tempfile, "tempdir", str(disk / "tmp"))
            kept = diskspace.reserve_for(disk)
            _fill_to(disk, tables + kept + (scratch // 2 if room == "short" else scratch + 16 * MIB))
            before = comp.fingerprint()
            if room == "short":
                with pytest.raises(ComponentError, match="refusing to restore") as refused:
                    engine_backup.restore(repo, manifest, comp)
                message = str(refused.value)
                assert "tablespace fast" in message and "scratch directory" in message, message
                assert _side_databases(comp) == [] and comp.fingerprint().parts == before.parts
            else:
                engine_backup.restore(repo, manifest, comp)
                assert comp.fingerprint().parts == manifest.component("db").fingerprint.parts  # type: ignore[union-attr]
            monkeypatch.undo()
            (disk / "filler").unlink(missing_ok=True)
            _drop_tablespace(comp)
    finally:
        mountpoint.rmdir()
