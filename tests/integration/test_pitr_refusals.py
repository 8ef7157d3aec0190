"""Point-in-time restores of an operator's PostgreSQL 15 server: refusals touch nothing, timelines are followed.

Review findings 5, 6 and 8 (PITR), reproduced with the CLI on Debian's PostgreSQL 15: a
target the archived WAL does not reach (archiving broken) stopped production after a
120 s wait; a second restore after a first picked a base on the abandoned timeline and
PostgreSQL refused to start; a target before the first base exited 2 instead of 1.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.components.postgres import PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.runtime.external import ExternalRuntime, PhysicalTarget, PostgresTarget
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import insert_mark, marks, pg_sql, run_cli
from tests.integration.operator_pg import init_cluster
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]
PASSWORD = "pitr-test-password"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PostgresPhysicalComponent, Path]]:
    """A PostgreSQL 15 cluster run by hand with pg_ctl, archiving into a directory; its drproof config."""
    bin_dir = require_pg15()
    monkeypatch.setenv("DRPROOF_TEST_PG_PASSWORD", PASSWORD)
    with LocalRuntime(tmp_path / "lend", images={"postgres": str(bin_dir)}) as lender:
        pg = init_cluster(lender.pg_root, "prod", lender._pg_user, bin_dir, PASSWORD, conf="postgresql.conf")
        data, archive, port, start, stop = pg.data, pg.archive, pg.port, pg.start, pg.stop
        subprocess.run(start, check=True, capture_output=True)
        config = pg.write_config(tmp_path / "config.yaml", tmp_path / "repo", "DRPROOF_TEST_PG_PASSWORD")
        target = PostgresTarget("127.0.0.1", port, "postgres", "postgres", PASSWORD)
        physical = PhysicalTarget(data_directory=data, wal_archive=archive, stop=stop, start=start)
        comp = PostgresPhysicalComponent(
            "db", PostgresParams(), ExternalRuntime(Path("."), postgres={"db": target}, physical={"db": physical})
        )
        comp.provision()
        comp.params = comp.params.model_copy(update={"database": "postgres"})
        try:
            yield comp, config
        finally:
            subprocess.run(stop, capture_output=True)


def _sql(comp: PostgresPhysicalComponent, sql: str) -> Any:
    """The first value ``sql`` returns on the ``postgres`` database, or None."""
    rows = pg_sql(comp, sql, db="postgres")
    return rows[0][0] if rows else None


def _pitr(config: Path, moment: datetime | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(
        ["recovery", "restore", "--in-place", "--yes", "--config", str(config), "--components", "db",
         "--point-in-time", moment if isinstance(moment, str) else moment.isoformat(), "--json"]
    )  # fmt: skip
    out = capsys.readouterr()
    return code, out.out + out.err


def _between(first: datetime, second: datetime) -> datetime:
    return first + (second - first) / 2


def test_second_point_in_time_restore_follows_the_timeline_the_first_created(
    server: tuple[PostgresPhysicalComponent, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    comp, config = server
    assert run_cli(["backup", "--config", str(config)]) == 0
    a = insert_mark(comp, "a")
    time.sleep(1)
    b = insert_mark(comp, "b")
    # The nightly backup that ran after the moment the team restores to: taken on timeline 1
    # after the fork the first restore makes.
    assert run_cli(["backup", "--config", str(config)]) == 0
    insert_mark(comp, "c")

    code, out = _pitr(config, _between(a, b), capsys)
    assert code == 2, out  # restored to a moment: never green
    assert marks(comp) == ["a"]  # the quiet control: exactly the first commit
    assert "the live archive" not in out  # the WAL of the sets sufficed (finding 8)

    d = insert_mark(comp, "d")
    time.sleep(1)
    e = insert_mark(comp, "e")
    code, out = _pitr(config, _between(d, e), capsys)

    assert code == 2, out
    assert '"restored"' in out and "not a child" not in out
    assert marks(comp) == ["a", "d"]


def test_target_past_the_archived_wal_is_refused_before_production_is_touched(
    server: tuple[PostgresPhysicalComponent, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    comp, config = server
    assert run_cli(["backup", "--config", str(config)]) == 0
    _sql(comp, "ALTER SYSTEM SET archive_command = '/bin/false'")
    _sql(comp, "SELECT pg_reload_conf()")
    written = insert_mark(comp, "unarchived")
    started = _sql(comp, "SELECT pg_postmaster_start_time()")
    time.sleep(1)

    clock = time.monotonic()
    code, out = _pitr(config, written + timedelta(milliseconds=500), capsys)
    took = time.monotonic() - clock

    assert code == 1, out
    assert "refused" in out and "nothing was changed" in out and "archiving of" in out
    assert took < 60, f"waited {took:.0f} s for an archiver that had failed"
    assert _sql(comp, "SELECT pg_postmaster_start_time()") == started, "production was restarted"
    assert marks(comp) == ["unarchived"]
    _sql(comp, "ALTER SYSTEM RESET archive_command")
    _sql(comp, "SELECT pg_reload_conf()")


def test_target_inside_the_live_archive_is_still_restored(
    server: tuple[PostgresPhysicalComponent, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The control of the refusal above: archiving works, the moment lies past the newest set."""
    comp, config = server
    assert run_cli(["backup", "--config", str(config)]) == 0
    first = insert_mark(comp, "first")
    time.sleep(1)
    second = insert_mark(comp, "second")

    code, out = _pitr(config, _between(first, second), capsys)

    assert code == 2, out
    assert marks(comp) == ["first"]
    assert "the live archive" in out


