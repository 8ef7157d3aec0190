"""The ``drproof`` command.

Exit codes are part of the interface (CI gates on them): 0 every assertion passed, 1 an
assertion failed, 2 the input was invalid or the drill could not run, 130 interrupted.
Domain errors are printed as one clear message; any other exception is a bug in drproof
and is printed with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, cast

from engine import __version__
from engine.errors import BackupFindings, ConfigError, DrproofError, IntegrityError, ValidationFailed
from engine.redaction import redact

if TYPE_CHECKING:
    # Imported where used: `validate`, `schema` and `--help` need none of them, and they
    # are a large part of a start-up that the 3x-of-an-empty-interpreter target counts.
    from rich.console import Console

    from drills.progress import StepDisplay
    from engine.audit import AuditLog, Event
    from engine.chain import PublishedRecord
    from engine.journal import Phase, Results

_STATUS_STYLE = {"ok": "green", "refused": "yellow", "failed": "red", "error": "bold red", "skipped": "dim"}
_VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}
DEFAULT_HISTORY = "drproof-history.sqlite"


# Two colons around a word: what rich may read as an emoji code (`:smile:`) and replace.
_EMOJI_LIKE = re.compile(r":\S*?:")


class _Console:
    """rich's Console, made the first time something is printed through it.

    rich's console is some 40 modules, a twentieth of a second of `drproof validate`, which
    prints one plain line per valid file, and `drproof schema`, which writes JSON itself. A
    line rich would print exactly as it is (printable, no `:name:`) goes straight to the file,
    flushed as rich flushes; anything else, and every other use, goes through rich.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)  # as _consoles makes them
        return self._console

    @property
    def file(self) -> IO[str]:
        if self._console is not None:
            return self._console.file
        return sys.stderr if self._stderr else sys.stdout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rich(), name)

    def plain_line(self, text: str) -> None:
        """What ``print(text, highlight=False, markup=False)`` writes, without rich where rich changes nothing."""
        file = self.file
        if self._console is None and file is not None and text.isprintable() and _EMOJI_LIKE.search(text) is None:
            file.write(text + "\n")
            file.flush()
        else:
            self._rich().print(text, highlight=False, markup=False)


def _consoles(lazy: bool) -> tuple[Console, Console]:
    """stdout's and stderr's consoles; for `validate` and `schema`, made only if rich is needed."""
    if lazy:
        return cast("Console", _Console()), cast("Console", _Console(stderr=True))
    from rich.console import Console

    # soft_wrap: a `file:line:col: ...` problem must stay on one line in pipes and CI logs.
    return Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)


def _plain_line(console: Console, text: str) -> None:
    if isinstance(console, _Console):
        console.plain_line(text)
    else:
        console.print(text, highlight=False, markup=False)


