"""engine.diskspace and the room a tree restore asks for, on the real filesystem of tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.files import room_for
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.diskspace import free_bytes, mount_of, require_free, reserve_for, size_text
from engine.errors import InsufficientSpace
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def test_nothing_to_write_fits_and_more_than_the_free_space_is_refused_naming_the_filesystem(tmp_path: Path) -> None:
    require_free(tmp_path, 0, "nothing")
    with pytest.raises(InsufficientSpace) as caught:
        require_free(tmp_path, free_bytes(tmp_path) + 1, "the restored copy of files")
    message = str(caught.value)
    for needle in (mount_of(tmp_path), "the restored copy of files", "--to", "nothing was changed"):
        assert needle in message, (needle, message)


def test_the_reserve_is_five_percent_and_at_most_one_gib(tmp_path: Path) -> None:
    assert 0 < reserve_for(tmp_path) <= 1 << 30
    assert size_text(3 << 20) == "3.0 MiB" and size_text(512) == "512 B"


@pytest.mark.parametrize(("files", "size"), [(600, 1), (50, 70_000), (0, 0)], ids=["tiny-files", "larger", "empty"])
def test_the_room_counted_from_the_manifest_bounds_what_the_restored_tree_takes(
    tmp_path: Path, files: int, size: int
) -> None:
    """Tiny files take a whole block each on disk, four times their archive: the room counts it."""
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=size), DirsRuntime(tmp_path / "live"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    room = room_for([engine_backup._source(repo, manifest, "files")], "files.tar")
    (comp.path / "changed").write_text("x")
    engine_backup.restore(repo, manifest, comp)
    taken = sum(p.lstat().st_blocks * 512 for p in comp.path.rglob("*")) + comp.path.stat().st_blocks * 512
    assert taken <= room.bytes_on(comp.path.parent), (taken, room)
