"""The run history: recording, trends, the regression gate and the summary page.

No drill runs here: results are built by hand so each figure of the trend is known.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drills.history import (
    NO_BASELINE,
    SCHEMA_VERSION,
    TREND_LENGTH,
    Gate,
    HistoryError,
    RunRecord,
    apply_gate,
    open_history,
    parse_threshold,
    regression_assertion,
    trend,
)
from engine.errors import ConfigError
from engine.journal import AssertionResult, Measured, Objectives, Results, ScenarioInfo
from reports import write_json
from reports.summary import write_summary

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def _results(
    rto: float | None, verdict: str = "pass", day: int = 0, name: str = "orders", rpo: float | None = None
) -> Results:
    started = T0 + timedelta(days=day)
    return Results(
        drproof_version="0.1.0",
        scenario=ScenarioInfo(name=name, file=f"{name}.yaml", sha256="a" * 64, source=""),
        verdict=verdict,  # type: ignore[arg-type]
        exit_code={"pass": 0, "fail": 1, "error": 2}[verdict],
        runtime={"runtime": "local"},
        repository={},
        environment={},
        started_at=started,
        finished_at=started + timedelta(seconds=30),
        objectives=Objectives(rto_seconds=60.0),
        measured=Measured(rto_seconds=rto, components={}, drill_seconds=30.0, rpo_seconds=rpo),
        components=[],
        phases=[],
        backups=[],
        disasters=[],
        assertions=[AssertionResult(id="rto", name="rto", status=verdict, summary=verdict)],  # type: ignore[arg-type]
    )


def _record(path: Path, *runs: Results) -> None:
    with open_history(path) as h:
        for r in runs:
            h.record(r, Path(f"/reports/{r.scenario.name}-{r.started_at:%d}"), "f" * 64)


def test_records_and_lists_newest_first_by_scenario(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    _record(db, _results(10.0, day=0), _results(12.0, day=2), _results(5.0, day=1, name="cache", rpo=1.5))
    with open_history(db, create=False) as h:
        everything = h.runs()
        orders = h.runs("orders")
    assert [r.rto_seconds for r in everything] == [12.0, 5.0, 10.0]
    assert [r.started_at.day for r in orders] == [3, 1]
    cache = everything[1].as_dict()
    assert cache["scenario"] == "cache" and cache["rpo_seconds"] == 1.5 and cache["runtime"] == "local"
    assert cache["started_at"] == "2026-11-02T02:00:00.000000+00:00" and cache["results_sha256"] == "f" * 64
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_reading_a_missing_history_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no history at"), open_history(tmp_path / "nope.sqlite", create=False):
        pass
    assert not (tmp_path / "nope.sqlite").exists()


def test_a_corrupt_history_is_a_domain_error(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    db.write_bytes(b"this is not sqlite at all, just some bytes " * 200)
    with pytest.raises(HistoryError, match="not a readable drproof history") as caught, open_history(db):
        pass
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2


def test_a_history_from_a_newer_drproof_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(HistoryError, match="newer than this drproof"), open_history(db):
        pass


def test_a_locked_history_is_a_domain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "h.sqlite"
    _record(db, _results(10.0))
    blocker = sqlite3.connect(db)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        real_connect = sqlite3.connect
        # A short busy timeout so the test does not wait the real five seconds.
        monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: real_connect(path, timeout=0.05))
        with pytest.raises(HistoryError, match="locked"), open_history(db) as h:
            h.record(_results(11.0, day=1), tmp_path, "")
    finally:
        blocker.rollback()
        blocker.close()


@pytest.mark.parametrize(("text", "value"), [("20%", 20.0), ("20", 20.0), (" 12.5 % ", 12.5), ("0", 0.0)])
def test_threshold_parsing(text: str, value: float) -> None:
    assert parse_threshold(text) == value


@pytest.mark.parametrize("text", ["", "twenty", "-5%", "nan", "inf%"])
def test_bad_thresholds_are_usage_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="fail-on-regression"):
        parse_threshold(text)


def _earlier(tmp_path: Path, *runs: Results) -> list[RunRecord]:
    db = tmp_path / "h.sqlite"
    _record(db, *runs)
    with open_history(db) as h:
        return h.runs("orders")


def test_trend_compares_with_the_median_of_the_last_passing_runs(tmp_path: Path) -> None:
    runs = [_results(10.0, day=0), _results(20.0, day=1), _results(12.0, day=2), _results(30.0, "fail", day=3)]
    history = trend(_earlier(tmp_path, *runs), _results(25.0, day=4), Gate(threshold=20.0))
    assert [p.rto_seconds for p in history.runs] == [10.0, 20.0, 12.0, 30.0, 25.0]
    assert [p.verdict for p in history.runs] == ["pass", "pass", "pass", "fail", "pass"]
    assert history.last_pass_rto_seconds == 12.0 and history.baseline_rto_seconds == 12.0
    assert history.baseline_runs == 3 and history.rto_change_percent == pytest.approx(108.33, abs=0.01)
    # The spread of 10, 12, 20 is 2.97 s: 3x that is what an unchanged drill may wander.
    assert history.noise_seconds == pytest.approx(2.9652, abs=1e-3)
    assert history.allowed_seconds == pytest.approx(8.8956, abs=1e-3)
    assert history.regressed and history.regression_threshold_percent == 20.0


def test_trend_keeps_the_last_twenty_with_this_run_last(tmp_path: Path) -> None:
    earlier = _earlier(tmp_path, *(_results(float(10 + d), day=d) for d in range(25)))
    current = _results(8.0, day=30)
    history = trend(earlier, current, None)
    assert len(history.runs) == TREND_LENGTH
    assert history.runs[-1].started_at == current.started_at and history.runs[0].rto_seconds == 16.0
    assert history.baseline_rto_seconds == 32.0  # median of the last five: 30..34
    assert history.rto_change_percent == pytest.approx(-75.0) and not history.regressed


# RTOs of one unchanged drill, run again and again on a shared CI machine (issue 18).
NOISY = [4.2, 6.1, 7.9, 5.0, 4.6, 7.4, 5.8, 4.9, 6.6, 7.7]


def test_unchanged_code_never_fails_the_gate_on_a_noisy_machine(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    for day, rto in enumerate(NOISY):
        with open_history(db) as h:
            earlier = h.runs("orders")
        current = _results(rto, day=day)
        result = regression_assertion(trend(earlier, current, Gate(threshold=20.0)), rto)
        assert result.status in ("pass", "not_compared"), (day, rto, result.summary)
        assert (result.status == "not_compared") == (day < 3)
        _record(db, current)


def test_a_real_regression_on_that_machine_still_fails(tmp_path: Path) -> None:
    earlier = _earlier(tmp_path, *(_results(rto, day=d) for d, rto in enumerate(NOISY)))
    slow = _results(16.0, day=20)  # twice the slowest unchanged run
    result = regression_assertion(trend(earlier, slow, Gate(threshold=20.0)), 16.0)
    assert result.status == "fail" and "median of the last 5 passing runs" in result.summary


def test_the_floor_ignores_small_changes_of_small_rtos(tmp_path: Path) -> None:
    earlier = _earlier(tmp_path, *(_results(0.50, day=d) for d in range(5)))
    assert not trend(earlier, _results(0.95, day=9), Gate(threshold=20.0)).regressed  # +90%, but under 1 s
    assert trend(earlier, _results(0.95, day=9), Gate(threshold=20.0, floor_seconds=0.2)).regressed


def test_gate_fails_a_passing_run_that_regressed(tmp_path: Path) -> None:
    current = _results(13.0, day=5)
    history = trend(_earlier(tmp_path, *(_results(10.0, day=d) for d in range(3))), current, Gate(threshold=20.0))
    result = regression_assertion(history, 13.0)
    assert (result.id, result.name, result.status, result.source) == ("regression[rto]", "regression", "fail", None)
    assert "13.00 s" in result.summary and "10.00 s" in result.summary and "+30.0%" in result.summary
    apply_gate(current, result)
    assert (current.verdict, current.exit_code) == ("fail", 1)
    assert current.assertions[-1] is result


def test_the_gate_judges_the_controls_again_on_the_verdict_it_gave(tmp_path: Path) -> None:
    """Found by review: NIST CP-4 stayed "evidenced: drill ...: pass" in a FAIL report."""
    from drills.controls import evaluate

    current = _results(13.0, day=5)
    current.controls = evaluate(["NIST CP-4"], current)
    assert current.controls[0].status == "evidenced"
    history = trend(_earlier(tmp_path, *(_results(10.0, day=d) for d in range(3))), current, Gate(threshold=20.0))
    apply_gate(current, regression_assertion(history, 13.0))
    assert current.verdict == "fail"
    assert [c.status for c in current.controls] == ["failed"]


def test_gate_passes_within_the_threshold(tmp_path: Path) -> None:
    current = _results(11.0, day=5)
    earlier = _earlier(tmp_path, *(_results(10.0, day=d) for d in range(3)))
    result = regression_assertion(trend(earlier, current, Gate(threshold=20.0)), 11.0)
    apply_gate(current, result)
    assert result.status == "pass" and "within the 2.00 s allowed" in result.summary
    assert (current.verdict, current.exit_code) == ("pass", 0)


def test_gate_with_too_few_passing_runs_is_not_compared_never_a_pass(tmp_path: Path) -> None:
    current = _results(99.0, day=3)
    earlier = _earlier(tmp_path, _results(5.0, "fail"), _results(5.0, day=1), _results(5.0, day=2))
    result = regression_assertion(trend(earlier, current, Gate(threshold=20.0)), 99.0)
    assert result.status == "not_compared" and result.summary.startswith(NO_BASELINE)
    apply_gate(current, result)
    assert (current.verdict, current.exit_code) == ("pass", 0)  # it does not block while the history fills


def test_a_run_without_an_rto_is_a_gate_error_even_without_a_baseline(tmp_path: Path) -> None:
    """Found by review: a drill that never measures an RTO never builds a baseline, so its
    gate stayed "not compared: 0 of the 3 needed are recorded" (exit 0) run after passing
    run; docs/history.md says a run that measured no RTO is an error."""
    for earlier in ([], _earlier(tmp_path, *(_results(None, day=d) for d in range(3)))):
        current = _results(None, day=5)
        result = regression_assertion(trend(earlier, current, Gate(threshold=20.0)), None)
        assert result.status == "error" and "measured no RTO" in result.summary
        apply_gate(current, result)
        assert (current.verdict, current.exit_code) == ("error", 2)
    # The quiet control: a measured RTO with a history still filling is not compared, exit 0.
    current = _results(5.0, day=5)
    result = regression_assertion(trend([], current, Gate(threshold=20.0)), 5.0)
    assert result.status == "not_compared" and "passing runs with a measured RTO" in result.summary


def test_a_failing_run_keeps_its_exit_code(tmp_path: Path) -> None:
    current = _results(50.0, "error", day=5)
    earlier = _earlier(tmp_path, *(_results(10.0, day=d) for d in range(3)))
    result = regression_assertion(trend(earlier, current, Gate(threshold=20.0)), 50.0)
    apply_gate(current, result)
    assert result.status == "fail"
    assert (current.verdict, current.exit_code) == ("error", 2)


def test_results_json_round_trips_the_history(tmp_path: Path) -> None:
    current = _results(12.0, day=1)
    current.history = trend(_earlier(tmp_path, _results(10.0)), current, 20.0)
    again = Results.model_validate_json(current.model_dump_json())
    assert again.history == current.history


def test_summary_lists_every_report_with_a_relative_link(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for day, (rto, verdict) in enumerate([(10.0, "pass"), (90.0, "fail")]):
        d = runs / f"orders-{day}"
        write_json(_results(rto, verdict, day=day), d / "results.json")
        (d / "report.html").write_text("<html></html>", encoding="utf-8")
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("{", encoding="utf-8")
    out = tmp_path / "site" / "index.html"
    page = write_summary([runs], out)
    html = out.read_text(encoding="utf-8")
    assert len(page.entries) == 2 and len(page.unreadable) == 1
    assert 'href="../runs/orders-0/report.html"' in html and 'href="../runs/orders-1/report.html"' in html
    assert html.index("orders-1") < html.index("orders-0")  # newest first
    assert 'class="badge fail"' in html and 'class="badge pass"' in html
    assert "90.0 s</span> / 60.0 s" in html and 'class="over"' in html  # measured vs objective
    assert "<script" not in html and "http" not in html.lower().replace('lang="en"', "")


def test_summary_page_has_a_control_coverage_matrix(tmp_path: Path) -> None:
    """Per control, per scenario: the newest run's status; undeclared cells stay empty."""
    from engine.journal import ControlResult
    from reports.summary import collect, coverage, render_summary
    from reports.writers import write_all

    def run(name: str, when: int, status: str) -> None:
        results = _results(1.0, day=when, name=name)
        results.controls = [
            ControlResult(id="NIST CP-9(1)", framework="NIST SP 800-53 r5", title="Backup testing", status=status)
        ]
        write_all(results, tmp_path / f"{name}-{when}")

    run("alpha", 1, "failed")
    run("alpha", 2, "evidenced")  # newer: this one counts
    run("beta", 1, "not evidenced")
    write_all(_results(1.0, day=1, name="gamma"), tmp_path / "gamma-1")  # declares no controls
    page = collect([tmp_path], tmp_path / "index.html")
    matrix = coverage(page)
    assert matrix.scenarios == ["alpha", "beta", "gamma"]
    assert matrix.rows == [("NIST CP-9(1)", "Backup testing", ["evidenced", "not evidenced", None])]
    html = render_summary(page)
    assert "Control coverage" in html and "NIST CP-9(1)" in html


