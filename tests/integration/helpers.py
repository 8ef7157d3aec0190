"""Helpers for tests that run real drills."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from engine.fingerprint import Fingerprint, compare


def run_cli(args: list[str]) -> int:
    from drills.cli import main

    return main(args)


def read_results(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "results.json").read_text())
    return data


def servers_under(path: Path) -> list[str]:
    """Server processes whose command line mentions ``path``: there must be none after a run."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(path) in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.info['pid']}: {cmd}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def insert_mark(comp: Any, name: str) -> Any:
    """Insert one row into a ``marks`` table; return the server's clock just after the commit."""
    conn = comp.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS marks (name text)")
            cur.execute("INSERT INTO marks VALUES (%s)", (name,))
            cur.execute("SELECT clock_timestamp()")
            row = cur.fetchone()
            assert row is not None
            return row[0]
    finally:
        conn.close()


def marks(comp: Any) -> list[str]:
    """The rows of ``marks`` in name order; none if the table does not exist."""
    conn = comp.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('marks') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return []
            cur.execute("SELECT name FROM marks ORDER BY name")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def unchanged(before: Fingerprint | dict[str, Fingerprint], after: Fingerprint | dict[str, Fingerprint]) -> bool:
    """The same data: every part matches, and the whole digest too where every part was
    read exactly. Not ``==``: a Redis expiry part read from the clock (a server without
    PEXPIRETIME) moves by a millisecond between two reads, within its tolerance, and its
    digest differs from an exactly read one's."""
    if isinstance(before, dict) and isinstance(after, dict):
        return before.keys() == after.keys() and all(unchanged(before[n], after[n]) for n in before)
    assert isinstance(before, Fingerprint) and isinstance(after, Fingerprint)
    if compare(before, after) != []:
        return False
    return before.digest == after.digest or _clock_read(before) or _clock_read(after)


def _clock_read(fp: Fingerprint) -> bool:
    return any(p.tolerance for p in fp.parts.values())


def lossy_side_load(monkeypatch: Any, statement: str) -> None:
    """Make every logical PostgreSQL restore lose data on the way: ``statement`` runs in the side database.

    What a restore gets from a pg_restore that silently skipped rows, after the stream's
    own checks passed: only a proof of the restored state (before the swap, or the
    fidelity check it was left to) can see it.
    """
    from engine.components.postgres import PostgresComponent

    real = PostgresComponent._load_side

    def lossy(self: PostgresComponent, source: Any, side: str, env: dict[str, str]) -> None:
        real(self, source, side, env)
        conn = self.connect(side)
        with conn, conn.cursor() as cur:
            cur.execute(statement)
        conn.close()

    monkeypatch.setattr(PostgresComponent, "_load_side", lossy)


def pg_sql(comp: Any, *statements: str, db: str | None = None) -> list[Any]:
    """Run ``statements`` on a PostgreSQL component's database (``db``: another one), each committed; every row returned."""
    conn = comp.connect(db) if db else comp.connect()
    conn.autocommit = True
    rows: list[Any] = []
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                if cur.description is not None:
                    rows.extend(cur.fetchall())
    finally:
        conn.close()
    return rows


def external_redis(tmp_path: Path, port: int, password: str, kind: Any = None, name: str = "cache") -> Any:
    """A provisioned Redis component (``redis`` or another kind) bound to a server on ``port``, named ``cache``."""
    from engine.components.redis import RedisComponent, RedisParams
    from engine.runtime.external import ExternalRuntime, RedisTarget

    runtime = ExternalRuntime(tmp_path / name, redis_targets={"cache": RedisTarget("127.0.0.1", port, 0, password)})
    comp = (kind or RedisComponent)("cache", RedisParams(), runtime)
    comp.provision()
    return comp


def see_parents_servers() -> None:
    """In a forked child: servers the parent started count as running while their process lives.

    Why: asked from a child, ``Popen.poll`` of the parent's server gets ECHILD and takes it
    for exited, and the runtime then starts a second postmaster on the same directory.
    ``WNOWAIT`` leaves the child's own processes' exit status for ``poll`` to collect.
    """
    real_poll = subprocess.Popen.poll

    def poll(self: subprocess.Popen[bytes]) -> int | None:
        if self.returncode is None:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return None if Path(f"/proc/{self.pid}").exists() else 0
        return real_poll(self)

    subprocess.Popen.poll = poll  # type: ignore[method-assign]


@contextmanager
def restored_into_another_server(
    root: Path, schema: str, images: dict[str, str] | None, *target_settings: str
) -> Iterator[tuple[Any, Fingerprint]]:
    """A database made from ``schema``, backed up and restored (proven) into another server: (target, backup's fingerprint).

    ``target_settings`` run on the target's ``postgres`` database before the restore (a
    server that prints differently). The servers stop when the block ends.
    """
    from engine import backup as engine_backup
    from engine.components.postgres import PostgresComponent, PostgresParams
    from engine.repository import LocalRepository
    from engine.runtime.local import LocalRuntime

    (root / "schema.sql").write_text(schema)
    with LocalRuntime(root / "src", images) as src_rt, LocalRuntime(root / "dst", images) as dst_rt:
        source = PostgresComponent(
            "db", PostgresParams(database="db", generate=False, sql_file=root / "schema.sql"), src_rt
        )
        source.provision()
        source.seed()
        taken = source.fingerprint()
        repo = LocalRepository(root / "repo")
        manifest = engine_backup.backup(repo, [source], fingerprints={"db": taken})
        target = PostgresComponent("db", PostgresParams(database="db", generate=False), dst_rt)
        target.provision()
        if target_settings:
            pg_sql(target, *target_settings, db="postgres")
        engine_backup.restore(repo, manifest, target)
        yield target, taken


@contextmanager
def mounted_tmpfs(mountpoint: Path, size: str, mode: str | None = None, inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mountpoint`` (made if missing); unmounted afterwards, also on failure.

    A full disk is the worst day's common case, and a real filesystem is the only honest
    way to fill one. Mounting needs root: without it the test is unavailable (a failure
    under CI=true, as every missing server is).
    """
    from tests.integration.servers import unavailable

    mountpoint.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",mode={mode}" if mode else "") + (f",nr_inodes={inodes}" if inodes else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"a tmpfs mount (these tests need root): {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def postgres_images(version: str) -> dict[str, str] | None:
    """The runtime's ``images`` for a PostgreSQL major: Debian's 15, or None for the wheel's 18."""
    from tests.integration.servers import require_pg15

    return {"postgres": str(require_pg15())} if version == "15" else None


@contextmanager
def empty_postgres(root: Path, version: str) -> Iterator[Any]:
    """A running PostgreSQL ``version`` ("15" or "18") with nothing seeded: a component on its ``postgres`` database."""
    from engine.components.postgres import PostgresComponent, PostgresParams
    from engine.runtime.local import LocalRuntime

    with LocalRuntime(root, postgres_images(version)) as runtime:
        comp = PostgresComponent("db", PostgresParams(database="postgres", generate=False), runtime)
        comp.provision()
        yield comp
