"""Write a drill's :class:`~engine.journal.Results` as JSON, JUnit XML and HTML.

results.json is the record; the other two are views of it for different readers (CI for
JUnit, an auditor for HTML). Every file is written atomically so an interrupted drill or
a full disk never leaves a truncated report that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from engine import __version__ as DRPROOF_VERSION
from engine.errors import ConfigError
from engine.journal import SCHEMA_VERSION, AssertionResult, Results
from reports import view
from reports.evidence_view import EvidenceView

__all__ = [
    "FILENAMES",
    "FORMATS",
    "FleetSuite",
    "load_results",
    "render_fleet_junit",
    "render_html",
    "render_junit",
    "write_all",
    "write_fleet_junit",
    "write_html",
    "write_json",
    "write_junit",
]

FILENAMES: dict[str, str] = {"json": "results.json", "junit": "junit.xml", "html": "report.html"}
# Written in this order whatever order callers ask for: the record first, so a failure in
# a derived view (a template bug, say) still leaves the results on disk.
FORMATS: tuple[str, ...] = ("json", "junit", "html")

TEMPLATE = "report.html.j2"


# --- atomic writes -----------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> Path:
    """Replace ``path`` in one step so readers see the old file or the new one, never half.

    The temporary file is opened with ``O_EXCL`` and mode 0o666 so the kernel applies the
    user's umask exactly as a plain ``open()`` would; ``mkstemp`` would force 0o600 and
    reports would become unreadable to the CI artifact uploader.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort because not every OS allows it."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# --- JSON --------------------------------------------------------------------------------


def write_json(results: Results, path: Path) -> Path:
    """Write the record every other report is derived from.

    Sorted keys and a fixed indent make two runs' files diffable line by line, which is
    how people compare a drill with last quarter's.
    """
    text = json.dumps(results.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False)
    return _atomic_write(path, (text + "\n").encode("utf-8"))


