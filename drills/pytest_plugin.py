"""Run drill scenarios as pytest tests: ``pytest scenarios/``.

Teams already gate merges on pytest; this plugin lets a scenario file be one test item so
a drill's verdict shows up beside the unit tests, in the same JUnit output and the same
``-k``/``-m`` selection, without a second CI step that parses drproof's exit codes.

Which YAML files are collected
------------------------------
Only scenario files: ``*.yaml``/``*.yml`` whose top level has both ``stack:`` and
``steps:``. Backup configurations, CI files and other YAML are never drills. A scenario
file is collected when at least one of these holds:

* ``--drproof`` is given (collect every scenario file pytest walks past);
* the file sits directly in a directory named ``scenarios``;
* the file was named on the command line (``pytest path/to/drill.yaml``).

The rule is deliberately narrow: a project's own ``pytest`` run (``testpaths = tests``)
must not start running the deliberately invalid scenarios kept as test data.

Each item runs the drill with :class:`~drills.runner.DrillRunner`, writes the reports and
fails unless the verdict is ``pass``; items are independent, so ``pytest -n N`` (pytest-xdist)
runs them on several workers. A failure shows the failing assertions with their
findings and the ``file:line`` that declared them; an invalid scenario shows the located
validation problems rather than a traceback, because the fix is in the YAML, not in code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from drills.scenario_files import SUFFIXES, is_scenario_file

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from engine.errors import ValidationFailed
    from engine.journal import AssertionResult, Results

SCENARIO_DIR_NAME = "scenarios"
# How many findings per assertion the failure text shows; the report has them all.
MAX_FINDINGS = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("drproof", "disaster-recovery drills (drproof)")
    group.addoption(
        "--drproof",
        action="store_true",
        default=False,
        help="collect every scenario YAML file (top-level stack: and steps:), not only those in a scenarios/ directory",
    )
    group.addoption(
        "--drproof-runtime",
        metavar="NAME",
        default=None,
        help="run every collected scenario on this runtime instead of the one it declares",
    )
    group.addoption(
        "--drproof-history",
        metavar="FILE",
        type=Path,
        default=None,
        help="record every drill in this SQLite history and show its trend in the report (as drproof run --history)",
    )
    group.addoption(
        "--drproof-fail-on-regression",
        metavar="PCT",
        default=None,
        help="fail a drill whose RTO grew more than PCT over the median of its last passing runs (needs --drproof-history)",
    )
    group.addoption(
        "--drproof-regression-runs",
        metavar="N",
        type=int,
        default=5,
        help="passing runs whose median RTO is the gate's baseline (default 5, at least 3)",
    )
    group.addoption(
        "--drproof-regression-floor",
        metavar="DURATION",
        default="1s",
        help="RTO changes smaller than this never fail the gate (default 1s)",
    )
    group.addoption(
        "--drproof-report-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="write each drill's reports to DIR/<scenario file stem>/ (default: a directory under pytest's basetemp)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "drproof: a drproof drill scenario collected from a YAML file")
    if config.getoption("drproof_fail_on_regression") is not None and config.getoption("drproof_history") is None:
        raise pytest.UsageError("--drproof-fail-on-regression needs --drproof-history FILE")
    runtime = config.getoption("drproof_runtime")
    if runtime is not None:
        # Checked up front so a typo fails the session once, not every drill separately.
        from engine.runtime import runtimes

        if runtime not in runtimes:
            raise pytest.UsageError(
                f"--drproof-runtime {runtime!r} is not available (available: {', '.join(runtimes.names())})"
            )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each drill a report directory name of its own: its file's stem, ``-2``... on a clash.

    Named before ``-k``/``-m`` deselect anything, from the collection alone, so every
    pytest-xdist worker (each collects the same items) gives a drill the same name, and two
    ``quickstart.yaml`` in different directories never write into one ``--drproof-report-dir``
    subdirectory at the same time.
    """
    taken: set[str] = set()
    for item in items:
        if isinstance(item, DrillItem):
            name, n = item.path.stem, 1
            while name in taken:
                n += 1
                name = f"{item.path.stem}-{n}"
            taken.add(name)
            item.report_name = name


def _named_on_command_line(config: pytest.Config, file_path: Path) -> bool:
    """True when the user passed this very file as an argument (``pytest drill.yaml``)."""
    root = config.invocation_params.dir
    for arg in config.args:
        candidate = Path(arg.split("::", 1)[0])
        if not candidate.is_absolute():
            candidate = root / candidate
        try:
            if candidate.resolve() == file_path.resolve():
                return True
        except OSError:
            continue
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix not in SUFFIXES:
        return None
    config = parent.config
    wanted = (
        config.getoption("drproof")
        or file_path.parent.name == SCENARIO_DIR_NAME
        or _named_on_command_line(config, file_path)
    )
    if not wanted or not is_scenario_file(file_path):
        return None
    file: ScenarioFile = ScenarioFile.from_parent(parent, path=file_path)
    return file


class ScenarioFile(pytest.File):
    """One scenario YAML file; it holds exactly one drill item.

    The scenario is not loaded here: a validation error must fail the drill's item (with
    its located problems) rather than abort collection of everything else.
    """

    def collect(self) -> Iterator[pytest.Item]:
        item: DrillItem = DrillItem.from_parent(self, name=self.path.stem)
        item.add_marker("drproof")
        yield item


