"""A hole in the WAL archive is said by the backup that finds it, not on the restore day.

Review finding 1 (review-pitr): `drproof backup` of a postgres-physical component whose WAL archive
missed a segment since the previous backup exited 0 "backup complete"; only the manifest held
`wal_gap`, and `recovery verify` said "verified". Debian's PostgreSQL 15, run by hand with pg_ctl
as an operator's init system would.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.runtime import processes
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import run_cli
from tests.integration.operator_pg import init_cluster
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]
PASSWORD = "wal-gap-test-password"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A PG 15 cluster archiving WAL into a directory, and a backup config for it."""
    with LocalRuntime(tmp_path / "lend", images={"postgres": str(require_pg15())}) as lender:
        pg = init_cluster(lender.pg_root, "existing", lender._pg_user, lender._server_binaries(), PASSWORD)
        archive, port, stop = pg.archive, pg.port, pg.stop
        subprocess.run(pg.start, check=True, capture_output=True)
        monkeypatch.setenv("DRPROOF_TEST_PG_PASSWORD", PASSWORD)
        config = pg.write_config(tmp_path / "backup-config.yaml", tmp_path / "repo", "DRPROOF_TEST_PG_PASSWORD")
        try:
            yield {"config": str(config), "port": port, "archive": archive, "repo": tmp_path / "repo"}
        finally:
            subprocess.run(stop, capture_output=True)


def _sql(port: int, sql: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def _archived_segment(port: int) -> str:
    """Write something, close the segment and wait until the archiver copied it; its name."""
    _sql(port, "CREATE TABLE IF NOT EXISTS marks(id int); INSERT INTO marks VALUES (1)")
    segment = str(_sql(port, "SELECT pg_walfile_name(pg_switch_wal())"))
    assert processes.wait_until(
        lambda: str(_sql(port, "SELECT last_archived_wal FROM pg_stat_archiver") or "") >= segment, timeout=60
    )
    return segment


def _backup(server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = run_cli(["backup", "--config", server["config"], "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _list(server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str, dict[str, Any]]:
    code = run_cli(["recovery", "list", "--config", server["config"]])
    text = capsys.readouterr()
    assert run_cli(["recovery", "list", "--config", server["config"], "--json"]) == code
    return code, text.out, text.err, json.loads(capsys.readouterr().out)


def _verify(server: dict[str, Any], backup_id: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run_cli(["recovery", "verify", "--config", server["config"], "--id", backup_id])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_backup_after_a_hole_in_the_wal_archive_says_so_and_exits_1(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, first, _ = _backup(server, capsys)
    assert code == 0
    lost = _archived_segment(server["port"])
    _archived_segment(server["port"])
    (server["archive"] / lost).rename(server["archive"].parent / lost)  # an operator's cleanup took it

    code, second, err = _backup(server, capsys)

    assert code == 1, "the point-in-time objective is lost now: the backup says so"
    assert f"warning: db: segment {lost} is missing from the WAL archive" in err
    assert f"between backup {first['id']} and this backup ({second['id']}) is impossible" in err
    assert second["findings"] and lost in second["findings"][0], "--json carries it"
    line = json.loads((server["repo"] / "audit.jsonl").read_text().splitlines()[-1])
    assert (line["event"], line["outcome"], line["backup_ids"]) == ("backup", "failed", [second["id"]])
    assert lost in line["findings"][0]
    # The base backup is good: the set is kept and stays verified for retention.
    assert json.loads((server["repo"] / "sets" / second["id"] / "verified.json").read_text())["ok"] is True

    # The inventory marks the set (read from the manifest's summary, not its fingerprints);
    # the set is sound, so the listing itself does not fail.
    code, out, err, listed = _list(server, capsys)
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith(second["id"])]
    assert row.endswith("[1 finding(s)]")
    assert f"FINDING {second['id']}: db: segment {lost} is missing from the WAL archive" in err
    by_id = {s["id"]: s for s in listed["backups"]}
    assert by_id[first["id"]]["findings"] == [] and lost in by_id[second["id"]]["findings"][0]

    code, said = _verify(server, second["id"], capsys)
    assert code == 1
    assert f"FINDING db: segment {lost} is missing" in said and "with 1 finding(s)" in said
    assert json.loads((server["repo"] / "sets" / second["id"] / "verified.json").read_text())["ok"] is True


def test_a_backup_with_an_unbroken_wal_archive_is_quiet(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Quiet control: the same steps without the hole exit 0, with no finding anywhere."""
    code, _, _ = _backup(server, capsys)
    assert code == 0
    _archived_segment(server["port"])
    _archived_segment(server["port"])

    code, second, err = _backup(server, capsys)

    assert code == 0 and "findings" not in second and "warning" not in err
    code, out, err, listed = _list(server, capsys)
    assert code == 0 and "finding" not in out and "FINDING" not in err
    assert [s["findings"] for s in listed["backups"]] == [[], []]
    code, said = _verify(server, second["id"], capsys)
    assert code == 0 and "FINDING" not in said and said.rstrip().endswith("NOT proven: unsigned)")
