"""What a volume's file *count* costs: memory, manifest size, and repository listing.

Why a second volume benchmark: volume_rss.py shows that bytes stream in constant memory,
but the fingerprint drproof takes before every volume backup has one part per file, and
that fingerprint is kept in memory, written into the manifest, and parsed back whenever
the repository is listed. So memory and manifest size grow with the number of files, not
with their size, and the 250 MB budget can be broken by a volume of tiny files. This
measures where, with 100-byte files so that bytes do not matter:

1. for each file count (``--counts``, default 20000,50000,100000): a full backup as
   ``drproof backup`` does it (fingerprint, backup, verify) in a child process: peak
   RSS, time, manifest size, and whether the new set can be read back and listed (the
   repository refuses manifests over 16 MiB); and ``tar | zstd -3 -T1`` of the same tree;
2. listing a repository whose sets each hold a fingerprint of the first file count
   (``--sets``, default 1,10,30 copies of that manifest, which is all ``list`` reads):
   the step every incremental backup, restore by time and prune starts with.

Run: ``.venv/bin/python bench/volume_files.py``. Nothing is gated; ``--strict`` exits 1
when a set could not be read back or a backup peaked over ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MB,
    Series,
    default_out,
    log,
    machine_facts,
    markdown_table,
    mb,
    run_pipeline,
    secs,
    tool,
    write_results,
)
from volume_rss import run_child


def make_tiny_files(root: Path, count: int, size: int) -> float:
    """``count`` files of ``size`` bytes, 1000 to a directory; returns seconds taken."""
    started = time.perf_counter()
    payload = b"x" * size
    for i in range(count):
        d = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"file-{i:07d}.txt").write_bytes(payload)
    return time.perf_counter() - started


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--counts", default="20000,50000,100000", help="file counts to back up (default 20000,50000,100000)")
    p.add_argument("--file-size", type=int, default=100, help="bytes per file (default 100)")
    p.add_argument("--sets", default="1,10,30", help="sets in the repository for the listing probe (default 1,10,30)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--limit-mb", type=float, default=250.0, help="peak RSS budget in MB for --strict (default 250)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a set is unreadable or over the budget")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("volume_files"), help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = tool("zstd", "apt-get install -y zstd")
    facts = machine_facts()
    counts = [int(n) for n in args.counts.split(",")]
    set_counts = [int(n) for n in args.sets.split(",")]
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-files-", dir=args.dir))
    series: dict[str, Series] = {}
    unreadable: dict[int, str] = {}
    env = dict(os.environ)
    started = time.perf_counter()
    try:
        for count in counts:
            vol = work / f"volume-{count}"
            log(f"creating {count} files of {args.file_size} bytes")
            created = make_tiny_files(vol, count, args.file_size)
            log(f"  created in {created:.1f} s")
            ser = series.setdefault(f"drproof backup, {count} files", Series(f"drproof backup, {count} files"))
            for rep in range(1, args.repeats + 1):
                repo = work / f"repo-{count}-{rep}"
                log(f"  drproof backup {rep}/{args.repeats}")
                os.sync()
                spec = {"op": "backup", "repo": str(repo), "path": str(vol), "incremental": False}
                result = run_child(spec, env)
                listed = run_child({"op": "list", "repo": str(repo)}, env)["sets"] == 1  # in its own process
                if "error" in result or not listed:
                    unreadable[count] = result.get("error", "not listed")
                values = {
                    "seconds": result["seconds"],
                    "cpu_seconds": result["cpu_seconds"],
                    "peak_rss": result["peak_rss"],
                    "manifest_bytes": result["manifest_bytes"],
                    "listed": float(listed),
                }
                values.update({f"phase_{k}": v for k, v in result["phases"].items()})
                ser.add(**values)
                if zstd:
                    os.sync()
                    run = run_pipeline(
                        [["tar", "-C", str(vol), "-cf", "-", "."], [zstd, "-3", "-T1", "-q", "-c"]],
                        out_path=work / "baseline.tar.zst",
                        fsync=True,
                    )
                    name = f"tar | zstd, {count} files"
                    series.setdefault(name, Series(name)).add(
                        seconds=run.seconds, cpu_seconds=run.cpu_seconds, peak_rss=run.peak_rss
                    )
                if count != counts[0] or rep != 1:
                    shutil.rmtree(repo)  # the first set is the listing probe's template
            shutil.rmtree(vol)

        template_repo = work / f"repo-{counts[0]}-1"
        template = next((template_repo / "sets").iterdir())
        made = 1
        for n in sorted(set_counts):
            while made < n:  # copies of the manifest: list() reads nothing else
                copy = template_repo / "sets" / f"{template.name[:-6]}{made:06x}"
                copy.mkdir()
                # Each copy names itself: a manifest whose id is not its set's is refused.
                text = (template / "manifest.json").read_text()
                (copy / "manifest.json").write_text(text.replace(f'"id": "{template.name}"', f'"id": "{copy.name}"', 1))
                made += 1
            name = f"list {n} sets of {counts[0]} files"
            for rep in range(1, args.repeats + 1):
                log(f"listing {n} sets {rep}/{args.repeats}")
                result = run_child({"op": "list", "repo": str(template_repo)}, env)
                assert result["sets"] == n, result
                newest = run_child({"op": "newest", "repo": str(template_repo)}, env)
                assert newest["sets"] == n, newest
                series.setdefault(name, Series(name)).add(
                    seconds=result["phases"]["list"],
                    process_seconds=result["seconds"],
                    peak_rss=result["peak_rss"],
                    newest_seconds=newest["phases"]["newest"],
                    newest_peak_rss=newest["peak_rss"],
                )
        imports = run_child({"op": "imports"}, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report(series, counts, set_counts, imports, unreadable))
    over = [
        name for name, s in series.items() if name.startswith("drproof") and s.median("peak_rss") >= args.limit_mb * MB
    ]
    payload = {
        "benchmark": "volume_files",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "imports_peak_rss": imports["peak_rss"],
        "series": {name: ser.to_json() for name, ser in series.items()},
        "unreadable_sets": unreadable,
        "over_budget": over,
        "total_seconds": time.perf_counter() - started,
    }
    print(f"results: {write_results(args.out, payload)}", file=sys.stderr)
    return 1 if args.strict and (unreadable or over) else 0


def report(
    series: dict[str, Series],
    counts: list[int],
    set_counts: list[int],
    imports: dict[str, Any],
    unreadable: dict[int, str],
) -> str:
    rows = []
    for count in counts:
        a = series[f"drproof backup, {count} files"]
        b = series.get(f"tar | zstd, {count} files")
        med = a.medians()
        rows.append(
            [
                f"{count:,}",
                secs(med["seconds"]),
                secs(med["cpu_seconds"]),
                ", ".join(f"{k[6:]} {v:.2f}" for k, v in med.items() if k.startswith("phase_")),
                mb(med["peak_rss"]),
                mb(med["manifest_bytes"]),
                "yes" if med["listed"] else "NO: the repository refuses its manifest",
                secs(b.median("seconds")) if b else "-",
                secs(b.median("cpu_seconds")) if b else "-",
                mb(b.median("peak_rss")) if b else "-",
            ]
        )
    backups = markdown_table(
        [
            "files",
            "drproof s",
            "drproof CPU s",
            "phases s",
            "drproof peak RSS MB",
            "manifest MB",
            "set readable",
            "tar|zstd s",
            "tar|zstd CPU s",
            "tar|zstd peak RSS MB",
        ],
        rows,
    )
    list_rows = []
    for n in sorted(set_counts):
        ser = series[f"list {n} sets of {counts[0]} files"]
        list_rows.append(
            [
                str(n),
                secs(ser.median("seconds")),
                mb(ser.median("peak_rss")),
                secs(ser.median("newest_seconds")),
                mb(ser.median("newest_peak_rss")),
            ]
        )
    listing = markdown_table(
        [
            "sets in repository",
            "repo.list() s",
            "peak RSS MB",
            "summaries + newest set s (incremental parent, latest, prune)",
            "peak RSS MB",
        ],
        list_rows,
    )
    head = f"idle drproof process after imports: {mb(imports['peak_rss'])} MB"
    return f"{head}\n\n{backups}\n\nrepository listing, each set holding a {counts[0]}-file fingerprint:\n\n{listing}"


if __name__ == "__main__":
    raise SystemExit(main())
