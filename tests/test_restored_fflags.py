"""Inode flags (``chattr +i``, ``+a``, ``+d`` ...) of a volume: archived, given back and compared (volumes/5).

Found by review (r03): a restore dropped an audit log's append-only flag and a pinned
file's immutable flag, and fidelity said "match": the flags were neither archived nor
fingerprinted. Now the archive carries them (pax ``SCHILY.fflags``, as bsdtar), a restore
sets them last, and a flag lost or added is a finding naming the entry and the flag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import backup as engine_backup
from engine.components import fflags
from engine.components.files import DIR, FILE, FLAGS_NOT_RECORDED, ROOT_PART
from engine.fingerprint import compare
from engine.repository import LocalRepository
from tests.test_restored_flags import _chattr, refuse_flags
from tests.test_restored_flags import flags_of as _flags
from tests.test_restored_flags import recorded as _recorded
from tests.test_restored_flags import unflag as _unflag
from tests.test_restored_owners import _volume, needs_root

LOG = "dir001/file000001.bin"  # append-only: an audit log
PINNED = "dir000/file000000.bin"  # immutable: a pinned file


@pytest.fixture
def flagged(tmp_path: Path) -> Iterator[Any]:
    """A seeded volume: an immutable file (with a second name), an append-only file and directory, a no-dump file."""
    comp = _volume(tmp_path)
    (comp.path / "audit").mkdir()
    (comp.path / "audit" / "today.log").write_bytes(b"line 1\n")
    _chattr("+d", comp.path / "dir002" / "file000002.bin")
    os.link(comp.path / PINNED, comp.path / "dir003" / "pinned-alias.bin")  # its flags are the inode's
    _chattr("+i", comp.path / PINNED)
    _chattr("+a", comp.path / LOG)
    _chattr("+a", comp.path / "audit")
    try:
        yield comp
    finally:
        _unflag(tmp_path)


def _lost(comp: Any, tmp_path: Path) -> None:
    """The disaster: the whole tree gone (its flags cleared first, so it can be)."""
    _unflag(comp.path)
    shutil.rmtree(comp.path)


@needs_root
def test_quiet_control_a_round_trip_gives_every_flag_back_and_matches(flagged: Any, tmp_path: Path) -> None:
    comp = flagged
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    recorded = _recorded(manifest, comp)
    assert recorded.scheme == "volumes/7"
    assert compare(recorded, comp.fingerprint()) == []  # the archive's parts are the walk's
    _lost(comp, tmp_path)
    engine_backup.restore(repo, manifest, comp)
    assert _flags(comp.path / PINNED) == 0x10  # immutable
    assert (comp.path / PINNED).stat().st_ino == (comp.path / "dir003" / "pinned-alias.bin").stat().st_ino
    assert _flags(comp.path / LOG) == 0x20  # append-only
    assert _flags(comp.path / "audit") == 0x20
    assert _flags(comp.path / "dir002" / "file000002.bin") == 0x40  # no dump
    assert _flags(comp.path / "dir003" / "file000003.bin") == 0
    assert (comp.path / "audit" / "today.log").read_bytes() == b"line 1\n"
    assert compare(recorded, comp.fingerprint()) == []


@needs_root
def test_a_flag_dropped_after_a_restore_is_named_with_the_file_and_the_flag(flagged: Any, tmp_path: Path) -> None:
    comp = flagged
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    _lost(comp, tmp_path)
    engine_backup.restore(repo, manifest, comp)
    subprocess.run(["chattr", "-a", str(comp.path / LOG)], check=True)
    diffs = compare(_recorded(manifest, comp), comp.fingerprint())
    assert [d.part for d in diffs] == [FILE + LOG]
    (line,) = diffs.describe()
    assert "inode flags differ (lost append-only (+a))" in line and "content and mode as backed up" in line, line


def test_a_flag_added_is_named(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    try:
        before = comp.fingerprint()
        _chattr("+d", comp.path / "dir000")
        _chattr("+A", comp.path / PINNED)
        (dir_line, file_line) = compare(before, comp.fingerprint()).describe()
    finally:
        _unflag(tmp_path)
    assert dir_line.startswith(f"{DIR}dir000: inode flags differ (added no dump (+d))"), dir_line
    assert file_line.startswith(f"{FILE}{PINNED}: inode flags differ (added no atime (+A))"), file_line


@needs_root
def test_an_incremental_archives_a_file_whose_only_change_is_a_flag_and_gives_it_back(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    try:
        repo = LocalRepository(tmp_path / "repo")
        full = engine_backup.backup(repo, [comp])
        _chattr("+i", comp.path / PINNED)
        inc = engine_backup.backup(repo, [comp], parent=full)
        assert _recorded(inc, comp).scheme == "volumes/7"
        _lost(comp, tmp_path)
        engine_backup.restore(repo, inc, comp)
        assert _flags(comp.path / PINNED) == 0x10
        assert compare(_recorded(inc, comp), comp.fingerprint()) == []
        assert compare(_recorded(full, comp), comp.fingerprint()).describe() == [
            f"{FILE}{PINNED}: inode flags differ (added immutable (+i)); content and mode as backed up"
        ]
    finally:
        _unflag(tmp_path)


def test_a_scheme_4_set_is_compared_without_flags_and_says_so(flagged: Any) -> None:
    comp = flagged
    old = comp.legacy_fingerprint("volumes/4")
    assert old is not None and old.scheme == "volumes/4"
    assert not any("fflags:" in p.digest for p in old.parts.values())
    assert any(" mode:" in p.digest for p in old.parts.values())  # modes apart, as scheme 4 had them
    _unflag(comp.path)  # a restore that lost every flag: scheme 4 cannot see it, and says so
    assert compare(old, comp.fingerprint_like(old)) == []
    assert (comp.blind_spot("volumes/4") or "").startswith(FLAGS_NOT_RECORDED)
    assert "immutable, append-only" in FLAGS_NOT_RECORDED
    assert comp.blind_spot("volumes/7") is None


def test_flags_a_file_system_cannot_say_are_not_readable_never_none() -> None:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        flags = fflags.read(fd)
    finally:
        os.close(fd)
    assert flags is None
    assert fflags.token(flags) == " fflags:?"
    assert fflags.from_pax(fflags.to_pax(flags)) is None
    assert fflags.token(0) == ""  # an entry without flags: parts as before
    assert fflags.from_pax({fflags.PAX_KEY: "schg,sappnd,unknown"}) == 0x30  # bsdtar's names, unknown ones ignored


@needs_root
def test_a_staging_copy_holding_flags_it_was_given_is_removed_whole(tmp_path: Path) -> None:
    """A restore that fails after the flags were given (the swap) removes its own copy, immutable files included."""
    from engine.components.files import _discard_staging

    staging = tmp_path / "vol.drproof-restoring"
    (staging / "d").mkdir(parents=True)
    (staging / "d" / "pinned").write_bytes(b"x")
    _chattr("+i", staging / "d" / "pinned")
    _chattr("+a", staging / "d")
    _discard_staging(staging)
    assert not staging.exists()


def _no_flags_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that keeps no inode flags (NFS, FUSE): FS_IOC_GETFLAGS fails with ENOTTY."""
    import errno

    def ioctl(*_args: object) -> bytes:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    monkeypatch.setattr(fflags.fcntl, "ioctl", ioctl)


