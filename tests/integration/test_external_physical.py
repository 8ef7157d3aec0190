"""Physical restore of a server drproof did not start: the operator's stop/start commands.

The "existing" server here is started by the test with pg_ctl, exactly as an operator's
init system would, and drproof only ever runs the commands it was given.
"""

from __future__ import annotations

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
from engine.runtime.external import ExternalRuntime, PhysicalTarget, PostgresTarget
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import insert_mark, marks
from tests.integration.operator_pg import init_cluster

pytestmark = [pytest.mark.integration]
PASSWORD = "external-test-password"


@pytest.fixture
def existing_server(tmp_path: Path) -> Iterator[tuple[PostgresTarget, PhysicalTarget]]:
    # A LocalRuntime only lends its server binaries and unprivileged user (when root);
    # the server itself is set up and run by hand, like any operator's.
    with LocalRuntime(tmp_path / "lend") as lender:
        pg = init_cluster(lender.pg_root, "existing", lender._pg_user, lender._server_binaries(), PASSWORD)
        data, archive, port, start, stop = pg.data, pg.archive, pg.port, pg.start, pg.stop
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


def test_point_in_time_restore_of_an_existing_server_keeps_what_it_replaced(
    existing_server: tuple[PostgresTarget, PhysicalTarget], tmp_path: Path
) -> None:
    target, physical = existing_server
    comp = _component(target, physical)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    engine_backup.backup(repo, [comp])
    first = insert_mark(comp, "first")
    time.sleep(1)
    second = insert_mark(comp, "second")
    engine_backup.backup(repo, [comp])

    engine_backup.restore_to_time(repo, comp, first + (second - first) / 2)

    assert marks(comp) == ["first"]
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
    insert_mark(comp, "live")
    source = engine_backup._source(repo, manifest, "db")
    beyond = datetime.fromisoformat(manifest.component("db").details["wal_through_time"]).replace(year=2099)

    with pytest.raises(ComponentError, match="physical restore of 'db' failed"):
        comp.restore_to_time([source], [source], beyond)

    assert marks(comp) == ["live"]
    assert not list(physical.data_directory.parent.glob("data.drproof-replaced-*"))


def test_without_physical_access_the_component_refuses_and_names_the_ways_out(
    existing_server: tuple[PostgresTarget, PhysicalTarget],
) -> None:
    target, _ = existing_server
    comp = PostgresPhysicalComponent("db", PostgresParams(), ExternalRuntime(Path("."), postgres={"db": target}))
    with pytest.raises(ComponentError, match=r"declare `physical:`.*kind `postgres`"):
        comp.provision()


def test_cli_point_in_time_restore_of_an_existing_server(
    existing_server: tuple[PostgresTarget, PhysicalTarget], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from tests.integration.helpers import run_cli

    target, physical = existing_server
    monkeypatch.setenv("DRPROOF_TEST_PG_PASSWORD", PASSWORD)
    config = tmp_path / "backup-config.yaml"
    config.write_text(
        json.dumps(
            {
                "repository": {"type": "local", "path": str(tmp_path / "repo")},
                "components": {
                    "db": {
                        "kind": "postgres-physical",
                        "url": f"postgresql://postgres@127.0.0.1:{target.port}/postgres",
                        "password_env": "DRPROOF_TEST_PG_PASSWORD",
                        "physical": {
                            "data_directory": str(physical.data_directory),
                            "wal_archive": str(physical.wal_archive),
                            "stop": physical.stop,
                            "start": physical.start,
                        },
                    }
                },
            }
        )
    )
    comp = _component(target, physical)
    comp.params = comp.params.model_copy(update={"database": "postgres"})
    assert run_cli(["backup", "--config", str(config)]) == 0
    first = insert_mark(comp, "first")
    time.sleep(1)
    second = insert_mark(comp, "second")
    assert run_cli(["backup", "--config", str(config)]) == 0

    middle = (first + (second - first) / 2).isoformat()
    code = run_cli(
        [
            "recovery",
            "restore",
            "--in-place",
            "--yes",
            "--config",
            str(config),
            "--components",
            "db",
            "--point-in-time",
            middle,
        ]
    )

    # Restored to the moment, but no fingerprint exists for it: never green (exit 2), said plainly.
    assert code == 2
    assert marks(comp) == ["first"]
    audit = [json.loads(line) for line in (tmp_path / "repo" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "restore" and audit[-1]["outcome"] == "unverified"
    assert "not compared" in audit[-1]["error"]
