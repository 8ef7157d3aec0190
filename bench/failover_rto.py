"""Failover RTO per topology: the shipped failover drills, run in turn, their measurements tabled.

Each drill runs as ``drproof run`` in a child process; its ``results.json`` gives what
the drill measured (the failover's RTO from the fault to the new primary's first
acknowledged write, the writes it lost, the rejoin's duration), and ``wait4`` gives the
child's CPU seconds (user + system, with the servers it started and reaped; PostgreSQL
under Patroni is reaped by init, so not counted). The scenarios alternate (a, b, c, a,
b, c, ...), so a load spike hits all of them alike; the load average is printed at the
start and the end. Not a test: nothing here is asserted.

    .venv/bin/python bench/failover_rto.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [
    "postgres-async-failover",
    "postgres-sync-failover",
    "postgres-stop-primary",
    "postgres-pause-split-brain",
    "postgres-patroni-leader-kill",
    "redis-sentinel-failover",
    "redis-sentinel-quorum-lost",
    "redis-cluster-master-kill",
]


def run_one(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="drproof-bench-failover-") as tmp:
        report = Path(tmp) / "report"
        argv = [sys.executable, "-m", "drills.cli", "run", str(ROOT / "scenarios" / f"{name}.yaml")]
        started = time.monotonic()
        proc = subprocess.Popen([*argv, "--report-dir", str(report), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        results = json.loads((report / "results.json").read_text())
    record = next((a["evidence"] for a in results["assertions"] if a["name"] == "failover_outcome"), {})
    rejoin = record.get("rejoin") or {}
    return {
        "scenario": name,
        "verdict": results["verdict"],
        "exit": os.waitstatus_to_exitcode(status),
        "rto_seconds": record.get("rto_seconds"),
        "lost_writes": record.get("lost_writes"),
        "recovered_by": record.get("recovered_by"),
        "rejoin_seconds": rejoin.get("seconds"),
        "drill_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["scenario"], []).append(row)
    lines = [
        "| drill | verdicts | failover RTO, s (median; runs) | lost writes | rejoin, s | drill wall, s | CPU, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in by.items():
        rtos = [r["rto_seconds"] for r in runs if r["rto_seconds"] is not None]
        rejoins = [r["rejoin_seconds"] for r in runs if r["rejoin_seconds"] is not None]
        rto = f"{statistics.median(rtos):.2f} ({', '.join(f'{x:.2f}' for x in rtos)})" if rtos else "-"
        rejoin = f"{statistics.median(rejoins):.2f}" if rejoins else "-"
        cells = [
            name,
            ", ".join(r["verdict"] for r in runs),
            rto,
            ", ".join(str(r["lost_writes"]) for r in runs),
            rejoin,
            f"{statistics.median(r['drill_seconds'] for r in runs):.1f}",
            f"{statistics.median(r['cpu_seconds'] for r in runs):.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "failover_rto.json")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else SCENARIOS
    load_start = os.getloadavg()
    rows = [run_one(name) for _ in range(args.repeats) for name in names]
    load_end = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_start": load_start, "load_end": load_end, "runs": rows}, indent=1) + "\n")
    print(f"load average at start {load_start}, at end {load_end}; {os.cpu_count()} CPUs")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
