"""Plain-SQL pg_dump files that are cut short, hostile, or made with --create, against a real PostgreSQL 15.

A plain dump is a psql script: psql takes the end of its input inside COPY as the end of
the data (a cut dump loads partially and exits 0), runs backslash commands on this host
(``\\!`` a shell, ``\\copy`` a file write), and follows ``\\connect`` to a database drproof
never examines. Each case here passed, or ran its command, before the plain dump was
filtered on its way to psql; the whole dump beside them is the quiet control.
"""

from __future__ import annotations

import gzip
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


@pytest.fixture(scope="module")
def plain_dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A plain dump of a seeded PostgreSQL 15 database, and the same with --create."""
    require_pg15()
    root = tmp_path_factory.mktemp("pgsrc")
    with LocalRuntime(root / "prod", images={"postgres": str(PG15)}) as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=150), rt)
        db.provision()
        db.seed()
        svc = rt.postgres("db")
        env, dsn = svc.tool_env(), svc.tool_dsn("shop")
        dump = [*svc.tool("pg_dump"), "-d", dsn]
        plain = subprocess.run(dump, env=env, check=True, capture_output=True).stdout
        create = subprocess.run([*dump, "--create"], env=env, check=True, capture_output=True).stdout
    return {"plain": plain, "create": create}


def _run(tmp_path: Path, backups: dict[str, Path], name: str) -> tuple[int, dict[str, Any]]:
    spec = {n: {"format": "pg_dump", "path": str(p), "database": "shop"} for n, p in backups.items()}
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(
        yaml.safe_dump({"name": name, "objectives": {"rto": "10m"}, "source": {"backups": spec}, "assertions": ["rto"]})
    )
    code = run_cli(["run", str(scenario), "--report-dir", str(tmp_path / name), "-q"])
    return code, read_results(tmp_path / name)


def _restores(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {p["component"]: (p["status"], p.get("detail") or "") for p in results["phases"] if p["kind"] == "restore"}


def test_cut_short_and_hostile_plain_dumps_are_refused_and_run_nothing(
    plain_dumps: dict[str, bytes], tmp_path: Path
) -> None:
    plain = plain_dumps["plain"]
    lines = plain.splitlines(keepends=True)
    copy = next(i for i, line in enumerate(lines) if line.startswith(b"COPY public.orders"))
    trailer = next(i for i, line in enumerate(lines) if line.startswith(b"-- PostgreSQL database dump complete"))
    shell_mark, midline_mark = tmp_path / "PWNED-shell", tmp_path / "PWNED-midline"
    dollar_mark = tmp_path / "PWNED-dollar"
    # A line that looks like COPY inside a dollar-quoted string: the line filter takes what
    # follows for COPY data, psql for commands. Only psql's own \restrict stops it.
    hidden = f"SELECT $q$\nCOPY x FROM stdin;\n$q$;\n\\! touch {dollar_mark}\n".encode()
    at = next(i for i, line in enumerate(lines) if line.startswith(b"SET "))  # after the dump's own \restrict
    files = {
        "whole": gzip.compress(plain),
        "cutcopy": b"".join(lines[: copy + 3]),  # psql takes the end of input as the end of the COPY data
        "cuttrailer": b"".join(lines[: trailer - 1]),  # every statement whole, the end missing
        "shell": b"".join([*lines[:at], f"\\! touch {shell_mark}\n".encode(), *lines[at:]]),
        "midline": b"".join([*lines[:at], f"SELECT 1 \\! touch {midline_mark}\n".encode(), *lines[at:]]),
        "dollar": b"".join([*lines[:at], hidden, *lines[at:]]),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.sql"
        paths[name].write_bytes(data)

    code, results = _run(tmp_path, paths, "plain-dumps")

    restores = _restores(results)
    assert restores["whole"][0] == "ok", restores["whole"]
    assert code == 1 and results["verdict"] == "fail"
    assert "cut short inside COPY data" in restores["cutcopy"][1]
    assert "does not end with pg_dump's `-- PostgreSQL database dump complete`" in restores["cuttrailer"][1]
    assert f"line {at + 1}: the psql command '\\\\!'" in restores["shell"][1]
    assert restores["midline"][0] == "failed" and "restricted" in restores["midline"][1], restores["midline"]
    assert restores["dollar"][0] == "failed", restores["dollar"]
    assert not shell_mark.exists() and not midline_mark.exists() and not dollar_mark.exists()


def test_a_cut_short_gzipped_dump_is_a_domain_error_not_a_traceback(
    plain_dumps: dict[str, bytes], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cut.sql.gz"
    path.write_bytes(gzip.compress(plain_dumps["plain"])[:-2000])
    code, results = _run(tmp_path, {"cutgz": path}, "cut-gz")
    assert code in (1, 2) and results["verdict"] in ("fail", "error")
    assert "cut.sql.gz: the gzip file is damaged or cut short" in str(results.get("error") or results["phases"])
    assert "Traceback" not in capfd.readouterr().err


def test_a_create_dump_is_refused_with_how_to_restore_it(plain_dumps: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "create.sql"
    path.write_bytes(plain_dumps["create"])
    code, results = _run(tmp_path, {"created": path}, "create-dump")
    assert code == 2 and results["verdict"] == "error"
    assert "a dump made with `pg_dump --create`" in results["error"] and "without --create" in results["error"]


def test_a_connect_line_deeper_in_a_dump_is_refused(plain_dumps: dict[str, bytes], tmp_path: Path) -> None:
    """``\\connect`` past the head inspect reads: the filter refuses it as the load reaches it."""
    lines = plain_dumps["plain"].splitlines(keepends=True)
    copy = next(i for i, line in enumerate(lines) if line.startswith(b"COPY public.orders"))
    path = tmp_path / "connect.sql"
    path.write_bytes(b"".join([*lines[:copy], b"\\connect postgres\n", *lines[copy:]]))
    code, results = _run(tmp_path, {"moved": path}, "connect-dump")
    status, detail = _restores(results)["moved"]
    assert code == 1 and status == "failed"
    assert f"line {copy + 1}: \\connect moves the load to another database" in detail
