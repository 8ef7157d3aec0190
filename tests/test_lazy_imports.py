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
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {drivers!r})))
"""


@pytest.mark.parametrize(
    "argv",
    [["validate", str(REPO / "scenarios" / "quickstart.yaml")], ["--help"], ["validate", "--help"]],
    ids=["validate", "help", "validate-help"],
)
def test_no_driver_is_imported(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(drivers=set(DRIVERS)), *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
