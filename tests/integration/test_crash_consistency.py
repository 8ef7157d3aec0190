"""SIGKILL at any moment of a backup or a restore never leaves a repository that lies.

The property, over kill points drawn by hypothesis: after ``drproof backup`` is killed
at a random moment, every set the repository lists verifies clean (a half-written set is
never listed), the sets stored before are untouched, and the next backup and a restore
from it succeed. A killed restore is simply run again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.components.volumes import VolumesComponent, VolumesParams
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

pytestmark = [pytest.mark.integration]


def _drproof(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "drills.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_after(args: list[str], delay: float) -> int:
    proc = _drproof(args)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("crash")
    comp = VolumesComponent("files", VolumesParams(files=120, file_size=256 * 1024), DirsRuntime(root / "src"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()  # ~30 MB of incompressible data: a backup that takes a moment
    config = root / "backup-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": str(root / "repo")},
                "components": {"files": {"kind": "volumes", "path": str(comp.path)}},
            }
        )
    )
    assert (
        subprocess.run(
            [sys.executable, "-m", "drills.cli", "backup", "--config", str(config)], capture_output=True
        ).returncode
        == 0
    )
    return config, root / "repo"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(min_value=0.0, max_value=2.0))
def test_a_backup_killed_at_any_moment_leaves_only_whole_sets(volume: tuple[Path, Path], delay: float) -> None:
    config, repo_path = volume
    repo = LocalRepository(repo_path)
    before = {m.id: m for m in repo.list()}

    _kill_after(["backup", "--config", str(config)], delay)

    after = LocalRepository(repo_path)
    listed = after.list()
    assert {m.id for m in before.values()} <= {m.id for m in listed}, "a stored set disappeared"
    for manifest in listed:
        report = after.verify(manifest.id)
        assert report.ok, (manifest.id, [c.problem for c in report.checks if not c.ok])
    # The repository is usable right away: a new backup, then a restore from it.
    done = subprocess.run([sys.executable, "-m", "drills.cli", "backup", "--config", str(config)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_a_killed_restore_can_simply_be_run_again(volume: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = volume
    target = tmp_path / "restored"
    target.mkdir()
    data = yaml.safe_load(config.read_text())
    data["components"]["files"]["path"] = str(target)
    other = tmp_path / "restore-config.yaml"
    other.write_text(yaml.safe_dump(data))
    for delay in (0.2, 0.5):
        _kill_after(["recovery", "restore", "--in-place", "--yes", "--config", str(other)], delay)
    done = subprocess.run(
        [sys.executable, "-m", "drills.cli", "recovery", "restore", "--in-place", "--yes", "--config", str(other)],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"fidelity: match" in done.stderr
