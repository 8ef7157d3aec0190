"""redis-rdb: the restore's disk space, on real small tmpfs filesystems (root).

A redis-rdb restore writes the whole RDB file twice over where nothing looked at the
room: into its scratch directory (in the system temp directory, on many hosts the
live server's own filesystem), and, for a server the local runtime runs, a copy beside
the live server's own files for it to load. Either could fill a disk the live Redis
writes its snapshots to (a failed BGSAVE makes Redis refuse writes). These tests check
that a scratch directory without room refuses the restore before the live server is
touched, and that a live directory without room for the copy is never filled (the keys
are copied over the network instead).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from engine.backup import backup, restore
from engine.components.redis import RedisParams
from engine.components.redis_rdb import RedisRdbComponent
from engine.diskspace import free_bytes
from engine.errors import InsufficientSpace
from engine.fingerprint import compare
from engine.repository.local import LocalRepository
from engine.runtime import local as local_runtime
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import mounted_tmpfs

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _occupy(disk: Path, leave: int) -> None:
    """Another application's data: fill ``disk`` until ``leave`` bytes are free."""
    with open(disk / "other-application.data", "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free_bytes(disk) - leave)


def _cache(runtime: LocalRuntime) -> RedisRdbComponent:
    """About 8 MiB of keys: an RDB file of about that size."""
    comp = RedisRdbComponent(
        "cache", RedisParams(keys=4000, key_spaces=["blob"], value_size=2048, random_seed=3), runtime
    )
    comp.provision()
    comp.seed()
    return comp


def test_a_scratch_directory_without_room_refuses_the_restore_before_the_live_server_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalRuntime(tmp_path / "work") as runtime, mounted_tmpfs(tmp_path / "tmp", "24m", "0755") as tmp:
        comp = _cache(runtime)
        repo = LocalRepository(tmp_path / "repo")
        manifest = backup(repo, [comp])
        [record] = manifest.artifacts_of("cache")
        assert record.raw_size > 6 * MiB
        comp.client().set("written:after", "the backup")
        before = comp.fingerprint()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        _occupy(tmp, 4 * MiB)  # the scratch filesystem: not room for the RDB
        free = free_bytes(tmp)
        with pytest.raises(InsufficientSpace) as caught:
            restore(repo, manifest, comp)
        message = str(caught.value)
        for needle in (str(tmp), "MiB", "TMPDIR", "nothing was changed"):
            assert needle in message, (needle, message)
        assert "--to" not in message  # the scratch directory is not where the data go
        assert free_bytes(tmp) == free
        assert [p.name for p in tmp.iterdir()] == ["other-application.data"]
        assert compare(before, comp.fingerprint()) == []


def test_a_live_directory_without_room_for_the_loaded_copy_is_not_filled_and_the_keys_still_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scratch directory elsewhere (a copy, not a link): the live server's disk keeps its room."""
    with mounted_tmpfs(tmp_path / "live", "32m", "0755") as live, LocalRuntime(live / "work") as runtime:
        comp = _cache(runtime)
        repo = LocalRepository(tmp_path / "repo")
        manifest = backup(repo, [comp])
        before = comp.fingerprint()
        comp.client().flushall()
        _occupy(live, 6 * MiB)  # less than the RDB: its copy beside the live files cannot fit
        lowest: list[int] = []
        real_copy = shutil.copyfile

        def copyfile(src: str, dst: str) -> str:
            try:
                return real_copy(src, dst)
            finally:
                lowest.append(free_bytes(live))

        monkeypatch.setattr(local_runtime.shutil, "copyfile", copyfile)
        free = free_bytes(live)
        restore(repo, manifest, comp)
        assert compare(before, comp.fingerprint()) == []
        assert lowest == [], f"the live server's filesystem was filled to {min(lowest)} bytes free"
        assert not list(comp.service.base.glob(".drproof-restore-*"))
        assert free_bytes(live) >= free - MiB
