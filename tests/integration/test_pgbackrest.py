"""pgBackRest as the backup engine: drproof delegates to it, then proves its backups restore.

These tests need Debian's pgBackRest and PostgreSQL 15 (`apt-get install pgbackrest
postgresql-15`): bookworm's pgBackRest 2.45 cannot back up the embedded PostgreSQL 18.
With CI=true their absence is a failure, because .ci/run installs them; elsewhere the
tests are skipped with that command.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.childenv import tool_environment
from engine.components import postgres_pgbackrest
from engine.components.postgres import PostgresParams
from engine.components.postgres_pgbackrest import INFO_ARTIFACT, PostgresPgBackRestComponent
from engine.errors import ComponentError, IntegrityError, RuntimeStartError
from engine.repository import LocalRepository
from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.servers import PG15, require_pgbackrest

pytestmark = [pytest.mark.integration]

Stack = tuple[PostgresPgBackRestComponent, LocalRepository]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_pgbackrest()
    with LocalRuntime(tmp_path / "work", images={"postgres": str(PG15)}) as runtime:
        comp = PostgresPgBackRestComponent("orders-db", PostgresParams(customers=300), runtime)
        comp.provision()
        comp.seed()
        yield comp, LocalRepository(tmp_path / "repo")


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """An empty directory outside pytest's private tmp tree, which the server's user can reach."""
    path = Path(tempfile.mkdtemp(prefix="drproof-tablespace-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _change(comp: PostgresPgBackRestComponent) -> None:
    conn = comp.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE orders SET status = 'refunded' WHERE id % 7 = 0")
            cur.execute("INSERT INTO customers (name, email, created_at) VALUES ('New', 'new@example.test', now())")
    finally:
        conn.close()


def test_full_then_differential_backups_restore_after_total_loss(stack: Stack) -> None:
    comp, repo = stack
    assert "15." in comp.service.version()
    at_full = comp.fingerprint()
    full = engine_backup.backup(repo, [comp])
    details = full.component("orders-db").details
    assert details["pgbackrest_type"] == "full" and details["pgbackrest_label"].endswith("F")
    assert details["verify"].startswith("ok")
    # Delegation: the drproof set holds pgBackRest's description of the backup, not the data.
    [artifact] = full.artifacts_of("orders-db")
    assert artifact.name == INFO_ARTIFACT and artifact.size < 64 * 1024
    assert details["database_bytes"] > 10 * artifact.size

    comp.service.wipe_data()
    assert not comp.health().ok
    engine_backup.restore(repo, full, comp)
    assert comp.fingerprint() == at_full
    assert comp.health().ok

    _change(comp)
    at_diff = comp.fingerprint()
    assert at_diff != at_full
    diff = engine_backup.backup(repo, [comp])
    diff_details = diff.component("orders-db").details
    assert diff_details["pgbackrest_type"] == "diff"
    assert diff_details["pgbackrest_prior"] == details["pgbackrest_label"]
    assert diff_details["repository_bytes"] < details["repository_bytes"]  # only what changed is stored

    comp.service.wipe_data()
    engine_backup.restore(repo, diff, comp)
    assert comp.fingerprint() == at_diff
    engine_backup.restore(repo, full, comp)  # the older set still restores, across the timeline change
    assert comp.fingerprint() == at_full
    # Two restores from one backup must not reuse a timeline, or WAL archiving would stall.
    again = engine_backup.backup(repo, [comp])
    assert again.component("orders-db").details["pgbackrest_type"] == "diff"


def test_pgbackrest_logs_in_by_peer_as_a_backup_role_without_any_password(stack: Stack) -> None:
    comp, _repo = stack
    config = (comp.home / "pgbackrest.conf").read_text()
    assert comp.service.tool_env()["PGPASSWORD"] not in config
    assert f"pg1-user={comp.os_user}" in config and "pg1-socket-path=" in config
    conn = comp.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %s", (comp.os_user,))
            row = cur.fetchone()
    finally:
        conn.close()
    if comp.os_user != comp.service.superuser:
        assert row == (False, True), "pgBackRest's role may log in and back up, nothing more"


def _corrupt_a_data_file(comp: PostgresPgBackRestComponent, label: str) -> None:
    files = sorted((comp.repo / "backup" / comp.stanza / label / "pg_data" / "base").rglob("*.zst"))
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _delete_the_backup_directory(comp: PostgresPgBackRestComponent, label: str) -> None:
    shutil.rmtree(comp.repo / "backup" / comp.stanza / label)


def _delete_the_archived_wal(comp: PostgresPgBackRestComponent, label: str) -> None:
    for path in (comp.repo / "archive" / comp.stanza).rglob("*.zst"):
        path.unlink()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_corrupt_a_data_file, "checksum invalid: 1"),
        (_delete_the_backup_directory, "missing (its directory is gone)"),
        (_delete_the_archived_wal, "lacks 0000000"),
    ],
    ids=["corrupt-file", "deleted-backup", "deleted-wal"],
)
def test_damaged_pgbackrest_repository_is_refused_before_the_live_cluster_is_touched(
    stack: Stack, damage: Callable[[PostgresPgBackRestComponent, str], None], expected: str
) -> None:
    comp, repo = stack
    manifest = engine_backup.backup(repo, [comp])
    label = manifest.component("orders-db").details["pgbackrest_label"]
    _change(comp)
    live = comp.fingerprint()
    assert comp.service.proc is not None
    pid = comp.service.proc.pid

    damage(comp, label)
    with pytest.raises(IntegrityError) as refused:  # refused (exit 1), like damage to any other kind's set
        engine_backup.restore(repo, manifest, comp)

    assert expected in str(refused.value) and label in str(refused.value)
    assert comp.service.proc is not None and comp.service.proc.pid == pid, "the server was not even restarted"
    assert comp.fingerprint() == live
    assert comp.health().ok


def test_a_server_newer_than_pgbackrest_supports_is_refused_at_provision(tmp_path: Path) -> None:
    require_pgbackrest()
    if postgres_pgbackrest.pgbackrest_version(shutil.which("pgbackrest") or "pgbackrest") > (2, 45):
        pytest.skip("this pgBackRest may support the embedded PostgreSQL 18")
    with LocalRuntime(tmp_path / "work") as runtime:  # the embedded PostgreSQL 18
        comp = PostgresPgBackRestComponent("db", PostgresParams(), runtime)
        with pytest.raises(ComponentError, match=r"supports PostgreSQL up to 15.*apt-get install pgbackrest"):
            comp.provision()


def test_missing_pgbackrest_names_the_package_and_the_version_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_pgbackrest.shutil, "which", lambda name: None)
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresPgBackRestComponent("db", PostgresParams(), runtime)
        with pytest.raises(ComponentError) as refused:
            comp.provision()
    assert "apt-get install pgbackrest" in str(refused.value)
    assert "PostgreSQL <= 15" in str(refused.value)


def test_local_runtime_refuses_an_absolute_postgres_path_without_binaries(tmp_path: Path) -> None:
    with pytest.raises(RuntimeStartError, match="no executable postgres or initdb"):
        LocalRuntime(tmp_path / "work", images={"postgres": str(tmp_path)})
    assert not (tmp_path / "work").exists(), "nothing is created before the check"
    # An image name (meant for container runtimes) keeps the embedded wheel.
    with LocalRuntime(tmp_path / "other", images={"postgres": "postgres:17"}) as runtime:
        assert "PostgreSQL) 18" in runtime.postgres("db").version()


def _interrupt_a_backup(comp: PostgresPgBackRestComponent) -> str:
    """Start a full pgBackRest backup of a bulky cluster and SIGKILL it once it has begun writing."""
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE bulk AS SELECT g AS n, md5(g::text) || repeat('y', 400) AS pad "
                        "FROM generate_series(1, 300000) g")  # fmt: skip
    finally:
        conn.close()
    stanza_dir = comp.home / "repo" / "backup" / comp.stanza
    before = {p.name for p in stanza_dir.iterdir()}
    argv = comp._argv(["backup", "--type=full", "--no-archive-check", "--process-max=1", "--compress-level=19"])
    proc = subprocess.Popen(  # type: ignore[call-overload]
        argv, cwd=comp.home, env=tool_environment(), start_new_session=True, **processes.run_as(comp.run_user)
    )
    try:
        assert processes.wait_until(lambda: bool({p.name for p in stanza_dir.iterdir()} - before), timeout=60)
        time.sleep(0.3)
    finally:  # the whole group, its local worker too (it holds the lock): a crash of the host's backup
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        processes.wait_until(lambda: not _group_alive(proc.pid), timeout=30)
    [aborted] = {p.name for p in stanza_dir.iterdir()} - before
    return aborted


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_interrupted_pgbackrest_backup_does_not_block_restoring_an_intact_one(stack: Stack) -> None:
    """Found by review: the aborted backup's directory (status in-progress) counted as damage, and every
    restore was refused, right when a crash during the nightly backup made one needed."""
    comp, repo = stack
    good = engine_backup.backup(repo, [comp])
    aborted = _interrupt_a_backup(comp)
    engine_backup.restore(repo, good, comp)
    assert comp.fingerprint() == good.component("orders-db").fingerprint
    # pgBackRest still knows the interrupted one; drproof names it in its verify summary.
    assert aborted in comp.verify([good.component("orders-db").details["pgbackrest_label"]])
    # The next backup resumes or replaces it, and is verified like any other.
    again = engine_backup.backup(repo, [comp])
    assert again.component("orders-db").details["verify"].startswith("ok")


def test_a_cluster_with_a_tablespace_is_named_at_backup_and_its_restore_refused_untouched(
    stack: Stack, reachable_dir: Path
) -> None:
    """pgBackRest puts tablespaces back at their live location, outside the fresh data
    directory drproof restores into: the restore is refused before the server is stopped,
    with drproof's explanation instead of pgBackRest's raw one, and the backup says so."""
    comp, repo = stack
    quiet = engine_backup.backup(repo, [comp])  # quiet control: no tablespace, no limit
    assert engine_backup.limits(quiet) == []
    space = reachable_dir
    owner = comp.physical.server_file_owner()
    if owner is not None:
        os.chown(space, *owner)
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLESPACE side LOCATION '{space}'")
            cur.execute("CREATE TABLE archived (n int) TABLESPACE side")
            cur.execute("INSERT INTO archived SELECT generate_series(1, 500)")
    finally:
        conn.close()
    manifest = engine_backup.backup(repo, [comp])
    [limit] = engine_backup.limits(manifest)
    assert "tablespace(s) side (oid " in limit and str(space) in limit
    assert "pgbackrest restore --set=" in limit
    summary = next(s for s in repo.list() if s.id == manifest.id)
    assert engine_backup.limits(summary) == [limit]  # the inventory says it without reading fingerprints

    _change(comp)
    live = comp.fingerprint()
    started = comp.service.is_running()
    with pytest.raises(ComponentError, match="cannot restore tablespaces"):
        engine_backup.restore(repo, manifest, comp)
    assert started and comp.service.is_running()
    assert comp.fingerprint() == live