def load_results(path: Path) -> Results:
    """Read a results.json back, turning every way it can be wrong into a ConfigError.

    Reports are re-rendered from old files, often by someone other than who ran the drill,
    so the message names the file and says what is wrong instead of dumping a traceback.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such results file (drproof writes it as results.json)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a drproof results file: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read results file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}:{exc.colno}: not a drproof results file: invalid JSON ({exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a drproof results file: expected a JSON object at the top level")
    version = data.get("schema_version")
    if version is None:
        keys = ", ".join(sorted(map(str, data))[:6]) or "none"
        raise ConfigError(
            f"{path}: not a drproof results file: it has no schema_version (its keys: {keys}); "
            "give the results.json a drill wrote"
        )
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: results schema_version is {version!r} but this drproof ({DRPROOF_VERSION}) reads "
            f"version {SCHEMA_VERSION}; render it with the drproof version that wrote it"
        )
    try:
        results = Results.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"  {_line_of(text, err['loc'])}{'.'.join(str(part) for part in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        count = len(problems)
        raise ConfigError(
            f"{path}: not a valid drproof results file, {count} problem{'s' if count != 1 else ''}:\n"
            + "\n".join(problems)
        ) from None
    contradiction = _contradiction(results)
    if contradiction is not None:
        raise ConfigError(
            f"{path}: not a results file drproof wrote: {contradiction}; it was edited or damaged, so neither "
            "its verdict nor its checks can be trusted (render the results.json of the run itself)"
        )
    return results


def _line_of(text: str, loc: tuple[int | str, ...]) -> str:
    """``line N: `` of the value at ``loc`` in the JSON ``text`` (already parsed once), or "" at the top level.

    A reader fixes a results.json in an editor, by line; pydantic's path alone makes them
    count list items by hand.
    """
    decoder = json.JSONDecoder()
    pos = 0
    for part in loc:  # as deep as the path is found: a missing member is reported at its parent
        try:
            pos = _child(text, decoder, _skip(text, pos), part)
        except (ValueError, IndexError):
            break
    return f"line {text.count(chr(10), 0, pos) + 1}: " if pos else ""


def _skip(text: str, pos: int) -> int:
    while text[pos] in " \t\r\n":
        pos += 1
    return pos


def _child(text: str, decoder: json.JSONDecoder, pos: int, part: int | str) -> int:
    """Where the member ``part`` of the object or array starting at ``pos`` begins."""
    opener = text[pos]
    if opener not in "{[" or (opener == "{") != isinstance(part, str):
        raise ValueError(part)
    pos, index = _skip(text, pos + 1), 0
    while text[pos] not in "}]":
        if opener == "{":
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, _skip(text, pos) + 1)  # past the colon
            if key == part:
                return pos
        elif index == part:
            return pos
        _, pos = decoder.raw_decode(text, pos)
        pos, index = _skip(text, pos), index + 1
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    raise ValueError(part)


def _impossible_durations(results: Results) -> list[str]:
    """The measured times no clock can give (negative, infinite, NaN): each would read as "within"."""
    m = results.measured
    figures: dict[str, float | None] = {
        "measured.rto_seconds": m.rto_seconds,
        "measured.rpo_seconds": m.rpo_seconds,
        "measured.drill_seconds": m.drill_seconds,
        **{f"measured.components.{n}": v for n, v in m.components.items()},
        **{f"measured.rpo_components.{n}": v for n, v in m.rpo_components.items()},
    }
    return [f"{where} {v!r}" for where, v in figures.items() if v is not None and not (math.isfinite(v) and v >= 0)]


# What each verdict exits with (130: the run was interrupted, drills/runner.py).
_EXIT_CODES = {"pass": (0,), "fail": (1,), "error": (2, 130)}


def _contradiction(results: Results) -> str | None:
    """How the verdict disagrees with the file's own checks and exit code, or None.

    The runner decides the verdict from the checks (drills/runner.py): any error or check
    not run is an error, else any failure a failure, else a pass with at least one check
    that passed. Found by review: a results.json whose checks said "error" or "fail" under
    ``"verdict": "pass"`` rendered a green report, counted as a pass in ``drproof summary``
    and in a fleet; whatever the file claims, a verdict its own checks contradict is refused.
    """
    impossible = _impossible_durations(results)
    if impossible:
        return f"{impossible[0]} is not a duration (a measured time is finite and never negative)"
    allowed = _EXIT_CODES[results.verdict]
    if results.exit_code not in allowed:
        return f"verdict {results.verdict!r} with exit code {results.exit_code} (it exits {' or '.join(map(str, allowed))})"
    if results.verdict == "error":
        return None
    if results.error is not None:
        return f"verdict {results.verdict!r} with a drill error ({results.error.strip()[:120]!r})"
    worse = {"error", "not_run"} | ({"fail"} if results.verdict == "pass" else set())
    bad = [a.id for a in results.assertions if a.status in worse]
    if bad:
        shown = ", ".join(f"{a.id}: {a.status}" for a in results.assertions if a.id in bad[:3])
        return f"verdict {results.verdict!r} but {len(bad)} check(s) say otherwise ({shown})"
    needed = results.verdict  # a failure needs a failed check, a pass a check that passed
    if not any(a.status == needed for a in results.assertions):
        return f"verdict {results.verdict!r} but no check has status {needed!r}"
    declared = {a.status for a in results.assertions if a.id != "timeline"}  # the implicit check: the steps ran
    if declared == {"not_compared"} and results.verdict == "pass":  # a failure stands on its failed timeline
        return f"verdict {results.verdict!r} but every check it declares was not compared"
    return None


# --- JUnit -------------------------------------------------------------------------------

# XML 1.0 cannot carry these at all, not even escaped; a stray control byte in a server's
# error message must not make the whole CI report unparseable.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: object) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def _scope_properties(results: Results) -> list[tuple[str, str]]:
    """What was tested, for CI dashboards that show a suite's properties: real backup or synthetic."""
    scope = results.scope
    if scope is None:
        return []
    facts = [("scope", scope.kind), ("scope_statement", scope.statement)]
    if scope.backup_id is not None:
        facts.append(("backup_id", scope.backup_id))
    if scope.backup_age_seconds is not None:
        facts.append(("backup_age_seconds", f"{scope.backup_age_seconds:.0f}"))
    return facts


def _identity_properties(results: Results) -> list[tuple[str, str]]:
    """Who ran the drill, as CI dashboards list a suite's properties; only what was recorded."""
    ident = getattr(results, "identity", None)
    if ident is None:
        return []
    facts = [
        ("run_by_user", ident.user),
        ("run_by_host", ident.host),
        ("ci_provider", ident.ci_provider),
        ("ci_job_url", ident.ci_job_url),
        ("ci_run_id", ident.ci_run_id),
        ("ci_actor", ident.ci_actor),
        ("git_commit", ident.git_commit),
        ("git_dirty", None if ident.git_dirty is None else str(ident.git_dirty).lower()),
        ("scenario_git_state", ident.scenario_git_state),
        ("operator_display_name", ident.display_name),
    ]
    return [(name, value) for name, value in facts if value is not None]


def _seconds_attr(seconds: float | None) -> str:
    return f"{max(seconds or 0.0, 0.0):.3f}"


def _assertion_seconds(results: Results, assertion: AssertionResult) -> float:
    """Assertions are judged from recorded measurements, so they have no time of their own
    unless the run recorded a check phase under the same name."""
    for phase in results.phases:
        if phase.kind == "check" and phase.name == assertion.id:
            return phase.duration_seconds
    return 0.0


