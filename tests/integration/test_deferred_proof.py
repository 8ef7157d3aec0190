"""A restore that leaves its proof to the caller (``engine.backup.restore(defer_proof=True)``).

A restore test's sandbox database holds nothing to protect, and the drill's fidelity
check reads it whole once restored, so the side database's proof before the swap is
left to that check. These tests hold the engine to the rule that makes that safe: the
proof is left only where the target holds nothing, and whoever asked for it learns that
it was left, and can still see the damage.

- negative control: into a database that holds data, a lossy load is refused exactly as
  without the flag, the live database untouched;
- quiet control: into an empty database, the restore says it left the proof, and the
  restored state matches the backup;
- negative control: into an empty database, a lossy load is swapped in (nothing to
  protect) and the caller's comparison names the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import RestoreMismatch
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import lossy_side_load, unchanged
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]


def _images(server: str) -> dict[str, str] | None:
    return {"postgres": str(require_pg15())} if server == "15" else None


def _lossy(monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_restore loses rows on the way: the side database misses every other order."""
    lossy_side_load(monkeypatch, "DELETE FROM orders WHERE id % 2 = 0")


def _emptied(comp: PostgresComponent) -> None:
    """The component's database, dropped and created again empty: what a fresh sandbox holds."""
    admin = comp.connect("postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{comp.db}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{comp.db}"')
    admin.close()


@pytest.mark.parametrize("server", ["18", "15"])
def test_a_target_that_holds_data_is_proven_even_when_the_caller_offers_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    with LocalRuntime(tmp_path / "work", _images(server)) as rt:
        comp = PostgresComponent("db", PostgresParams(customers=300), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        before = comp.fingerprint()
        _lossy(monkeypatch)
        with pytest.raises(RestoreMismatch, match=r"public\.orders"):
            engine_backup.restore(repo, manifest, comp, defer_proof=True)
        assert unchanged(before, comp.fingerprint()), "a refused restore changed the live database"


def test_an_empty_target_leaves_the_proof_and_the_caller_sees_the_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalRuntime(tmp_path / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=300), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        taken = comp.fingerprint()
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": taken})

        _emptied(comp)
        assert engine_backup.restore(repo, manifest, comp, defer_proof=True) is True
        assert unchanged(taken, comp.fingerprint()), "quiet control: a sound restore matches the backup"

        _emptied(comp)
        _lossy(monkeypatch)
        assert engine_backup.restore(repo, manifest, comp, defer_proof=True) is True
        differences = compare(taken, comp.fingerprint())
        assert any("public.orders" in d for d in differences.describe()), differences.describe()


def test_without_the_offer_an_empty_target_is_still_proven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalRuntime(tmp_path / "work") as rt:
        comp = PostgresComponent("db", PostgresParams(customers=300), rt)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        _emptied(comp)
        _lossy(monkeypatch)
        with pytest.raises(RestoreMismatch, match=r"public\.orders"):
            engine_backup.restore(repo, manifest, comp)
