"""Commands that connect to nothing import no driver (issue 14: start-up cost).

Checked in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DRIVERS = ("redis", "msgpack", "psycopg2", "faiss", "numpy", "docker", "boto3", "botocore", "jinja2")

_PROBE = """
import json, sys
from drills.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if {match})))
"""


def _imported(argv: list[str], names: tuple[str, ...], *, whole_packages: bool) -> list[str]:
    """Which of ``names`` (or, with whole_packages, modules of those packages) ``drproof argv`` imported."""
    match = f"m.split('.')[0] in {set(names)!r}" if whole_packages else f"m in {set(names)!r}"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(match=match), *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    found: list[str] = json.loads(out.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize(
    "argv",
    [["validate", str(REPO / "scenarios" / "quickstart.yaml")], ["--help"], ["validate", "--help"]],
    ids=["validate", "help", "validate-help"],
)
def test_no_driver_is_imported(argv: list[str]) -> None:
    assert _imported(argv, DRIVERS, whole_packages=True) == []


# What each command must leave unimported, beyond the drivers: validating a scenario needs
# its schema, not rich (its one line is plain), the backup-config schema, HTTP and TLS
# (the `http` check's client), or cryptography (nothing is signed or encrypted); `--help` needs argparse.
_NOT_FOR_VALIDATE = (
    "rich",
    "drills.backup_config",
    "drills.targets",
    "urllib.request",
    "http.client",
    "ssl",
    "cryptography",
)
_NOT_FOR_HELP = ("rich", "pydantic", "yaml", "engine.journal", "engine.audit", "drills.progress")


@pytest.mark.parametrize(
    ("argv", "forbidden"),
    [
        (["validate", str(REPO / "scenarios" / "quickstart.yaml")], _NOT_FOR_VALIDATE),
        (["schema"], _NOT_FOR_VALIDATE),
        (["--help"], _NOT_FOR_HELP),
        (["validate", "--help"], _NOT_FOR_HELP),
        (["history", "--help"], _NOT_FOR_HELP),
    ],
    ids=["validate", "schema", "help", "validate-help", "history-help"],
)
def test_commands_import_only_what_they_use(argv: list[str], forbidden: tuple[str, ...]) -> None:
    assert _imported(argv, forbidden, whole_packages=False) == []


_COMPILED = """
import json, re, sys
compiled = []
_compile = re.compile
def recording(pattern, flags=0):
    compiled.append(pattern if isinstance(pattern, str) else repr(pattern))
    return _compile(pattern, flags)
re.compile = recording
from drills.cli import main
main(sys.argv[1:])
print(json.dumps(compiled))
"""


def test_validate_compiles_no_sql_lexer_pattern() -> None:
    """The dollar-quote pattern of the `query` check's lexer takes 5 ms to compile (its Unicode
    ranges): a scenario's validation runs no query, so it is compiled when a check first needs it."""
    out = subprocess.run(
        [sys.executable, "-c", _COMPILED, "validate", str(REPO / "scenarios" / "quickstart.yaml")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    compiled: list[str] = json.loads(out.strip().splitlines()[-1])
    assert compiled, "the probe saw no re.compile at all: it no longer observes anything"
    assert not [p for p in compiled if p.startswith("\\$(")]


@pytest.mark.parametrize(
    "text",
    [
        "scenarios/quickstart.yaml: ok",
        "docs/examples/backup-config.yaml: ok (backup-config)",
        "a:smile:b.yaml: ok",
        ":thumbs_up: ok",
        "x.yaml:12:5: steps[0]: unknown key",
        "[bold]x.yaml[/bold]: ok",
        "tab\there.yaml: ok",
        "cr\rhere.yaml: ok",
        "bell\x07.yaml: ok",
        "esc\x1b[31m.yaml: ok",
        "na\u00efve/\u30e6\u30cb\u30b3\u30fc\u30c9.yaml: ok",
        "nbsp\u00a0.yaml: ok",
        "undecodable\udcff.yaml: ok",
        "trailing space .yaml: ok ",
        "long/" + "x" * 400 + ".yaml: ok",
    ],
)
def test_a_plain_line_is_written_as_rich_writes_it(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate` writes its ok lines without rich when rich would change nothing; byte for byte the same."""
    import io

    from rich.console import Console

    from drills.cli import _Console

    theirs, ours = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", theirs)
    Console(highlight=False, soft_wrap=True).print(text, highlight=False, markup=False)
    monkeypatch.setattr(sys, "stdout", ours)
    _Console().plain_line(text)
    assert ours.getvalue() == theirs.getvalue()
