"""A relative ``--work-dir`` (found by a fleet run from a shell, 6 Dec).

PostgreSQL runs in its data directory, so a relative path in its ``archive_command`` named
a directory that does not exist there: every WAL segment failed to archive and the backup
waited 120 s before giving up. The point-in-time drill is the one that needs the archive.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SCENARIOS
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may traverse, as a user's project directory is.

    Under pytest's private temporary root the local runtime moves its servers to a
    directory of its own (an absolute path), which hid the fault.
    """
    path = Path(tempfile.mkdtemp(prefix="drproof-relative-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_point_in_time_drill_passes_with_a_relative_work_dir(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = open_dir
    monkeypatch.chdir(tmp_path)
    scenario = SCENARIOS / "pitr-bad-migration.yaml"
    code = run_cli(["run", str(scenario), "--report-dir", "out", "--work-dir", "work", "-q"])
    assert code == 0
    log = (tmp_path / "out").rglob("results.json")
    assert any(p.is_file() for p in log)
    assert not list((tmp_path / "work").iterdir()), "the drill's work directory was left behind"
