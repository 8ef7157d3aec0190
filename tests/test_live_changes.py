"""Files that change, shrink or vanish while a live tree is archived (issue 18).

The archive must stay readable by GNU tar, the fingerprint must describe the bytes
actually stored (so the restore proof and fidelity agree with the archive), and each
such entry must be recorded, never a traceback and never silence.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.components import files
from engine.components.livechanges import LiveChanges, describe
from engine.streams import CHUNK

SIZES = [100, 3 * CHUNK]
IDS = ["small", "large"]


def _archive(
    root: Path, monkeypatch: pytest.MonkeyPatch, fast: bool = True
) -> tuple[bytes, dict[str, files.Part], LiveChanges]:
    monkeypatch.setattr(files, "FAST_HEADERS", fast)
    sink, parts, changes = io.BytesIO(), {}, LiveChanges()
    files.write_tar(root, sink, parts=parts, changes=changes)
    return sink.getvalue(), parts, changes


def _on_fstat_of(victim: Path, act: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``act`` once, the first time the archiver looks at ``victim``'s open descriptor."""
    real_fstat, real_lstat, done = os.fstat, os.lstat, []
    inode = victim.stat().st_ino

    def hook(result: os.stat_result) -> os.stat_result:
        if not done and result.st_ino == inode:
            done.append(True)
            act()
        return result

    monkeypatch.setattr(os, "fstat", lambda fd: hook(real_fstat(fd)))
    monkeypatch.setattr(os, "lstat", lambda p, **kw: hook(real_lstat(p, **kw)))


def _extracted(data: bytes, tmp_path: Path) -> Path:
    (tmp_path / "a.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(out)], check=True)
    return out


@pytest.mark.parametrize("fast", [True, False], ids=["own-headers", "tarfile"])
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_a_file_truncated_while_archived_is_stored_consistently_and_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, fast: bool
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "app.log").write_bytes(b"x" * size)
    (tree / "other.txt").write_text("steady")
    _on_fstat_of(tree / "app.log", lambda: os.truncate(tree / "app.log", 10), monkeypatch)  # copytruncate
    data, parts, changes = _archive(tree, monkeypatch, fast)
    monkeypatch.undo()
    stored = (_extracted(data, tmp_path) / "app.log").read_bytes()
    assert stored[:10] == b"x" * 10 and set(stored[10:]) <= {0}, "stored as read, zero-filled when announced"
    assert files.file_part(tmp_path / "out" / "app.log") == parts["file app.log"], "the part is of what is stored"
    assert changes.count == 1 and "app.log: shrank from" in changes.listed[0]
    assert files.file_part(tmp_path / "out" / "other.txt") == parts["file other.txt"]


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_a_file_that_grows_while_archived_is_noted_and_stored_as_first_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "app.log").write_bytes(b"y" * size)

    def append() -> None:
        with open(tree / "app.log", "ab") as fh:
            fh.write(b"appended")

    _on_fstat_of(tree / "app.log", append, monkeypatch)
    data, parts, changes = _archive(tree, monkeypatch)
    monkeypatch.undo()
    assert (_extracted(data, tmp_path) / "app.log").read_bytes() == b"y" * size
    assert files.file_part(tmp_path / "out" / "app.log") == parts["file app.log"]
    assert changes.count == 1 and "grew from" in changes.listed[0]


def test_entries_that_vanish_while_archived_are_noted_and_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    (tree / "tmpdir").mkdir(parents=True)
    (tree / "tmpdir" / "inner").write_text("gone with its directory")
    (tree / "a-first").write_text("x")
    (tree / "b-temp").write_text("renamed away by the application")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        it = real_scandir(path)
        if str(path) == str(tree):  # the root is listed; then both disappear
            entries = list(it)
            (tree / "b-temp").unlink()
            (tree / "tmpdir" / "inner").unlink()
            (tree / "tmpdir").rmdir()
            return _Listing(entries)
        return it

    monkeypatch.setattr(os, "scandir", scandir)
    data, parts, changes = _archive(tree, monkeypatch)
    monkeypatch.undo()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert "b-temp" not in names and "file b-temp" not in parts
    assert sorted(changes.vanished) == ["b-temp", "tmpdir"], "listed, then gone before they were opened"
    assert "tmpdir" not in names and "dir tmpdir" not in parts and "a-first" in names


class _Listing(list):  # type: ignore[type-arg]
    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_steady_tree_notes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quiet control: nothing changes, nothing is noted, the summary is None."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, size in enumerate((0, 1, 100, CHUNK + 7)):
        (tree / f"f{i}").write_bytes(os.urandom(size))
    _, _, changes = _archive(tree, monkeypatch)
    assert changes.count == 0 and changes.summary() is None


