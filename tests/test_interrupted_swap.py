"""A restore killed during its swap: the live data are either the old tree or the new one, never lost.

A restore in place builds the copy beside the target (``<name>.drproof-restoring``), sets
the live tree aside (``<name>.drproof-replaced``), renames the copy in, then removes what
it set aside. A SIGKILL can land between any two of these steps; each is reproduced here
by a forked child that dies (``os._exit``, no cleanup) at that step. Found by review: a
kill between the two renames, then an application that recreated its (empty) directory,
then a restore that was refused: the refused restore had deleted the data set aside, the
only copy of the live data, and said "the live data were not touched"; a backup in
between archived the empty directory as if it were the data.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.components import files
from engine.components.files import extract_tar, write_tar
from engine.errors import ComponentError

POINTS = ["before-aside", "between-renames", "after-swap", "while-removing-aside"]


def _archive(content: bytes) -> Callable[[], Any]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("a.txt", "b.txt"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))

    @contextmanager
    def opened() -> Iterator[io.BytesIO]:
        yield io.BytesIO(buf.getvalue())

    return opened


def _tree(root: Path) -> dict[str, bytes] | None:
    if not root.is_dir():
        return None
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _live(base: Path) -> Path:
    target = base / "vol"
    target.mkdir()
    (target / "a.txt").write_bytes(b"old")
    (target / "b.txt").write_bytes(b"old")
    return target


def _killed_restore(target: Path, point: str) -> None:
    """Run a restore of "new" into ``target`` in a child that dies, without any cleanup, at ``point``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        renames = 0
        real_rename, real_rmtree = os.rename, shutil.rmtree

        def rename(src: Any, dst: Any) -> None:
            nonlocal renames
            if point == "before-aside" and renames == 0:
                os._exit(137)
            real_rename(src, dst)
            renames += 1
            if (point, renames) in (("between-renames", 1), ("after-swap", 2)):
                os._exit(137)

        def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
            if point == "while-removing-aside" and str(path).endswith(".drproof-replaced"):
                (Path(path) / "a.txt").unlink()  # part of it removed
                os._exit(137)
            real_rmtree(path, *args, **kwargs)

        try:
            os.rename, shutil.rmtree = rename, rmtree  # type: ignore[assignment]
            extract_tar(_archive(b"new"), target)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, "the restore was not killed where asked"


OLD = {"a.txt": b"old", "b.txt": b"old"}
NEW = {"a.txt": b"new", "b.txt": b"new"}


@pytest.mark.parametrize("point", POINTS)
def test_a_restore_killed_at_any_step_of_its_swap_is_finished_by_the_next(tmp_path: Path, point: str) -> None:
    """Quiet control: whatever the step, the old tree is whole somewhere and the next restore finishes cleanly."""
    target = _live(tmp_path)
    _killed_restore(target, point)
    aside = tmp_path / "vol.drproof-replaced"
    assert _tree(target) in (OLD, NEW) or (_tree(target) is None and _tree(aside) == OLD)
    extract_tar(_archive(b"new"), target)
    assert _tree(target) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]


def test_a_refused_restore_keeps_the_data_set_aside_when_the_directory_was_recreated(tmp_path: Path) -> None:
    """Killed between the renames; the application recreates an empty directory; the next restore is refused."""
    target = _live(tmp_path)
    _killed_restore(target, "between-renames")
    target.mkdir()  # docker -v, an application's own mkdir -p

    def refuse(staging: Path) -> None:
        raise ComponentError("refusing to restore 'vol' (the live data were not touched)")

    with pytest.raises(ComponentError) as caught:
        extract_tar(_archive(b"new"), target, check=refuse)
    assert _tree(tmp_path / "vol.drproof-replaced") == OLD, "the only copy of the live data was deleted"
    assert "vol.drproof-replaced" in str(caught.value)
    assert _tree(target) == {}


def test_a_restore_does_not_silently_replace_data_set_aside_by_an_interrupted_swap(tmp_path: Path) -> None:
    """Even a restore that would succeed names the data set aside rather than deleting them unseen."""
    target = _live(tmp_path)
    _killed_restore(target, "between-renames")
    target.mkdir()
    with pytest.raises(ComponentError, match="interrupted"):
        extract_tar(_archive(b"new"), target)
    assert _tree(tmp_path / "vol.drproof-replaced") == OLD and _tree(target) == {}


def test_a_backup_refuses_an_empty_directory_while_the_live_data_are_set_aside(tmp_path: Path) -> None:
    target = _live(tmp_path)
    _killed_restore(target, "between-renames")
    target.mkdir()
    with pytest.raises(ComponentError, match=r"refusing to back up .*vol\.drproof-replaced"):
        write_tar(target, io.BytesIO())


def test_a_backup_of_the_missing_directory_says_where_the_live_data_are(tmp_path: Path) -> None:
    target = _live(tmp_path)
    _killed_restore(target, "between-renames")
    with pytest.raises(ComponentError, match=r"not a directory.*interrupted.*vol\.drproof-replaced"):
        write_tar(target, io.BytesIO())


def test_a_backup_after_a_finished_swap_killed_while_cleaning_up_is_not_refused(tmp_path: Path) -> None:
    """Quiet control: the note proves the swap finished, so what is left aside is garbage, not live data."""
    target = _live(tmp_path)
    _killed_restore(target, "while-removing-aside")
    assert _tree(target) == NEW
    assert write_tar(target, io.BytesIO()) == 2
    assert files.interrupted_swap(target) == ""
