"""Parallel against sequential restore of a whole stack: what ``restore.parallel`` buys.

Why: restoring components one after another makes a stack's RTO the sum of its restores;
restoring independent ones together makes it the longest chain (the critical path). This
runs the same quickstart-like drill (the five data kinds plus an application depending on
the database and the cache, every component destroyed) with ``parallel`` 1, 2 and 3,
alternating the order of the settings from one repetition to the next, and reports the
median stack RTO of each, the critical path, and the load average at each start. The
drill is the real one (``drproof run``), so each RTO is the one a report would show.

Run: ``.venv/bin/python bench/parallel_restore.py [--repeats 5] [--customers 20000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, default_out, log, machine_facts, markdown_table, write_results


def scenario(customers: int, parallel: int) -> dict[str, Any]:
    return {
        "name": f"parallel-{parallel}",
        "objectives": {"rto": "30m"},
        "stack": {
            "components": {
                "shop-db": {"kind": "postgres", "seed": {"customers": customers, "orders_per_customer": 5}},
                "sessions": {"kind": "redis", "seed": {"keys": customers // 2}},
                "embeddings": {"kind": "vectorstore", "seed": {"vectors": customers // 2, "dimension": 64}},
                "uploads": {"kind": "volumes", "seed": {"files": 200, "file_size": "64KiB"}},
                "app-config": {"kind": "configuration"},
                "web": {
                    "kind": "application",
                    "depends_on": ["shop-db", "sessions"],
                    "run": {
                        "cwd": str(REPO_ROOT / "scenarios" / "full-system"),
                        "command": ["{python}", "shop_app.py"],
                        "health": {"http": "/health", "timeout": 60},
                    },
                },
            }
        },
        "steps": [
            {"backup": {"name": "nightly"}},
            {"disaster": {"target": "shop-db", "fault": "delete_data_dir"}},
            {"disaster": {"target": "sessions", "fault": "flushall"}},
            {"disaster": {"target": "embeddings", "fault": "delete_index"}},
            {"disaster": {"target": "uploads", "fault": "delete_files", "fraction": 1.0}},
            {"disaster": {"target": "app-config", "fault": "delete"}},
            {"disaster": {"target": "web", "fault": "kill_process"}},
            {"restore": {"from": "nightly", "parallel": parallel}},
        ],
        "assertions": ["fidelity", "rto"],
    }


def run_once(work: Path, customers: int, parallel: int) -> dict[str, Any]:
    path = work / f"parallel-{parallel}.yaml"
    path.write_text(yaml.safe_dump(scenario(customers, parallel), sort_keys=False))
    report = work / f"report-{parallel}"
    load = os.getloadavg()[0]
    subprocess.run(
        [sys.executable, "-m", "drills.cli", "run", str(path), "--report-dir", str(report), "--quiet"],
        check=True,
        cwd=REPO_ROOT,
    )
    results = json.loads((report / "results.json").read_text())
    measured = results["measured"]
    return {
        "parallel": parallel,
        "rto_seconds": measured["rto_seconds"],
        "components": measured["components"],
        "critical_path": measured["critical_path"],
        "load": round(load, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--settings", default="1,2,3", help="parallel values to compare")
    p.add_argument("--out", type=Path, default=default_out("parallel_restore"))
    args = p.parse_args()
    settings = [int(x) for x in args.settings.split(",")]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="drproof-bench-parallel-") as tmp:
        for rep in range(args.repeats):
            order = settings if rep % 2 == 0 else list(reversed(settings))
            for parallel in order:
                log(f"repetition {rep + 1}/{args.repeats}, parallel {parallel}")
                runs.append(run_once(Path(tmp), args.customers, parallel))
    rows = []
    medians: dict[int, float] = {}
    for parallel in settings:
        mine = [r for r in runs if r["parallel"] == parallel]
        medians[parallel] = statistics.median(r["rto_seconds"] for r in mine)
        paths = {" → ".join(r["critical_path"]) for r in mine}
        loads = [r["load"] for r in mine]
        rows.append(
            [
                str(parallel),
                f"{medians[parallel]:.2f} s",
                f"{min(r['rto_seconds'] for r in mine):.2f}-{max(r['rto_seconds'] for r in mine):.2f} s",
                f"{medians[parallel] / medians[settings[0]]:.2f}x",
                "; ".join(sorted(paths)),
                f"{min(loads):.1f}-{max(loads):.1f}",
            ]
        )
    print(markdown_table(["parallel", "stack RTO (median)", "range", "vs sequential", "critical path", "load"], rows))
    write_results(args.out, {"machine": machine_facts(), "customers": args.customers, "runs": runs, "medians": medians})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