def test_a_tree_whose_flags_cannot_be_read_records_not_readable_and_every_verdict_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = _volume(tmp_path)
    repo = LocalRepository(tmp_path / "repo")
    with monkeypatch.context() as patched:
        _no_flags_here(patched)
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        details = manifest.component(comp.instance).details
        assert recorded.parts[FILE + PINNED].digest.endswith(" fflags:?")
        assert recorded.parts[DIR + "dir000"].digest.endswith(" fflags:?")
        assert recorded.parts[ROOT_PART].digest.endswith(" fflags:?")  # the directory itself (volumes/7), counted too
        assert not recorded.parts[FILE + "latest.bin"].digest.endswith("?")  # a symlink has no flags
        assert compare(recorded, comp.fingerprint()) == []
        (note,) = comp.comparison_notes(details)
        assert note.startswith("inode flags (chattr +i, +a ...) could not be read on 11 entr(y/ies)"), note
        shutil.rmtree(comp.path)
        engine_backup.restore(repo, manifest, comp)  # the staged proof reads "?" from the archive
        assert compare(recorded, comp.fingerprint()) == []
    # Restored onto a file system that has flags: "not readable" is not "none", so it differs.
    diffs = compare(recorded, comp.fingerprint())
    assert diffs.total == 11  # the ten entries and the directory itself
    assert any(
        line.startswith(f"{FILE}{PINNED}: inode flags could not be compared (not readable → none)")
        for line in diffs.describe()
    ), diffs.describe()