class DrillInvalid(Exception):
    """The scenario did not validate; carries the loader's located problems."""

    def __init__(self, error: ValidationFailed) -> None:
        super().__init__(str(error))
        self.error = error


class DrillFailed(Exception):
    """The drill ran (or tried to) and its verdict is not ``pass``."""

    def __init__(self, results: Results, report_dir: Path, internal_error: str | None) -> None:
        super().__init__(f"verdict {results.verdict}")
        self.results = results
        self.report_dir = report_dir
        self.internal_error = internal_error


class DrillItem(pytest.Item):
    """Runs one scenario end to end and passes only on a ``pass`` verdict.

    Items are independent, so ``pytest -n N`` (pytest-xdist) may run them on any worker in
    any order: each has its own report directory, and the runner makes each drill a
    private work directory and lets its servers pick their own ports.
    """

    report_name: str = ""  # set at collection; the file's stem unless another drill has it

    def _report_dir(self) -> Path:
        """Per-item directory, so several drills in one session never overwrite each other."""
        chosen: Path | None = self.config.getoption("drproof_report_dir")
        if chosen is not None:
            return chosen / (self.report_name or self.path.stem)
        # pytest's tmpdir plugin keeps its factory on the config; it is absent only when
        # that plugin is disabled (-p no:tmpdir), and then the working directory is used.
        factory = getattr(self.config, "_tmp_path_factory", None)
        if isinstance(factory, pytest.TempPathFactory):
            return factory.mktemp(f"drproof-{self.path.stem}", numbered=True)
        return Path("drproof-reports") / self.path.stem

    def runtest(self) -> None:
        # Imported here, not at module level: the plugin loads in every pytest session of
        # the environment and most of them never run a drill.
        from drills.loader import load_scenario
        from drills.runner import DrillRunner
        from engine.errors import ValidationFailed
        from reports import write_all

        try:
            loaded = load_scenario(self.path)
        except ValidationFailed as exc:
            raise DrillInvalid(exc) from None
        runner = DrillRunner(loaded, runtime=self.config.getoption("drproof_runtime"))
        report_dir = self._report_dir()
        formats = tuple(dict.fromkeys((*loaded.scenario.report.formats, "json")))  # the record is always kept
        try:
            results = runner.run()
        except KeyboardInterrupt:
            partial: Results | None = getattr(runner, "interrupted_results", None)
            if partial is not None:
                write_all(partial, report_dir, formats=formats)
            raise
        history = self.config.getoption("drproof_history")
        if history is not None:
            from drills.history import add_trend, earlier_runs

            add_trend(results, earlier_runs(history, results), _gate(self.config))
        written = write_all(results, report_dir, formats=formats)
        if history is not None:
            from drills.history import record_run

            record_run(history, results, report_dir, written.get("json"))
        self.user_properties.append(("drproof_report_dir", str(report_dir)))
        self.user_properties.append(("drproof_verdict", results.verdict))
        if results.verdict != "pass":
            raise DrillFailed(results, report_dir, runner.internal_error)

    def repr_failure(
        self,
        excinfo: ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, DrillInvalid):
            lines = [f"invalid scenario {self.path}:", *(f"  {p}" for p in excinfo.value.error.problems)]
            return "\n".join(lines)
        if isinstance(excinfo.value, DrillFailed):
            return _describe_failure(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"drproof drill: {self.path.name}"


def _gate(config: pytest.Config) -> Any:
    """The regression gate from the command line; a bad value is a usage error, once."""
    from drills.durations import parse_duration
    from drills.history import Gate, parse_threshold
    from engine.errors import ConfigError

    raw = config.getoption("drproof_fail_on_regression")
    try:
        threshold = parse_threshold(raw) if raw is not None else None
        floor = parse_duration(config.getoption("drproof_regression_floor"))
        return Gate(threshold=threshold, runs=config.getoption("drproof_regression_runs"), floor_seconds=floor)
    except (ConfigError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _location(a: AssertionResult) -> str:
    if a.source is None:
        return "(no source location)"
    where = a.source.file
    if a.source.line is not None:
        where += f":{a.source.line}"
        if a.source.column is not None:
            where += f":{a.source.column}"
    return where


def _describe_failure(failure: DrillFailed) -> str:
    """The text a reviewer needs to act on a failed drill without opening the report."""
    r = failure.results
    lines = [f"drill {r.scenario.name!r}: verdict {r.verdict.upper()} (exit code {r.exit_code})"]
    if r.error:
        lines.append(f"error: {r.error}")
    failing = [a for a in r.assertions if a.status != "pass"]
    for a in failing:
        expected = f" (expected {a.expected}, observed {a.observed})" if a.expected == "fail" else ""
        lines.append(f"{a.status.upper()} {a.id}: {a.summary}{expected}")
        lines.append(f"    declared at {_location(a)}")
        lines.extend(f"    - {finding}" for finding in a.findings[:MAX_FINDINGS])
        if len(a.findings) > MAX_FINDINGS:
            lines.append(f"    ... and {len(a.findings) - MAX_FINDINGS} more in the report")
    if failure.internal_error:
        lines.append(failure.internal_error.rstrip())
    lines.append(f"reports: {failure.report_dir}")
    return "\n".join(lines)
