"""The whole benchmark suite in one command, written into docs/performance.md.

Why one command: a comparison is only worth quoting when both sides ran on the same
data, on the same machine, in the same run, and when a reader can see which machine,
which versions and which commands produced it. This runs every benchmark at the sizes
the performance targets name, keeps each one's JSON under ``bench/results/suite/``, and
replaces the generated part of docs/performance.md (between the ``suite:begin`` and
``suite:end`` markers) with the machine facts, the commands and every table.

    .venv/bin/python bench/run_all.py              # the full suite: about 30-40 min on 2 CPUs
    .venv/bin/python bench/run_all.py --quick      # small sizes, a few minutes; writes nothing to docs/
    .venv/bin/python bench/run_all.py --only postgres,quickstart

Needs ``zstd``, GNU ``time``, Debian's ``postgresql-15`` and ``pgbackrest`` (``apt-get
install -y zstd time postgresql-15 pgbackrest``); a missing one is named and its rows are
skipped, never faked.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, REPO_ROOT, log, machine_facts, markdown_table

SUITE_DIR = BENCH_DIR / "results" / "suite"
DOCS = REPO_ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


@dataclass
class Step:
    name: str
    title: str
    argv: list[str]  # after the interpreter; "{out}" becomes the JSON path
    quick: list[str]  # the same at smoke-test sizes


SUITE = [
    Step(
        "volume-2g",
        "A 2 GB volume: drproof against `tar | zstd -T2` (and `openssl enc`, GNU tar incremental)",
        ["bench/volume_rss.py", "--total-size", "2GiB", "--repeats", "1", "--zstd-thread-probe", "", "--out", "{out}"],
        [
            "bench/volume_rss.py",
            "--total-size",
            "64MiB",
            "--small-files",
            "500",
            "--small-size",
            "8MiB",
            "--repeats",
            "1",
            "--zstd-thread-probe",
            "",
            "--out",
            "{out}",
        ],
    ),
    Step(
        "volume-100m",
        "A 100 MB volume: peak RSS at a small size (the same code, the same limit)",
        [
            "bench/volume_rss.py",
            "--total-size",
            "100MB",
            "--large-files",
            "3",
            "--small-files",
            "2000",
            "--small-size",
            "16MiB",
            "--repeats",
            "1",
            "--zstd-thread-probe",
            "",
            "--no-incremental",
            "--out",
            "{out}",
        ],
        [
            "bench/volume_rss.py",
            "--total-size",
            "16MiB",
            "--large-files",
            "1",
            "--small-files",
            "100",
            "--small-size",
            "1MiB",
            "--repeats",
            "1",
            "--zstd-thread-probe",
            "",
            "--no-incremental",
            "--out",
            "{out}",
        ],
    ),
    Step(
        "postgres",
        "PostgreSQL, `pgbench -i -s 60` (about 1 GB): pg_dump/pg_restore -j2, pg_basebackup, pgBackRest",
        ["bench/postgres_pgbench.py", "--scale", "60", "--out", "{out}"],
        ["bench/postgres_pgbench.py", "--scale", "2", "--out", "{out}"],
    ),
    Step(
        "redis-faiss",
        "Redis, 1M keys, against `redis-cli --rdb` + restart; FAISS 200k x 384 against `faiss.write_index`",
        [
            "bench/redis_vectors.py",
            "--keys",
            "1000000",
            "--vectors",
            "200000",
            "--dimension",
            "384",
            "--repeats",
            "1",
            "--out",
            "{out}",
        ],
        [
            "bench/redis_vectors.py",
            "--keys",
            "20000",
            "--vectors",
            "5000",
            "--dimension",
            "384",
            "--repeats",
            "1",
            "--out",
            "{out}",
        ],
    ),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = [s.name for s in SUITE] + ["quickstart"]
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(names)}")
    p.add_argument("--quick", action="store_true", help="small sizes; results go to a temp dir, docs untouched")
    p.add_argument("--docs", type=Path, default=DOCS, help="the page whose generated section is replaced")
    p.add_argument("--no-docs", action="store_true", help="run and keep the JSON, but leave the docs alone")
    p.add_argument("--render", action="store_true", help="run nothing: rewrite the docs from the last suite.json")
    args = p.parse_args(argv)
    args.selected = [n.strip() for n in args.only.split(",") if n.strip()] or names
    unknown = set(args.selected) - set(names)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {names}")
    return args


def run_step(step: Step, quick: bool, out_dir: Path) -> dict[str, object]:
    out = out_dir / f"{step.name}.json"
    argv = [a.replace("{out}", str(out)) for a in (step.quick if quick else step.argv)]
    log(f"== {step.name}: {' '.join(argv)}")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.monotonic() - started
    print(proc.stdout, flush=True)
    return {
        "name": step.name,
        "title": step.title,
        "run_at": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - seconds)),
        "command": ".venv/bin/python " + shlex.join(_relative(a) for a in argv),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "tables": proc.stdout.strip(),
    }


def _relative(arg: str) -> str:
    return os.path.relpath(arg, REPO_ROOT) if arg.startswith(str(REPO_ROOT) + os.sep) else arg


def run_quickstart(out_dir: Path) -> dict[str, object]:
    """The README's drill, timed from the shell as a user would: process start to exit."""
    drproof = shutil.which("drproof", path=str(Path(sys.executable).parent)) or "drproof"
    reports = Path(tempfile.mkdtemp(prefix="drproof-bench-quickstart-"))
    argv = [drproof, "run", "scenarios/quickstart.yaml", "--report-dir", str(reports), "--quiet"]
    log(f"== quickstart: {' '.join(argv)}")
    runs = []
    try:
        for _ in range(3):
            started = time.monotonic()
            proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
            runs.append((time.monotonic() - started, proc.returncode))
        results = sorted(reports.rglob("results.json"))
        rto = json.loads(results[-1].read_text())["measured"]["rto_seconds"] if results else None
    finally:
        shutil.rmtree(reports, ignore_errors=True)
    (out_dir / "quickstart.json").write_text(json.dumps({"runs": runs, "rto_seconds": rto}, indent=2) + "\n")
    rows = [
        [str(i + 1), f"{s:.1f}", str(code), "yes" if code == 0 and s < 20 else "no"] for i, (s, code) in enumerate(runs)
    ]
    table = markdown_table(["run", "wall s (process start to exit)", "exit code", "under 20 s and passed"], rows)
    note = f"\n\nThe drill's own measured RTO in the last run: {rto:.2f} s." if rto is not None else ""
    return {
        "name": "quickstart",
        "title": "The quickstart drill on the local runtime (target: under 20 s)",
        "run_at": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - sum(s for s, _ in runs))),
        "command": " ".join(["drproof", *argv[1:3]]),
        "exit_code": max(code for _, code in runs),
        "seconds": round(sum(s for s, _ in runs), 1),
        "tables": table + note,
    }


