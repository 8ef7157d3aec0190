"""The directory of a volume or configuration itself (``chattr +a``/``+i`` on its root): compared (``dir .``).

Found in s32: the directory is the restore's target, not a member of its archive, and a
restore builds a new one. A volume root kept append-only came back without the flag when
the disaster took it whole, and volumes/6 and configuration/6 said "match". Now (volumes/7,
configuration/7, as vectorstore/4) a ``dir .`` part holds its owner and inode flags, the
backup's details record the flags (``root.fflags``) and a restore gives them after the swap.
Negative controls: a restore that cannot give the flag, and a flag dropped afterwards, are
differences naming ``dir .``; quiet controls: healthy round trips (full, incremental, no
flag) match. Older sets are compared in their own scheme, and their note says so.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components.files import ROOT_NOT_RECORDED, ROOT_PART
from engine.fingerprint import compare
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime
from tests.test_restored_flags import _chattr, refuse_flags
from tests.test_restored_flags import flags_of as _flags
from tests.test_restored_flags import lost as _lost
from tests.test_restored_flags import recorded as _recorded
from tests.test_restored_flags import unflag as _unflag
from tests.test_restored_owners import _volume, needs_root

IMMUTABLE, APPEND_ONLY = 0x10, 0x20
KINDS = ["volumes", "configuration"]


def _component(kind: str, tmp_path: Path) -> Any:
    if kind == "volumes":
        return _volume(tmp_path)
    from engine.components.configuration import ConfigurationComponent, ConfigurationParams

    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


LOST_A = f"{ROOT_PART}: inode flags differ (lost append-only (+a)); content and mode as backed up"


@needs_root
@pytest.mark.parametrize("kind", KINDS)
def test_the_directorys_own_flag_is_given_back_after_the_swap_and_a_lost_one_is_named(
    kind: str, tmp_path: Path
) -> None:
    comp = _component(kind, tmp_path)
    try:
        _chattr("+a", comp.path)  # append-only: files may be added, none removed or renamed
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        assert recorded.scheme == f"{kind}/7"
        assert recorded.parts[ROOT_PART].digest.endswith(" fflags:sappnd"), recorded.parts[ROOT_PART]
        assert manifest.component(comp.instance).details["root"]["fflags"] == "sappnd"
        assert compare(recorded, comp.fingerprint()) == []
        _lost(comp)
        engine_backup.restore(repo, manifest, comp)
        assert _flags(comp.path) == APPEND_ONLY
        assert compare(recorded, comp.fingerprint()) == []  # quiet control
        subprocess.run(["chattr", "-a", str(comp.path)], check=True)
        assert compare(recorded, comp.fingerprint()).describe() == [LOST_A]  # negative control
    finally:
        _unflag(tmp_path)


@needs_root
@pytest.mark.parametrize("kind", KINDS)
def test_a_restore_that_drops_the_directorys_flag_is_a_warning_and_a_difference(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As a restore run without CAP_LINUX_IMMUTABLE: +a cannot be given (EPERM); the restore goes on and says so."""
    comp = _component(kind, tmp_path)
    try:
        _chattr("+a", comp.path)
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        _lost(comp)
        refuse_flags(monkeypatch, APPEND_ONLY)
        with caplog.at_level(logging.WARNING, logger="engine.components.files"):
            engine_backup.restore(repo, manifest, comp)
        monkeypatch.undo()
        assert "could not be given the inode flags the backup records for it (append-only (+a)" in caplog.text
        assert f"{kind.rstrip('s')} {comp.instance!r}:" in caplog.text
        assert _flags(comp.path) == 0
        assert compare(_recorded(manifest, comp), comp.fingerprint()).describe() == [LOST_A]
    finally:
        _unflag(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_quiet_control_a_directory_without_flags_round_trips_and_records_none(kind: str, tmp_path: Path) -> None:
    comp = _component(kind, tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = _recorded(manifest, comp)
    assert ROOT_PART in recorded.parts
    assert "fflags" not in manifest.component(comp.instance).details["root"]
    engine_backup.restore(repo, manifest, comp)  # over the live directory
    assert compare(recorded, comp.fingerprint()) == []
    _lost(comp)
    engine_backup.restore(repo, manifest, comp)
    assert compare(recorded, comp.fingerprint()) == []


@needs_root
def test_an_incremental_records_the_volumes_flag_and_its_restore_gives_it(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    try:
        repo = LocalRepository(tmp_path / "repo")
        full = engine_backup.backup(repo, [comp])
        _chattr("+a", comp.path)
        inc = engine_backup.backup(repo, [comp], parent=full)
        recorded = _recorded(inc, comp)
        assert recorded.parts[ROOT_PART].digest.endswith(" fflags:sappnd")
        assert inc.component(comp.instance).details["root"]["fflags"] == "sappnd"
        _lost(comp)
        engine_backup.restore(repo, inc, comp)
        assert _flags(comp.path) == APPEND_ONLY
        assert compare(recorded, comp.fingerprint()) == []
        assert compare(_recorded(full, comp), comp.fingerprint()).describe() == [
            f"{ROOT_PART}: inode flags differ (added append-only (+a)); content and mode as backed up"
        ]
    finally:
        _unflag(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_scheme_6_set_is_compared_without_the_directory_and_says_so(kind: str, tmp_path: Path) -> None:
    comp = _component(kind, tmp_path)
    old = comp.legacy_fingerprint(f"{kind}/6")
    assert old is not None and old.scheme == f"{kind}/6"
    assert ROOT_PART not in old.parts
    assert comp.blind_spot(f"{kind}/6") == ROOT_NOT_RECORDED
    assert comp.blind_spot(f"{kind}/7") is None
    current = comp.fingerprint()
    assert {n: p for n, p in current.parts.items() if n != ROOT_PART} == old.parts
