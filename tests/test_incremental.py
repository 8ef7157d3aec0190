"""Incremental volume backups: changes only, restored as a chain, never from a broken one."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.files import extract_layers
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.errors import IntegrityError
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _volume(root: Path) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=30, file_size=2048), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    return comp


def _backup(repo: LocalRepository, comp: VolumesComponent, parent: object = None) -> object:
    return engine_backup.backup(repo, [comp], fingerprints={"files": comp.fingerprint()}, parent=parent)  # type: ignore[arg-type]


def test_chain_of_two_incrementals_restores_exactly() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        comp = _volume(root / "live")
        comp.seed()
        repo = LocalRepository(root / "repo")
        full = _backup(repo, comp)
        files = sorted(p for p in comp.path.rglob("*.bin") if not p.is_symlink())
        files[0].write_bytes(os.urandom(100))
        (comp.path / "dir000" / "extra.txt").write_text("one")
        inc1 = _backup(repo, comp, full)
        files[1].unlink()
        (comp.path / "latest.bin").unlink()  # the symlink becomes a regular file
        (comp.path / "latest.bin").write_text("no longer a link")
        inc2 = _backup(repo, comp, inc1)
        expected = comp.fingerprint()
        assert [len(engine_backup.chain(repo, m, "files")) for m in (full, inc1, inc2)] == [1, 2, 3]  # type: ignore[arg-type]
        inc2_files = [a for a in inc2.artifacts if a.name == "files.tar"]  # type: ignore[attr-defined]
        full_files = [a for a in full.artifacts if a.name == "files.tar"]  # type: ignore[attr-defined]
        assert inc2_files[0].raw_size < full_files[0].raw_size / 5

        import shutil

        shutil.rmtree(comp.path)
        engine_backup.restore(repo, inc2, comp)  # type: ignore[arg-type]
        assert comp.fingerprint() == expected
        # Restoring the middle of the chain gives that moment's state, not the latest.
        engine_backup.restore(repo, inc1, comp)  # type: ignore[arg-type]
        assert (comp.path / "latest.bin").is_symlink() and files[1].exists()


def test_missing_parent_is_refused_before_anything_changes() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        comp = _volume(root / "live")
        comp.seed()
        repo = LocalRepository(root / "repo")
        full = _backup(repo, comp)
        (comp.path / "new.txt").write_text("x")
        inc = _backup(repo, comp, full)
        repo.delete(full.id)  # type: ignore[attr-defined]
        before = comp.fingerprint()
        with pytest.raises(IntegrityError, match="which is gone"):
            engine_backup.restore(repo, inc, comp)  # type: ignore[arg-type]
        assert comp.fingerprint() == before


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("removal", ["../outside", "/etc/passwd", "a/../../outside", "."])
def test_layer_removals_cannot_leave_the_restored_tree(removal: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        target = root / "vol"
        target.mkdir()
        (target / "keep.txt").write_text("live")
        outside = root / "outside"
        outside.write_text("must survive")

        @contextmanager
        def layer(data: bytes):  # type: ignore[no-untyped-def]
            yield io.BytesIO(data)

        with pytest.raises(IntegrityError):
            extract_layers([(lambda: layer(_tar({"a/b.txt": b"x"})), []), (lambda: layer(_tar({})), [removal])], target)
        assert outside.read_text() == "must survive"
        assert (target / "keep.txt").read_text() == "live"


@pytest.mark.parametrize("fast", [True, False], ids=["drproof-headers", "tarfile-headers"])
def test_an_entry_that_vanishes_while_a_live_directory_is_archived_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """Applications rename temporary files while a backup runs; tar must not crash on them."""
    import io
    import os
    import tarfile

    from engine.components import files

    monkeypatch.setattr(files, "FAST_HEADERS", fast)
    root = tmp_path / "live"
    root.mkdir()
    (root / "keep.txt").write_text("kept")
    (root / ".tmp-1").write_text("partial")
    real_lstat, real_open = os.lstat, os.open

    def race(name: object) -> None:
        if str(name).endswith(".tmp-1") and (root / ".tmp-1").exists():
            (root / ".tmp-1").rename(root / "renamed")  # the writer finished in between

    def racing_lstat(name: object, *args: object, **kw: object) -> os.stat_result:
        race(name)
        return real_lstat(name, *args, **kw)  # type: ignore[arg-type]

    def racing_open(name: object, *args: object, **kw: object) -> int:
        race(name)  # a file the listing says is regular is opened without an lstat first
        return real_open(name, *args, **kw)  # type: ignore[arg-type]

    sink = io.BytesIO()
    monkeypatch.setattr(os, "lstat", racing_lstat)
    monkeypatch.setattr(os, "open", racing_open)
    count = files.write_tar(root, sink)
    monkeypatch.undo()
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as archive:
        names = archive.getnames()
    assert "keep.txt" in names and ".tmp-1" not in names
    assert count == len(names)
