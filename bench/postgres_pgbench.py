"""PostgreSQL at ~1 GB (pgbench scale 60): drproof against pg_dump, pg_basebackup and pgBackRest.

Why: an operator choosing drproof gives up nothing only if its backups and restores cost
about what the tools it drives cost on their own, and its physical path is no slower
than the dedicated tool people already trust (pgBackRest). Everything here runs on ONE
server (Debian's PostgreSQL 15 through drproof's local runtime, because bookworm's
pgBackRest 2.45 supports PostgreSQL up to 15), loaded once with ``pgbench -i -s 60``,
so every tool sees the same data, cache and settings, in the same run.

Per repetition (``--repeats``, default 1: the whole run takes 15-25 minutes here):

- logical: ``pg_dump -Fd -j2`` and ``pg_restore -j2 --clean --create`` against drproof's
  ``postgres`` component with ``jobs: 2`` (the same tools, zstd instead of gzip, streamed
  into the repository, fsync, manifest; then verify). drproof's fingerprint and the
  fidelity check after the restore are timed on their own rows: ``drproof backup`` takes
  a fingerprint by default, and they are what a bare pg_dump never does.
- physical: ``pg_basebackup -Ft -X fetch -D - | zstd -T2`` against drproof's
  ``postgres-physical`` backup (base backup plus the WAL archived since the previous
  backup; an untimed warm-up backup first, so the timed one does not carry the load's
  WAL). Restores of both go through the same stop / populate / recover / promote
  sequence of the runtime; only "populate" differs (untar, drproof's restore, or
  ``pgbackrest restore``).
- pgBackRest: ``pgbackrest backup --type=full`` (zst, process-max 2, the configuration
  drproof's ``postgres-pgbackrest`` kind writes) and ``pgbackrest restore
  --type=immediate``. Its WAL is pushed untimed, as a server's archive_command would.

Every restore is checked (row count of pgbench_accounts) before its time counts.

Memory: drproof runs in this process; its peak is the process's VmHWM during the step
(reset before it). The tools' own peaks (GNU time) are in the baseline rows.

Run: ``.venv/bin/python bench/postgres_pgbench.py`` (``--scale 5`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Series,
    current_rss,
    default_out,
    log,
    machine_facts,
    markdown_table,
    mb,
    measure,
    rate,
    ratio,
    record_phase,
    run_measured,
    run_pipeline,
    secs,
    tool,
    write_results,
)
from postgres_dump import artifact_sizes, scalar

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.postgres_pgbackrest import PostgresPgBackRestComponent
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.fingerprint import compare
from engine.repository.local import LocalRepository
from engine.runtime.local import LocalRuntime

PG15 = Path("/usr/lib/postgresql/15/bin")
INSTANCE = "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=int, default=60, help="pgbench scale factor (default 60, about 1 GB)")
    p.add_argument("--jobs", type=int, default=2, help="parallel jobs for pg_dump/pg_restore on both sides")
    p.add_argument("--postgres-bin", type=Path, default=PG15, help="PostgreSQL binaries (default Debian's 15)")
    p.add_argument("--repeats", type=int, default=1, help="repetitions; medians are reported (default 1)")
    p.add_argument("--no-pgbackrest", action="store_true", help="skip the pgBackRest baseline")
    p.add_argument(
        "--logical-only", action="store_true", help="only pg_dump/pg_restore and drproof's postgres kind (no physical)"
    )
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("postgres_pgbench"), help="JSON results file")
    return p.parse_args(argv)


def _runner_prefix(user: str | None) -> list[str]:
    """pgBackRest must run as the server's OS user, like the component runs it."""
    return ["runuser", "-u", user, "--"] if user else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = tool("zstd", "apt-get install -y zstd")
    if zstd is None:
        raise SystemExit("the baselines need the zstd command (apt-get install -y zstd)")
    if not (args.postgres_bin / "postgres").exists():
        raise SystemExit(f"no PostgreSQL in {args.postgres_bin} (apt-get install -y postgresql-15)")
    skip_pgbackrest = args.no_pgbackrest or args.logical_only
    pgbackrest = None if skip_pgbackrest else tool("pgbackrest", "apt-get install -y pgbackrest")
    b = args.postgres_bin
    facts = machine_facts(
        {
            "postgres": [str(b / "postgres"), "--version"],
            "pg_dump": [str(b / "pg_dump"), "--version"],
            "pgbench": [str(b / "pgbench"), "--version"],
            "pgbackrest": ["pgbackrest", "version"],
        }
    )
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-pgbench-", dir=args.dir))
    os.chmod(work, 0o755)  # the server's user reaches its directories below
    series: dict[str, Series] = {}

    def s(name: str) -> Series:
        return series.setdefault(name, Series(name))

    sizes: dict[str, float] = {}
    try:
        with LocalRuntime(work / "runtime", images={"postgres": str(b)}) as runtime:
            params = PostgresParams(customers=0, jobs=args.jobs)
            logical = PostgresComponent(INSTANCE, params, runtime)
            logical.provision()
            physical = PostgresPhysicalComponent(INSTANCE, params, runtime)
            physical.provision()
            svc = logical.service
            env = svc.tool_env()
            app_dsn, admin_dsn = svc.tool_dsn(logical.db), svc.tool_dsn("postgres")
            admin = logical.connect("postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{logical.db}"')
            admin.close()
            log(f"pgbench -i -s {args.scale}")
            with measure() as loaded:
                run_measured([*svc.tool("pgbench"), "-i", "-q", "-s", str(args.scale), app_dsn], env=env)
            # pg_basebackup -X fetch asks for the WAL since its start at the end; with 1 MB
            # segments a checkpoint in between may have recycled them ("requested WAL
            # segment ... has already been removed"). Keep enough for the whole run.
            admin = logical.connect("postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("ALTER SYSTEM SET wal_keep_size = '4GB'")
                cur.execute("SELECT pg_reload_conf()")
            admin.close()
            scalar(logical, "CHECKPOINT")
            sizes["database_bytes"] = db = int(scalar(logical, "SELECT pg_database_size(current_database())"))
            sizes["cluster_bytes"] = int(scalar(logical, "SELECT sum(pg_database_size(datname)) FROM pg_database"))
            accounts = int(scalar(logical, "SELECT count(*) FROM pgbench_accounts"))
            log(f"database {mb(db)} MB, {accounts} accounts, loaded in {loaded.seconds:.0f} s")

            def same_rows() -> None:
                got = int(scalar(logical, "SELECT count(*) FROM pgbench_accounts"))
                if got != accounts:
                    raise SystemExit(f"restore incomplete: {got} accounts, expected {accounts}")

            pgbr = None
            if pgbackrest:
                pgbr = PostgresPgBackRestComponent(INSTANCE, params, runtime)
                pgbr.provision()  # private config, stanza-create, a backup role
            preppo = LocalRepository(work / "repo-physical")

            def settle() -> None:
                """Nothing dirty left by the step before: no shutdown checkpoint or writeback
                of someone else's data is charged to the next timed step."""
                scalar(logical, "CHECKPOINT")
                sync()

            done: dict[str, Any] = {}  # the manifest the drproof backup step wrote, for its restore
            for rep in range(1, args.repeats + 1):
                log(f"repetition {rep}/{args.repeats}")
                repo = LocalRepository(work / f"repo-{rep}")
                # -- logical ------------------------------------------------------------
                settle()
                log("  drproof fingerprint")
                start = current_rss()
                with measure() as ph:
                    fingerprint = logical.fingerprint()
                record_phase(s("drproof fingerprint"), ph, start)
                dump_dir = work / "dump.d"
                shutil.rmtree(dump_dir, ignore_errors=True)

                def drproof_backup(repo: LocalRepository = repo, fingerprint: Any = fingerprint) -> None:
                    settle()
                    log("  drproof logical backup")
                    start, load = current_rss(), os.getloadavg()[0]
                    with measure() as ph:
                        done["manifest"] = engine_backup.backup(repo, [logical], fingerprints={INSTANCE: fingerprint})
                    stored = sum(a.size for a in done["manifest"].artifacts)
                    record_phase(s("drproof logical backup"), ph, start, stored_bytes=stored, load=load)
                    with measure() as ph:
                        assert repo.verify(done["manifest"].id).ok, "a fresh backup failed verification"
                    record_phase(s("drproof verify"), ph, start)

                def raw_dump(dump_dir: Path = dump_dir) -> None:
                    settle()
                    log(f"  raw: pg_dump -Fd -j{args.jobs}")
                    load = os.getloadavg()[0]
                    run = run_measured(
                        [*svc.tool("pg_dump"), "-Fd", f"-j{args.jobs}", "-f", str(dump_dir), "-d", app_dsn], env=env
                    )
                    run_measured(["sync"])
                    s(f"pg_dump -Fd -j{args.jobs}").add(
                        seconds=run.seconds,
                        cpu_seconds=run.cpu_seconds,
                        peak_rss=run.peak_rss,
                        stored_bytes=_du(dump_dir),
                        load=load,
                    )

                def drproof_restore(repo: LocalRepository = repo, fingerprint: Any = fingerprint) -> None:
                    settle()
                    log("  drproof logical restore")
                    start, load = current_rss(), os.getloadavg()[0]
                    with measure() as ph:
                        engine_backup.restore(repo, done["manifest"], logical)
                    same_rows()
                    record_phase(s("drproof logical restore"), ph, start, load=load)
                    log("  drproof fidelity check")
                    with measure() as ph:
                        differences = compare(fingerprint, logical.fingerprint())
                    if differences:
                        raise SystemExit(f"drproof restore differs: {[d.describe() for d in differences[:5]]}")
                    record_phase(s("drproof fidelity check"), ph, start)

                def raw_restore(dump_dir: Path = dump_dir) -> None:
                    settle()
                    log(f"  raw: pg_restore -j{args.jobs}")
                    load = os.getloadavg()[0]
                    run = run_measured(
                        [
                            *svc.tool("pg_restore"),
                            f"-j{args.jobs}",
                            "--clean",
                            "--if-exists",
                            "--create",
                            "--exit-on-error",
                            "-d",
                            admin_dsn,
                            str(dump_dir),
                        ],
                        env=env,
                    )
                    same_rows()
                    s(f"pg_restore -j{args.jobs}").add(
                        seconds=run.seconds, cpu_seconds=run.cpu_seconds, peak_rss=run.peak_rss, load=load
                    )

                # Alternated: odd repetitions run drproof first, even ones the raw tool, so a
                # warm cache or a neighbour's burst does not always favour the same side.
                first_ours = rep % 2 == 1
                for step in (drproof_backup, raw_dump) if first_ours else (raw_dump, drproof_backup):
                    step()
                for step in (drproof_restore, raw_restore) if first_ours else (raw_restore, drproof_restore):
                    step()
                shutil.rmtree(dump_dir, ignore_errors=True)
                shutil.rmtree(repo.root, ignore_errors=True)
                if args.logical_only:
                    continue

                # -- physical backups ---------------------------------------------------
                # The restores above leave 6M freshly written rows; autovacuum would visit
                # them during the timed steps and its WAL would land in whichever backup
                # runs then. Vacuum now, untimed, so every tool backs up a quiet server.
                admin = logical.connect(logical.db)
                admin.autocommit = True
                with admin.cursor() as cur:
                    cur.execute("VACUUM (FREEZE, ANALYZE)")
                admin.close()
                log("  warm-up physical backup (carries the WAL of the steps above; not timed)")
                engine_backup.backup(preppo, [physical])
                settle()
                log("  raw: pg_basebackup | zstd -T2")
                base = work / "base.tar.zst"
                prun = run_pipeline(
                    [
                        [*svc.tool("pg_basebackup"), "-D", "-", "-Ft", "-X", "fetch", "-c", "fast", "-d", admin_dsn],
                        [zstd, "-3", "-T2", "-q", "-c"],
                    ],
                    out_path=base,
                    env=env,
                    fsync=True,
                )
                s("pg_basebackup -Ft | zstd -T2").add(
                    seconds=prun.seconds,
                    cpu_seconds=prun.cpu_seconds,
                    peak_rss=prun.peak_rss,
                    stored_bytes=base.stat().st_size,
                )
                settle()
                log("  drproof physical backup")
                start = current_rss()
                with measure() as ph:
                    pmanifest = engine_backup.backup(preppo, [physical])
                with measure() as verified:
                    assert preppo.verify(pmanifest.id).ok
                raw_wal, _ = artifact_sizes(pmanifest, "wal.tar")
                record_phase(
                    s("drproof physical backup"),
                    ph,
                    start,
                    stored_bytes=sum(a.size for a in pmanifest.artifacts),
                    wal_raw_bytes=raw_wal,
                    verify_seconds=verified.seconds,
                )
                label = None
                if pgbr is not None:
                    settle()
                    log("  raw: pgbackrest backup --type=full")
                    before = {x["label"] for x in pgbr._info().get("backup", [])}
                    pgbr._push_wal()
                    run = run_measured(
                        [*_runner_prefix(pgbr.run_user), *pgbr._argv(["backup", "--type=full", "--no-archive-check"])],
                        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
                    )
                    [new] = [x for x in pgbr._info().get("backup", []) if x["label"] not in before]
                    label = str(new["label"])
                    pgbr._wait_and_push(str(new["archive"]["stop"]))  # untimed: archive_command's job
                    s("pgbackrest backup --type=full").add(
                        seconds=run.seconds,
                        cpu_seconds=run.cpu_seconds,
                        peak_rss=run.peak_rss,
                        stored_bytes=int(new["info"]["repository"]["size"]),
                    )

                # -- physical restores (each brings the cluster back to the same data) --
                settle()
                log("  raw: zstd -d | tar -x, recover, promote")
                owner = physical.physical.server_file_owner()

                def untar(data: Path, base: Path = base) -> None:
                    run_pipeline([[zstd, "-d", "-q", "-c", str(base)], ["tar", "-x", "-C", str(data)]])

                with measure() as ph:
                    physical.physical.replace_cluster(
                        untar,
                        {
                            # -X fetch put the WAL the backup needs inside it; the archive
                            # is where a shell script's restore_command would look too.
                            "restore_command": f"cp {physical.physical.wal_archive()}/%f %p",
                            "recovery_target": "immediate",
                            "recovery_target_action": "promote",
                        },
                    )
                same_rows()
                s("pg_basebackup restore (untar + recover)").add(seconds=ph.seconds)
                base.unlink()

                settle()
                log("  drproof physical restore")
                start = current_rss()
                with measure() as ph:
                    engine_backup.restore(preppo, pmanifest, physical)
                same_rows()
                record_phase(s("drproof physical restore"), ph, start, replay_seconds=physical.replay_seconds)
                s("drproof physical restore").runs[-1].pop("cpu_seconds")  # stopping the server reaps it

                if pgbr is not None and label is not None:
                    settle()
                    log("  raw: pgbackrest restore, recover, promote")

                    def pgbackrest_restore(data: Path, label: str = label, owner: Any = owner) -> None:
                        if owner is not None:
                            os.chown(data, *owner)
                        subprocess.run(
                            [
                                *_runner_prefix(pgbr.run_user),
                                *pgbr._argv(
                                    [
                                        "restore",
                                        f"--set={label}",
                                        "--type=immediate",
                                        "--target-action=promote",
                                        f"--pg1-path={data}",
                                    ]
                                ),
                            ],
                            check=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
                            cwd=work,
                        )

                    with measure() as ph:
                        physical.physical.replace_cluster(pgbackrest_restore, {})
                    same_rows()
                    s("pgbackrest restore (+ recover)").add(seconds=ph.seconds)
                    pgbr._push_new_timeline()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report(series, sizes, args.jobs))
    payload = {
        "benchmark": "postgres_pgbench",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "load_seconds": loaded.seconds,
        "series": {name: ser.to_json() for name, ser in series.items()},
    }
    print(f"results: {write_results(args.out, payload)}", file=sys.stderr)
    return 0


def sync() -> None:
    """Start each timed step with nothing dirty in the page cache from the step before."""
    os.sync()
    time.sleep(0.5)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pairs(jobs: int) -> list[tuple[str, str, str]]:
    return [
        ("fingerprint", "drproof fingerprint", f"pg_dump -Fd -j{jobs}"),
        ("logical backup", "drproof logical backup", f"pg_dump -Fd -j{jobs}"),
        ("logical restore", "drproof logical restore", f"pg_restore -j{jobs}"),
        ("physical backup", "drproof physical backup", "pg_basebackup -Ft | zstd -T2"),
        ("physical backup", "drproof physical backup", "pgbackrest backup --type=full"),
        ("physical restore", "drproof physical restore", "pg_basebackup restore (untar + recover)"),
        ("physical restore", "drproof physical restore", "pgbackrest restore (+ recover)"),
    ]


def report(series: dict[str, Series], sizes: dict[str, float], jobs: int) -> str:
    db = sizes["database_bytes"]
    rows = []
    for label, ours, theirs in pairs(jobs):
        if ours not in series or theirs not in series:
            continue
        a, b = series[ours].median("seconds"), series[theirs].median("seconds")
        rows.append([label, secs(a), rate(db, a), theirs, secs(b), rate(db, b), ratio(a, b)])
    if all(k in series for k in ("drproof physical backup", "drproof physical restore")) and all(
        k in series for k in ("pgbackrest backup --type=full", "pgbackrest restore (+ recover)")
    ):
        ours = series["drproof physical backup"].median("seconds") + series["drproof physical restore"].median(
            "seconds"
        )
        theirs = series["pgbackrest backup --type=full"].median("seconds") + series[
            "pgbackrest restore (+ recover)"
        ].median("seconds")
        rows.append(
            [
                "physical backup + restore",
                secs(ours),
                "",
                "pgBackRest backup + restore",
                secs(theirs),
                "",
                ratio(ours, theirs),
            ]
        )
    comparison = markdown_table(
        ["operation", "drproof s", "drproof MB/s", "baseline", "baseline s", "baseline MB/s", "drproof/baseline"], rows
    )
    detail_rows = []
    for name, ser in series.items():
        med: dict[str, Any] = ser.medians()
        notes = []
        if "wal_raw_bytes" in med:
            notes.append(f"WAL in the set {mb(med['wal_raw_bytes'])} MB")
        if "verify_seconds" in med:
            notes.append(f"then verify {med['verify_seconds']:.2f} s")
        if "load" in med:
            notes.append(f"1-min load average at start {med['load']:.1f}")
        if "replay_seconds" in med:
            notes.append(f"recover+promote {med['replay_seconds']:.2f} s")
        detail_rows.append(
            [
                name,
                secs(med["seconds"]),
                secs(med["cpu_seconds"]) if "cpu_seconds" in med else "-",
                mb(med["peak_rss"]) if "peak_rss" in med else "-",
                mb(med["start_rss"]) if "start_rss" in med else "-",
                mb(med["stored_bytes"]) if "stored_bytes" in med else "-",
                "; ".join(notes),
            ]
        )
    details = markdown_table(
        ["step", "s", "CPU s", "peak RSS MB", "RSS at start MB", "stored MB", "notes"], detail_rows
    )
    return (
        f"database {mb(db)} MB (pg_database_size), cluster {mb(sizes['cluster_bytes'])} MB\n\n{comparison}\n\n{details}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
