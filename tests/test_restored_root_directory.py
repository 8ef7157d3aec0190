"""The restored directory itself gets the mode and owner it had, not the restore's own.

Found by review: a directory the disaster deleted came back mode 0700 and owned by
whoever ran drproof (the staging directory's), and a restore run as root over a live
directory another user owned left it root's; either way an application running as that
user could no longer open its files, while fidelity said "match" (the root's mode and
owner are the target's, not compared). Now the live directory's mode and owner are kept
where it exists, and the backup's (recorded in the set's details) are given where it is
gone. Owners are set only by root; CI runs the tests as root, elsewhere the owner half is
checked only where it can be.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

ROOT = os.geteuid() == 0
OTHER = 4321  # an id no test user has: only root can give it


def _volume(tmp_path: Path) -> Any:
    comp = VolumesComponent("uploads", VolumesParams(files=5, file_size=64), DirsRuntime(tmp_path / "rt"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _config(tmp_path: Path) -> Any:
    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path / "rt"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _owned(path: Path, mode: int) -> None:
    path.chmod(mode)
    if ROOT:
        os.chown(path, OTHER, OTHER)


def _mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.parametrize("make", [_volume, _config], ids=["volumes", "configuration"])
def test_a_directory_the_disaster_deleted_comes_back_with_its_own_mode_and_owner(tmp_path: Path, make: Any) -> None:
    comp = make(tmp_path)
    _owned(comp.path, 0o750)
    was = _mode_owner(comp.path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    assert manifest.component(comp.instance).details["root"]["mode"] == "0o750"
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, manifest, comp)
    assert _mode_owner(comp.path) == was  # was (0o700, euid, egid): the staging directory's


@pytest.mark.parametrize("make", [_volume, _config], ids=["volumes", "configuration"])
def test_a_live_directory_keeps_its_mode_and_owner(tmp_path: Path, make: Any) -> None:
    comp = make(tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])  # backed up as the test user's, 0o755 or so
    _owned(comp.path, 0o711)
    kept = _mode_owner(comp.path)
    engine_backup.restore(repo, manifest, comp)
    assert _mode_owner(comp.path) == kept  # the owner was root's after a restore as root
