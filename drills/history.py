"""The run history: every drill recorded with ``--history`` in one SQLite file.

A single drill says whether recovery works today; only a series says whether it is getting
slower. The history keeps one row per run so a report can show the trend and CI can fail a
run whose RTO grew too much against the last run that passed (see docs/history.md).

SQLite from the standard library because the file must survive as a CI cache or on a
shared disk with no server to run: WAL mode lets ``drproof history`` read while a drill
writes, every write is one transaction, and the schema carries its version in
``PRAGMA user_version`` so a later drproof can migrate it instead of guessing.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.journal import AssertionResult, History, Results, TrendPoint

SCHEMA_VERSION = 2
TREND_LENGTH = 20
REGRESSION_ID = "regression[rto]"
NO_BASELINE = "not enough earlier passing runs to compare with"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    scenario        TEXT NOT NULL,
    scenario_sha256 TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT NOT NULL,
    verdict         TEXT NOT NULL,
    exit_code       INTEGER NOT NULL,
    rto_seconds     REAL,
    rpo_seconds     REAL,
    drill_seconds   REAL NOT NULL,
    runtime         TEXT NOT NULL,
    report_dir      TEXT NOT NULL,
    results_sha256  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_scenario ON runs (scenario, started_at);
"""

# Version 2: restore tests are recorded with their source (repository and components), the
# backup they restored, its age, and the size of what came back, so trends show per source.
_V2_COLUMNS = (
    ("source", "TEXT"),
    ("backup_id", "TEXT"),
    ("backup_age_seconds", "REAL"),
    ("content", "TEXT"),  # JSON: component -> {"content": {unit: count}, "rows": {table: rows}}
)

_COLUMNS = (
    "id, scenario, scenario_sha256, started_at, finished_at, verdict, exit_code, "
    "rto_seconds, rpo_seconds, drill_seconds, runtime, report_dir, results_sha256, "
    "source, backup_id, backup_age_seconds, content"
)


class HistoryError(ConfigError):
    """The history file cannot be used (locked, damaged, or from a newer drproof).

    A ConfigError because the user fixes it by pointing ``--history`` elsewhere or
    repairing the file; drproof itself is not at fault. Exit code 2, like other input errors.
    """


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    id: int
    scenario: str
    scenario_sha256: str
    started_at: datetime
    finished_at: datetime
    verdict: str
    exit_code: int
    rto_seconds: float | None
    rpo_seconds: float | None
    drill_seconds: float
    runtime: str
    report_dir: str
    results_sha256: str
    source: str | None = None
    backup_id: str | None = None
    backup_age_seconds: float | None = None
    content: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = _iso(self.started_at)
        data["finished_at"] = _iso(self.finished_at)
        return data


def _iso(value: datetime) -> str:
    """Fixed-width UTC text, so ordering by the column is ordering by time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _problem(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return HistoryError(f"history {path} is locked by another process ({text}); retry when it has finished")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return HistoryError(f"history {path} is not a readable drproof history database ({text})")
    return HistoryError(f"history {path} could not be used: {text}")


class RunHistory:
    """An open history file. Use :func:`open_history` so the connection is always closed."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    def record(self, results: Results, report_dir: Path, results_sha256: str) -> int:
        """Insert one finished run in its own transaction and return its id."""
        scope = results.scope
        content = {c.name: {"content": c.content, "rows": c.row_counts} for c in results.components if c.content}
        row = (
            results.scenario.name,
            results.scenario.sha256,
            _iso(results.started_at),
            _iso(results.finished_at),
            results.verdict,
            results.exit_code,
            results.measured.rto_seconds,
            results.measured.rpo_seconds,
            results.measured.drill_seconds,
            results.runtime.get("runtime", ""),
            str(report_dir),
            results_sha256,
            scope.source if scope is not None else None,
            scope.backup_id if scope is not None else None,
            scope.backup_age_seconds if scope is not None else None,
            json.dumps(content, sort_keys=True) if content else None,
        )
        try:
            with self._conn:
                cur = self._conn.execute(
                    f"INSERT INTO runs ({_COLUMNS.removeprefix('id, ')}) VALUES ({', '.join('?' * len(row))})", row
                )
        except sqlite3.Error as exc:
            raise _problem(self.path, exc) from None
        return int(cur.lastrowid or 0)

    def runs(self, scenario: str | None = None, limit: int | None = None, source: str | None = None) -> list[RunRecord]:
        """Recorded runs, newest first; only those of ``scenario`` (or restore tests of ``source``) when given."""
        sql = f"SELECT {_COLUMNS} FROM runs"
        params: list[Any] = []
        if source is not None:
            sql += " WHERE source = ?"
            params.append(source)
        elif scenario is not None:
            sql += " WHERE scenario = ?"
            params.append(scenario)
        sql += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _problem(self.path, exc) from None
        return [_record(self.path, r) for r in rows]


