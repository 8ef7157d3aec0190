"""What a volume's file *count* costs: memory and CPU of every volume verb, against tar.

Why a second volume benchmark: volume_rss.py shows that bytes stream in constant memory,
but a volume's fingerprint has one part per file, so what grows with the number of files
(not their size) must be measured with many tiny files (issue 14: the target is a peak
RSS under 250 MB at 1,000,000 files, and CPU within 2x of tar at 100,000). For each file
count (``--counts``), on files of ``--file-size`` bytes (100 by default), each in its own
child process under GNU time:

1. ``drproof backup`` (backup, fingerprint while archiving, verify), and
   ``tar -cf - . | zstd -3 -T2`` of the same tree;
2. ``drproof recovery verify`` of the stored set (read back, every artifact proven);
3. ``drproof recovery restore`` into an empty directory (verify, extract, staged proof,
   then health and the fidelity check of the live tree), and ``zstd -d | tar -x``;
4. an incremental backup after changing ``--change-fraction`` of the files;

and, for the first count, listing a repository of ``--sets`` sets of that many files
(their manifests, which is all a listing reads): ``drproof recovery list`` through the
CLI, ``repo.list()`` (whole manifests) and the newest set (an incremental's parent).

Run: ``.venv/bin/python bench/volume_files.py --counts 10000,100000`` (the issue's whole
set: ``--counts 10000,100000,300000,1000000 --repeats 1``; 1,000,000 files take about
4 GB of disk and half an hour). Nothing is gated; ``--strict`` exits 1 when a set could
not be read back or a drproof step peaked over ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import os
import random
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
    ratio,
    run_measured,
    run_pipeline,
    secs,
    tool,
    write_results,
)
from volume_rss import run_child

STEPS = ("backup", "verify", "restore", "incremental")
BASELINES = {"backup": "tar | zstd -3 -T2", "restore": "zstd -d | tar -x"}


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


def change_files(root: Path, count: int, fraction: float, size: int, rng: random.Random) -> int:
    """Rewrite ``fraction`` of the files ``make_tiny_files`` made with other bytes; return how many."""
    chosen = rng.sample(range(count), max(1, round(count * fraction)))
    for i in chosen:
        (root / f"d{i // 1000:04d}" / f"file-{i:07d}.txt").write_bytes(os.urandom(size))
    return len(chosen)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--counts", default="10000,100000", help="file counts (default 10000,100000)")
    p.add_argument("--file-size", type=int, default=100, help="bytes per file (default 100)")
    p.add_argument("--sets", type=int, default=10, help="sets in the repository for the listing probe (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--change-fraction", type=float, default=0.01, help="files changed before the incremental")
    p.add_argument("--limit-mb", type=float, default=250.0, help="peak RSS budget in MB for --strict (default 250)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a set is unreadable or over the budget")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("volume_files"), help="JSON results file")
    return p.parse_args(argv)


class Run:
    """The series measured so far, and one file count's steps."""

    def __init__(self, args: argparse.Namespace, work: Path, zstd: str | None) -> None:
        self.args, self.work, self.zstd = args, work, zstd
        self.series: dict[str, Series] = {}
        self.failed: dict[str, str] = {}
        self.env = dict(os.environ)

    def add(self, name: str, **values: float) -> None:
        self.series.setdefault(name, Series(name)).add(**values)

    def drproof(self, name: str, **spec: Any) -> dict[str, Any]:
        os.sync()  # every timed step starts with no dirty pages left by the previous one
        result = run_child(spec, self.env)
        if "error" in result:
            self.failed[name] = result["error"]
        values = {k: result[k] for k in ("seconds", "cpu_seconds", "peak_rss")}
        values.update({f"phase_{k}": v for k, v in result["phases"].items()})
        if "manifest_bytes" in result:
            values["manifest_bytes"] = result["manifest_bytes"]
        self.add(name, **values)
        return result

    def pipeline(self, name: str, stages: list[list[str]], out: Path | None = None, into: Path | None = None) -> None:
        os.sync()
        run = run_pipeline(stages, out_path=out, in_path=into, fsync=out is not None)
        self.add(name, seconds=run.seconds, cpu_seconds=run.cpu_seconds, peak_rss=run.peak_rss)

    def count(self, count: int, rng: random.Random) -> Path:
        """Every step at one file count; returns the repository of the first repetition."""
        args, work = self.args, self.work
        vol, restored = work / f"volume-{count}", work / "restored"
        log(f"creating {count:,} files of {args.file_size} bytes")
        log(f"  created in {make_tiny_files(vol, count, args.file_size):.1f} s")
        first_repo = work / f"repo-{count}-1"
        for rep in range(1, args.repeats + 1):
            repo = work / f"repo-{count}-{rep}"
            log(f"  {count:,} files, repetition {rep}/{args.repeats}: drproof backup")
            full = self.drproof(f"backup {count}", op="backup", repo=str(repo), path=str(vol), incremental=False)
            if self.zstd:
                log("  tar | zstd -3 -T2")
                tar = ["tar", "-C", str(vol), "-cf", "-", "."]
                self.pipeline(
                    f"{BASELINES['backup']} {count}", [tar, [self.zstd, "-3", "-T2", "-q", "-c"]], work / "b.tar.zst"
                )
            if "backup_id" not in full:
                continue
            log("  drproof recovery verify")
            self.drproof(f"verify {count}", op="verify", repo=str(repo), backup_id=full["backup_id"])
            log("  drproof recovery restore (with fidelity)")
            shutil.rmtree(restored, ignore_errors=True)
            result = self.drproof(
                f"restore {count}", op="restore", repo=str(repo), path=str(restored), backup_id=full["backup_id"]
            )
            if result.get("differences"):
                self.failed[f"restore {count}"] = f"{result['differences']} parts differ after the restore"
            shutil.rmtree(restored, ignore_errors=True)
            if self.zstd:
                log("  zstd -d | tar -x")
                restored.mkdir()
                self.pipeline(
                    f"{BASELINES['restore']} {count}",
                    [[self.zstd, "-d", "-q", "-c"], ["tar", "-C", str(restored), "-xf", "-"]],
                    into=work / "b.tar.zst",
                )
                shutil.rmtree(restored)
            changed = change_files(vol, count, args.change_fraction, args.file_size, rng)
            log(f"  drproof incremental backup ({changed:,} files changed)")
            self.drproof(f"incremental {count}", op="backup", repo=str(repo), path=str(vol), incremental=True)
            if repo != first_repo:
                shutil.rmtree(repo)
        shutil.rmtree(vol)
        (work / "b.tar.zst").unlink(missing_ok=True)
        return first_repo

    def listing(self, template_repo: Path, count: int) -> None:
        """``--sets`` sets each holding a set of ``count`` files: copies of one set's manifest."""
        sets = template_repo / "sets"
        template = sorted(sets.iterdir())[0]
        text = (template / "manifest.json").read_text()
        for entry in list(sets.iterdir()):
            if entry != template:
                shutil.rmtree(entry)
        for n in range(1, self.args.sets):
            copy = sets / f"{template.name[:-6]}{n:06x}"
            copy.mkdir()
            # Each copy names itself: a manifest whose id is not its set's is refused.
            (copy / "manifest.json").write_text(text.replace(f'"id": "{template.name}"', f'"id": "{copy.name}"', 1))
        name = f"{self.args.sets} sets of {count} files"
        for rep in range(1, self.args.repeats + 1):
            log(f"listing {name} {rep}/{self.args.repeats}")
            cli = run_measured(
                [sys.executable, "-m", "drills.cli", "recovery", "list", "--repository", str(template_repo)],
                env=self.env,
                capture=True,
            )
            whole = run_child({"op": "list", "repo": str(template_repo)}, self.env)
            newest = run_child({"op": "newest", "repo": str(template_repo)}, self.env)
            assert whole["sets"] == newest["sets"] == self.args.sets, (whole, newest)
            self.add(f"recovery list: {name}", seconds=cli.seconds, cpu_seconds=cli.cpu_seconds, peak_rss=cli.peak_rss)
            self.add(
                f"repo.list(): {name}",
                seconds=whole["seconds"],
                cpu_seconds=whole["cpu_seconds"],
                peak_rss=whole["peak_rss"],
            )
            self.add(
                f"newest set: {name}",
                seconds=newest["seconds"],
                cpu_seconds=newest["cpu_seconds"],
                peak_rss=newest["peak_rss"],
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = tool("zstd", "apt-get install -y zstd")
    facts = machine_facts()
    counts = [int(n) for n in args.counts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-files-", dir=args.dir))
    run = Run(args, work, zstd)
    started = time.perf_counter()
    rng = random.Random(42)
    try:
        template = None
        for count in counts:
            repo = run.count(count, rng)
            if template is None:
                template = repo
            else:
                shutil.rmtree(repo, ignore_errors=True)
        assert template is not None
        if (template / "sets").is_dir():
            run.listing(template, counts[0])
        imports = run_child({"op": "imports"}, run.env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report(run.series, counts, imports, run.failed))
    over = [
        name
        for name, s in run.series.items()
        if not name.startswith(tuple(BASELINES.values())) and s.median("peak_rss") >= args.limit_mb * MB
    ]
    payload = {
        "benchmark": "volume_files",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "imports_peak_rss": imports["peak_rss"],
        "imports_cpu_seconds": imports["cpu_seconds"],
        "series": {name: ser.to_json() for name, ser in run.series.items()},
        "failed": run.failed,
        "over_budget": over,
        "total_seconds": time.perf_counter() - started,
    }
    print(f"results: {write_results(args.out, payload)}", file=sys.stderr)
    return 1 if args.strict and (run.failed or over) else 0


def report(series: dict[str, Series], counts: list[int], imports: dict[str, Any], failed: dict[str, str]) -> str:
    rows = []
    for count in counts:
        for step in STEPS:
            s = series.get(f"{step} {count}")
            if s is None:
                continue
            base = series.get(f"{BASELINES.get(step, '')} {count}")
            cpu = s.median("cpu_seconds")
            rows.append(
                [
                    f"{count:,}",
                    step + (" (FAILED)" if f"{step} {count}" in failed else ""),
                    secs(s.median("seconds")),
                    secs(cpu),
                    mb(s.median("peak_rss")),
                    mb(s.median("manifest_bytes")) if "manifest_bytes" in s.medians() else "-",
                    BASELINES.get(step, "-"),
                    secs(base.median("cpu_seconds")) if base else "-",
                    ratio(cpu, base.median("cpu_seconds")) if base else "-",
                ]
            )
    steps = markdown_table(
        [
            "files",
            "drproof step",
            "s",
            "CPU s",
            "peak RSS MB",
            "manifest MB",
            "baseline",
            "baseline CPU s",
            "CPU ratio",
        ],
        rows,
    )
    listing = markdown_table(
        ["listing (own process)", "s", "CPU s", "peak RSS MB"],
        [
            [name, secs(s.median("seconds")), secs(s.median("cpu_seconds")), mb(s.median("peak_rss"))]
            for name, s in series.items()
            if ": " in name
        ],
    )
    head = f"idle drproof process after imports: {mb(imports['peak_rss'])} MB, {imports['cpu_seconds']:.2f} CPU s"
    problems = "".join(f"\nFAILED {k}: {v}" for k, v in failed.items())
    return f"{head}\n\n{steps}\n\n{listing}{problems}"


if __name__ == "__main__":
    raise SystemExit(main())
