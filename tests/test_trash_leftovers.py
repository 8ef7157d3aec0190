"""A prune killed while removing a deleted set's files: the rest are freed later, never kept for ever.

A local repository deletes a set by renaming it out of ``sets/`` into ``.trash`` and then
removing its files. Found by review: a prune killed in between (SIGKILL, OOM, a reboot)
left the rest there for ever: hidden, never counted, not removed by the next prune nor by
``drproof clean``; on a repository disk that was full, which is why one prunes, the
space never came back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from drills.cli import main
from engine.repository.local import LocalRepository


def _set(repo: LocalRepository, size: int) -> str:
    writer = repo.begin("t")
    with writer.artifact("c", "a") as sink:
        sink.write(os.urandom(size))
    return writer.commit([], {}, {}).id


def _killed_delete(repo: LocalRepository, backup_id: str) -> None:
    """``repo.delete`` in a child that dies (no cleanup) after removing one file of the set in .trash."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        real = shutil.rmtree

        def rmtree(path: object, *args: object, **kwargs: object) -> None:
            if ".trash" in str(path):
                next(p for p in Path(str(path)).rglob("*") if p.is_file()).unlink()
                os._exit(137)
            real(path, *args, **kwargs)  # type: ignore[arg-type]

        try:
            shutil.rmtree = rmtree  # type: ignore[assignment]
            repo.delete(backup_id)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137


def _trash_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / ".trash").rglob("*") if p.is_file())


def test_the_next_deletion_frees_what_a_killed_one_left(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    first, second, newest = (_set(repo, 1 << 20) for _ in range(3))
    _killed_delete(repo, first)
    assert first not in {m.id for m in repo.list()}
    assert _trash_bytes(repo.root) > 0
    repo.delete(second)
    assert _trash_bytes(repo.root) == 0 and list((repo.root / ".trash").iterdir()) == []
    assert [m.id for m in repo.list()] == [newest]


def test_clean_lists_then_removes_what_a_killed_deletion_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    first, newest = _set(repo, 1 << 16), _set(repo, 1 << 16)
    _killed_delete(repo, first)
    (left,) = [p.name for p in (repo.root / ".trash").iterdir()]
    assert main(["clean", "--repository", str(repo.root), "--dry-run"]) == 0
    assert f"would remove what a deleted set left in .trash/{left}" in capsys.readouterr().out
    assert _trash_bytes(repo.root) > 0
    assert main(["clean", "--repository", str(repo.root)]) == 0
    assert f"removed what a deleted set left in .trash/{left}" in capsys.readouterr().out
    assert list((repo.root / ".trash").iterdir()) == []
    assert [m.id for m in repo.list()] == [newest] and repo.verify(newest).ok


def test_a_deletion_with_nothing_left_over_deletes_only_its_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quiet control: the other sets stay and verify; clean has nothing to say about .trash."""
    repo = LocalRepository(tmp_path / "repo")
    first, second, newest = (_set(repo, 1 << 12) for _ in range(3))
    repo.delete(first)
    assert [m.id for m in repo.list()] == [second, newest] and all(repo.verify(i).ok for i in (second, newest))
    assert main(["clean", "--repository", str(repo.root)]) == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_a_prune_killed_between_recording_and_deleting_a_set_is_named_and_finished_by_the_next(
    tmp_path: Path,
) -> None:
    """The set is back under its tombstone, as a replay would put it: the finding names both causes, and a prune ends it."""
    from engine import retention

    repo = LocalRepository(tmp_path / "repo")
    first, _second, newest = (_set(repo, 1 << 10) for _ in range(3))
    repo.record_deletion(first, "retention policy")  # killed right after this
    (finding,) = [f for f in repo.chain_audit().findings if f.backup_id == first]
    assert finding.kind == "replayed" and "prune was interrupted" in finding.detail
    retention.prune(repo, retention.Policy(keep_last=1))
    assert [m.id for m in repo.list()] == [newest]
    assert repo.chain_audit().findings == []