def _record(path: Path, r: Sequence[Any]) -> RunRecord:
    """One row as a RunRecord, or a HistoryError naming the file and the run.

    SQLite keeps whatever it is given (text in a REAL column, infinity): found by review,
    a damaged row was a traceback in ``drproof history`` and in the regression gate, and an
    RTO of infinity in a passing row made every later run "within the allowed" change.
    """
    try:
        if r[5] not in ("pass", "fail", "error"):
            raise ValueError(f"verdict {r[5]!r} is not pass, fail or error")
        content = json.loads(r[16]) if r[16] else None
        if content is not None and not isinstance(content, dict):
            raise ValueError("content is not a JSON object")
        return RunRecord(
            id=r[0],
            scenario=_text(r[1], "scenario"),
            scenario_sha256=_text(r[2], "scenario_sha256"),
            started_at=datetime.fromisoformat(_text(r[3], "started_at")),
            finished_at=datetime.fromisoformat(_text(r[4], "finished_at")),
            verdict=r[5],
            exit_code=int(_number(r[6], "exit_code")),
            rto_seconds=_seconds(r[7], "rto_seconds"),
            rpo_seconds=_seconds(r[8], "rpo_seconds"),
            drill_seconds=_number(r[9], "drill_seconds"),
            runtime=_text(r[10], "runtime"),
            report_dir=_text(r[11], "report_dir"),
            results_sha256=_text(r[12], "results_sha256"),
            source=None if r[13] is None else _text(r[13], "source"),
            backup_id=None if r[14] is None else _text(r[14], "backup_id"),
            backup_age_seconds=None if r[15] is None else _number(r[15], "backup_age_seconds"),
            content=content,
        )
    except ValueError as exc:
        raise HistoryError(
            f"history {path}: run {r[0]} is damaged ({exc}); delete that row or use another --history file"
        ) from None