def test_quiet_control_a_tree_whose_flags_read_carries_no_note(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    manifest = engine_backup.backup(LocalRepository(tmp_path / "repo"), [comp])
    assert comp.comparison_notes(manifest.component(comp.instance).details) == []


@needs_root
def test_flags_a_restore_may_not_set_are_a_warning_and_named_by_fidelity(
    flagged: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As a restore run by anyone but root: +i and +a need CAP_LINUX_IMMUTABLE (EPERM); the restore goes on."""
    import logging

    comp = flagged
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    _lost(comp, tmp_path)
    refuse_flags(monkeypatch, 0x30)
    with caplog.at_level(logging.WARNING, logger="engine.components.untar"):
        engine_backup.restore(repo, manifest, comp)
    monkeypatch.undo()
    assert "4 entr(y/ies) could not be given the inode flags" in caplog.text, caplog.text
    assert _flags(comp.path / "dir002" / "file000002.bin") == 0x40  # no dump: the owner's to set, given
    lines = compare(_recorded(manifest, comp), comp.fingerprint()).describe()
    assert f"{FILE}{LOG}: inode flags differ (lost append-only (+a)); content and mode as backed up" in lines, lines
    assert f"{FILE}{PINNED}: inode flags differ (lost immutable (+i)); content and mode as backed up" in lines, lines


@needs_root
def test_a_pinned_configuration_file_comes_back_immutable_and_a_lost_flag_is_named(tmp_path: Path) -> None:
    """configuration/6: the same archive, restore and comparison of flags as volumes/5."""
    from engine.components.configuration import ConfigurationComponent, ConfigurationParams
    from tests.conftest import DirsRuntime

    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    pinned = sorted(p for p in comp.path.rglob("*") if p.is_file())[0]
    rel = str(pinned.relative_to(comp.path))
    try:
        _chattr("+i", pinned)
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        recorded = _recorded(manifest, comp)
        assert recorded.scheme == "configuration/7"
        assert compare(recorded, comp.fingerprint()) == []
        _lost(comp, tmp_path)
        engine_backup.restore(repo, manifest, comp)
        assert _flags(pinned) == 0x10
        assert compare(recorded, comp.fingerprint()) == []  # quiet control
        subprocess.run(["chattr", "-i", str(pinned)], check=True)
        assert compare(recorded, comp.fingerprint()).describe() == [
            f"{FILE}{rel}: inode flags differ (lost immutable (+i)); content and mode as backed up"
        ]
    finally:
        _unflag(tmp_path)


@needs_root
def test_a_staging_copy_left_with_flags_by_a_killed_restore_is_removed_by_the_next(
    flagged: Any, tmp_path: Path
) -> None:
    """Killed between giving the flags and the swap: the copy is drproof's own, so the next restore clears and removes
    it (the replaced live copy, the operator's, is still refused: test_restored_flags)."""
    comp = flagged
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    staging = comp.path.with_name(comp.path.name + ".drproof-restoring")
    (staging / "d").mkdir(parents=True)
    (staging / "d" / "pinned").write_bytes(b"x")
    _chattr("+i", staging / "d" / "pinned")
    _lost(comp, tmp_path)
    engine_backup.restore(repo, manifest, comp)
    assert not staging.exists()
    assert compare(_recorded(manifest, comp), comp.fingerprint()) == []
