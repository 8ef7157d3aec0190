"""Peak memory of a vector store's restore, health check and fingerprint at 1M x 384.

Why a benchmark of its own: the restore's target (issue 14) is a bound on memory, under
300 MB for a 1.5 GB index, and the phases that used to load the whole index (health)
must be seen apart from the extraction and the fingerprint. Each phase runs in a child
process of its own under GNU time, so its peak is its own, not the benchmark's.

    .venv/bin/python bench/vector_restore_rss.py --vectors 1000000 --dimension 384
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, default_out, log, machine_facts, markdown_table, run_measured, write_results

_CHILD = """
import sys
from pathlib import Path
from engine import backup as engine_backup
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.repository import LocalRepository


class DirsRuntime:  # all a directory component asks of a runtime
    def __init__(self, root):
        self.root = root

    def directory(self, name):
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


phase, root, vectors, dimension = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
comp = VectorstoreComponent("vec", VectorstoreParams(vectors=vectors, dimension=dimension), DirsRuntime(root / "live"))
comp.provision()
repo = LocalRepository(root / "repo")
if phase == "seed":
    comp.seed()
elif phase == "backup":
    print(engine_backup.backup(repo, [comp]).id)
elif phase == "restore":
    engine_backup.restore(repo, repo.get(sys.argv[5]), comp)
elif phase == "health":
    health = comp.health()
    assert health.ok, health.detail
elif phase == "fingerprint":
    comp.fingerprint()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--out", type=Path, default=default_out("vector-restore-rss"))
    args = parser.parse_args()
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="drproof-bench-vec-") as d:
        argv = [sys.executable, "-c", _CHILD]
        common = [d, str(args.vectors), str(args.dimension)]
        log(f"seeding {args.vectors} x {args.dimension}")
        run_measured([*argv, "seed", *common])
        index = Path(d) / "live" / "vec" / "index.faiss"
        size = index.stat().st_size if index.exists() else sum(p.stat().st_size for p in Path(d).rglob("index.faiss"))
        backup_id = run_measured([*argv, "backup", *common], capture=True).stdout.decode().split()[-1]
        for phase in ("restore", "health", "fingerprint"):
            log(f"drproof {phase}")
            run = run_measured([*argv, phase, *common, backup_id])
            results[phase] = {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "peak_rss": run.peak_rss}
            rows.append([phase, f"{run.seconds:.2f}", f"{run.cpu_seconds:.2f}", f"{run.peak_rss / MB:.1f}"])
    table = markdown_table(["step (own process)", "s", "CPU s", "peak RSS MB"], rows)
    print(f"index {size / MB:.1f} MB ({args.vectors} x {args.dimension})\n\n{table}")
    write_results(
        args.out,
        {
            "machine": machine_facts(),
            "vectors": args.vectors,
            "dimension": args.dimension,
            "index_bytes": size,
            "results": results,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
