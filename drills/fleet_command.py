"""``drproof run`` with several scenarios or ``--parallel N``: the fleet, from options to exit code.

Kept out of :mod:`drills.cli` so the command module stays a table of commands; the
running is in :mod:`drills.fleet`, the answer in :mod:`drills.scorecard`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from drills import fleet, scorecard

_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red"}


def default_report_root() -> Path:
    return Path("drproof-reports") / f"fleet-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def _preflight(args: argparse.Namespace) -> None:
    """What ``drproof run`` checks before a drill, checked once before the fleet, not once per drill."""
    from engine.errors import ConfigError
    from engine.evidence import KEY_ENV, load_private_key
    from engine.runtime import runtimes

    if args.runtime is not None and args.runtime not in runtimes:
        raise ConfigError(f"--runtime {args.runtime!r} is not available (available: {', '.join(runtimes.names())})")
    if args.fail_on_regression is not None and args.history is None:
        raise ConfigError("--fail-on-regression needs --history FILE: it compares with the runs recorded there")
    from drills.history import Gate

    Gate(threshold=args.fail_on_regression, runs=args.regression_runs)  # refused once here, not in every drill
    if args.sign_key is not None or os.environ.get(KEY_ENV):
        load_private_key(args.sign_key)
    if args.pdf:
        from reports.pdf import check_available

        check_available()
    if args.pushgateway is not None:
        from drills.reporting import check_pushgateway_url

        check_pushgateway_url(args.pushgateway)
    if args.history is not None:
        from drills.history import open_history

        with open_history(args.history):
            pass


def _refuse_shared_history(files: list[Path]) -> None:
    """Two scenarios of one ``name:`` would share one trend and regression baseline in ``--history``.

    History matches runs by the scenario's name (found by review: a fleet of two files
    both named ``nightly`` mixed their RTOs, so each judged the other's). A file that
    cannot be read is left to its own drill, which reports it with its line.
    """
    from drills import yamlsource
    from engine.errors import ConfigError, ValidationFailed

    seen: dict[str, Path] = {}
    for path in files:
        try:
            data = yamlsource.load(path).data
        except ValidationFailed:
            continue
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            raise ConfigError(
                f"{seen[name]} and {path} are both named {name!r}: with --history they would share one trend and "
                "regression baseline, each judged by the other's runs; give each scenario its own name"
            )
        seen[name] = path


def run_fleet(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run the fleet, then print the scorecard (stdout) and write the combined JUnit and summary page.

    Everything that can be refused is refused before the first drill starts: a missing
    file, an option that cannot apply to many drills, a report directory holding old results.
    """
    options = fleet.child_options(args)
    _preflight(args)
    files = fleet.scenario_files(args.scenario)
    if args.history is not None:
        _refuse_shared_history(files)
    report_root: Path = args.report_dir or default_report_root()
    drills = fleet.plan(files, report_root)
    parallel = args.parallel or 1
    quiet = args.quiet or args.json
    if not quiet:
        err.print(
            f"[bold]drproof[/bold] running {len(drills)} drills, {min(parallel, len(drills))} at a time; "
            f"reports and output in {escape(str(report_root))}",
            highlight=False,
        )
    done = 0

    def finished(outcome: fleet.Outcome) -> None:
        nonlocal done
        done += 1
        if not quiet:
            style = _STYLE[outcome.status]
            err.print(
                f"[{done}/{len(drills)}] [{style}]{outcome.status.upper()}[/{style}] {escape(outcome.drill.name)} "
                f"({outcome.seconds:.1f} s)",
                highlight=False,
            )

    interrupted = False
    try:
        outcomes = fleet.run(drills, parallel, options, finished)
    except fleet.Interrupted as stop:
        outcomes, interrupted = stop.outcomes, True
    paths = scorecard.write_outputs(outcomes, report_root)
    if args.json:
        sys.stdout.write(json.dumps(scorecard.rows(outcomes), indent=2) + "\n")
    else:
        for line in scorecard.lines(outcomes):
            out.print(line, highlight=False, markup=False)
    err.print(
        f"{scorecard.totals(outcomes)}; junit: {paths['junit']}; summary: {paths['summary']}", highlight=False, markup=False
    )
    if interrupted:
        err.print("[bold red]interrupted[/bold red]: no drill was started after it; the running ones were stopped and kept their partial results")
        return 130
    return fleet.exit_code(outcomes)
