"""pg_dump backups that carry no data are refused; ones that carry some, even none per table, restore.

A restore test of a dump of an empty database, or of one made with ``--schema-only``,
passed in every format: the restore succeeded, the sandbox database answered, and nothing
about the team's data had been proven. pg_dump writes a data entry for every table it
dumps with data (``TABLE DATA`` in an archive, ``COPY`` or ``INSERT`` in plain SQL), even
an empty one, so the dumps of a database with one empty table and of one dumped with
``--inserts`` are the quiet controls. Against a real PostgreSQL 15.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import PG15, require_pg15

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTHING = "the backup holds nothing to restore: the dump carries no table data"


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_pg15()
    root = tmp_path_factory.mktemp("pgsrc")
    out: dict[str, Path] = {}
    with LocalRuntime(root / "prod", images={"postgres": str(PG15)}) as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=30), rt)
        db.provision()
        db.seed()
        conn = db.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE empty")
            cur.execute("CREATE DATABASE onetable")
        conn.close()
        one = db.connect("onetable")
        with one, one.cursor() as cur:
            cur.execute("CREATE TABLE t (id int PRIMARY KEY)")
        one.close()
        svc = rt.postgres("db")
        env = svc.tool_env()

        def dump(name: str, database: str, *flags: str) -> None:
            out[name] = root / name
            args = [*svc.tool("pg_dump"), "-d", svc.tool_dsn(database), "-f", str(out[name]), *flags]
            subprocess.run(args, env=env, check=True)

        dump("empty.dump", "empty", "-Fc")
        dump("emptydir", "empty", "-Fd")
        dump("schema.dump", "shop", "-Fc", "--schema-only")
        dump("schema.sql", "shop", "--schema-only")
        dump("empty.sql", "empty")
        dump("onetable.dump", "onetable", "-Fc")
        dump("onetable.sql", "onetable")
        dump("inserts.sql", "shop", "--inserts")
    return out


def _run(tmp_path: Path, backups: dict[str, Path]) -> tuple[int, dict[str, Any]]:
    spec = {n: {"format": "pg_dump", "path": str(p), "database": "app"} for n, p in backups.items()}
    scenario = tmp_path / "nothing.yaml"
    scenario.write_text(
        yaml.safe_dump({"name": "nothing", "objectives": {"rto": "10m"}, "source": {"backups": spec}, "assertions": ["rto"]})
    )
    code = run_cli(["run", str(scenario), "--report-dir", str(tmp_path / "out"), "-q"])
    return code, read_results(tmp_path / "out")


@pytest.mark.parametrize("name", ["empty.dump", "emptydir", "schema.dump", "schema.sql", "empty.sql"])
def test_a_dump_without_data_is_refused(dumps: dict[str, Path], tmp_path: Path, name: str) -> None:
    code, results = _run(tmp_path, {"db": dumps[name]})
    assert code in (1, 2) and results["verdict"] in ("fail", "error"), results["verdict"]
    assert NOTHING in str(results.get("error")) + str(results["phases"])


def test_dumps_with_data_even_of_an_empty_table_restore(dumps: dict[str, Path], tmp_path: Path) -> None:
    backups = {"one": dumps["onetable.dump"], "oneplain": dumps["onetable.sql"], "inserts": dumps["inserts.sql"]}
    code, results = _run(tmp_path, backups)
    restores = {p["component"]: p["status"] for p in results["phases"] if p["kind"] == "restore"}
    assert restores == {"one": "ok", "oneplain": "ok", "inserts": "ok"}, results["phases"]
    assert code == 0 and results["verdict"] == "pass"
