"""Reports are what an auditor and a CI system see of a drill, so these tests pin what
each must say: a failing or unrunnable check is never green in JUnit, the HTML shows
exactly which table differs, and nothing user-supplied can inject markup."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.fingerprint import Part, PartDifference
from engine.journal import (
    AssertionResult,
    BackupRecord,
    ComponentResult,
    DisasterRecord,
    Measured,
    Objectives,
    Phase,
    Results,
    ScenarioInfo,
    SourceLocation,
)
from reports import load_results, render_html, render_junit, view, write_all, write_html, write_json, write_junit
from reports.view import format_bytes, format_seconds, timeline

T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
XSS = "<script>alert('x')</script>"


def _phase(name: str, kind: str, offset: float, duration: float, status: str = "ok", **kw: object) -> Phase:
    return Phase.model_validate(
        {
            "name": name,
            "kind": kind,
            "status": status,
            "started_at": T0 + timedelta(seconds=offset),
            "finished_at": T0 + timedelta(seconds=offset + duration),
            "offset_seconds": offset,
            "duration_seconds": duration,
            **kw,
        }
    )


@pytest.fixture
def results() -> Results:
    orders_before = Part(digest="a" * 64, count=1200, unit="rows")
    orders_after = Part(digest="b" * 64, count=1187, unit="rows")
    payments = Part(digest="c" * 64, count=300, unit="rows")
    return Results(
        drproof_version="0.1.0",
        scenario=ScenarioInfo(
            name="orders-db-loss",
            description=f"Lose the orders database and restore it. {XSS}",
            file="scenarios/orders.yaml",
            sha256="d" * 64,
            source="name: orders-db-loss\nsteps:\n  - backup: nightly\n  - disaster: drop-db\n",
        ),
        verdict="fail",
        exit_code=1,
        runtime={"runtime": "local", "postgres:db": "16.2"},
        repository={"type": "local", "path": "/tmp/repo"},
        environment={"python": "3.11.7", "os": "Linux"},
        tools={"pg_dump": "16.2"},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=125.3),
        objectives=Objectives(rto_seconds=60.0, rpo_seconds=300.0),
        measured=Measured(rto_seconds=42.5, components={"db": 42.5, "cache": None}, drill_seconds=125.3),
        components=[
            ComponentResult(
                name="db",
                kind="postgres",
                seed={"tables": 2, "rows": 1500},
                damaged_by=["drop-db"],
                restored_from="bk-20250314-0001",
                restore_seconds=38.2,
                rto_seconds=42.5,
                healthy=True,
                health_detail="accepting connections",
                fingerprint_at_backup="e" * 64,
                fingerprint_final="f" * 64,
                differences=[
                    PartDifference(part="public.orders", change="changed", expected=orders_before, actual=orders_after),
                    PartDifference(part="public.payments", change="missing", expected=payments),
                ],
            ),
            ComponentResult(
                name="cache",
                kind="redis",
                healthy=None,
                fingerprint_at_backup="1" * 64,
                fingerprint_final="1" * 64,
            ),
        ],
        phases=[
            _phase("provision", "provision", 0.0, 3.1),
            _phase("seed db", "seed", 3.1, 2.0, component="db"),
            _phase("backup nightly", "backup", 5.1, 10.0, step=0),
            _phase("drop-db", "disaster", 20.0, 0.0, step=1, component="db"),
            _phase("restore db", "restore", 20.5, 38.2, step=2, component="db"),
            _phase("restore cache", "restore", 59.0, 1.0, status="refused", detail="artifact damaged"),
            _phase("teardown", "teardown", 120.0, 5.3),
        ],
        backups=[
            BackupRecord(
                name="nightly",
                id="bk-20250314-0001",
                created_at=T0 + timedelta(seconds=5),
                components=["db", "cache"],
                artifacts=[
                    {"key": "db/dump.sql", "size": 5_242_880, "sha256": "9" * 64},
                    {"key": "cache/dump.rdb", "size": 512, "sha256": "8" * 64},
                ],
                manifest_sha256="7" * 64,
                duration_seconds=10.0,
            )
        ],
        disasters=[
            DisasterRecord(
                step=1,
                name="drop-db",
                fault="postgres.drop_database",
                target="db",
                injected_at=T0 + timedelta(seconds=20),
                offset_seconds=20.0,
                effect={"dropped": "orders", "tables": ["public.orders", "public.payments"]},
            )
        ],
        assertions=[
            AssertionResult(
                id="fidelity[db]",
                name="fidelity",
                status="fail",
                summary="db differs from the backup in 2 parts",
                evidence={"compared": {"parts": 2}, "digest_equal": False},
                findings=["public.orders: content differs", "public.payments: missing after restore"],
                source=SourceLocation(file="scenarios/orders.yaml", line=12, column=5),
            ),
            AssertionResult(
                id="rto",
                name="rto",
                status="pass",
                summary="recovered in 42.50 s, within 60 s",
                evidence={"measured": 42.5, "objective": 60},
            ),
            AssertionResult(
                id="backup_integrity",
                name="backup_integrity",
                status="error",
                summary="could not read the manifest",
                findings=["manifest.json: permission denied"],
            ),
            AssertionResult(
                id="fidelity[cache]",
                name="fidelity",
                status="not_run",
                summary="cache was never restored",
            ),
        ],
        report={"operator": "jane.doe", "title": "Q1 DR drill"},
    )


@pytest.fixture
def instant() -> Results:
    """A drill that ended the moment it started: the degenerate case for every ratio."""
    return Results(
        drproof_version="0.1.0",
        scenario=ScenarioInfo(name="empty", file="s.yaml", sha256="0" * 64, source=""),
        verdict="pass",
        exit_code=0,
        runtime={},
        repository={},
        environment={},
        started_at=T0,
        finished_at=T0,
        objectives=Objectives(),
        measured=Measured(rto_seconds=None, components={}, drill_seconds=0.0),
        components=[],
        phases=[_phase("provision", "provision", 0.0, 0.0), _phase("teardown", "teardown", 0.0, 0.0)],
        backups=[],
        disasters=[],
        assertions=[],
    )


# --- JSON ----------------------------------------------------------------------------------


def test_json_round_trips(results: Results, tmp_path: Path) -> None:
    results.verdict, results.exit_code = "error", 2  # its checks: an error and one not run
    path = write_json(results, tmp_path / "results.json")
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert load_results(path) == results
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "temporary file left behind"


def test_json_overwrites_atomically(results: Results, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("stale", encoding="utf-8")
    results.verdict, results.exit_code = "error", 2  # its checks: an error and one not run
    write_json(results, path)
    assert load_results(path).scenario.name == "orders-db-loss"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"schema_version": 99}', "schema_version is 99"),
        ('{"schema_version": 1, "verdict": "maybe"}', "problems"),
    ],
)
def test_load_results_rejects_invalid_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_load_results_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such results file"):
        load_results(tmp_path / "absent.json")


# --- JUnit ---------------------------------------------------------------------------------


def test_junit_counts_not_run_as_error(results: Results, tmp_path: Path) -> None:
    root = ET.parse(write_junit(results, tmp_path / "junit.xml")).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "orders-db-loss"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "4",
        "1",
        "2",
        "0",
    )
    assert suite.get("time") == "125.300"
    assert suite.get("timestamp") == "2025-03-14T09:26:53"
    assert root.find(".//skipped") is None

    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"fidelity[db]", "rto", "backup_integrity", "fidelity[cache]"}
    assert all(c.get("classname") == "drproof.orders-db-loss" for c in cases.values())

    failure = cases["fidelity[db]"].find("failure")
    assert failure is not None
    assert failure.get("message") == "db differs from the backup in 2 parts"
    assert failure.text == "public.orders: content differs\npublic.payments: missing after restore"
    assert len(cases["rto"]) == 0
    error = cases["backup_integrity"].find("error")
    assert error is not None and error.get("message") == "could not read the manifest"
    not_run = cases["fidelity[cache]"].find("error")
    assert not_run is not None
    assert (not_run.get("message") or "").startswith("not run: ")

    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "fail"
    assert props["runtime"] == "local"
    assert props["measured_rto_seconds"] == "42.500"


def test_junit_drill_error_adds_testcase(results: Results) -> None:
    broken = results.model_copy(update={"verdict": "error", "error": "postgres did not start\x00: port in use"})
    suite = ET.fromstring(render_junit(broken)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("errors")) == ("5", "3")
    drill = suite.find("testcase[@name='drill']")
    assert drill is not None
    error = drill.find("error")
    assert error is not None and "port in use" in (error.text or "")


def test_junit_never_green_when_verdict_is_not(instant: Results) -> None:
    failed = instant.model_copy(update={"verdict": "error", "exit_code": 2})
    suite = ET.fromstring(render_junit(failed)).find("testsuite")
    assert suite is not None and suite.get("errors") == "1"


# --- HTML ----------------------------------------------------------------------------------


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_html_report_content(results: Results, tmp_path: Path) -> None:
    html = write_html(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "FAIL" in html
    order = ["FAIL", *(f'<section id="{s}"' for s in ("objectives", "assertions", "components", "timeline"))]
    order += [f'<section id="{s}"' for s in ("disasters", "backups", "environment", "appendix")]
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions), "sections out of the order an auditor reads them"
    assert "Q1 DR drill" in html and "jane.doe" in html
    # Which table differs, in PartDifference.describe()'s words.
    assert "public.orders: content differs" in html
    assert "public.payments: missing after restore (had 300 rows)" in html
    assert "<svg" in html and "<title>" in html
    assert "not run" in html
    assert "not measured in this drill" in html
    assert "2025-03-14 09:26:53 UTC" in html
    assert "42.50 s" in html and "2 min 5 s" in html
    assert 'title="' + "e" * 64 + '"' in html and "e" * 16 + "…" in html
    assert "5.0 MiB" in html
    assert "Generated by drproof" in html


def test_html_is_self_contained_and_escaped(results: Results) -> None:
    html = render_html(results)
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    parser = _TagCollector()
    parser.feed(html)
    assert {"header", "main", "section", "table", "caption", "footer", "svg", "style"} <= set(parser.tags)
    assert not [v for k, v in parser.attrs if k == "src"]
    assert all((v or "").startswith("#") or v == "data:," for k, v in parser.attrs if k == "href")
    assert ("scope", "col") in parser.attrs and ("scope", "row") in parser.attrs


def test_html_shows_drill_error_prominently(results: Results) -> None:
    broken = results.model_copy(update={"verdict": "error", "error": "restore <db> failed"})
    html = render_html(broken)
    assert "ERROR" in html
    assert 'role="alert"' in html and "restore &lt;db&gt; failed" in html


def test_zero_duration_drill_renders(instant: Results, tmp_path: Path) -> None:
    html = render_html(instant)
    assert "PASS" in html and "<svg" in html
    assert "not asserted" in html
    assert "not measured in this drill" not in html
    layout = timeline(instant)
    assert layout.span_seconds == 1.0
    assert all(bar.width > 0 for bar in layout.bars)
    no_phases = instant.model_copy(update={"phases": []})
    assert "No phases were recorded" in render_html(no_phases)


# --- write_all and formatting --------------------------------------------------------------


def test_write_all(results: Results, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "run-1"
    written = write_all(results, out)
    assert written == {"html": out / "report.html", "json": out / "results.json", "junit": out / "junit.xml"}
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "results.json"]
    assert write_all(results, tmp_path / "j", formats=["json"]) == {"json": tmp_path / "j" / "results.json"}


def test_write_all_rejects_unknown_format_before_writing(results: Results, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'pdf'"):
        write_all(results, tmp_path / "out", formats=("json", "pdf"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0, "0.00 s"),
        (4.214, "4.21 s"),
        (59.999, "1 min"),
        (125.3, "2 min 5 s"),
        (3600, "1 h"),
        (3605, "1 h 0 min 5 s"),
        (3725, "1 h 2 min 5 s"),
        (-4.5, "-4.50 s"),
    ],
)
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB (1,536 bytes)"
    assert format_bytes(None) == "—"


def test_html_controls_section(results: Results) -> None:
    from engine.journal import ControlResult

    assert 'id="controls"' not in render_html(results), "no section when the scenario declared no controls"
    declared = results.model_copy(
        update={
            "controls": [
                ControlResult(
                    id="NIST CP-9(2)",
                    framework="NIST SP 800-53 r5",
                    title="System backup: test restoration using sampling",
                    description="Restore part of the backed-up <data> when testing.",
                    status="failed",
                    evidence=["fidelity[db]: fail"],
                ),
                ControlResult(
                    id="NIST CP-9(8)",
                    framework="NIST SP 800-53 r5",
                    title="System backup: cryptographic protection",
                    status="not evidenced",
                ),
                ControlResult(
                    id="DORA 12(3)",
                    framework="EU DORA",
                    title="Art. 12(3): restoration on segregated systems",
                    status="evidenced",
                    evidence=["runtime isolation: private processes"],
                ),
            ]
        }
    )
    html = render_html(declared)
    order = ['<section id="objectives"', '<section id="controls"', '<section id="assertions"']
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions), "controls belong right after the objectives"
    section = html[html.index('<section id="controls"') : html.index('<section id="assertions"')]
    assert "Controls evidenced" in section and "<caption>" in section and 'scope="col"' in section
    assert '<a href="#controls">' in html
    assert "NIST CP-9(2)" in section and "EU DORA" in section
    assert "&lt;data&gt;" in section
    assert 'badge-fail"><span aria-hidden="true">✘ </span>failed' in section
    assert "not evidenced</span>" in section and "badge-neutral" in section
    assert 'badge-pass"><span aria-hidden="true">✔ </span>evidenced' in section
    assert "fidelity[db]: fail" in section and "runtime isolation: private processes" in section
    assert "did not produce the evidence" in section
    assert "<script" not in html.lower()


# --- auditor summary, objectives chart, remediation, trend --------------------------------


def test_executive_summary_comes_first_with_operator_scope_and_recovery_point(results: Results) -> None:
    html = render_html(results)
    start = html.index('<section id="summary"')
    block = html[start : html.index("</section>", start)]
    assert html.index("verdict-word") < start < html.index('<section id="objectives"')
    assert "Executive summary" in block
    assert "jane.doe" in block
    assert "db (postgres), cache (redis)" in block
    assert "nightly (bk-20250314-0001): db" in block, "the backup restored from, named and with its id"
    assert "local runtime" in block and "postgres:db: 16.2" in block
    assert "2025-03-14 09:26:53 UTC" in block
    assert "RTO 42.50 s against objective 1 min — pass" in block
    assert "RPO not measured against objective 5 min" in block
    anonymous = results.model_copy(update={"report": {}})
    assert "not recorded" in view.executive_summary(anonymous).operator


def test_recovery_point_names_a_point_in_time_restore(results: Results) -> None:
    pitr = _phase("restore db", "restore", 20.5, 3.0, component="db", data={"point_in_time": "before_disaster"})
    changed = results.model_copy(update={"phases": [pitr]})
    assert view.recovery_points(changed) == ["point in time (before_disaster): db"]


def test_objective_chart_is_an_accessible_svg_with_the_numbers(results: Results) -> None:
    chart = view.objective_chart(results)
    assert chart is not None
    rto, rpo = chart.rows
    assert (rto.name, rto.status, rpo.name, rpo.status) == ("RTO", "pass", "RPO", "none")
    assert rto.objective is not None and rto.measured is not None
    # One scale: the 300 s RPO objective is the longest bar, 60 s is a fifth of it.
    assert rpo.objective is not None and rpo.measured is None
    assert rto.objective.width == pytest.approx(rpo.objective.width * 60 / 300, abs=0.01)
    assert rto.measured.width == pytest.approx(rpo.objective.width * 42.5 / 300, abs=0.01)
    assert rto.measured.fill == view.STATUS_FILLS["pass"]
    html = render_html(results)
    section = html[html.index('<section id="objectives"') : html.index('<section id="assertions"')]
    assert '<svg class="chart"' in section and 'role="img"' in section
    assert '<title id="chart-title">' in section and '<desc id="chart-desc">' in section
    assert "measured 42.50 s — pass" in section and "objective 1 min" in section
    assert "RTO: measured 42.50 s, objective 1 min, pass." in section
    failing = results.model_copy(
        update={"measured": results.measured.model_copy(update={"rto_seconds": 90.0}), "assertions": []}
    )
    chart = view.objective_chart(failing)
    assert chart is not None and chart.rows[0].status == "fail"
    assert chart.rows[0].measured is not None and chart.rows[0].measured.fill == view.STATUS_FILLS["fail"]
    assert chart.rows[0].measured.text == "measured 1 min 30 s — over objective, not asserted"



def test_an_objective_met_but_not_asserted_is_never_painted_green(results: Results) -> None:
    """Found by review: with an RTO objective and no rto assertion, the measured bar was the
    pass green while the table row beside it said "not asserted" in grey."""
    unasserted = results.model_copy(update={"assertions": [a for a in results.assertions if a.name != "rto"]})
    chart = view.objective_chart(unasserted)
    assert chart is not None and chart.rows[0].measured is not None
    assert chart.rows[0].measured.text == "measured 42.50 s — within objective, not asserted"
    assert chart.rows[0].measured.fill == view.STATUS_FILLS["none"] != view.STATUS_FILLS["pass"]
    section = render_html(unasserted).split('<section id="objectives"')[1].split("</section>")[0]
    assert view.STATUS_FILLS["pass"] not in section and "badge-pass" not in section
    # The quiet control: asserted and met, the bar is green.
    asserted = view.objective_chart(results)
    assert asserted is not None and asserted.rows[0].measured is not None
    assert asserted.rows[0].measured.fill == view.STATUS_FILLS["pass"]


def test_objective_chart_absent_when_nothing_to_draw(instant: Results) -> None:
    assert view.objective_chart(instant) is None
    assert '<svg class="chart"' not in render_html(instant)


def test_failing_rto_gets_its_remediation_hint(results: Results) -> None:
    failed = [
        a.model_copy(update={"status": "fail", "summary": "took 90 s"}) if a.id == "rto" else a
        for a in results.assertions
    ]
    slow = results.model_copy(update={"assertions": failed})
    by_id = {m.assertion_id: m for m in view.remediation(slow)}
    assert set(by_id) == {"fidelity[db]", "rto", "backup_integrity"}, "not_run and pass get no hint"
    assert any("restore db (38.20 s)" in h and "slowest" in h for h in by_id["rto"].hints)
    assert any("parallel" in h for h in by_id["rto"].hints)
    assert any("after the last change" in h for h in by_id["fidelity[db]"].hints)
    html = render_html(slow)
    section = html[html.index('<section id="remediation"') : html.index('<section id="components"')]
    assert "Profile the slowest restore phase: restore db (38.20 s)." in section
    assert '<a href="#remediation">' in html


def test_postgres_check_findings_get_hints_by_prefix(results: Results) -> None:
    checks = AssertionResult(
        id="postgres_checks[db]",
        name="postgres_checks",
        status="fail",
        summary="1 critical finding",
        findings=["[critical] sequences: orders_id_seq is behind max(id)", "[minor] matviews: none"],
    )
    (hint,) = view.remediation(results.model_copy(update={"assertions": [checks]}))
    assert any("sequences" in h for h in hint.hints) and any("REFRESH MATERIALIZED VIEW" in h for h in hint.hints)
    unknown = checks.model_copy(update={"name": "something_new", "findings": []})
    (fallback,) = view.remediation(results.model_copy(update={"assertions": [unknown]}))
    assert fallback.hints == [view.GENERIC_HINT]


def test_history_sparkline_renders_when_history_is_given(results: Results) -> None:
    from engine.journal import History, TrendPoint

    runs = [
        TrendPoint(started_at=T0 - timedelta(days=3 - i), verdict=v, rto_seconds=rto, rpo_seconds=None)
        for i, (v, rto) in enumerate([("pass", 30.0), ("fail", 80.0), ("pass", 34.0), ("fail", 42.5)])
    ]
    history = History(
        runs=runs,
        last_pass_rto_seconds=34.0,
        rto_change_percent=25.0,
        regression_threshold_percent=20.0,
        regressed=True,
    )
    layout = view.trend(history)
    assert layout is not None and layout.runs == 4
    (line,) = layout.lines
    assert line.name == "RTO" and len(line.dots) == 4
    ys = [y for _, y, _ in line.dots]
    assert ys[1] == min(ys) and ys[0] == max(ys), "the slowest run is drawn highest"
    assert "+25.0%" in layout.change and "34.00 s" in layout.change and "regression" in layout.change
    html = render_html(results.model_copy(update={"history": history}))
    assert '<svg class="spark"' in html and "RTO over recent runs" in html
    assert "Trend over the last 4 runs" in html
    assert "RTO +25.0% against the last passing run" in html
    assert '<svg class="spark"' not in render_html(results)
    assert view.trend(None) is None


def test_report_has_no_script_and_no_external_assets(results: Results) -> None:
    import re

    html = render_html(results.model_copy(update={"report": {"operator": "https://evil.example/x.js"}}))
    assert "<script" not in html.lower()
    for attribute, value in re.findall(r'\b(src|href)="([^"]*)"', html):
        assert not value.lower().startswith(("http://", "https://", "//")), (attribute, value)
    assert "@media print" in html and "break-inside: avoid" in html


def test_report_on_a_file_that_is_no_results_json_says_so(tmp_path: Path) -> None:
    from engine.errors import ConfigError
    from reports import load_results

    for body in ('{"foo": 1}', '{"repository": {"path": "x"}, "components": {}}'):
        path = tmp_path / "r.json"
        path.write_text(body)
        with pytest.raises(ConfigError, match="not a drproof results file: it has no schema_version"):
            load_results(path)


def _with_assertions(results: Results, *assertions: AssertionResult, verdict: str = "pass") -> Results:
    return results.model_copy(
        update={"assertions": list(assertions), "verdict": verdict, "exit_code": {"pass": 0, "fail": 1}[verdict]}
    )


def test_the_objectives_row_shows_the_stacks_rto_check_not_the_first_declared(results: Results) -> None:
    """Found by review: "RTO 0.77 s against objective 0.01 s — pass" in a FAIL drill (a component's check)."""
    component = AssertionResult(id="rto[db]", name="rto", status="pass", summary="db recovered within 1m")
    stack = AssertionResult(id="rto[stack]", name="rto", status="fail", summary="stack took 0.77 s")
    assert view.rto_assertion(_with_assertions(results, component, stack, verdict="fail")) is stack
    assert view.rto_assertion(_with_assertions(results, component)) is None  # the row says "not asserted"
    rpo = AssertionResult(id="rpo[db]", name="rpo", status="pass", summary="db")
    assert view.rpo_assertion(_with_assertions(results, rpo)) is None


def test_a_check_that_did_not_compare_is_counted_as_skipped_and_never_called_a_pass(results: Results) -> None:
    """Found by review: junit said skipped="0" beside a <skipped> case; the HTML "every assertion passed"."""
    ok = AssertionResult(id="rto[stack]", name="rto", status="pass", summary="ok")
    blind = AssertionResult(
        id="fidelity[db]", name="fidelity", status="not_compared", summary="db: not compared: a foreign backup"
    )
    passing = _with_assertions(results, ok, blind)
    root = ET.fromstring(render_junit(passing))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("skipped") == "1" and root.get("skipped") == "1"
    skipped = root.find(".//skipped")
    assert skipped is not None and skipped.get("message") == "db: not compared: a foreign backup"
    html = render_html(passing)
    assert "every assertion passed" not in html and "could not compare and proves nothing" in html
    assert "every assertion passed" in render_html(_with_assertions(results, ok))