def render_junit(results: Results) -> bytes:
    """Build the JUnit document.

    ``not_run`` becomes an ``<error>`` rather than ``<skipped>``: in drproof a check that
    could not run is never green, and CI systems treat skips as green. For the same
    reason a non-passing verdict with no failing testcase to show for it gets a synthetic
    ``drill`` error, so the suite can never look clean while the drill was not.
    """
    scenario = results.scenario.name
    classname = f"drproof.{scenario}"
    suites = ET.Element("testsuites", {"name": "drproof"})
    suite = ET.SubElement(suites, "testsuite", {"name": _x(scenario)})

    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", results.verdict),
        ("exit_code", str(results.exit_code)),
        ("runtime", results.runtime.get("runtime") or results.runtime.get("name") or "unknown"),
        (
            "measured_rto_seconds",
            "not measured" if results.measured.rto_seconds is None else f"{results.measured.rto_seconds:.3f}",
        ),
        (
            "objective_rto_seconds",
            "none" if results.objectives.rto_seconds is None else f"{results.objectives.rto_seconds:.3f}",
        ),
        ("drproof_version", results.drproof_version),
        ("scenario_file", results.scenario.file),
        ("scenario_sha256", results.scenario.sha256),
        *_scope_properties(results),
        *_identity_properties(results),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": _x(value)})

    tests = failures = errors = skipped = 0
    for assertion in results.assertions:
        tests += 1
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": _x(classname),
                "name": _x(assertion.id),
                "time": _seconds_attr(_assertion_seconds(results, assertion)),
            },
        )
        details = "\n".join(assertion.findings)
        if assertion.status == "fail":
            failures += 1
            element = ET.SubElement(case, "failure", {"message": _x(assertion.summary), "type": _x(assertion.name)})
        elif assertion.status == "error":
            errors += 1
            element = ET.SubElement(case, "error", {"message": _x(assertion.summary), "type": _x(assertion.name)})
        elif assertion.status == "not_run":
            errors += 1
            element = ET.SubElement(case, "error", {"message": _x(f"not run: {assertion.summary}"), "type": "not_run"})
        elif assertion.status == "not_compared":
            # Not a failure, and never a plain pass: CI shows it as skipped, with why.
            skipped += 1
            why = assertion.summary
            element = ET.SubElement(
                case, "skipped", {"message": _x(why if "not compared" in why else f"not compared: {why}")}
            )
        else:
            continue
        if details:
            element.text = _x(details)

    drill_error = results.error
    if drill_error is None and results.verdict != "pass" and failures + errors == 0:
        drill_error = f"verdict is {results.verdict} but no assertion failed; see results.json"
    if drill_error is not None:
        tests += 1
        errors += 1
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": _x(classname), "name": "drill", "time": _seconds_attr(results.measured.drill_seconds)},
        )
        first_line = drill_error.strip().splitlines()[0] if drill_error.strip() else "drill error"
        element = ET.SubElement(case, "error", {"message": _x(first_line), "type": "drill"})
        element.text = _x(drill_error)

    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", _seconds_attr(results.measured.drill_seconds))
    # JUnit's schema wants a zone-less ISO timestamp; the journal is UTC, so say UTC here.
    suite.set("timestamp", view.to_utc(results.started_at).strftime("%Y-%m-%dT%H:%M:%S"))
    suites.set("tests", str(tests))
    suites.set("failures", str(failures))
    suites.set("errors", str(errors))
    suites.set("skipped", str(skipped))
    suites.set("time", _seconds_attr(results.measured.drill_seconds))

    ET.indent(suites)
    document: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(results: Results, path: Path) -> Path:
    """Write the view CI reads, so a failed or unrunnable drill turns the pipeline red."""
    return _atomic_write(path, render_junit(results))


# --- JUnit of a fleet ---------------------------------------------------------------------


@dataclass(frozen=True)
class FleetSuite:
    """One drill of a fleet as the combined JUnit shows it.

    ``results`` is None when the drill wrote none (an invalid scenario, a crash);
    ``problem`` says why the drill is an error beyond what its results record (no results,
    or an exit code that contradicts them), with ``details`` from its output.
    """

    name: str
    file: str
    results: Results | None
    problem: str | None = None
    details: str = ""