def test_the_summary_names_the_first_entries_and_counts_the_rest() -> None:
    changes = LiveChanges()
    for i in range(60):
        changes.gone(f"tmp/{i}")
    summary = changes.summary()
    assert summary is not None and summary["count"] == 60 and len(summary["entries"]) == 50
    assert describe({"changed_while_archived": summary})[-1] == "... and 10 more"


def test_a_directory_that_cannot_be_listed_is_an_error_not_a_gap(tmp_path: Path) -> None:
    """A path over the system's limit: the walk raises, naming the directory, instead of skipping it."""
    from engine.errors import ComponentError

    top = tmp_path / "tree"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for i in range(30):
            name = f"{i:02d}" + "d" * 200
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        leaf = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"must not be skipped silently")
        os.close(leaf)
    finally:
        os.close(fd)
    with pytest.raises(ComponentError, match="over this system's limit"):
        files.tree_parts(top)
    with pytest.raises(ComponentError, match="over this system's limit"):
        files.write_tar(top, io.BytesIO())
    with pytest.raises(ComponentError, match="over this system's limit"):
        files.count_entries(str(top))


def _volume_backups(tmp_path: Path) -> tuple[object, object, object]:
    from engine import backup as engine_backup
    from engine.components.volumes import VolumesComponent, VolumesParams
    from engine.repository import LocalRepository
    from tests.conftest import DirsRuntime

    comp = VolumesComponent("files", VolumesParams(files=20, file_size=512), DirsRuntime(tmp_path / "live"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    return comp, repo, engine_backup.backup(repo, [comp])


def test_an_incremental_records_what_it_archived_when_a_file_changed_after_its_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fingerprint first, archive second: a write in between must not make the set unrestorable."""
    from engine import backup as engine_backup
    from engine.components import volumes

    comp, repo, full = _volume_backups(tmp_path)
    target = sorted(comp.path.rglob("*.bin"))[0]  # type: ignore[attr-defined]
    target.write_bytes(b"changed once, so the incremental archives it")
    real = volumes.write_tar

    def racing(*args: object, **kwargs: object) -> int:
        target.write_bytes(b"and again between the fingerprint and the archive")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(volumes, "write_tar", racing)
    inc = engine_backup.backup(repo, [comp], parent=full)  # type: ignore[arg-type]
    monkeypatch.undo()
    details = inc.component("files").details
    assert details["changed_while_archived"]["count"] == 1
    assert "changed between the fingerprint and the archive" in details["changed_while_archived"]["entries"][0]
    now = comp.fingerprint()  # type: ignore[attr-defined]
    import shutil

    shutil.rmtree(comp.path)  # type: ignore[attr-defined]
    engine_backup.restore(repo, inc, comp)  # type: ignore[arg-type]  # its own proof passes
    assert comp.fingerprint() == now  # type: ignore[attr-defined]
    assert target.read_bytes() == b"and again between the fingerprint and the archive"


def test_an_incremental_of_a_steady_tree_records_no_changes(tmp_path: Path) -> None:
    from engine import backup as engine_backup

    comp, repo, full = _volume_backups(tmp_path)
    (comp.path / "new.txt").write_text("added before the backup")  # type: ignore[attr-defined]
    inc = engine_backup.backup(repo, [comp], parent=full)  # type: ignore[arg-type]
    assert "changed_while_archived" not in inc.component("files").details


def test_drproof_backup_of_a_log_truncated_mid_backup_succeeds_warns_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case end to end: copytruncate during `drproof backup` (was a traceback in 3 of 4 runs)."""
    import json

    from drills.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "app.log").write_bytes(b"line\n" * 100_000)  # 500 kB: more than one read
    (data / "orders.csv").write_text("id,total\n1,9.99\n")
    (tmp_path / "backup-config.yaml").write_text(
        "repository: {path: repo}\ncomponents:\n  uploads: {kind: volumes, path: data}\n"
    )
    _on_fstat_of(data / "app.log", lambda: os.truncate(data / "app.log", 0), monkeypatch)
    code = main(["backup", "--config", str(tmp_path / "backup-config.yaml")])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "app.log: shrank from 500000 to 0 bytes" in err and "Traceback" not in err
    audit = [json.loads(line) for line in (tmp_path / "repo" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["changed_while_archived"]["uploads"]["count"] == 1
    assert main(["recovery", "verify", "--config", str(tmp_path / "backup-config.yaml")]) == 0
