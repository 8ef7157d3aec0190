"""A logical restore into a database of another name than the one backed up.

``recovery restore --to scratch.yaml`` naming ``shop_scratch`` for a backup of ``shop``
ran the dump's own ``CREATE DATABASE shop`` unrenamed: on a scratch server it created an
empty ``shop`` there and failed; on the production server it failed on "database shop
already exists" (found by review). The side database is now created from the dump's
definition under its own name whatever the dumped one was. Both dump kinds (one archive,
and the directory dump of ``jobs: 2``), on a second server and on the same server as the
source, whose ``shop`` must not change. Against a real PostgreSQL 15.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backup import backup, restore
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.servers import PG15, require_pg15

pytestmark = pytest.mark.integration


def _databases(comp: PostgresComponent) -> set[str]:
    conn = comp.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("where", ["another server", "the same server"])
def test_a_restore_into_a_database_of_another_name(tmp_path: Path, jobs: int, where: str) -> None:
    require_pg15()
    images = {"postgres": str(PG15)}
    with LocalRuntime(tmp_path / "prod", images=images) as prod, LocalRuntime(tmp_path / "scratch", images=images) as other:
        source = PostgresComponent("db", PostgresParams(database="shop", customers=40, jobs=jobs), prod)
        source.provision()
        source.seed()
        repo = LocalRepository(tmp_path / "repo")
        manifest = backup(repo, [source])
        recorded = manifest.component("db").fingerprint
        assert recorded is not None
        target = PostgresComponent(
            "db", PostgresParams(database="shop_scratch", jobs=jobs), prod if where == "the same server" else other
        )
        target.provision()
        before = _databases(target)
        source_before = source.fingerprint()

        restore(repo, manifest, target)

        assert compare(recorded, target.fingerprint()) == []
        assert _databases(target) == before | {"shop_scratch"}, "no database of the dumped name left behind"
        assert compare(source_before, source.fingerprint()) == []