def test_target_before_the_first_base_is_a_refusal(
    server: tuple[PostgresPhysicalComponent, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    comp, config = server
    before = insert_mark(comp, "before")
    time.sleep(0.5)
    assert run_cli(["backup", "--config", str(config)]) == 0
    started = _sql(comp, "SELECT pg_postmaster_start_time()")

    code, out = _pitr(config, before - timedelta(milliseconds=100), capsys)

    assert code == 1, out  # docs/backup-engine.md: 1 refused
    assert "earliest ended at" in out and "refused" in out
    assert _sql(comp, "SELECT pg_postmaster_start_time()") == started
    assert marks(comp) == ["before"]


def test_no_base_on_the_current_timeline_is_refused_before_production_is_touched(
    server: tuple[PostgresPhysicalComponent, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """After a restore to an older set, pruning leaves only a set of the abandoned timeline."""
    comp, config = server
    assert run_cli(["backup", "--config", str(config)]) == 0
    older = _newest_id(config)
    insert_mark(comp, "abandoned")
    assert run_cli(["backup", "--config", str(config)]) == 0
    assert run_cli(["recovery", "restore", "--in-place", "--yes", "--config", str(config), "--id", older]) != 1
    assert marks(comp) == []  # timeline 2 forks at the end of the older set
    written = insert_mark(comp, "on-timeline-2")
    time.sleep(1)
    pruning = config.with_name("prune.yaml")
    pruning.write_text(json.dumps({**json.loads(config.read_text()), "retention": {"keep_last": 1}}))
    assert run_cli(["recovery", "prune", "--config", str(pruning)]) == 0
    started = _sql(comp, "SELECT pg_postmaster_start_time()")

    code, out = _pitr(config, written + timedelta(milliseconds=500), capsys)

    assert code == 1, out
    assert "can start this replay" in out and "forked off it" in out and "nothing was changed" in out
    assert _sql(comp, "SELECT pg_postmaster_start_time()") == started, "production was restarted"
    assert marks(comp) == ["on-timeline-2"]


def _newest_id(config: Path) -> str:
    from engine.repository import LocalRepository

    repo = LocalRepository(Path(json.loads(config.read_text())["repository"]["path"]))
    return max(repo.list(), key=lambda m: m.created_at).id
