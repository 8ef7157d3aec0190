"""Peak memory of listing a repository of large sets: ``list`` against ``summaries``.

Why: ``recovery list`` of 10 sets of 100,000 files held 904 MB (issue 14), every
manifest with every per-file fingerprint part. The sets here are synthetic: one real
set's manifest is given a volume fingerprint of N file parts (what a volume of N files
records) and copied under 10 ids, so the numbers are about reading manifests, not
about taking backups. Each way of listing runs in a child process under GNU time.

    .venv/bin/python bench/list_rss.py --sets 10 --files 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, REPO_ROOT, default_out, log, machine_facts, markdown_table, run_measured, write_results

from engine.repository import LocalRepository


def _make_repository(root: Path, sets: int, files: int) -> None:
    repo = LocalRepository(root)
    writer = repo.begin("seed")
    with writer.artifact("vol", "files.tar") as sink:
        sink.write(b"x")
    from engine.manifest import ComponentRecord

    manifest = writer.commit([ComponentRecord(name="vol", kind="volumes", artifacts=[])], {}, {})
    set_dir = root / "sets" / manifest.id
    doc = json.loads((set_dir / "manifest.json").read_text())
    parts = {
        f"file dir{i % 100:03d}/file{i:07d}.bin": {"digest": f"{i:064x}", "count": 4096, "unit": "bytes"}
        for i in range(files)
    }
    doc["components"][0]["fingerprint"] = {
        "component": "vol",
        "kind": "volumes",
        "digest": "0" * 64,
        "parts": parts,
        "scheme": "volumes/2",
    }
    for n in range(sets):
        backup_id = f"{manifest.id[:-4]}{n:04d}"
        target = root / "sets" / backup_id
        if target != set_dir:
            target.mkdir(parents=True)
            (target / "vol").mkdir()
            (target / "vol" / "files.tar.zst").write_bytes((set_dir / "vol" / "files.tar.zst").read_bytes())
        (target / "manifest.json").write_text(json.dumps({**doc, "id": backup_id}))
    if manifest.id[:-4] + f"{0:04d}" != manifest.id:
        import shutil

        shutil.rmtree(set_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=10)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=default_out("list-rss"))
    args = parser.parse_args()
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="drproof-bench-list-") as d:
        root = Path(d) / "repo"
        log(f"writing {args.sets} manifests of {args.files} file parts")
        _make_repository(root, args.sets, args.files)
        size = sum(p.stat().st_size for p in root.rglob("manifest.json"))
        ways = {
            "repository list() (whole manifests)": [
                sys.executable,
                "-c",
                f"from pathlib import Path; from engine.repository import LocalRepository; print(len(LocalRepository(Path({str(root)!r})).list()))",
            ],
            "repository summaries()": [
                sys.executable,
                "-c",
                f"from pathlib import Path; from engine.repository import LocalRepository; print(len(LocalRepository(Path({str(root)!r})).summaries()))",
            ],
            "drproof recovery list": [
                sys.executable,
                "-m",
                "drills.cli",
                "recovery",
                "list",
                "--repository",
                str(root),
            ],
        }
        for name, argv in ways.items():
            log(name)
            run = run_measured(argv, capture=True)
            results[name] = {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "peak_rss": run.peak_rss}
            rows.append([name, f"{run.seconds:.2f}", f"{run.cpu_seconds:.2f}", f"{run.peak_rss / MB:.1f}"])
    table = markdown_table(["listing (own process)", "s", "CPU s", "peak RSS MB"], rows)
    print(f"{args.sets} sets x {args.files} file parts, manifests {size / MB:.1f} MB in all\n\n{table}")
    write_results(
        args.out,
        {
            "machine": machine_facts(),
            "sets": args.sets,
            "files": args.files,
            "manifest_bytes": size,
            "results": results,
            "table": table,
            "cwd": str(REPO_ROOT),
        },
    )


if __name__ == "__main__":
    main()