def render(results: list[dict[str, object]], facts: dict[str, object], started: str) -> str:
    packages = facts["packages"]
    tools = facts["tools"]
    assert isinstance(packages, dict) and isinstance(tools, dict)
    machine = markdown_table(
        ["fact", "value"],
        [
            ["latest run", f"{started} (UTC), commit `{str(facts['git_commit'])[:10]}`; each table gives its own time"],
            [
                "CPU",
                f"{facts['cpus_usable']} usable of {facts['cpu_count']}: {facts['cpu_model']} ({', '.join(facts['cpu_flags'])})",
            ],  # type: ignore[arg-type]
            ["memory", f"{facts['memory_total_mb']} MB"],
            ["load average at start", ", ".join(f"{x:.2f}" for x in facts["load_average_at_start"])],  # type: ignore[attr-defined]
            ["kernel / Python", f"Linux {facts['kernel']}, Python {facts['python']}"],
            ["packages", ", ".join(f"{k} {v}" for k, v in packages.items())],
            ["tools", "; ".join(f"{k}: {v}" for k, v in tools.items())],
            ["peak RSS of a child", str(facts["child_rss_method"])],
        ],
    )
    parts = [
        BEGIN,
        "<!-- Generated by `.venv/bin/python bench/run_all.py`; edits here are overwritten. -->",
        "",
        "### The machine and the versions",
        "",
        machine,
        "",
        "### The commands",
        "",
        "```sh",
        *[f"{r['command']}    # {r['seconds']} s, exit {r['exit_code']}" for r in results],
        "```",
    ]
    for r in results:
        parts += ["", f"### {r['title']}", "", f"Run {r.get('run_at', started)} UTC.", ""]
        if r["exit_code"] != 0:
            parts += [f"**This benchmark failed (exit {r['exit_code']}); its numbers below are incomplete.**", ""]
        parts.append(str(r["tables"]) or "(no output)")
    parts += ["", END]
    return "\n".join(parts)


def write_docs(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n## One run of the whole suite\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def _with_earlier(results: list[dict[str, object]], path: Path) -> list[dict[str, object]]:
    """With ``--only``, the benchmarks not re-run keep their last results (and say when)."""
    if not path.exists():
        return results
    fresh = {r["name"] for r in results}
    order = [s.name for s in SUITE] + ["quickstart"]
    earlier = json.loads(path.read_text())
    kept = []
    for r in earlier.get("results", []):
        if r["name"] not in fresh:
            kept.append({**r, "run_at": r.get("run_at", earlier.get("started"))})
    return sorted([*results, *kept], key=lambda r: order.index(str(r["name"])))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        last = json.loads((SUITE_DIR / "suite.json").read_text())
        write_docs(args.docs, render(last["results"], last["facts"], last["started"]))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    out_dir = Path(tempfile.mkdtemp(prefix="drproof-bench-suite-")) if args.quick else SUITE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(
        {
            "postgres (pgbench)": ["/usr/lib/postgresql/15/bin/postgres", "--version"],
            "pgbackrest": ["pgbackrest", "version"],
            "redis-server": [str(Path(sys.executable).parent / "redis-server"), "--version"],
        }
    )
    results = [run_step(step, args.quick, out_dir) for step in SUITE if step.name in args.selected]
    if "quickstart" in args.selected:
        results.append(run_quickstart(out_dir))
    results = _with_earlier(results, out_dir / "suite.json")
    (out_dir / "suite.json").write_text(
        json.dumps({"started": started, "facts": facts, "results": results}, indent=2, default=str) + "\n"
    )
    if not args.quick and not args.no_docs:
        write_docs(args.docs, render(results, facts, started))
        log(f"wrote the generated section of {args.docs}")
    failed = [r["name"] for r in results if r["exit_code"] != 0]
    if failed:
        log(f"failed: {', '.join(map(str, failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
