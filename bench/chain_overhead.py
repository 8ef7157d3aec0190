"""What signed, chained manifests cost: publishing a set, auditing the chain, listing (issue 17).

Why: a set's place in the chain is chosen when it is published, from the newest usable
set, so every commit audits the repository (every manifest read once, one at a time,
without its fingerprints, and its signature checked); ``recovery list`` shows the audit
instead of the bare summaries. The sets here are synthetic like bench/list_rss.py's: one
real set whose manifest is given a volume fingerprint of N file parts, copied under
``--sets`` ids and chained, signed or not. Each measurement runs in its own process
under GNU time, unsigned and signed alternating.

    .venv/bin/python bench/chain_overhead.py --sets 10 --files 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, REPO_ROOT, default_out, log, machine_facts, markdown_table, run_measured, write_results

KEY = "bench-repo.key"


def _key(root: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = root / KEY
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _open(root: Path, key: Path | None) -> str:
    """Python source opening the repository at ``root`` (signed with ``key`` if given)."""
    trust = (
        f"RepositoryTrust.from_settings(key_file=Path({str(key)!r}), key_env=None, passphrase_env=None, public_keys=[])"
        if key
        else "None"
    )
    return (
        "from pathlib import Path; from engine.repository import LocalRepository; "
        "from engine.signing import RepositoryTrust; from engine.manifest import ComponentRecord; "
        f"repo = LocalRepository(Path({str(root)!r}), trust={trust}); "
    )


def _make_repository(root: Path, sets: int, files: int, key: Path | None) -> None:
    """``sets`` chained sets whose manifests each hold ``files`` volume file parts."""
    from engine.repository import LocalRepository
    from engine.signing import RepositoryTrust

    trust = (
        RepositoryTrust.from_settings(key_file=key, key_env=None, passphrase_env=None, public_keys=[]) if key else None
    )
    repo = LocalRepository(root, trust=trust)
    parts = {
        f"file dir{i % 100:03d}/file{i:07d}.bin": {"digest": f"{i:064x}", "count": 4096, "unit": "bytes"}
        for i in range(files)
    }
    previous: tuple[str, str] | None = None
    for n in range(sets):
        writer = repo.begin("seed")
        with writer.artifact("vol", "files.tar") as sink:
            sink.write(b"x")
        from engine.manifest import ComponentRecord

        m = writer.commit([ComponentRecord(name="vol", kind="volumes", artifacts=[])], {}, {})
        doc = json.loads((root / "sets" / m.id / "manifest.json").read_text())
        doc["components"][0]["fingerprint"] = {
            "component": "vol",
            "kind": "volumes",
            "digest": "0" * 64,
            "parts": parts,
            "scheme": "volumes/2",
        }
        doc["sequence"], doc["previous_id"], doc["previous_sha256"] = n + 1, *(previous or (None, None))
        from engine.manifest import Manifest

        data = Manifest.model_validate(doc).to_json().encode()
        (root / "sets" / m.id / "manifest.json").write_bytes(data)
        signature = repo.sign(data)
        if signature is not None:
            (root / "sets" / m.id / "manifest.sig").write_bytes(signature)
        previous = (m.id, hashlib.sha256(data).hexdigest())


def _ways(root: Path, key: Path | None) -> dict[str, list[str]]:
    opening = _open(root, key)
    publish = (
        "w = repo.begin('one more'); "
        "s = w.artifact('vol', 'x'); f = s.__enter__(); f.write(b'x'); s.__exit__(None, None, None); "
        "print(w.commit([ComponentRecord(name='vol', kind='volumes', artifacts=[])], {}, {}).sequence)"
    )
    return {
        "summaries() (what list read before)": [sys.executable, "-c", opening + "print(len(repo.summaries()))"],
        "chain_audit() (what list reads now)": [sys.executable, "-c", opening + "print(len(repo.chain_audit().order))"],
        "publish one small set (chain link + sign)": [sys.executable, "-c", opening + publish],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=10)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=default_out("chain-overhead"))
    args = parser.parse_args()
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="drproof-bench-chain-") as d:
        key = _key(Path(d))
        roots = {"unsigned": Path(d) / "unsigned", "signed": Path(d) / "signed"}
        for flavour, root in roots.items():
            log(f"writing {args.sets} {flavour} chained manifests of {args.files} file parts")
            _make_repository(root, args.sets, args.files, key if flavour == "signed" else None)
        size = sum(p.stat().st_size for p in roots["signed"].rglob("manifest.json"))
        for name in _ways(roots["signed"], key):
            for flavour in ("unsigned", "signed"):  # alternating
                log(f"{name}, {flavour}")
                argv = _ways(roots[flavour], key if flavour == "signed" else None)[name]
                run = run_measured(argv, capture=True)
                results[f"{name} [{flavour}]"] = {
                    "seconds": run.seconds,
                    "cpu_seconds": run.cpu_seconds,
                    "peak_rss": run.peak_rss,
                }
                rows.append([name, flavour, f"{run.seconds:.2f}", f"{run.cpu_seconds:.2f}", f"{run.peak_rss / MB:.1f}"])
    table = markdown_table(["operation (own process)", "repository", "s", "CPU s", "peak RSS MB"], rows)
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
