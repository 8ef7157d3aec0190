"""Device nodes, FIFOs and sockets in a backed-up tree: backup and restore agree.

A device node was archived without a word and every restore of that set was then
refused as a hostile archive (review B3): a published, verified set that could never be
restored. Now the backup refuses it, naming it; nothing is published and the live tree
is left as it was. FIFOs are archived, restored and compared; sockets are neither
archived nor compared (a server makes its socket when it starts), so a tree holding one
restores quietly.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.base import Component
from engine.errors import ComponentError
from engine.fingerprint import compare
from engine.repository import LocalRepository
from tests.conftest import empty_tree_component
from tests.integration.servers import unavailable

KINDS = ["volumes", "configuration"]


def _component(kind: str, root: Path) -> Component:
    comp: Component = empty_tree_component(kind, root)
    path: Path = comp.path  # type: ignore[attr-defined]
    (path / "app.yaml").write_text("workers: 4\n")
    (path / "data").mkdir()
    (path / "data" / "state.json").write_text('{"n": 1}\n')
    return comp


def _mknod(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        unavailable("creating a device node needs root (CI runs as root)")


@pytest.fixture
def bound_socket() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def _listen(path: Path, held: list[socket.socket]) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    held.append(s)


@pytest.mark.parametrize("kind", KINDS)
def test_a_device_node_refuses_the_backup_by_name_and_publishes_nothing(tmp_path: Path, kind: str) -> None:
    """Negative control: was a set whose every restore was refused as a hostile archive."""
    comp = _component(kind, tmp_path / "live")
    path: Path = comp.path  # type: ignore[attr-defined]
    _mknod(path / "data" / "null")
    repo = LocalRepository(tmp_path / "repo")
    before = comp.fingerprint()
    with pytest.raises(ComponentError) as refused:
        engine_backup.backup(repo, [comp])
    message = str(refused.value)
    assert "'data/null'" in message and str(path) in message
    assert "character device node" in message and "move it out" in message
    assert "nothing is published" in message
    assert repo.list() == []
    assert compare(before, comp.fingerprint()) == []
    assert stat.S_ISCHR((path / "data" / "null").lstat().st_mode)


def test_a_device_node_added_after_a_full_backup_refuses_the_incremental(tmp_path: Path) -> None:
    comp = _component("volumes", tmp_path / "live")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    _mknod(comp.path / "null")  # type: ignore[attr-defined]
    with pytest.raises(ComponentError, match=r"'null' .*character device node"):
        engine_backup.backup(repo, [comp], parent=full)
    assert [m.id for m in repo.list()] == [full.id]


@pytest.mark.parametrize("kind", KINDS)
def test_fifos_and_sockets_back_up_and_restore_quietly(
    tmp_path: Path, kind: str, bound_socket: list[socket.socket]
) -> None:
    """Quiet control: a FIFO comes back as a FIFO; a socket is left out on both sides."""
    comp = _component(kind, tmp_path / "live")
    path: Path = comp.path  # type: ignore[attr-defined]
    os.mkfifo(path / "data" / "control", 0o640)
    _listen(path / "data" / "app.sock", bound_socket)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    taken = manifest.components[0].fingerprint
    assert compare(taken, comp.fingerprint()) == []  # the live socket is no difference
    assert "file data/control" in taken.parts and "file data/app.sock" not in taken.parts
    shutil.rmtree(path)
    engine_backup.restore(repo, manifest, comp)
    assert compare(taken, comp.fingerprint()) == []
    assert stat.S_ISFIFO((path / "data" / "control").lstat().st_mode)
    assert not (path / "data" / "app.sock").exists()
    _listen(path / "data" / "app.sock", bound_socket)  # the server starts again
    assert compare(taken, comp.fingerprint()) == []


def test_an_incremental_of_a_tree_with_a_new_socket_restores(tmp_path: Path, bound_socket: list[socket.socket]) -> None:
    """The incremental fingerprints before it archives: a socket there was a part no archive held."""
    comp = _component("volumes", tmp_path / "live")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    _listen(comp.path / "app.sock", bound_socket)  # type: ignore[attr-defined]
    (comp.path / "new.txt").write_text("added")  # type: ignore[attr-defined]
    inc = engine_backup.backup(repo, [comp], parent=full)
    shutil.rmtree(comp.path)  # type: ignore[attr-defined]
    engine_backup.restore(repo, inc, comp)
    assert compare(inc.components[0].fingerprint, comp.fingerprint()) == []
    assert (comp.path / "new.txt").read_text() == "added"  # type: ignore[attr-defined]
