"""Parallel logical backups: pg_dump -Fd -j and pg_restore -j, archived as one artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime

pytestmark = [pytest.mark.integration]


def test_parallel_dump_restores_into_a_wiped_server_with_the_same_fingerprint(tmp_path: Path) -> None:
    with LocalRuntime(tmp_path / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=2000, jobs=2), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        before = comp.fingerprint()
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": before})
        assert {a.name for a in manifest.artifacts_of("db")} == {"globals.sql", "database.dir.tar"}
        assert "2 jobs" in manifest.component("db").details["method"]
        comp.service.wipe_data()

        engine_backup.restore(repo, manifest, comp)

        assert comp.fingerprint().digest == before.digest


def test_a_parallel_dump_restores_even_when_the_component_now_says_one_job(tmp_path: Path) -> None:
    """The artifact, not the current setting, decides how a set is restored."""
    with LocalRuntime(tmp_path / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=200, jobs=3), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        before = comp.fingerprint()
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": before})
        comp.params = comp.params.model_copy(update={"jobs": 1})
        comp.service.wipe_data()
        engine_backup.restore(repo, manifest, comp)
        assert comp.fingerprint().digest == before.digest