def _text(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{column} {value!r} is not text")
    return value


def _number(value: Any, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{column} {value!r} is not a finite number")
    return float(value) if isinstance(value, float) else value


def _seconds(value: Any, column: str) -> float | None:
    """A measured time: none, or a finite number of seconds, never negative."""
    if value is None:
        return None
    seconds = _number(value, column)
    if seconds < 0:
        raise ValueError(f"{column} {value!r} is negative")
    return seconds


def _prepare(path: Path, conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"history {path} has schema version {version}, newer than this drproof understands "
            f"({SCHEMA_VERSION}); upgrade drproof or use another --history file"
        )
    conn.execute("PRAGMA journal_mode=WAL")
    if version < SCHEMA_VERSION:
        with conn:
            conn.executescript(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            for name, kind in _V2_COLUMNS:
                if name not in present:  # a version 1 file: its runs keep NULL there
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            conn.execute("CREATE INDEX IF NOT EXISTS runs_by_source ON runs (source, started_at)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def open_history(path: Path, create: bool = True) -> Iterator[RunHistory]:
    """Open (and, if ``create``, initialise) the history file at ``path``.

    Readers pass ``create=False`` so a mistyped path is reported rather than silently
    becoming a new empty history.
    """
    if not create and not path.is_file():
        raise HistoryError(f"no history at {path}: record runs with `drproof run ... --history {path}`")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"history {path}: cannot create its directory: {exc}") from None
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level="DEFERRED")
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    try:
        try:
            _prepare(path, conn)
        except sqlite3.Error as exc:
            raise _problem(path, exc) from None
        yield RunHistory(path, conn)
    finally:
        conn.close()


def parse_threshold(text: str) -> float:
    """``20%`` or ``20`` → 20.0; a negative or non-numeric threshold is a usage error."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--fail-on-regression {text!r} is not a percentage (e.g. 20%)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"--fail-on-regression {text!r} must be a percentage of 0 or more (e.g. 20%)")
    return value


def _percent(now: float, before: float) -> float | None:
    if before <= 0:
        return None  # no meaningful ratio against a zero RTO
    return round((now - before) / before * 100.0, 2)


@dataclass(frozen=True)
class Gate:
    """The RTO regression gate's settings (``--fail-on-regression``, ``--regression-runs``, ``--regression-floor``).

    One run is not a baseline: on a shared CI machine identical runs of one drill measured
    RTOs from 4.2 to 7.9 s, and a gate against the last passing run failed unchanged code
    four times in six. So the baseline is the median of the last ``runs`` passing runs, and
    a run regressed only if it is slower by more than the threshold's share of it, more
    than ``floor_seconds``, and more than three times the spread those runs showed. With
    fewer than ``min_runs`` passing runs there is nothing robust to compare with.
    """

    threshold: float | None = None  # percent; None: trend only, no gate
    runs: int = 5
    floor_seconds: float = 1.0
    min_runs: int = 3

    def __post_init__(self) -> None:
        # Found by review: --regression-runs 1 or 2 capped the baseline below min_runs, so every
        # run was "not compared" (exit 0) however slow: a gate that could never close.
        if self.runs < self.min_runs:
            raise ConfigError(
                f"--regression-runs {self.runs}: the gate's baseline needs at least {self.min_runs} passing runs "
                "(fewer are no baseline: one slow CI machine would decide), so it could never compare"
            )


NOISE_FACTOR = 3.0


def trend(earlier: Sequence[RunRecord], results: Results, gate: Gate | float | None) -> History:
    """This run against ``earlier`` runs of the same scenario (any order).

    Only earlier runs that *passed* with a measured RTO form the baseline: comparing
    against failed or regressed runs would let the RTO creep up one tolerated step at a time.
    """
    gate = gate if isinstance(gate, Gate) else Gate(threshold=gate)
    ordered = sorted(earlier, key=lambda r: (_iso(r.started_at), r.id))
    points = [
        TrendPoint(
            started_at=r.started_at,
            verdict=r.verdict,
            rto_seconds=r.rto_seconds,
            rpo_seconds=r.rpo_seconds,
            backup_age_seconds=r.backup_age_seconds,
        )
        for r in ordered
    ]
    points.append(
        TrendPoint(
            started_at=results.started_at,
            verdict=results.verdict,
            rto_seconds=results.measured.rto_seconds,
            rpo_seconds=results.measured.rpo_seconds,
            backup_age_seconds=results.scope.backup_age_seconds if results.scope is not None else None,
        )
    )
    passing = [r.rto_seconds for r in ordered if r.verdict == "pass" and r.rto_seconds is not None]
    recent = passing[-gate.runs :]
    baseline = statistics.median(recent) if recent else None
    noise = 1.4826 * statistics.median(abs(x - baseline) for x in recent) if baseline is not None and len(recent) >= 3 else None
    now = results.measured.rto_seconds
    change = _percent(now, baseline) if now is not None and baseline is not None else None
    allowed = None
    regressed = False
    if gate.threshold is not None and baseline is not None and len(recent) >= gate.min_runs and now is not None:
        allowed = max(baseline * gate.threshold / 100.0, gate.floor_seconds, NOISE_FACTOR * (noise or 0.0))
        regressed = now - baseline > allowed
    return History(
        runs=points[-TREND_LENGTH:],
        last_pass_rto_seconds=passing[-1] if passing else None,
        rto_change_percent=change,
        regression_threshold_percent=gate.threshold,
        regressed=regressed,
        baseline_rto_seconds=round(baseline, 6) if baseline is not None else None,
        baseline_runs=len(recent),
        noise_seconds=round(noise, 6) if noise is not None else None,
        allowed_seconds=round(allowed, 6) if allowed is not None else None,
    )


def regression_assertion(history: History, rto_seconds: float | None, gate: Gate | None = None) -> AssertionResult:
    """The ``regression[rto]`` result for ``--fail-on-regression``.

    With too few earlier passing runs to form a baseline, it is *not compared*: never a
    pass, and it does not block CI while the history fills.
    """
    gate = gate or Gate(threshold=history.regression_threshold_percent)
    evidence: dict[str, Any] = {
        "rto_seconds": rto_seconds,
        "baseline_rto_seconds": history.baseline_rto_seconds,
        "baseline_runs": history.baseline_runs,
        "noise_seconds": history.noise_seconds,
        "allowed_seconds": history.allowed_seconds,
        "rto_change_percent": history.rto_change_percent,
        "threshold_percent": gate.threshold,
        "floor_seconds": gate.floor_seconds,
    }

    def result(status: str, summary: str, findings: Sequence[str] = ()) -> AssertionResult:
        return AssertionResult.model_validate(
            {
                "id": REGRESSION_ID,
                "name": "regression",
                "status": status,
                "summary": summary,
                "evidence": evidence,
                "findings": list(findings),
                "source": None,
            }
        )

    before = history.baseline_rto_seconds
    # This run's own missing RTO first (found by review): checked after the baseline, a
    # drill that never measures an RTO never built one, so its gate said "not enough
    # earlier passing runs (0 of the 3 needed are recorded)" forever, with its passing runs
    # recorded: a skip that read as a history still filling, for a gate that cannot close.
    if rto_seconds is None:
        return result("error", "this run measured no RTO, so the regression gate has nothing to compare")
    if before is None or history.baseline_runs < gate.min_runs:
        return result(
            "not_compared",
            f"{NO_BASELINE} ({history.baseline_runs} of the {gate.min_runs} needed passing runs with a measured RTO "
            "are recorded)",
        )
    change = history.rto_change_percent
    words = (
        f"RTO {rto_seconds:.2f} s vs {before:.2f} s, the median of the last {history.baseline_runs} passing runs"
        + (f" ({change:+.1f}%" if change is not None else " (")
    )
    allowed = history.allowed_seconds or 0.0
    if history.regressed:
        finding = f"RTO {rto_seconds - before:.2f} s slower than the baseline; at most {allowed:.2f} s allowed"
        return result("fail", f"{words}, over the {allowed:.2f} s allowed)", [finding])
    return result("pass", f"{words}, within the {allowed:.2f} s allowed)")


def apply_gate(results: Results, assertion: AssertionResult) -> None:
    """Add the regression result and let it decide the verdict only of a run that passed.

    A run that already failed or errored keeps its verdict and exit code: the regression is
    then one more finding, not a reason to hide the worse outcome.
    """
    results.assertions.append(assertion)
    if results.exit_code != 0:
        return
    if assertion.status == "fail":
        results.verdict, results.exit_code = "fail", 1
    elif assertion.status == "error":
        results.verdict, results.exit_code = "error", 2
    else:
        return
    # Controls were judged on the run before the gate (found by review: NIST CP-4 stayed
    # "evidenced: drill ...: pass" in a FAIL report). Judged again on what it is now.
    from drills.controls import evaluate as evaluate_controls

    results.controls = evaluate_controls([c.id for c in results.controls], results)


def earlier_runs(path: Path, results: Results) -> list[RunRecord]:
    """The recorded runs of this scenario (of this source, for a restore test), read before this one is added.

    A restore test's trend is its source's: every test of that repository and those
    components, whichever scenario file ran it.
    """
    source = results.scope.source if results.scope is not None else None
    with open_history(path) as history:
        return history.runs(results.scenario.name, limit=TREND_LENGTH * 5, source=source)


def add_trend(results: Results, earlier: list[RunRecord], gate: Gate) -> None:
    """Fill ``results.history`` (and the regression gate) before any report is written.

    The trend is computed twice when gating: the gate may turn this run into a failure, and
    the trend must show the verdict the run finally got.
    """
    if gate.threshold is not None:
        apply_gate(results, regression_assertion(trend(earlier, results, gate), results.measured.rto_seconds, gate))
    results.history = trend(earlier, results, gate)


def record_run(path: Path, results: Results, report_dir: Path, results_json: Path | None) -> None:
    """Add the run after its reports exist, with the digest of the results.json it wrote."""
    import hashlib

    digest = hashlib.sha256(results_json.read_bytes()).hexdigest() if results_json is not None else ""
    try:
        with open_history(path) as history:
            history.record(results, report_dir.resolve(), digest)
    except ConfigError as exc:
        raise HistoryError(f"the reports are written but the run was not recorded in the history: {exc}") from None