# -- restore tests: history per source (schema 2) ---------------------------------------------


def _restore_test(rto: float, age: float, source: str, day: int, name: str = "shop-restore-test") -> Results:
    from engine.journal import ComponentResult, Scope

    r = _results(rto, day=day, name=name)
    r.scope = Scope(
        kind="restore-test",
        statement="restore test",
        backup_id=f"b{day}",
        backup_age_seconds=age,
        repository="local /backups",
        source=source,
    )
    r.components = [
        ComponentResult(
            name="db", kind="postgres", content={"rows": 1000 + day}, row_counts={"table public.t": 1000 + day}
        )
    ]
    return r


def test_restore_tests_are_recorded_and_trended_per_source(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    shop, other = "local /backups :: db", "local /other :: db"
    _record(db, _restore_test(40.0, 3600, shop, 0), _restore_test(99.0, 60, other, 1, name="other-test"))
    _record(db, _restore_test(42.0, 7200, shop, 2, name="shop-restore-test-renamed"))
    with open_history(db, create=False) as h:
        runs = h.runs(source=shop)
    assert [r.backup_id for r in runs] == ["b2", "b0"]  # both scenario files, one source
    assert runs[0].content == {"db": {"content": {"rows": 1002}, "rows": {"table public.t": 1002}}}
    history = trend(runs, _restore_test(41.0, 1800, shop, 3), None)
    assert [p.backup_age_seconds for p in history.runs] == [3600, 7200, 1800]
    assert history.last_pass_rto_seconds == 42.0


def test_a_version_1_history_is_migrated_in_place_keeping_its_runs(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        """CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, scenario TEXT NOT NULL, scenario_sha256 TEXT NOT NULL,
        started_at TEXT NOT NULL, finished_at TEXT NOT NULL, verdict TEXT NOT NULL, exit_code INTEGER NOT NULL,
        rto_seconds REAL, rpo_seconds REAL, drill_seconds REAL NOT NULL, runtime TEXT NOT NULL,
        report_dir TEXT NOT NULL, results_sha256 TEXT NOT NULL);
        INSERT INTO runs VALUES (NULL, 'orders', 'a', '2026-10-01T02:00:00.000000+00:00',
        '2026-10-01T02:00:30.000000+00:00', 'pass', 0, 9.5, NULL, 30.0, 'local', '/r', 'f');
        PRAGMA user_version = 1;"""
    )
    conn.close()
    _record(db, _restore_test(40.0, 10, "s", 0))
    with open_history(db, create=False) as h:
        old, new = h.runs("orders")[0], h.runs(source="s")[0]
    assert (old.rto_seconds, old.source, old.content) == (9.5, None, None)
    assert new.backup_age_seconds == 10


def test_the_summary_shows_the_last_successful_restore_test_per_system(tmp_path: Path) -> None:
    from reports.summary import collect, restore_test_systems

    passed = _restore_test(40.0, 6 * 3600, "s", 0)
    passed.scope.systems = ["db (postgres)", "files (volumes)"]  # type: ignore[union-attr]
    failed = _restore_test(45.0, 3600, "s", 1)
    failed.verdict, failed.exit_code = "fail", 1
    failed.assertions[0].status = "fail"
    failed.scope.systems = ["db (postgres)", "files (volumes)"]  # type: ignore[union-attr]
    synthetic = _results(3.0, day=2, name="quickstart")
    for i, r in enumerate((passed, failed, synthetic)):
        write_json(r, tmp_path / f"run{i}" / "results.json")
    out = tmp_path / "index.html"
    page = collect([tmp_path], out)
    systems = restore_test_systems(page)
    assert [s.system for s in systems] == ["db (postgres) from local /backups", "files (volumes) from local /backups"]
    assert all(s.newest.results.verdict == "fail" and s.last_success is not None for s in systems)
    assert systems[0].last_success is not None and systems[0].last_success.results.scope.backup_id == "b0"  # type: ignore[union-attr]
    write_summary([tmp_path], out)
    html = out.read_text()
    assert "Restore tests of real backups" in html and "6.0 h" in html and "b0" in html
