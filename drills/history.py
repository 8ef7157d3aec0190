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
NO_BASELINE = "no earlier passing run to compare with"

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
        return [
            RunRecord(
                id=r[0],
                scenario=r[1],
                scenario_sha256=r[2],
                started_at=datetime.fromisoformat(r[3]),
                finished_at=datetime.fromisoformat(r[4]),
                verdict=r[5],
                exit_code=r[6],
                rto_seconds=r[7],
                rpo_seconds=r[8],
                drill_seconds=r[9],
                runtime=r[10],
                report_dir=r[11],
                results_sha256=r[12],
                source=r[13],
                backup_id=r[14],
                backup_age_seconds=r[15],
                content=json.loads(r[16]) if r[16] else None,
            )
            for r in rows
        ]


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


def trend(earlier: Sequence[RunRecord], results: Results, threshold: float | None) -> History:
    """This run against ``earlier`` runs of the same scenario (any order).

    The baseline is the last earlier run that *passed* with a measured RTO: comparing
    against a failed or regressed run would let the RTO creep up one tolerated step at a
    time.
    """
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
    passing = [r for r in ordered if r.verdict == "pass" and r.rto_seconds is not None]
    baseline = passing[-1].rto_seconds if passing else None
    now = results.measured.rto_seconds
    change = _percent(now, baseline) if now is not None and baseline is not None else None
    return History(
        runs=points[-TREND_LENGTH:],
        last_pass_rto_seconds=baseline,
        rto_change_percent=change,
        regression_threshold_percent=threshold,
        regressed=threshold is not None and change is not None and change > threshold,
    )


def regression_assertion(history: History, rto_seconds: float | None) -> AssertionResult:
    """The ``regression[rto]`` result for ``--fail-on-regression``.

    With nothing to compare against the result passes but says so, so a first run or a
    fresh cache does not block CI while the report still shows the gate did not bite.
    """
    threshold = history.regression_threshold_percent
    evidence: dict[str, Any] = {
        "rto_seconds": rto_seconds,
        "last_pass_rto_seconds": history.last_pass_rto_seconds,
        "rto_change_percent": history.rto_change_percent,
        "threshold_percent": threshold,
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

    before = history.last_pass_rto_seconds
    if before is None:
        return result("pass", NO_BASELINE)
    if rto_seconds is None:
        return result("error", "this run measured no RTO, so it cannot be compared with the last passing run")
    change = history.rto_change_percent
    if change is None:
        return result(
            "pass", f"RTO {rto_seconds:.2f} s; the last passing run's was {before:.2f} s: no ratio to compare"
        )
    words = f"RTO {rto_seconds:.2f} s vs {before:.2f} s in the last passing run ({change:+.1f}%"
    if threshold is None:
        return result("pass", f"{words}; no threshold given)")
    if history.regressed:
        return result(
            "fail",
            f"{words}, more than the allowed {threshold:g}%)",
            [f"RTO grew {change:.1f}%, more than the allowed {threshold:g}%"],
        )
    return result("pass", f"{words}, within {threshold:g}%)")


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
