"""Physical restore of a server drproof did not start: the operator's stop/start commands.

The "existing" server here is started by the test with pg_ctl, exactly as an operator's
init system would, and drproof only ever runs the commands it was given.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.errors import ComponentError
from engine.repository import LocalRepository
from engine.runtime import processes
from engine.runtime.external import ExternalRuntime, PhysicalTarget, PostgresTarget
from engine.runtime.local import LocalRuntime

pytestmark = [pytest.mark.integration]
PASSWORD = "external-test-password"


@pytest.fixture
def existing_server(tmp_path: Path) -> Iterator[tuple[PostgresTarget, PhysicalTarget]]:
    # A LocalRuntime only lends its server binaries and unprivileged user (when root);
    # the server itself is set up and run by hand, like any operator's.
    with LocalRuntime(tmp_path / "lend") as lender:
        bin_dir, user = lender._server_binaries(), lender._pg_user
        base = lender.pg_root / "existing"
        data, archive, sock = base / "data", base / "archive", base / "socket"
        for d in (base, archive, sock):
            d.mkdir(mode=0o755)
            if user is not None:
                import pwd

                entry = pwd.getpwnam(user)
                os.chown(d, entry.pw_uid, entry.pw_gid)
        pwfile = base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if user is not None:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"] if user else []
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
             "--auth-host=scram-sha-256", "--auth-local=peer", "--locale=C"],
            check=True, capture_output=True,
        )  # fmt: skip
        port = processes.free_port()
        with (data / "postgresql.auto.conf").open("a") as fh:
            fh.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n"
                f"archive_mode = on\narchive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n"
            )
        pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
        start = [*pg_ctl, "-l", str(base / "server.log"), "start"]
        stop = [*pg_ctl, "-m", "fast", "stop"]
        subprocess.run(start, check=True, capture_output=True)
        try:
            yield (
                PostgresTarget("127.0.0.1", port, "postgres", "app", PASSWORD),
                PhysicalTarget(data_directory=data, wal_archive=archive, stop=stop, start=start),
            )
        finally:
            subprocess.run(stop, capture_output=True)


def _component(target: PostgresTarget, physical: PhysicalTarget) -> PostgresPhysicalComponent:
    runtime = ExternalRuntime(Path("."), postgres={"db": target}, physical={"db": physical})
    comp = PostgresPhysicalComponent("db", PostgresParams(customers=100), runtime)
    comp.provision()
    return comp


def _insert(comp: PostgresPhysicalComponent, name: str) -> datetime:
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS marks (name text)")
            cur.execute("INSERT INTO marks VALUES (%s)", (name,))
            cur.execute("SELECT clock_timestamp()")
            row = cur.fetchone()
            assert row is not None
            stamp: datetime = row[0]
            return stamp
    finally:
        conn.close()


def _marks(comp: PostgresPhysicalComponent) -> list[str]:
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM marks ORDER BY name")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_point_in_time_restore_of_an_existing_server_keeps_what_it_replaced(
    existing_server: tuple[PostgresTarget, PhysicalTarget], tmp_path: Path
) -> None:
    target, physical = existing_server
    comp = _component(target, physical)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    engine_backup.backup(repo, [comp])
    first = _insert(comp, "first")
    time.sleep(1)
    second = _insert(comp, "second")
    engine_backup.backup(repo, [comp])

    engine_backup.restore_to_time(repo, comp, first + (second - first) / 2)

    assert _marks(comp) == ["first"]
    replaced = sorted(physical.data_directory.parent.glob("data.drproof-replaced-*"))
    assert len(replaced) == 1 and (replaced[0] / "PG_VERSION").exists()


def test_failed_recovery_of_an_existing_server_restarts_it_on_its_old_data(
    existing_server: tuple[PostgresTarget, PhysicalTarget], tmp_path: Path
) -> None:
    target, physical = existing_server
    comp = _component(target, physical)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    _insert(comp, "live")
    source = engine_backup._source(repo, manifest, "db")
    beyond = datetime.fromisoformat(manifest.component("db").details["wal_through_time"]).replace(year=2099)

    with pytest.raises(ComponentError, match="physical restore of 'db' failed"):
        comp.restore_to_time([source], [source], beyond)

    assert _marks(comp) == ["live"]
    assert not list(physical.data_directory.parent.glob("data.drproof-replaced-*"))


def test_without_physical_access_the_component_refuses_and_names_the_ways_out(
    existing_server: tuple[PostgresTarget, PhysicalTarget],
) -> None:
    target, _ = existing_server
    comp = PostgresPhysicalComponent("db", PostgresParams(), ExternalRuntime(Path("."), postgres={"db": target}))
    with pytest.raises(ComponentError, match=r"declare `physical:`.*kind `postgres`"):
        comp.provision()
