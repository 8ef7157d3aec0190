"""PostgreSQL backup and restore: drproof's components against the raw tools on one server.

Why: drproof's ``postgres`` component is ``pg_dump --format=custom --compress=0`` streamed
through Python (zstd, two SHA-256 digests, fsync) and ``pg_restore`` fed from Python;
``postgres-physical`` is ``pg_basebackup`` in tar format plus the archived WAL. This
measures what that streaming costs against the same tools piped straight into the
``zstd`` command, and against pg_dump's own gzip compression, on a seeded database of a
size people actually restore (about 250 MB by default).

Everything runs against one private server from the local runtime (embedded
PostgreSQL, 127.0.0.1, random password), so drproof and the baselines see the same data,
cache and server settings. Per repetition (median of ``--repeats``, default 3):

- drproof: fingerprint (``drproof backup`` takes one by default), backup, verify,
  restore (which verifies first), and a fidelity check after the restore;
- raw: ``pg_dump -Fc -Z0 | zstd -3 -T1``, ``zstd -d | pg_restore`` with drproof's flags,
  ``pg_dump -Fc`` with its default gzip, and ``pg_restore`` of that file;
- physical: drproof's ``postgres-physical`` backup against
  ``pg_basebackup -D - -Ft -X fetch -c fast | zstd -3 -T1``, and drproof's physical restore
  (replace the data directory, replay, promote), which has no one-command raw equivalent.

Memory: drproof runs in this process, so its peak is this process's VmHWM during the
step (reset before it), which includes what the benchmark itself holds at that moment
(shown as "RSS at start"); the tools' own memory (pg_dump, pg_restore) is the same for
drproof and the baseline and is shown for the baseline only.

Run: ``.venv/bin/python bench/postgres_dump.py`` (``--help`` for the database size).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
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

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.fingerprint import compare
from engine.manifest import Manifest
from engine.repository.local import LocalRepository
from engine.runtime.local import LocalRuntime, postgres_bin_dir

INSTANCE = "pg"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers", type=int, default=250_000, help="rows in customers (default 250000)")
    p.add_argument("--orders-per-customer", type=int, default=8, help="orders per customer (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--no-physical", action="store_true", help="skip postgres-physical and pg_basebackup")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--keep", action="store_true", help="keep the work directory (the server is stopped anyway)")
    p.add_argument("--out", type=Path, default=default_out("postgres_dump"), help="JSON results file")
    return p.parse_args(argv)


def artifact_sizes(manifest: Manifest, name: str) -> tuple[int, int]:
    """(raw, stored) bytes of one artifact of the set."""
    a = next(a for a in manifest.artifacts if a.name == name)
    return a.raw_size, a.size


def scalar(comp: PostgresComponent, sql: str, db: str | None = None) -> Any:
    conn = comp.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = tool("zstd", "apt-get install -y zstd")
    bin_dir = postgres_bin_dir()
    facts = machine_facts(
        {"pg_dump": [str(bin_dir / "pg_dump"), "--version"], "postgres": [str(bin_dir / "postgres"), "--version"]}
    )
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-pg-", dir=args.dir))
    series: dict[str, Series] = {}

    def s(name: str) -> Series:
        return series.setdefault(name, Series(name))

    sizes: dict[str, float] = {}
    try:
        runtime = LocalRuntime(work)
        try:
            params = PostgresParams(customers=args.customers, orders_per_customer=args.orders_per_customer)
            comp = PostgresComponent(INSTANCE, params, runtime)
            comp.provision()
            log(f"seeding {args.customers} customers x {args.orders_per_customer} orders")
            with measure() as seeded:
                comp.seed()
            scalar(comp, "CHECKPOINT")
            db_bytes = int(scalar(comp, "SELECT pg_database_size(current_database())"))
            sizes["database_bytes"] = db_bytes
            log(f"database: {mb(db_bytes)} MB, seeded in {seeded.seconds:.1f} s")
            svc = comp.service
            env = svc.tool_env()
            app_dsn, admin_dsn = svc.tool_dsn(comp.db), svc.tool_dsn("postgres")
            restore_flags = ["--clean", "--if-exists", "--create", "--exit-on-error", "-d", admin_dsn]
            orders = int(scalar(comp, "SELECT count(*) FROM orders"))

            for rep in range(1, args.repeats + 1):
                log(f"repetition {rep}/{args.repeats}")
                repo = LocalRepository(work / f"repo-{rep}")
                log("  drproof fingerprint")
                start = current_rss()
                with measure() as ph:
                    fingerprint = comp.fingerprint()
                record_phase(s("drproof fingerprint"), ph, start)

                log("  drproof backup (postgres)")
                start = current_rss()
                with measure() as ph:
                    manifest = engine_backup.backup(repo, [comp], fingerprints={INSTANCE: fingerprint})
                raw, stored = artifact_sizes(manifest, "database.dump")
                record_phase(s("drproof backup"), ph, start, stored_bytes=stored, raw_bytes=raw)
                start = current_rss()
                with measure() as ph:
                    ok = repo.verify(manifest.id).ok
                assert ok, "a fresh backup failed verification"
                record_phase(s("drproof verify"), ph, start)

                if zstd:
                    log("  raw: pg_dump -Fc -Z0 | zstd")
                    out = work / "dump.zst"
                    run = run_pipeline(
                        [[*svc.tool("pg_dump"), "-Fc", "-Z0", "-d", app_dsn], [zstd, "-3", "-T1", "-q", "-c"]],
                        out_path=out,
                        env=env,
                    )
                    s("pg_dump -Fc -Z0 | zstd -3 -T1").add(
                        seconds=run.seconds,
                        cpu_seconds=run.cpu_seconds,
                        peak_rss=run.peak_rss,
                        stored_bytes=out.stat().st_size,
                    )
                log("  raw: pg_dump -Fc (gzip)")
                gz = work / "dump.gz.custom"
                run1 = run_measured([*svc.tool("pg_dump"), "-Fc", "-d", app_dsn, "-f", str(gz)], env=env)
                s("pg_dump -Fc (gzip)").add(
                    seconds=run1.seconds,
                    cpu_seconds=run1.cpu_seconds,
                    peak_rss=run1.peak_rss,
                    stored_bytes=gz.stat().st_size,
                )

                log("  drproof restore (postgres)")
                start = current_rss()
                with measure() as ph:
                    engine_backup.restore(repo, manifest, comp)
                record_phase(s("drproof restore"), ph, start)
                start = current_rss()
                with measure() as ph:
                    differences = compare(fingerprint, comp.fingerprint())
                if differences:
                    raise SystemExit(f"drproof restore differs: {[d.describe() for d in differences[:5]]}")
                record_phase(s("drproof fidelity check"), ph, start)

                if zstd:
                    log("  raw: zstd -d | pg_restore")
                    run = run_pipeline(
                        [[zstd, "-d", "-q", "-c", str(work / "dump.zst")], [*svc.tool("pg_restore"), *restore_flags]],
                        env=env,
                    )
                    _same_rows(comp, orders)
                    s("zstd -d | pg_restore").add(
                        seconds=run.seconds, cpu_seconds=run.cpu_seconds, peak_rss=run.peak_rss
                    )
                log("  raw: pg_restore of the gzip dump")
                run1 = run_measured([*svc.tool("pg_restore"), *restore_flags, str(gz)], env=env)
                _same_rows(comp, orders)
                s("pg_restore (gzip file)").add(
                    seconds=run1.seconds, cpu_seconds=run1.cpu_seconds, peak_rss=run1.peak_rss
                )
                for f in (work / "dump.zst", gz):
                    f.unlink(missing_ok=True)

                if not args.no_physical:
                    physical = PostgresPhysicalComponent(INSTANCE, params, runtime)
                    physical.provision()
                    prepo = LocalRepository(work / f"repo-physical-{rep}")
                    log("  drproof backup (postgres-physical)")
                    start = current_rss()
                    with measure() as ph:
                        pmanifest = engine_backup.backup(prepo, [physical])
                    raw, stored = artifact_sizes(pmanifest, "base.tar")
                    wal_raw, wal_stored = artifact_sizes(pmanifest, "wal.tar")
                    record_phase(
                        s("drproof physical backup"),
                        ph,
                        start,
                        stored_bytes=stored + wal_stored,
                        raw_bytes=raw + wal_raw,
                        wal_raw_bytes=wal_raw,
                    )
                    if zstd:
                        log("  raw: pg_basebackup -Ft -D - | zstd")
                        out = work / "base.tar.zst"
                        run = run_pipeline(
                            [
                                [
                                    *svc.tool("pg_basebackup"),
                                    "-D",
                                    "-",
                                    "-Ft",
                                    "-X",
                                    "fetch",
                                    "-c",
                                    "fast",
                                    "-d",
                                    admin_dsn,
                                ],
                                [zstd, "-3", "-T1", "-q", "-c"],
                            ],
                            out_path=out,
                            env=env,
                        )
                        s("pg_basebackup -Ft -D - | zstd -3 -T1").add(
                            seconds=run.seconds,
                            cpu_seconds=run.cpu_seconds,
                            peak_rss=run.peak_rss,
                            stored_bytes=out.stat().st_size,
                        )
                        out.unlink()
                    log("  drproof restore (postgres-physical)")
                    start = current_rss()
                    with measure() as ph:
                        engine_backup.restore(prepo, pmanifest, physical)
                    _same_rows(comp, orders)
                    record_phase(s("drproof physical restore"), ph, start, replay_seconds=physical.replay_seconds)
                    # Stopping the server reaps it, which would charge its whole lifetime's CPU here.
                    s("drproof physical restore").runs[-1].pop("cpu_seconds")
                    shutil.rmtree(prepo.root, ignore_errors=True)
                shutil.rmtree(repo.root, ignore_errors=True)
        finally:
            runtime.close()
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(report(series, sizes))
    payload = {
        "benchmark": "postgres_dump",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "seed_seconds": seeded.seconds,
        "series": {name: ser.to_json() for name, ser in series.items()},
    }
    print(f"results: {write_results(args.out, payload)}", file=sys.stderr)
    return 0


def _same_rows(comp: PostgresComponent, orders: int) -> None:
    """A restore that is fast but incomplete must not produce a number."""
    got = int(scalar(comp, "SELECT count(*) FROM orders"))
    if got != orders:
        raise SystemExit(f"restore incomplete: {got} orders, expected {orders}")


PAIRS = [
    ("logical backup", "drproof backup", "pg_dump -Fc -Z0 | zstd -3 -T1"),
    ("logical backup", "drproof backup", "pg_dump -Fc (gzip)"),
    ("logical restore", "drproof restore", "zstd -d | pg_restore"),
    ("logical restore", "drproof restore", "pg_restore (gzip file)"),
    ("physical backup", "drproof physical backup", "pg_basebackup -Ft -D - | zstd -3 -T1"),
]


def report(series: dict[str, Series], sizes: dict[str, float]) -> str:
    db = sizes["database_bytes"]
    rows = []
    for label, ours, theirs in PAIRS:
        if ours not in series or theirs not in series:
            continue
        a, b = series[ours], series[theirs]
        a_s, b_s = a.median("seconds"), b.median("seconds")
        a_cpu, b_cpu = a.median("cpu_seconds"), b.median("cpu_seconds")
        stored = [mb(x.median("stored_bytes")) if "stored_bytes" in x.medians() else "-" for x in (a, b)]
        rows.append(
            [
                label,
                secs(a_s),
                rate(db, a_s),
                secs(a_cpu),
                stored[0],
                theirs,
                secs(b_s),
                rate(db, b_s),
                secs(b_cpu),
                stored[1],
                ratio(a_s, b_s),
                ratio(a_cpu, b_cpu),
            ]
        )
    comparison = markdown_table(
        [
            "operation",
            "drproof s",
            "drproof MB/s",
            "drproof CPU s",
            "drproof stored MB",
            "baseline",
            "baseline s",
            "baseline MB/s",
            "baseline CPU s",
            "baseline stored MB",
            "wall drproof/baseline",
            "CPU drproof/baseline",
        ],
        rows,
    )
    detail_rows = []
    for name, ser in series.items():
        med = ser.medians()
        lo, hi = ser.spread("seconds")
        extra = []
        if "raw_bytes" in med:
            extra.append(f"raw {mb(med['raw_bytes'])} MB")
        if "wal_raw_bytes" in med:
            extra.append(f"of which WAL {mb(med['wal_raw_bytes'])} MB")
        if "replay_seconds" in med:
            extra.append(f"replay+promote {med['replay_seconds']:.2f} s")
        detail_rows.append(
            [
                name,
                f"{secs(med['seconds'])} ({secs(lo)}-{secs(hi)})",
                secs(med["cpu_seconds"]) if "cpu_seconds" in med else "-",
                mb(med["peak_rss"]),
                mb(med["start_rss"]) if "start_rss" in med else "-",
                mb(med["peak_rss"] - med["start_rss"]) if "start_rss" in med else "-",
                mb(med["stored_bytes"]) if "stored_bytes" in med else "-",
                "; ".join(extra),
            ]
        )
    details = markdown_table(
        ["step", "median s (min-max)", "CPU s", "peak RSS MB", "RSS at start MB", "growth MB", "stored MB", "notes"],
        detail_rows,
    )
    return f"database {mb(db)} MB (pg_database_size)\n\n{comparison}\n\n{details}"


if __name__ == "__main__":
    raise SystemExit(main())