def escape(text: str) -> str:
    """Rich's markup escaping, with rich imported only by the commands that print markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drproof", description="Declarative disaster-recovery drills.")
    p.add_argument("--version", action="version", version=f"drproof {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a drill scenario (or a fleet of them) and write its reports")
    run.add_argument(
        "scenario",
        type=Path,
        nargs="+",
        metavar="SCENARIO",
        help="a scenario file; several files or directories run a fleet (docs/scale.md)",
    )
    run.add_argument(
        "--parallel",
        type=_positive,
        metavar="N",
        help="run the scenarios as a fleet, N at a time, each in its own report subdirectory, and print a scorecard",
    )
    run.add_argument("--runtime", help="override stack.runtime (e.g. local)")
    run.add_argument(
        "--report-dir",
        type=Path,
        help="where to write report.html, results.json, junit.xml (default ./drproof-reports/<scenario>-<UTC time>/); "
        "a fleet writes a subdirectory per scenario there (default ./drproof-reports/fleet-<UTC time>/)",
    )
    run.add_argument("--work-dir", type=Path, help="parent directory for the run's private files (default: temp)")
    run.add_argument("--keep-workdir", action="store_true", help="keep the run's private files for inspection")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    run.add_argument(
        "--json", action="store_true", help="print results.json (a fleet: its scorecard) to stdout instead of progress"
    )
    run.add_argument(
        "--sign-key",
        type=Path,
        metavar="FILE",
        help="sign the report directory with this Ed25519 private key (default: the PEM in $DRPROOF_SIGNING_KEY, if set)",
    )

    run.add_argument("--pdf", action="store_true", help="also write report.pdf (needs WeasyPrint: drproof[pdf])")
    tel = run.add_argument_group("telemetry (docs/ci.md): sent after the reports are written; failures only warn")
    tel.add_argument("--metrics-textfile", type=Path, metavar="FILE", help="write Prometheus metrics (node_exporter textfile collector)")
    tel.add_argument("--pushgateway", metavar="URL", help="push Prometheus metrics to this Pushgateway (no credentials in the URL)")
    tel.add_argument("--webhook-url-env", metavar="NAME", help="POST the JSON event to the URL held in this environment variable")
    tel.add_argument(
        "--webhook-on", choices=["always", "failure"], default="always", help="send the webhook on every run or only when it did not pass"
    )
    tel.add_argument("--event-file", type=Path, metavar="FILE", help="write the JSON event (schema drproof.drill.v1) to FILE")
    run.add_argument(
        "--history",
        type=Path,
        metavar="FILE",
        help="record this run in a SQLite history file and show the trend of earlier runs in the report",
    )
    run.add_argument(
        "--fail-on-regression",
        type=_threshold,
        metavar="PCT",
        help="fail when the RTO grew more than PCT (e.g. 20%%) over the median of the last passing runs, by more "
        "than the floor and than their own spread (needs --history)",
    )
    run.add_argument(
        "--regression-runs",
        type=int,
        default=5,
        metavar="N",
        help="passing runs whose median RTO is the gate's baseline (default 5, at least 3)",
    )
    run.add_argument(
        "--regression-floor",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="RTO changes smaller than this never fail the gate (default 1s)",
    )

    hist = sub.add_parser("history", help="list the runs recorded with --history, newest first")
    hist.add_argument("--history", type=Path, default=Path(DEFAULT_HISTORY), metavar="FILE", help="history file")
    hist.add_argument("--scenario", metavar="NAME", help="only runs of this scenario")
    hist.add_argument("--json", action="store_true", help="machine-readable output")

    summ = sub.add_parser("summary", help="write one index page of every results.json under some directories")
    summ.add_argument("directories", type=Path, nargs="+", metavar="DIR")
    summ.add_argument("--out", type=Path, required=True, metavar="FILE", help="the index HTML file to write")
    summ.add_argument(
        "--public-key",
        type=Path,
        action="append",
        metavar="FILE",
        help="verify each drill's signed evidence and sign-off with this key (repeatable); else shown as claimed",
    )

    val = sub.add_parser("validate", help="check scenario files (and backup-config files) without running them")
    val.add_argument("files", type=Path, nargs="+")

    sch = sub.add_parser("schema", help="print the JSON Schema of scenarios (or of results.json)")
    what = sch.add_mutually_exclusive_group()
    what.add_argument("--results", action="store_true", help="the schema of results.json instead")
    what.add_argument("--backup-config", action="store_true", help="the schema of backup-config.yaml instead")

    bak = sub.add_parser("backup", help="back up a running stack (standalone engine; see backup-config.yaml)")
    bak.add_argument("--config", type=Path, required=True, help="backup-config.yaml")
    bak.add_argument("--components", nargs="+", metavar="NAME", help="only these components (default: all)")
    bak.add_argument("--type", choices=["full", "database-only", "incremental"], default="full")
    bak.add_argument("--label", help="a name for this backup set")
    bak.add_argument("--json", action="store_true", help="print the backup summary as JSON")
    bak.add_argument(
        "--dry-run",
        action="store_true",
        help="check servers, credentials, tools, repository and audit log, and write nothing (exit 0 or 2)",
    )

    rec = sub.add_parser("recovery", help="list, verify and restore backups (standalone engine)")
    rsub = rec.add_subparsers(dest="recovery_command", required=True)
    for name, text in (
        ("list", "list complete backup sets"),
        ("verify", "re-hash every artifact of a backup"),
        ("restore", "restore components from a backup"),
        ("prune", "delete backups the retention policy does not keep"),
        ("copy", "copy a backup to the offsite repository (or back with --from-offsite)"),
    ):
        r = rsub.add_parser(name, help=text)
        r.add_argument("--config", type=Path, help="backup-config.yaml (required for restore)")
        r.add_argument("--repository", type=Path, help="repository directory (instead of the config's)")
        r.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "prune":
            r.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")
        if name in ("list", "verify", "restore", "prune"):
            r.add_argument("--offsite", action="store_true", help="use the configuration's offsite repository")
        if name == "copy":
            r.add_argument("--from-offsite", action="store_true", help="copy from offsite into the primary")
        if name not in ("list", "prune"):
            which = r.add_mutually_exclusive_group()
            which.add_argument("--id", help="backup id (default: the latest)")
            which.add_argument("--timestamp", type=_utc, help="the latest backup at or before this ISO time")
        if name == "restore":
            where = r.add_mutually_exclusive_group()
            where.add_argument(
                "--to",
                type=Path,
                metavar="SCRATCH-CONFIG",
                help="restore into the servers and directories this other backup-config names (a sandbox)",
            )
            where.add_argument(
                "--in-place", action="store_true", help="replace the live data the configuration names (asks first)"
            )
            r.add_argument("--yes", action="store_true", help="confirm --in-place without asking (for scripts)")
            r.add_argument(
                "--accept-unhealthy",
                action="store_true",
                help="restore in place a set whose source failed its health check when it was backed up",
            )
            r.add_argument(
                "--dry-run",
                action="store_true",
                help="prove the backup and show what would be replaced; change nothing",
            )
            r.add_argument("--components", nargs="+", metavar="NAME", help="only these (default: all in the backup)")
            r.add_argument(
                "--point-in-time",
                type=_point_in_time,
                metavar="TIME|latest",
                help="postgres-physical only: replay archived WAL to this ISO time, or to the newest WAL there is",
            )

    doc = sub.add_parser("doctor", help="check that this machine can run drills, with a fix for each problem")
    doc.add_argument("--runtime", choices=["local", "docker"], help="also require what this runtime needs")

    cln = sub.add_parser(
        "clean",
        help="remove what crashed runs left: server processes of the local runtime and their directories in the "
        "system temp directory, Docker containers, volumes "
        "and networks, or (with --repository) half-written backup sets",
    )
    cln.add_argument(
        "--runtime",
        choices=["local", "docker"],
        help="only this runtime's leftovers (default: every runtime's; one that cannot be asked is reported)",
    )
    cln.add_argument("--all", action="store_true", help="also remove those of runs that are still going")
    cln.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    cln.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="instead of Docker: remove the sets a killed backup left in this local repository's .staging",
    )

    rep = sub.add_parser("report", help="re-render report.html (and junit.xml) from a results.json")
    rep.add_argument("results", type=Path)
    rep.add_argument("--out", type=Path, help="directory to write to (default: beside results.json, unless signed)")
    rep.add_argument("--pdf", action="store_true", help="also write report.pdf (needs WeasyPrint: drproof[pdf])")
    rep.add_argument(
        "--public-key",
        type=Path,
        action="append",
        metavar="FILE",
        help="verify the signed evidence beside results.json and show the result (repeat for a reviewer's key)",
    )

    keys = sub.add_parser("keys", help="manage the Ed25519 key pairs that sign report directories and backup manifests")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kinit = ksub.add_parser("init", help="generate a signing key pair (never overwrites an existing key)")
    kinit.add_argument("--private", type=Path, default=Path("drproof-signing.key"), help="private key file (0600)")
    kinit.add_argument("--public", type=Path, default=Path("drproof-signing.pub"), help="public key file (0644)")
    kssh = ksub.add_parser(
        "allowed-signers", help="print the allowed_signers line that lets `ssh-keygen -Y verify` check evidence"
    )
    kssh.add_argument("public_key", type=Path, metavar="PUBLIC-KEY", help="the public key PEM from keys init")
    kssh.add_argument("--principal", default="drproof", help="the name to verify as (ssh-keygen -I), default drproof")

    evi = sub.add_parser("evidence", help="verify the signed evidence of a report directory, or sign it off")
    esub = evi.add_subparsers(dest="evidence_command", required=True)
    ever = esub.add_parser("verify", help="check evidence.sig, then every file listed in evidence.json, then reviews")
    ever.add_argument("directory", type=Path)
    ever.add_argument(
        "--public-key",
        type=Path,
        required=True,
        action="append",
        metavar="FILE",
        help="a trusted signer's public key PEM (repeat for a reviewer's key)",
    )
    ever.add_argument("--json", action="store_true", help="print the verdict as JSON")
    eoff = esub.add_parser("sign-off", help="append a reviewer's signed decision on verified evidence")
    eoff.add_argument("directory", type=Path)
    eoff.add_argument("--reviewer", required=True, help="who reviewed the evidence (a name, shown in reports)")
    eoff.add_argument("--decision", required=True, choices=["accepted", "rejected", "action-required"])
    eoff.add_argument("--note", help="why, or what must change")
    eoff.add_argument("--ticket", help="the ticket tracking a corrective action, e.g. SEC-123")
    eoff.add_argument(
        "--sign-key",
        type=Path,
        metavar="FILE",
        help="the reviewer's Ed25519 private key (default: the PEM in $DRPROOF_SIGNING_KEY)",
    )
    eoff.add_argument(
        "--public-key",
        type=Path,
        required=True,
        metavar="FILE",
        help="the drill signer's public key: the evidence is verified before it is signed off",
    )
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _threshold(text: str) -> float:
    from drills.history import parse_threshold

    try:
        return parse_threshold(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    from drills.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _point_in_time(text: str) -> datetime | str:
    return "latest" if text == "latest" else _utc(text)


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r} (e.g. 2026-11-24T02:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# The live step line of the command running now (set by ``main``); standalone
# operations report each step through it.
_display: StepDisplay | None = None


def _progress(err: Console, quiet: bool) -> Any:
    def report(message: str) -> None:
        if quiet:
            return
        if _display is not None:
            _display.begin(message)
        else:
            err.print(f"[dim]…[/dim] {escape(message)}", highlight=False)

    return report


def _cmd_backup(args: argparse.Namespace, out: Console, err: Console) -> int:
    from drills import standalone
    from drills.backup_config import load_config, unknown_components

    config = load_config(args.config)
    if args.components:
        unknown_components(config, args.components, str(args.config))
    if args.dry_run:
        return _backup_dry_run(args, config, out, err)
    started = time.monotonic()
    summary: dict[str, Any] | None = None
    failure: str | None = None
    try:
        audit = standalone.audit_log(config, None)
        audit.check()  # an unwritable audit log stops the run before it changes anything
        summary = _run_backup(args, config, err, audit)
        if summary.get("findings"):
            raise BackupFindings(f"backup {summary['id']} is complete, but: " + "; ".join(summary["findings"]))
        return 0
    except DrproofError as exc:
        failure = str(exc)
        raise
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _report_backup(config, summary, failure, time.monotonic() - started, err)


def _backup_dry_run(args: argparse.Namespace, config: Any, out: Console, err: Console) -> int:
    """What a backup would need, checked: no set, no audit line, no webhook."""
    from drills.preflight import dry_run

    checks = dry_run(config, args.components)
    if args.json:
        sys.stdout.write(json.dumps([c.__dict__ for c in checks], indent=2) + "\n")
    else:
        for c in checks:
            style = "green" if c.ok else "red"
            err.print(f"[{style}]{'ok' if c.ok else 'FAIL':>5}[/{style}] {escape(c.what)}: {escape(c.detail)}", highlight=False)
        err.print("dry run: nothing was backed up or written", highlight=False, markup=False)
    return 0 if all(c.ok for c in checks) else 2


def _run_backup(args: argparse.Namespace, config: Any, err: Console, audit: AuditLog) -> dict[str, Any]:
    from drills import standalone

    manifest = standalone.take_backup(
        config, args.components, args.type, args.label, _progress(err, args.json), audit=audit
    )
    summary = standalone.summary(manifest)
    findings = standalone.limits(manifest)
    if findings:  # said before the offsite copy and retention, which go on: the set is good
        summary["findings"] = findings
        for line in findings:
            err.print(f"[yellow]warning[/yellow]: {escape(line)}", highlight=False)
    if config.offsite is not None:
        try:
            standalone.copy(config, manifest.id, True, _progress(err, args.json), audit=audit)
        except DrproofError as exc:
            sys.stdout.write(manifest.id + "\n")
            raise DrproofError(
                f"backup {manifest.id} is complete in the primary repository, but the offsite copy failed: {exc}"
            ) from exc
    if config.retention is not None:
        try:
            pruned = standalone.prune(
                config, dry_run=False, progress=_progress(err, args.json), audit=audit, fresh=[manifest.id]
            )
        except IntegrityError as exc:
            sys.stdout.write(manifest.id + "\n")
            raise IntegrityError(f"backup {manifest.id} is complete and verified, but retention {exc}") from exc
        if pruned.deleted and not args.json:
            err.print(f"retention: deleted {len(pruned.deleted)} old backup(s)", highlight=False)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        err.print(
            f"[green]backup complete[/green]: {len(summary['components'])} components, {summary['artifacts']} "
            f"artifacts, {summary['stored_bytes']} bytes stored",
            highlight=False,
        )
        sys.stdout.write(manifest.id + "\n")
    _warn_changed_while_archived(manifest, err)
    summary["created_at_epoch"] = manifest.created_at.timestamp()
    return summary


def _warn_changed_while_archived(manifest: Any, err: Console) -> None:
    """Name what did not hold still: the set is consistent, but those files are as read, not as one moment."""
    from engine.components.livechanges import describe

    for comp in manifest.components:
        lines = describe(comp.details)
        if lines:
            err.print(f"[yellow]warning[/yellow]: {comp.name}: entries changed while archived (stored as read):", highlight=False)
            for line in lines:
                err.print(f"  {line}", highlight=False, markup=False)


def _report_backup(
    config: Any, summary: dict[str, Any] | None, failure: str | None, duration: float, err: Console
) -> None:
    """Webhook and metrics after every backup run, successful or not; never fatal."""
    from drills.reporting import notify, write_metrics

    if config.metrics is not None:
        try:
            write_metrics(config.metrics.textfile, summary, failure is None, duration)
        except DrproofError as exc:
            err.print(f"[yellow]warning[/yellow]: {escape(str(exc))}", highlight=False)
    n = config.notifications
    if n is not None and ("failure" if failure else "success") in n.events:
        payload = {
            "event": "backup",
            "status": "failure" if failure else "success",
            "backup": {k: v for k, v in (summary or {}).items() if k != "created_at_epoch"},
            "error": redact(failure) if failure else None,
            "duration_seconds": round(duration, 3),
        }
        problem = notify(n.webhook_url_env, payload)
        if problem:
            err.print(f"[yellow]warning[/yellow]: notification not sent: {escape(problem)}", highlight=False)


def _cmd_recovery(args: argparse.Namespace, out: Console, err: Console) -> int:
    from drills import standalone
    from drills.backup_config import load_config

    config = load_config(args.config) if args.config else None
    audit = standalone.audit_log(config, args.repository)
    if args.recovery_command != "list":
        audit.check()  # an unwritable audit log stops the command before it changes anything
    if args.recovery_command == "copy":
        if config is None:
            raise ConfigError("recovery copy needs --config: it names both repositories")
        manifest = standalone.copy(config, args.id, not args.from_offsite, _progress(err, args.json), audit=audit)
        sys.stdout.write(manifest.id + "\n")
        return 0
    offsite = getattr(args, "offsite", False)
    repo = standalone.repository(config, args.repository, offsite=offsite)
    repo_where = standalone.where(config, args.repository, offsite=offsite)
    if args.recovery_command == "list":
        return _list(args, repo, out, err, _published(audit, repo_where, err))
    if args.recovery_command == "prune":
        if config is None:
            raise ConfigError("recovery prune needs --config: the retention policy is in it")
        result = standalone.prune(config, args.dry_run, _progress(err, args.json), audit=audit, offsite=offsite)
        if args.json:
            sys.stdout.write(json.dumps(result.__dict__, indent=2) + "\n")
        else:
            verb = "would delete" if args.dry_run else "deleted"
            for k in result.kept:
                out.print(f"keep   {k['id']}  {k['created_at']}  ({', '.join(k['reasons'])})", markup=False)
            for gone in result.deleted:
                left = gone.get("storage_left") or []
                note = f"  (storage not freed: {len(left)} version(s) left)" if left else ""
                out.print(f"{verb:<6} {gone['id']}  {gone['created_at']}{note}", markup=False)
        return 0
    if args.recovery_command == "restore" and config is None:
        raise ConfigError("recovery restore needs --config: it says where each component is restored to")
    event: Event = "verify" if args.recovery_command == "verify" else "restore"
    # Shared from choosing the set to the end: a concurrent prune cannot delete what is read.
    reference = standalone.offsite_reference(config, offsite) if args.repository is None else None
    with repo.lock(exclusive=False, operation=f"recovery {args.recovery_command}"):
        manifest = standalone.find_audited(repo, args.id, args.timestamp, audit, event, repo_where, reference)
        if args.recovery_command == "verify":
            return _verify(args, repo, manifest, repo_where, audit, out, err, reference)
        assert config is not None
        return _restore(args, config, repo, repo_where, manifest, audit, err)


def _published(audit: AuditLog, repo_where: str, err: Console) -> PublishedRecord | None:
    """What the audit log says was backed up here; listing needs no audit log, so one it cannot read is said."""
    from engine.audit import AuditError

    try:
        return audit.published(repo_where)
    except AuditError as exc:
        err.print(f"warning: {exc}; a newest set deleted whole would go unseen", highlight=False, markup=False)
        return None


def _list(
    args: argparse.Namespace, repo: Any, out: Console, err: Console, published: PublishedRecord | None = None
) -> int:
    """Every set in the chain's order, then every finding by set; exit 1 when a set is damaged or in doubt.

    A sound set whose objective is already lost (a WAL gap before it: ``limits``) is marked
    and its findings said, as ``backup`` and ``verify`` say them; it is not damaged, so it
    alone does not make the inventory exit 1.
    """
    from drills import standalone
    from engine.chain import NOT_PROVEN, QUIET_KINDS, UNTRUSTING, missing_from_record

    found = repo.chain_audit()  # every manifest read once, one at a time, without its fingerprints
    if published is not None:  # the newest set deleted whole: only the audit log still names it
        found.findings += missing_from_record(found, published)
    sets = [
        standalone.summary(found.sets[i].summary)
        | _chain_facts(found, i)
        | {"findings": standalone.limits(found.sets[i].summary)}
        for i in found.order
    ]
    broken = {f.backup_id: f.detail for f in found.findings if f.kind in UNTRUSTING}
    findings = [{"backup": f.backup_id, "kind": f.kind, "detail": f.detail} for f in found.findings]
    statement = None if found.verifies else f"integrity {NOT_PROVEN}"
    serious = [f for f in found.findings if f.kind not in QUIET_KINDS]
    if args.json:
        # Found by review: a set's own findings (a WAL hole, unhealthy at backup) were only
        # inside its entry, and the top-level `findings` (the chain's) stayed empty, so a
        # script reading the top level saw nothing. They are said there too.
        with_findings = [{"backup": s["id"], "findings": s["findings"]} for s in sets if s["findings"]]
        body = {
            "needs_attention": bool(broken or serious or with_findings),
            "sets_with_findings": with_findings,
            "backups": sets,
            "unreadable": broken,
            "findings": findings,
            "notes": found.notes,
            "integrity": statement,
            "repository_id": found.identity,  # whose sets these are (None: no set names one, or undecided)
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        for s in sets:
            out.print(
                f"{s['id']}  {s['created_at']}  #{s['sequence'] or '-':<5} {s['type']:<13} {','.join(s['components'])}  "
                f"{s['stored_bytes']} bytes" + (f"  ({s['label']})" if s["label"] else "")
                + (f"  [{len(s['findings'])} finding(s)]" if s["findings"] else ""),
                highlight=False,
                markup=False,
            )
        for s in sets:  # a sound set whose objective is already lost (a WAL gap before it): said, exit unchanged
            for line in s["findings"]:
                err.print(f"FINDING {s['id']}: {line}", highlight=False, markup=False)
        for f in found.findings:
            err.print(f"{f.kind.upper()} {f}", highlight=False, markup=False)
        if statement:
            err.print(f"note: {statement}", highlight=False, markup=False)
    return 0 if not broken and not serious else 1


def _chain_facts(found: Any, backup_id: str) -> dict[str, Any]:
    st = found.sets[backup_id]
    check = st.signature
    return {
        "sequence": st.summary.sequence,
        "repository_id": st.summary.repository_id,
        "manifest_sha256": st.sha256,
        "signature": None if check is None else {"status": check.status, "key": check.key_fingerprint},
    }


def _verify(
    args: argparse.Namespace,
    repo: Any,
    manifest: Any,
    repo_where: str,
    audit: AuditLog,
    out: Console,
    err: Console,
    reference: Any = None,
) -> int:
    from drills import standalone

    report = standalone.verify(repo, manifest, repo_where, audit, reference)
    if args.json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        for c in report.checks:
            mark = "ok     " if c.ok else "DAMAGED"
            out.print(
                f"{mark} {c.artifact} ({c.expected_size} bytes){'' if c.ok else ': ' + str(c.problem)}",
                highlight=False,
                markup=False,
            )
        for finding in report.findings:
            out.print(f"NOT RESTORABLE {finding}", highlight=False, markup=False)
        for line in report.limits:
            out.print(f"FINDING {line}", highlight=False, markup=False)
        for line in report.trust:
            out.print(f"chain  {line}", highlight=False, markup=False)
        unproven = [c for c in report.checks if c.ok and not c.content_proven]
        if unproven:
            err.print(
                f"note: {len(unproven)} artifact(s) checked by their stored bytes only: the set is encrypted and "
                "no (or another) key is configured, so their content could not be decoded",
                highlight=False,
                markup=False,
            )
        err.print(f"backup {manifest.id}: {_verdict(report)}", highlight=False, markup=False)
    return 0 if report.ok and not report.limits else 1


def _verdict(report: Any) -> str:
    if report.ok:
        unsigned = any(line.startswith("integrity NOT proven") for line in report.trust)
        verdict = "verified" + (
            " (its artifacts; integrity against a repository writer NOT proven: unsigned)" if unsigned else ""
        )
        if report.limits:
            verdict += f", with {len(report.limits)} finding(s): " + "; ".join(report.limits)
        return verdict
    return "; ".join(
        ([f"{len(report.damaged)} damaged artifact(s)"] if report.damaged else [])
        + (["not restorable"] if report.findings else [])
        + (["NOT TRUSTED (see the chain lines)"] if not report.damaged and not report.findings else [])
    )


def _restore(
    args: argparse.Namespace,
    config: Any,
    repo: Any,
    repo_where: str,
    manifest: Any,
    audit: AuditLog,
    err: Console,
) -> int:
    from drills import recovery
    from drills.backup_config import RestoreTargets, load_config, unknown_components

    targets = load_config(args.to, RestoreTargets) if args.to else None
    if args.components:
        unknown_components(targets or config, args.components, str(args.to or args.config))
    request = recovery.Request.build(
        config,
        manifest,
        args.components,
        targets=targets,
        in_place=args.in_place,
        point_in_time=args.point_in_time,
        accept_unhealthy=args.accept_unhealthy,
    )
    progress = _progress(err, args.json)
    if not args.dry_run:
        recovery.check_confirmable(request, args.yes)
    if args.dry_run or (args.in_place and not args.yes):
        steps = recovery.plan(request, repo, progress)
        if args.dry_run:
            return _print_plan(args, manifest, request, steps, err)
        with _display.paused() if _display is not None else contextlib.nullcontext():
            recovery.confirm(request, steps, err, args.yes)
    result = recovery.restore(request, repo, progress, audit=audit, repo_where=repo_where)
    outcomes = result.outcomes
    if args.json:
        body = {
            "backup": manifest.id,
            "components": [o.__dict__ for o in outcomes],
            "hooks": [{**h.__dict__, "ok": h.ok} for h in result.hooks],
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        for h in result.hooks:
            style = "green" if h.ok else "red"
            err.print(f"[{style}]{'hook ok' if h.ok else 'hook failed':>8}[/{style}] {escape(h.describe())}", highlight=False)
        for o in outcomes:
            style = {"restored": "green", "refused": "yellow", "failed": "red"}[o.status]
            err.print(
                f"[{style}]{o.status:>8}[/{style}] {escape(o.component)}: {escape(o.detail)}; fidelity: {o.fidelity}",
                highlight=False,
            )
            for d in o.differences[:10]:
                err.print(f"           - {escape(d)}", highlight=False)
            for note in o.notes:
                err.print(f"           note: {escape(note)}", highlight=False)
    return recovery.exit_code(result)


def _print_plan(args: argparse.Namespace, manifest: Any, request: Any, steps: list[Any], err: Console) -> int:
    """A dry run's account; exit 1 if a restore would be refused (a damaged artifact), else 0."""
    damaged = any(not s.proof.startswith("every check") or s.backup_holds.startswith("no fingerprint") for s in steps)
    if args.json:
        body = {
            "backup": manifest.id,
            "in_place": request.in_place,
            "dry_run": True,
            "components": [s.__dict__ for s in steps],
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        verb = "replace LIVE data" if request.in_place else "restore into the --to targets"
        err.print(f"dry run: backup {manifest.id} would {verb}; nothing was changed", highlight=False, markup=False)
        for step in steps:
            err.print(step.describe(), highlight=False, markup=False)
    return 1 if damaged else 0


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _default_report_dir(name: str) -> Path:
    """A new directory per run: a second run of the scenario within the same second gets ``-2``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path("drproof-reports") / f"{name}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# What a run may write into its report directory besides results.json (reports/writers.py
# FILENAMES, the PDF); listed here so that checking a directory imports nothing heavy.
_OPTIONAL_OUTPUTS = ("report.html", "junit.xml", "report.pdf")


def _refuse_signed_evidence(report_dir: Path, signing: bool) -> None:
    """Refuse, before any drill runs, an unsigned run into a directory that holds signed evidence.

    Found by review: such a run replaced the reports and left evidence.json and its
    signatures behind, so the page listing it said the new, unsigned files were "signed by
    key ..." (NOT verified); `drproof report` already refuses to change signed files. A
    signing run replaces the evidence with its own, so re-running a signed schedule into
    the same directory still works.
    """
    if not signing and (report_dir / "evidence.json").exists():
        raise ConfigError(
            f"{report_dir} holds the signed evidence of an earlier run: writing this unsigned run's reports "
            "there would leave that signature claiming them; give a new --report-dir (the default is a new "
            "directory per run) or sign this run too (--sign-key)"
        )


def _remove_stale_outputs(report_dir: Path, written: dict[str, Path]) -> None:
    """Remove what an earlier run wrote into this directory and this run does not replace.

    Found by review: a scenario writing only results.json (``report: {formats: [json]}``)
    into a directory of an earlier passing run left that run's PASS report.html and
    junit.xml beside its own FAIL results.json; CI read the stale junit.xml.
    """
    replaced = {path.name for path in written.values()}
    for name in _OPTIONAL_OUTPUTS:
        if name not in replaced:
            (report_dir / name).unlink(missing_ok=True)


def _cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from drills import fleet
    from drills.history import add_trend, earlier_runs, record_run
    from drills.loader import load_scenario
    from drills.progress import StepDisplay
    from drills.runner import DrillRunner, Hooks
    from reports import write_all

    if fleet.is_fleet(args.scenario, args.parallel):
        from drills.fleet_command import run_fleet

        return run_fleet(args, out, err)
    args.scenario = args.scenario[0]
    loaded = load_scenario(args.scenario)
    from engine.runtime import runtimes

    if args.runtime is not None and args.runtime not in runtimes:
        raise ConfigError(f"--runtime {args.runtime!r} is not available (available: {', '.join(runtimes.names())})")
    if args.fail_on_regression is not None and args.history is None:
        raise ConfigError("--fail-on-regression needs --history FILE: it compares with the runs recorded there")
    _gate(args)  # a gate that cannot work is refused before the drill, not after it
    quiet = args.quiet or args.json
    report_dir = args.report_dir or _default_report_dir(loaded.scenario.name)
    # Loaded before the drill so a missing or unreadable key costs no drill run.
    signing_key = _signing_key(args.sign_key)
    _refuse_signed_evidence(report_dir, signing=signing_key is not None)
    if args.pdf:
        from reports.pdf import check_available

        check_available()  # likewise: no drill is spent when its PDF cannot be made
    if args.pushgateway is not None:
        from drills.reporting import check_pushgateway_url

        check_pushgateway_url(args.pushgateway)
    if args.history is not None:
        _check_history(args.history)  # likewise: a locked or damaged history fails before the drill

    display = StepDisplay(err, quiet)

    def started(name: str) -> None:
        display.begin(name)

    def finished(phase: Phase) -> None:
        style = _STATUS_STYLE.get(phase.status, "")
        detail = f" — {escape(phase.detail)}" if phase.detail and phase.status != "ok" else ""
        display.end(
            f"  [{style}]{phase.status:>7}[/{style}] {escape(phase.name)} "
            f"[dim]({phase.duration_seconds:.2f} s)[/dim]{detail}",
            phase.name,
        )

    runner = DrillRunner(
        loaded,
        runtime=args.runtime,
        work_root=args.work_dir,
        keep_workdir=args.keep_workdir,
        hooks=Hooks(phase_started=started, phase_finished=finished),
        history=args.history,
    )
    if not quiet:
        err.print(
            f"[bold]drproof[/bold] running [bold]{loaded.scenario.name}[/bold] on the {runner.runtime_name} runtime",
            highlight=False,
        )
    try:
        with display:
            results = runner.run()
        if runner.internal_error:
            err.print(runner.internal_error, highlight=False, markup=False)
    except KeyboardInterrupt:
        # A second Ctrl-C can land while the runner is still tearing down, before it
        # has assembled its partial results: then there is nothing to write.
        partial = getattr(runner, "interrupted_results", None)
        if partial is None:
            err.print("[bold red]interrupted[/bold red] during teardown; no results were written")
            return 130
        _write(partial, report_dir, loaded, write_all)  # no PDF: an interrupted run ends quickly
        err.print(f"[bold red]interrupted[/bold red]: cleaned up; partial results in {escape(str(report_dir))}")
        return 130
    if args.history is not None:
        add_trend(results, earlier_runs(args.history, results), _gate(args))
    paths = _write(results, report_dir, loaded, write_all, pdf=args.pdf, signing_key=signing_key)
    if args.history is not None:
        record_run(args.history, results, report_dir, paths.get("json"))
    if args.json:
        out.print_json(json.dumps(results.model_dump(mode="json")))
    _summary(results, paths, err, quiet=args.quiet)
    if signing_key is not None:
        _sign_reports(report_dir, signing_key, err, quiet=quiet)
    _telemetry(args, results, report_dir, paths, signing_key, err)
    return results.exit_code


def _telemetry(
    args: argparse.Namespace, results: Results, report_dir: Path, paths: dict[str, Path], key: Any, err: Console
) -> None:
    """Metrics, the JSON event and the webhook, after the evidence is complete; a failure only warns."""
    import hashlib

    from drills import reporting
    from reports import telemetry

    wanted = args.metrics_textfile or args.pushgateway or args.webhook_url_env or args.event_file
    if not wanted:
        return

    def warn(problem: str) -> None:
        err.print(f"[yellow]warning[/yellow]: {escape(problem)}", highlight=False)

    registry = telemetry.registry(results)
    if args.metrics_textfile is not None:
        try:
            reporting.write_textfile(args.metrics_textfile, registry)
        except DrproofError as exc:
            warn(str(exc))
    if args.pushgateway is not None:
        problem = reporting.push_metrics(args.pushgateway, registry, {"scenario": results.scenario.name})
        if problem:
            warn(f"metrics not pushed: {problem}")
    from engine.evidence import fingerprint

    event = telemetry.event(
        results,
        results_sha256=hashlib.sha256(paths["json"].read_bytes()).hexdigest() if "json" in paths else None,
        report_dir=str(report_dir.resolve()),
        signing_key=fingerprint(key.public_key()) if key is not None else None,
    )
    if args.event_file is not None:
        try:
            reporting.write_event(args.event_file, event)
        except DrproofError as exc:
            warn(str(exc))
    if args.webhook_url_env and (args.webhook_on == "always" or results.verdict != "pass"):
        problem = reporting.notify(args.webhook_url_env, event)
        if problem:
            warn(f"notification not sent: {problem}")


def _check_history(path: Path) -> None:
    """Open the history and read every run, so a damaged row fails before the drill, not after it."""
    from drills.history import open_history

    with open_history(path) as history:
        history.runs()


def _gate(args: argparse.Namespace) -> Any:
    from drills.history import Gate

    return Gate(threshold=args.fail_on_regression, runs=args.regression_runs, floor_seconds=args.regression_floor)


def _cmd_history(args: argparse.Namespace, out: Console, err: Console) -> int:
    from drills.history import open_history

    with open_history(args.history, create=False) as history:
        runs = history.runs(args.scenario)
    if args.json:
        sys.stdout.write(json.dumps([r.as_dict() for r in runs], indent=2) + "\n")
        return 0
    if not runs:
        err.print(f"no runs recorded in {args.history}", highlight=False, markup=False)
    for r in runs:
        rto = f"{r.rto_seconds:.2f} s" if r.rto_seconds is not None else "-"
        rpo = f"{r.rpo_seconds:.2f} s" if r.rpo_seconds is not None else "-"
        out.print(
            f"{r.id:>5}  {r.started_at:%Y-%m-%d %H:%M:%S}Z  {r.scenario}  {r.verdict.upper():<5}  "
            f"RTO {rto}  RPO {rpo}  {r.report_dir}",
            highlight=False,
            markup=False,
        )
    return 0


def _cmd_summary(args: argparse.Namespace, out: Console, err: Console) -> int:
    from engine.evidence import load_public_key
    from reports.summary import write_summary

    keys = [load_public_key(p) for p in args.public_key or []]
    page = write_summary(args.directories, args.out, keys=keys)
    for problem in page.unreadable:
        err.print(f"skipped {problem}", highlight=False, markup=False)
    out.print(f"summary: {args.out} ({len(page.entries)} drills)", highlight=False, markup=False)
    return 0


def _signing_key(path: Path | None) -> Any:
    """The private key to sign reports with, or None when no signing was asked for.

    Signing is asked for by ``--sign-key FILE`` or by a non-empty ``DRPROOF_SIGNING_KEY``
    (the PEM text, as CI secret stores hand it over; a path would put nothing secret in argv
    either, but a variable needs no file on the runner's disk).
    """
    from engine.evidence import KEY_ENV, load_private_key

    if path is None and not os.environ.get(KEY_ENV):
        return None
    return load_private_key(path)


def _sign_reports(report_dir: Path, key: Any, err: Console, quiet: bool) -> None:
    """Sign after the reports are complete; a failure is exit 2, since the evidence asked for is missing."""
    from engine.evidence import EVIDENCE_FILE, sign_directory

    try:
        manifest = sign_directory(report_dir, key)
    except DrproofError as exc:
        raise DrproofError(f"the reports are written but signing them failed, so there is no evidence: {exc}") from None
    if not quiet:
        err.print(
            f"evidence: {len(manifest['files'])} files signed by key {manifest['key_fingerprint']} "
            f"in {report_dir / EVIDENCE_FILE}",
            highlight=False,
            markup=False,
        )


def _cmd_keys(args: argparse.Namespace, out: Console, err: Console) -> int:
    from engine.evidence import PASSPHRASE_ENV, init_keys, load_public_key
    from engine.sshsig import allowed_signers_line

    if args.keys_command == "allowed-signers":
        try:
            line = allowed_signers_line(load_public_key(args.public_key), args.principal)
        except ValueError as exc:
            raise ConfigError(f"--principal: {exc}") from None
        sys.stdout.write(line + "\n")
        return 0
    pair = init_keys(args.private, args.public)
    protection = f"encrypted with ${PASSPHRASE_ENV}" if pair.encrypted else "unencrypted"
    out.print(f"private key: {pair.private_path} (mode 0600, {protection}; keep it secret)", markup=False)
    out.print(f"public key:  {pair.public_path} (mode 0644; give it to whoever verifies)", markup=False)
    out.print(f"fingerprint: {pair.fingerprint}", markup=False)
    out.print(pair.public_path.read_text(encoding="ascii").rstrip("\n"), markup=False, highlight=False)
    # The line's namespace is the evidence one: it lets ssh-keygen check signed reports.
    # Repository manifests signed with the same pair are checked by drproof itself.
    line = allowed_signers_line(load_public_key(pair.public_path))
    out.print(f"allowed_signers line for ssh-keygen -Y verify of signed reports: {line}", markup=False)
    return 0


def _cmd_evidence(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Exit 0 when intact, 1 on any tampering (a verdict), 2 when there is nothing usable to check."""
    from engine.evidence import load_public_key, verify_directory

    if args.evidence_command == "sign-off":
        return _sign_off(args, out, err)
    first, *others = [load_public_key(path) for path in args.public_key]
    report = verify_directory(args.directory, first, other_keys=others)
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        return 0 if report.ok else 1
    for line in report.problems():
        out.print(line, highlight=False, markup=False)
    if report.ok:
        ssh = "; OpenSSH signature verified" if report.ssh_signature == "verified" else ""
        err.print(
            f"evidence intact: {report.checked} files, signed {report.created_at} by key {report.key_fingerprint}{ssh}",
            highlight=False,
            markup=False,
        )
        for r in report.reviews:
            ticket = f", ticket {r.ticket}" if r.ticket else ""
            err.print(
                f"review {r.path}: {r.decision} by {r.reviewer} at {r.reviewed_at} (key {r.key_fingerprint}{ticket})",
                highlight=False,
                markup=False,
            )
    else:
        err.print(f"evidence NOT intact: {len(report.problems())} problem(s)", highlight=False, markup=False)
    return 0 if report.ok else 1


def _sign_off(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Verify the drill's evidence, then append the reviewer's signed decision; tampered evidence is exit 1."""
    from drills.identity import environment_facts
    from engine.evidence import load_public_key, verify_directory
    from engine.signoff import sign_off

    key = _signing_key(args.sign_key)
    if key is None:
        raise ConfigError("sign-off needs the reviewer's key: pass --sign-key FILE or set DRPROOF_SIGNING_KEY")
    report = verify_directory(args.directory, load_public_key(args.public_key))
    if not report.ok:
        for line in report.problems():
            out.print(line, highlight=False, markup=False)
        err.print("not signed off: the evidence is not intact", highlight=False, markup=False)
        return 1
    path, record = sign_off(
        args.directory,
        key,
        reviewer=args.reviewer,
        decision=args.decision,
        note=args.note,
        ticket=args.ticket,
        signed_by=environment_facts(),
    )
    out.print(f"{record['decision']} by {record['reviewer']}: {path} (key {record['key_fingerprint']})", markup=False)
    return 0


def _write(
    results: Results, report_dir: Path, loaded: Any, write_all: Any, *, pdf: bool = False, signing_key: Any = None
) -> dict[str, Path]:
    """Every report the scenario asks for (and results.json always), then the PDF when asked for.

    The PDF is made before the directory is signed, so the signature covers it too; the
    HTML says which key will sign it.
    """
    from reports.evidence_view import pending

    formats = tuple(loaded.scenario.report.formats)
    if "json" not in formats:
        formats = (*formats, "json")  # the machine record is always kept
    if pdf and "html" not in formats:
        formats = (*formats, "html")  # the PDF is made from it
    evidence = None
    if signing_key is not None:
        from engine.evidence import fingerprint

        evidence = pending(fingerprint(signing_key.public_key()))
    paths = dict(write_all(results, report_dir, formats=formats, evidence=evidence))
    if pdf:
        from reports.pdf import write_pdf

        paths["pdf"] = write_pdf(results, paths["html"])
    _remove_stale_outputs(report_dir, paths)
    return paths


def _summary(results: Results, paths: dict[str, Path], err: Console, quiet: bool) -> None:
    style = _VERDICT_STYLE[results.verdict]
    rto = results.measured.rto_seconds
    rto_text = f"{rto:.2f} s" if rto is not None else "not measured"
    if not quiet:
        for a in results.assertions:
            s = {"pass": "green", "fail": "red", "error": "bold red", "not_run": "bold red", "not_compared": "yellow"}[a.status]
            err.print(f"  [{s}]{a.status.upper():>7}[/{s}] {escape(a.id)}: {escape(a.summary)}", highlight=False)
            for f in a.findings[:10]:
                err.print(f"           - {escape(f)}", highlight=False)
            if len(a.findings) > 10:
                err.print(f"           … and {len(a.findings) - 10} more in the report", highlight=False)
        if results.error:
            err.print(f"[bold red]error:[/bold red] {escape(results.error)}", highlight=False)
    err.print(
        f"[{style}]{results.verdict.upper()}[/{style}] {results.scenario.name}: stack RTO {rto_text}, "
        f"drill {results.measured.drill_seconds:.1f} s; report: {escape(str(paths.get('html', paths.get('json'))))}",
        highlight=False,
    )


def _cmd_validate(args: argparse.Namespace, out: Console, err: Console) -> int:
    code = 0
    for f in args.files:
        try:
            what = _validate_file(f)
            _plain_line(out, f"{f}: ok{what}")
        except ValidationFailed as exc:
            code = 2
            for p in exc.problems:
                err.print(str(p), highlight=False, markup=False)
    return code


def _validate_file(path: Path) -> str:
    """Validate a scenario, or a backup-config (recognised by its keys); what it was, for the ok line."""
    from drills import yamlsource
    from drills.scenario_files import looks_like_backup_config

    doc = yamlsource.load(path)
    if looks_like_backup_config(doc):
        from drills.backup_config import RestoreTargets, load_config

        if isinstance(doc.data, dict) and "repository" not in doc.data:
            # A `recovery restore --to` file needs none (found by review: validate refused
            # what the restore accepts); a backup with it still refuses it, at its line.
            load_config(path, RestoreTargets)
            return " (restore targets for `recovery restore --to`: no repository, so not a backup-config)"
        load_config(path)
        return " (backup-config)"
    from drills.loader import load_scenario

    load_scenario(path)
    return ""


def _cmd_schema(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.results:
        from engine.journal import Results

        schema = Results.model_json_schema()
    elif args.backup_config:
        from drills.backup_config import BackupConfig

        schema = BackupConfig.model_json_schema()
    else:
        from drills.scenario import Scenario

        schema = Scenario.model_json_schema()
    sys.stdout.write(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return 0


def _cmd_report(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Re-render from results.json, with what is known of its evidence; never into signed evidence."""
    from drills.scrub import scrub
    from engine.evidence import EVIDENCE_FILE, load_public_key
    from reports import load_results, write_all
    from reports.evidence_view import from_directory

    source = args.results.parent
    target = args.out or source
    if (source / EVIDENCE_FILE).is_file() and target.resolve() == source.resolve():
        raise ConfigError(
            f"{source} holds signed evidence: re-rendering there would change signed files; "
            "pass --out DIR to render elsewhere"
        )
    # Results written before issue 19 may echo a scenario's secrets; a re-render does not.
    results = scrub(load_results(args.results))
    keys = [load_public_key(p) for p in args.public_key or []]
    paths = write_all(results, target, formats=("html", "junit"), evidence=from_directory(source, keys))
    if args.pdf:
        from reports.pdf import write_pdf

        paths["pdf"] = write_pdf(results, paths["html"])
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False, markup=False)
    return 0


def _cmd_doctor(args: argparse.Namespace, out: Console, err: Console) -> int:
    from drills.doctor import checks as doctor_checks

    checks = list(doctor_checks(args.runtime))
    failed = False
    for c in checks:
        mark = "[green]ok[/green]  " if c.ok else ("[red]FAIL[/red]" if c.required else "[yellow]warn[/yellow]")
        line = f"{mark} {escape(c.name)}: {escape(c.detail)}"
        if not c.ok and c.fix:
            line += f" [dim]→ {escape(c.fix)}[/dim]"
        out.print(line, highlight=False)
        failed = failed or (not c.ok and c.required)
    return 1 if failed else 0


def _cmd_clean(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.repository is not None:
        from engine.repository import staging

        if not (args.repository / "sets").is_dir():
            raise ConfigError(f"{args.repository} is not a drproof repository (no sets/ directory)")
        gone = staging.clean(args.repository, dry_run=args.dry_run)
        trash = staging.empty_trash(args.repository, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for backup_id in gone:
            out.print(f"{verb} the half-written set .staging/{backup_id}", highlight=False, markup=False)
        for name in trash:
            out.print(f"{verb} what a deleted set left in .trash/{name}", highlight=False, markup=False)
        if not gone and not trash:
            out.print("nothing to clean: no set of a backup that is no longer running", highlight=False, markup=False)
        return 0
    from engine.runtime import runtimes

    found, failed = False, False
    for runtime in runtimes:
        if args.runtime is not None and runtime.name != args.runtime:
            continue
        try:
            runs = runtime.leftovers(everything=args.all)
        except DrproofError as exc:
            if args.runtime is not None:
                raise
            err.print(f"drproof: {runtime.name}: not checked: {redact(str(exc))}", highlight=False, markup=False)
            continue
        for run, items in sorted(runs.items()):
            found = True
            failed = not _clean_run(runtime, run, items, args.dry_run, out, err) or failed
    if not found:
        out.print(
            "nothing to clean: no server processes, containers, volumes or networks of finished runs",
            highlight=False,
            markup=False,
        )
    return 1 if failed else 0


def _clean_run(runtime: Any, run: str, items: list[str], dry_run: bool, out: Console, err: Console) -> bool:
    """One run's leftovers removed (or listed); False when some stayed, said, so the other runs are still cleaned.

    Found by review: a removal that failed for one run (a container the engine would not
    remove) ended the command, and the other runs' leftovers stayed.
    """
    if dry_run:
        out.print(f"{run}: would remove " + ", ".join(items), highlight=False, markup=False)
        return True
    try:
        gone = runtime.remove_leftovers(run)
    except DrproofError as exc:
        err.print(f"drproof: {run}: not all removed: {redact(str(exc))}", highlight=False, markup=False)
        return False
    out.print(f"{run}: removed " + ", ".join(gone), highlight=False, markup=False)
    return True


class _Redacted(logging.Formatter):
    """Engine log lines on stderr, masked like every other message drproof prints."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _log_to(err: Console, verbose: bool) -> None:
    """Send the engine's log lines to ``err``: progress of long waits, and warnings."""
    handler = logging.StreamHandler(err.file)
    handler.setFormatter(_Redacted("drproof: %(message)s"))
    engine_log = logging.getLogger("engine")
    for old in [h for h in engine_log.handlers if isinstance(h.formatter, _Redacted)]:
        engine_log.removeHandler(old)
    engine_log.addHandler(handler)
    engine_log.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from drills.progress import StepDisplay

    out, err = _consoles(lazy=args.command in ("validate", "schema"))
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    commands = {
        "run": _cmd_run,
        "validate": _cmd_validate,
        "schema": _cmd_schema,
        "report": _cmd_report,
        "doctor": _cmd_doctor,
        "backup": _cmd_backup,
        "recovery": _cmd_recovery,
        "clean": _cmd_clean,
        "keys": _cmd_keys,
        "evidence": _cmd_evidence,
        "history": _cmd_history,
        "summary": _cmd_summary,
    }
    global _display
    try:
        # Drills drive their own display (phase by phase); the engine commands share this one.
        engine_command = args.command in ("backup", "recovery") and not getattr(args, "json", False)
        # Long waits and warnings of the engine reach the operator (a drill's log in a fleet);
        # with --json or --quiet only warnings do.
        talkative = args.command == "run" and not (args.json or args.quiet)
        _log_to(err, verbose=engine_command or talkative)
        with StepDisplay(err, quiet=not engine_command) as display:
            _display = display if engine_command else None
            return commands[args.command](args, out, err)
    except ValidationFailed as exc:
        for p in exc.problems:
            err.print(redact(str(p)), highlight=False, markup=False)
        return exc.exit_code
    except DrproofError as exc:
        err.print(f"drproof: error: {redact(str(exc))}", highlight=False, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("drproof: interrupted")
        return 130
    finally:
        _display = None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
