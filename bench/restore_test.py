"""A restore test of a real backup (pgbench, scale 60 by default) against ``pg_restore -j2``.

Why: a restore test is what a team runs every month against last night's backup, and its
RTO is the figure an auditor reads. It is only worth quoting if drproof's restore costs
about what the tool it drives costs alone (issue 15: within 1.1x of ``pg_restore -j2`` on
the same data, with drproof's own peak RSS under 250 MB).

What runs, on Debian's PostgreSQL 15 through drproof's local runtime:

1. "production": a server loaded with ``pgbench -i -s SCALE``, backed up once by drproof's
   engine (``postgres`` kind, ``jobs: 2``, directory format) into a local repository, and
   dumped once with ``pg_dump -Fd -j2`` for the baseline (neither timed).
2. Per repetition, alternating which goes first:
   - drproof: ``drproof run`` of a restore-test scenario (``source: {config: ...}``, pick
     latest, fidelity asserted) in a child process. Its RTO is the one results.json
     reports (sandbox server already up, through the restore and the staged proof);
     the whole run's wall and CPU time, and the child's own peak RSS (VmHWM polled from
     /proc: GNU time's figure would be the largest *descendant*, a PostgreSQL backend);
   - raw: ``pg_restore -j2 --exit-on-error`` of the dump into a new, empty database on
     the production server (same version, same settings), then a row count.

Run: ``.venv/bin/python bench/restore_test.py [--scale 60] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, default_out, log, machine_facts, markdown_table, mb, run_measured, write_results
from postgres_dump import scalar

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.repository.local import LocalRepository
from engine.runtime.local import LocalRuntime

PG15 = Path("/usr/lib/postgresql/15/bin")
INSTANCE = "shop-db"
DRPROOF = [sys.executable, "-m", "drills.cli"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=60, help="pgbench scale factor (default 60, about 1 GB)")
    p.add_argument("--jobs", type=int, default=2, help="parallel jobs on both sides (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--postgres-bin", type=Path, default=PG15, help="PostgreSQL binaries (default Debian's 15)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("restore_test"), help="JSON results file")
    return p.parse_args(argv)


def write_restore_test(work: Path, repo: Path, jobs: int) -> Path:
    """The backup-config production would use, and a restore-test scenario reading it."""
    config = {
        "repository": {"path": str(repo)},
        "components": {
            INSTANCE: {
                "kind": "postgres",
                "url": "postgresql://backup@db.invalid:5432/app",  # never contacted by a restore test
                "password_env": "UNUSED_PASSWORD",
                "jobs": jobs,
            }
        },
    }
    (work / "backup-config.yaml").write_text(yaml.safe_dump(config))
    scenario = {
        "name": "bench-restore-test",
        "objectives": {"rto": "1h"},
        "source": {"config": "backup-config.yaml", "pick": "latest"},
        "assertions": ["fidelity", "rto"],
    }
    path = work / "restore-test.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_drproof(scenario: Path, report: Path) -> dict[str, float]:
    """One restore test in a child process: its RTO, wall, CPU and own peak RSS."""
    shutil.rmtree(report, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*DRPROOF, "run", str(scenario), "--report-dir", str(report), "-q"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
    )
    peak = 0
    while True:
        peak = max(peak, _hwm_kib(proc.pid) or 0)  # the high-water mark only grows: the last read is near the peak
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    wall = time.perf_counter() - started
    results = json.loads((report / "results.json").read_text())
    if code != 0:
        failing = [a["id"] for a in results.get("assertions", []) if a["status"] != "pass"]
        raise SystemExit(f"the restore test did not pass (exit {code}): {failing} {results.get('error')}")
    return {
        "rto_seconds": float(results["measured"]["rto_seconds"]),
        "wall_seconds": wall,
        # drproof and every process it waited for (the sandbox server, pg_restore and its jobs)
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": peak * 1024.0,
    }


def run_raw(svc: Any, dump: Path, jobs: int, rep: int, rows: int) -> dict[str, float]:
    """pg_restore -j into a new empty database on the same server, then the same row count."""
    db = f"raw_{rep}"
    env = svc.tool_env()
    run_measured([*svc.tool("psql"), "-c", f"CREATE DATABASE {db}", svc.tool_dsn("postgres")], env=env)
    run = run_measured(
        [*svc.tool("pg_restore"), f"-j{jobs}", "--exit-on-error", "-d", svc.tool_dsn(db), str(dump)], env=env
    )
    got = run_measured(
        [*svc.tool("psql"), "-Atc", "SELECT count(*) FROM pgbench_accounts", svc.tool_dsn(db)], env=env, capture=True
    )
    if int(got.stdout.decode().strip()) != rows:
        raise SystemExit(f"pg_restore restored {got.stdout!r} accounts, expected {rows}")
    run_measured([*svc.tool("psql"), "-c", f"DROP DATABASE {db}", svc.tool_dsn("postgres")], env=env)
    return {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    b = args.postgres_bin
    facts = machine_facts({"postgres": [str(b / "postgres"), "--version"]})
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-restore-test-", dir=args.dir))
    os.chmod(work, 0o755)
    drproof: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    loads: list[float] = []
    try:
        with LocalRuntime(work / "runtime", images={"postgres": str(b)}) as runtime:
            prod = PostgresComponent(INSTANCE, PostgresParams(customers=0, jobs=args.jobs), runtime)
            prod.provision()
            svc = prod.service
            admin = prod.connect("postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{prod.db}"')
            admin.close()
            log(f"pgbench -i -s {args.scale}")
            run_measured(
                [*svc.tool("pgbench"), "-i", "-q", "-s", str(args.scale), svc.tool_dsn(prod.db)], env=svc.tool_env()
            )
            rows = int(scalar(prod, "SELECT count(*) FROM pgbench_accounts"))
            size = int(scalar(prod, "SELECT pg_database_size(current_database())"))
            log(f"database {mb(size)} MB; drproof backup and pg_dump -Fd -j{args.jobs} (untimed)")
            repo = LocalRepository(work / "repo")
            engine_backup.backup(repo, [prod], fingerprints={INSTANCE: prod.fingerprint()})
            dump = work / "dump.d"
            run_measured(
                [*svc.tool("pg_dump"), "-Fd", f"-j{args.jobs}", "-f", str(dump), "-d", svc.tool_dsn(prod.db)],
                env=svc.tool_env(),
            )
            scenario = write_restore_test(work, repo.root, args.jobs)
            for rep in range(1, args.repeats + 1):
                order = ("drproof", "raw") if rep % 2 else ("raw", "drproof")
                for side in order:
                    loads.append(os.getloadavg()[0])
                    log(f"repetition {rep}/{args.repeats}: {side} (load {loads[-1]:.1f})")
                    if side == "drproof":
                        drproof.append(run_drproof(scenario, work / "report"))
                    else:
                        raw.append(run_raw(svc, dump, args.jobs, rep, rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(drproof, raw, args, size, loads)
    print(summary["table"])
    write_results(args.out, {"machine": facts, "args": vars(args), "drproof": drproof, "raw": raw, "summary": summary})
    return 0


def summarise(
    drproof: list[dict[str, float]],
    raw: list[dict[str, float]],
    args: argparse.Namespace,
    size: int,
    loads: list[float],
) -> dict[str, Any]:
    rto = statistics.median(d["rto_seconds"] for d in drproof)
    wall = statistics.median(d["wall_seconds"] for d in drproof)
    peak = max(d["peak_rss_bytes"] for d in drproof)
    tool = statistics.median(r["seconds"] for r in raw)
    rows = [
        ["drproof restore test: RTO (results.json)", f"{rto:.2f}", f"{rto / tool:.2f}x"],
        [
            "drproof restore test: whole run (sandbox start, restore, proof, fidelity, report)",
            f"{wall:.2f}",
            f"{wall / tool:.2f}x",
        ],
        [f"pg_restore -j{args.jobs} into an empty database", f"{tool:.2f}", "1.00x"],
    ]
    table = markdown_table(["step", "median s", "against pg_restore"], rows)
    table += (
        f"\n\npgbench scale {args.scale} ({mb(size)} MB), {args.repeats} repetitions, drproof peak RSS {mb(peak)} MB, "
    )
    table += f"load average {min(loads):.1f}-{max(loads):.1f}"
    return {"rto_ratio": rto / tool, "wall_ratio": wall / tool, "peak_rss_bytes": peak, "table": table}


if __name__ == "__main__":
    raise SystemExit(main())
