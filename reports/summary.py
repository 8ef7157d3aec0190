"""One index page over many drill reports: ``drproof summary DIR... --out FILE``.

A month of scheduled drills leaves a directory per run; an auditor wants one page that
says which scenarios ran when, how each ended and how its RTO and RPO compared with the
objectives, with a link into each full report. The page is rendered only from the
results.json files found, like every other report, and is self-contained (inline CSS, no
scripts, no fetched assets) so it can be archived or mailed as it is.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine import __version__ as DRPROOF_VERSION
from engine.errors import ConfigError
from engine.journal import Results
from reports.evidence_view import EvidenceView, from_directory
from reports.writers import FILENAMES, load_results

TEMPLATE = "summary.html.j2"


@dataclass(frozen=True)
class Entry:
    """One drill as the index lists it."""

    results: Results
    report_href: str | None  # relative to the index page; None when the run wrote no report.html
    results_href: str
    evidence: EvidenceView | None = None  # its signature and sign-off, verified when keys were given


@dataclass
class SummaryPage:
    entries: list[Entry] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    # Drills that left no results.json to list (an invalid scenario in a fleet, a crash):
    # named on the page so a drill that could not run never just goes missing from it.
    not_run: list[str] = field(default_factory=list)


def find_results(directories: Iterable[Path]) -> list[Path]:
    """Every results.json under the directories (a directory may itself be one report)."""
    found: set[Path] = set()
    for directory in directories:
        if not directory.is_dir():
            raise ConfigError(f"{directory}: not a directory of drill reports")
        found.update(p.resolve() for p in directory.rglob(FILENAMES["json"]) if p.is_file())
    return sorted(found)


def _href(target: Path, page_dir: Path) -> str:
    """A link that still works when the index and the reports are moved together."""
    return Path(os.path.relpath(target, page_dir)).as_posix()


def collect(directories: Iterable[Path], out: Path, keys: Sequence[Ed25519PublicKey] = ()) -> SummaryPage:
    """Load the runs, newest first; an unreadable results.json is listed, not fatal."""
    page = SummaryPage()
    page_dir = out.resolve().parent
    for path in find_results(directories):
        try:
            results = load_results(path)
        except ConfigError as exc:
            page.unreadable.append(str(exc))
            continue
        html = path.parent / FILENAMES["html"]
        page.entries.append(
            Entry(
                results=results,
                report_href=_href(html, page_dir) if html.is_file() else None,
                results_href=_href(path, page_dir),
                evidence=from_directory(path.parent, keys),
            )
        )
    page.entries.sort(key=lambda e: e.results.started_at, reverse=True)
    return page


@dataclass(frozen=True)
class Coverage:
    """Controls (rows) against scenarios (columns): each scenario's newest run decides its cell."""

    scenarios: list[str]
    rows: list[tuple[str, str, list[str | None]]]  # control id, title, status per scenario (None: not declared)


def coverage(page: SummaryPage) -> Coverage:
    """Which scenario evidences which control, from the results alone.

    An auditor asks per control, not per drill: "which of this month's drills prove
    CP-9(1), and did they pass?" A control no scenario declares does not appear.
    """
    newest: dict[str, Entry] = {}
    for entry in page.entries:  # newest first
        newest.setdefault(entry.results.scenario.name, entry)
    scenarios = sorted(newest)
    titles: dict[str, str] = {}
    status: dict[tuple[str, str], str] = {}
    for name, entry in newest.items():
        for control in getattr(entry.results, "controls", []):
            titles.setdefault(control.id, control.title)
            # An altered record evidences nothing, whatever it claims (see shown_verdict).
            status[(control.id, name)] = "unproven" if unproven(entry) else str(control.status)
    rows = [(cid, titles[cid], [status.get((cid, s)) for s in scenarios]) for cid in sorted(titles)]
    return Coverage(scenarios=scenarios, rows=rows)


@dataclass(frozen=True)
class SystemStatus:
    """One system's restore tests: the newest run, and the newest that passed (None: never)."""

    system: str  # "shop-db (postgres) from local /backups/shop"
    newest: Entry
    last_success: Entry | None


def unproven(entry: Entry) -> bool:
    """Verification showed this run's results.json is not the file that was signed."""
    return entry.evidence is not None and entry.evidence.results_intact is False


def shown_verdict(entry: Entry) -> str:
    """The verdict the page counts: a record whose signature shows it was altered proves nothing.

    Found by review: a signed results.json rewritten from fail to pass was listed and counted
    as a PASS (beside a red "NOT intact"), and as a system's last successful restore test.
    """
    return "error" if unproven(entry) else entry.results.verdict


def restore_test_systems(page: SummaryPage) -> list[SystemStatus]:
    """Per system, the last successful restore test of its real backups.

    What an auditor asks of a backup programme is "when did each system's backup last
    restore?", not which scenario file ran. Synthetic drills are not restore tests of real
    backups and are left out; a system whose tests never passed shows its newest run.
    """
    newest: dict[str, Entry] = {}
    success: dict[str, Entry] = {}
    for entry in page.entries:  # newest first
        scope = entry.results.scope
        if scope is None or scope.kind != "restore-test":
            continue
        for system in scope.systems:
            key = f"{system} from {scope.repository or 'an unnamed repository'}"
            newest.setdefault(key, entry)
            if shown_verdict(entry) == "pass":
                success.setdefault(key, entry)
    return [SystemStatus(key, newest[key], success.get(key)) for key in sorted(newest)]


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def render_summary(page: SummaryPage, title: str = "drproof drills") -> str:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    counts = {v: sum(1 for e in page.entries if shown_verdict(e) == v) for v in ("pass", "fail", "error")}
    # A run that wrote no results, or results that cannot be read, is an error: found by
    # review, a truncated results.json was left out of the count ("1 drills: 1 passed").
    counts["error"] += len(page.not_run) + len(page.unreadable)
    return env.get_template(TEMPLATE).render(
        unproven=unproven,
        title=title,
        page=page,
        counts=counts,
        coverage=coverage(page),
        systems=restore_test_systems(page),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        version=DRPROOF_VERSION,
    )


def write_summary(
    directories: Iterable[Path], out: Path, keys: Sequence[Ed25519PublicKey] = (), not_run: Sequence[str] = ()
) -> SummaryPage:
    """Render and write the index atomically, so a reader never sees half a page.

    ``not_run`` names drills that were meant to run but wrote no results (with why); the
    page lists them and counts them as errors.
    """
    page = collect(directories, out, keys)
    page.not_run.extend(not_run)
    text = render_summary(page)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{out}: cannot write the summary page: {exc.strerror or exc}") from None
    return page
