"""Restoring a volume whose live tree holds immutable or append-only files (``chattr +i``/``+a``).

Found by review: such a file cannot be deleted, even by root. The restore swapped the
restored copy in and then removed the replaced contents with errors ignored, so
``<dir>.drproof-replaced`` stayed without a word; the next restore tried to remove that
leftover first and died with a bare ``PermissionError`` traceback. Now the leftover that
cannot be removed is a refusal naming it and what to run, with the live data untouched,
and a replaced copy that cannot be removed is a warning naming it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components import fflags
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.repository import LocalRepository
from tests.integration.servers import unavailable
from tests.test_restored_owners import _volume, needs_root


def _chattr(flag: str, path: Path) -> None:
    """Set an inode flag; where this file system cannot, the test fails under CI=true, else skips."""
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"chattr {flag} is not supported here ({done.stderr.strip()})")


def unflag(path: Path) -> None:
    """Clear +i and +a under ``path`` so pytest (or a test's disaster) can remove it."""
    subprocess.run(["chattr", "-R", "-i", "-a", str(path)], capture_output=True, check=False)


def flags_of(path: Path) -> fflags.Flags:
    return fflags.read_path(str(path), directory=path.is_dir())


def recorded(manifest: Any, comp: Any) -> Fingerprint:
    """The fingerprint a backup recorded for ``comp``."""
    fp = manifest.component(comp.instance).fingerprint
    assert fp is not None
    return fp  # type: ignore[no-any-return]


def lost(comp: Any) -> None:
    """The disaster: the component's whole directory gone (its flags cleared first, so it can be)."""
    unflag(comp.path)
    shutil.rmtree(comp.path)


def refuse_flags(monkeypatch: pytest.MonkeyPatch, mask: int) -> None:
    """Make setting any of the inode flags in ``mask`` fail with EPERM, as for a restore run without CAP_LINUX_IMMUTABLE."""
    import errno
    import fcntl

    from engine.components import fflags

    real = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: bytes) -> bytes:
        if request == fflags.FS_IOC_SETFLAGS and int.from_bytes(arg[:4], "little") & mask:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real(fd, request, arg)  # type: ignore[no-any-return]

    monkeypatch.setattr(fflags.fcntl, "ioctl", ioctl)


@pytest.fixture
def flagged(tmp_path: Path) -> Iterator[Any]:
    """A seeded volume with one immutable and one append-only file; flags cleared afterwards."""
    comp = _volume(tmp_path)
    _chattr("+i", comp.path / "dir000" / "file000000.bin")
    _chattr("+a", comp.path / "dir001" / "file000001.bin")
    try:
        yield comp
    finally:
        subprocess.run(["chattr", "-R", "-i", "-a", str(tmp_path)], capture_output=True, check=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_root
def test_a_replaced_copy_that_cannot_be_removed_is_named_and_the_next_restore_refused_untouched(
    flagged: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    comp = flagged
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    (comp.path / "dir002" / "file000002.bin").write_bytes(b"damaged")
    replaced = comp.path.with_name(comp.path.name + ".drproof-replaced")
    with caplog.at_level(logging.WARNING, logger="engine.components.files"):
        engine_backup.restore(repo, manifest, comp)
    assert replaced.exists()
    warned = [r.getMessage() for r in caplog.records if "could not be removed" in r.getMessage()]
    assert warned and str(replaced) in warned[0] and "chattr -R -i -a" in warned[0], caplog.text

    live = _tree(comp.path)
    with pytest.raises(ComponentError, match=r"left by an earlier restore.*chattr -R -i -a.*nothing was changed"):
        engine_backup.restore(repo, manifest, comp)
    assert _tree(comp.path) == live  # nothing changed

    subprocess.run(["chattr", "-R", "-i", "-a", str(replaced)], check=True)
    shutil.rmtree(replaced)


@needs_root
def test_quiet_control_a_restore_of_a_tree_without_flags_leaves_nothing_and_warns_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    comp = _volume(tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    (comp.path / "dir002" / "file000002.bin").write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger="engine.components.files"):
        engine_backup.restore(repo, manifest, comp)
        engine_backup.restore(repo, manifest, comp)
    assert not comp.path.with_name(comp.path.name + ".drproof-replaced").exists()
    assert "could not be removed" not in caplog.text


def test_a_restore_of_a_tree_the_disaster_took_whole_warns_of_no_leftover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found while adding inode flags: with no live tree to set aside, the restore still tried to remove
    the copy it never made and warned that "1 entry ... could not be removed" (No such file or directory)."""
    comp = _volume(tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    shutil.rmtree(comp.path)
    with caplog.at_level(logging.WARNING, logger="engine.components.files"):
        engine_backup.restore(repo, manifest, comp)
    assert _tree(comp.path)
    assert "could not be removed" not in caplog.text