def _fleet_suite(drill: FleetSuite) -> ET.Element:
    """The drill's own testsuite, plus an error testcase when the fleet knows of a problem."""
    if drill.results is not None:
        suite = ET.fromstring(render_junit(drill.results)).find("testsuite")
        assert suite is not None  # render_junit always writes exactly one
    else:
        suite = ET.Element("testsuite", {"name": _x(drill.name), "tests": "0", "failures": "0", "errors": "0"})
        suite.set("skipped", "0")
        suite.set("time", "0.000")
        properties = ET.SubElement(suite, "properties")
        for name, value in (("verdict", "error"), ("scenario_file", drill.file)):
            ET.SubElement(properties, "property", {"name": name, "value": _x(value)})
    if drill.problem is not None:
        case = ET.SubElement(
            suite, "testcase", {"classname": _x(f"drproof.{drill.name}"), "name": "drproof", "time": "0.000"}
        )
        element = ET.SubElement(case, "error", {"message": _x(drill.problem), "type": "drproof"})
        element.text = _x(drill.details or drill.problem)
        suite.set("tests", str(int(suite.get("tests", "0")) + 1))
        suite.set("errors", str(int(suite.get("errors", "0")) + 1))
    return suite


def render_fleet_junit(drills: Iterable[FleetSuite]) -> bytes:
    """One JUnit document for a whole fleet: one testsuite per drill, totals on the root.

    A drill that could not run still gets a suite with an error, so CI counts every drill
    of the fleet and none disappears from the totals.
    """
    root = ET.Element("testsuites", {"name": "drproof fleet"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for drill in drills:
        suite = _fleet_suite(drill)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        seconds += float(suite.get("time", "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds_attr(seconds))
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_fleet_junit(drills: Iterable[FleetSuite], path: Path) -> Path:
    return _atomic_write(path, render_fleet_junit(drills))


# --- HTML --------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    """One environment per process: Jinja caches compiled templates on it.

    StrictUndefined turns a template typo into an error instead of a silently blank cell,
    which in a compliance report would read as "nothing to declare".
    """
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        seconds=view.format_seconds,
        utc=view.format_utc,
        iso=view.iso_utc,
        bytes=view.format_bytes,
        digest=view.short_digest,
        json=view.as_json,
        plain=view.plain,
        items_sorted=view.mapping_items,
    )
    env.globals["component_content"] = view.component_content
    return env


def render_html(results: Results, evidence: EvidenceView | None = None) -> str:
    """Render the auditor's report; exposed separately so callers can preview or test it.

    ``evidence`` says what is known of the directory's signature and sign-off when the
    page is rendered (see :mod:`reports.evidence_view`); None renders no such section.
    """
    template = _environment().get_template(TEMPLATE)
    context: dict[str, Any] = {
        "results": results,
        "evidence": evidence,
        "title": str(results.report.get("title") or f"Disaster-recovery drill: {results.scenario.name}"),
        "operator": results.report.get("operator"),
        "runtime_name": results.runtime.get("runtime") or results.runtime.get("name"),
        "rto_assertion": view.rto_assertion(results),
        "rpo_assertion": view.rpo_assertion(results),
        "timeline": view.timeline(results),
        "summary": view.executive_summary(results),
        "identity": view.identity_view(results),
        "chart": view.objective_chart(results),
        "remedies": view.remediation(results),
        # getattr: older results files (and older journal models) have no history at all.
        "trend": view.trend(getattr(results, "history", None)),
        "counts": {
            status: sum(1 for a in results.assertions if a.status == status)
            for status in ("pass", "fail", "error", "not_run", "not_compared")
        },
        "generator_version": DRPROOF_VERSION,
    }
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:  # pragma: no cover - a template bug, not user input
        raise RuntimeError(f"report template {TEMPLATE} is broken: {exc}") from exc


def write_html(results: Results, path: Path, evidence: EvidenceView | None = None) -> Path:
    """Write the self-contained report an SRE hands to an auditor."""
    return _atomic_write(path, render_html(results, evidence).encode("utf-8"))


# --- all ---------------------------------------------------------------------------------

_WRITERS: dict[str, Callable[[Results, Path], Path]] = {"json": write_json, "junit": write_junit, "html": write_html}


def write_all(
    results: Results,
    directory: Path,
    formats: Iterable[str] = ("html", "json", "junit"),
    *,
    evidence: EvidenceView | None = None,
) -> dict[str, Path]:
    """Write the requested reports into ``directory`` under their fixed names.

    Formats are validated before anything is written so a typo on the command line does
    not leave a partial set of reports behind.
    """
    requested = [formats] if isinstance(formats, str) else list(formats)
    unknown = sorted({f for f in requested if f not in _WRITERS})
    if unknown:
        raise ConfigError(
            f"unknown report format{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(sorted(_WRITERS))}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in FORMATS:
        if fmt == "html" and fmt in requested:
            written[fmt] = write_html(results, directory / FILENAMES[fmt], evidence)
        elif fmt in requested:
            written[fmt] = _WRITERS[fmt](results, directory / FILENAMES[fmt])
    return {fmt: written[fmt] for fmt in dict.fromkeys(requested)}
