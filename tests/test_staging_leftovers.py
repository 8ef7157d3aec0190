"""Half-written sets of killed backups are found and removed; a live writer's never is (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drills.cli import main
from engine.repository import staging
from engine.repository.local import LocalRepository
from tests.conftest import in_pid_namespace


def _killed_backup(repo_root: Path) -> str:
    """A backup process that starts a set and is SIGKILLed mid-write; the set's id."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom engine.repository.local import LocalRepository\n"
        "w = LocalRepository(Path(sys.argv[1])).begin('x')\n"
        "with w.artifact('c', 'a') as s:\n    s.write(b'x' * 1000)\n    print(w.id, flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo_root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    backup_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return backup_id


def test_the_next_backup_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    dead = _killed_backup(repo.root)
    assert (repo.root / ".staging" / dead).is_dir()
    live = repo.begin("live")  # this process is alive: its own set is never a leftover
    assert not (repo.root / ".staging" / dead).exists() and not (repo.root / ".staging" / f"{dead}.owner").exists()
    assert staging.clean(repo.root) == [] and (repo.root / ".staging" / live.id).is_dir()
    live.abort()
    assert list((repo.root / ".staging").iterdir()) == []


def test_clean_lists_then_removes_and_leaves_other_hosts_and_recent_notes_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    dead = _killed_backup(repo.root)
    other = repo.root / ".staging" / "20260101T000000Z-other"
    other.mkdir()
    (repo.root / ".staging" / "20260101T000000Z-other.owner").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    recent = repo.root / ".staging" / "20260101T000000Z-nonote"
    recent.mkdir()
    assert main(["clean", "--repository", str(repo.root), "--dry-run"]) == 0
    assert f"would remove the half-written set .staging/{dead}" in capsys.readouterr().out
    assert (repo.root / ".staging" / dead).exists()
    assert main(["clean", "--repository", str(repo.root)]) == 0
    assert not (repo.root / ".staging" / dead).exists() and other.exists() and recent.exists()
    old = time.time() - staging.NO_NOTE_STALE_S - 60
    os.utime(recent, (old, old))
    assert staging.clean(repo.root) == ["20260101T000000Z-nonote"] and other.exists()


def test_a_live_backup_in_another_pid_namespace_of_this_host_keeps_its_set(tmp_path: Path) -> None:
    """Found by review: a backup in a container with the host's name (``--network host``) is pid 1 there; read
    here, pid 1 is another process, and its live set was removed as a dead one's."""
    repo = LocalRepository(tmp_path / "repo")
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom engine.repository.local import LocalRepository\n"
        "w = LocalRepository(Path(sys.argv[1])).begin('x')\nprint(w.id, flush=True)\nsys.stdin.read()\n"
    )
    with in_pid_namespace(code, str(repo.root)) as backup_id:
        note = json.loads((repo.root / ".staging" / f"{backup_id}.owner").read_text())
        assert note["pid"] == 1
        assert staging.clean(repo.root) == [] and (repo.root / ".staging" / backup_id).is_dir()


def test_a_note_of_another_pid_namespace_is_judged_by_age_only(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    young, old = root / ".staging" / "young", root / ".staging" / "old"
    for d in (young, old):
        d.mkdir(parents=True)
        note = {"host": socket.gethostname(), "pid": 1, "start": "1", "pidns": "4026000001"}
        d.with_name(d.name + ".owner").write_text(json.dumps(note))
    week_ago = time.time() - staging.OTHER_HOST_STALE_S - 60
    os.utime(old, (week_ago, week_ago))
    assert staging.clean(root) == ["old"] and young.is_dir()


def test_a_staging_link_to_a_shared_disk_is_not_swept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by review: ``.staging`` linked to a scratch disk made another user's old directory there a stale set."""
    (tmp_path / "repo" / "sets").mkdir(parents=True)
    theirs = tmp_path / "scratch" / "alice-results"
    theirs.mkdir(parents=True)
    (theirs / "r.csv").write_text("precious")
    days_ago = time.time() - 3 * 86400
    os.utime(theirs, (days_ago, days_ago))
    (tmp_path / "repo" / ".staging").symlink_to(tmp_path / "scratch")
    assert main(["clean", "--repository", str(tmp_path / "repo")]) == 0
    assert (theirs / "r.csv").read_text() == "precious"
    assert "nothing to clean" in capsys.readouterr().out
    # control: the same directory, named as a set, in a real .staging is a set killed before its note, and goes
    (tmp_path / "repo" / ".staging").unlink()
    (tmp_path / "scratch").rename(tmp_path / "repo" / ".staging")
    (tmp_path / "repo" / ".staging" / "alice-results").rename(
        tmp_path / "repo" / ".staging" / "20260101T000000Z-0a1b2c"
    )
    assert staging.clean(tmp_path / "repo") == ["20260101T000000Z-0a1b2c"]


def test_a_directory_that_is_not_a_sets_name_is_not_swept(tmp_path: Path) -> None:
    """Found by review: in a directory that only looks like a repository (``sets/`` and ``.staging/``), every
    directory older than a day without an owner note was removed as a set killed before its note."""
    root = tmp_path / "not-a-repo"
    (root / "sets").mkdir(parents=True)
    theirs = root / ".staging" / "alice-results"
    theirs.mkdir(parents=True)
    (theirs / "thesis.tex").write_text("years of work")
    killed = root / ".staging" / "20260101T000000Z-0a1b2c"  # control: a set's name, killed before its note
    killed.mkdir()
    old = time.time() - staging.NO_NOTE_STALE_S - 60
    for entry in (theirs, killed):
        os.utime(entry, (old, old))
    assert staging.clean(root) == ["20260101T000000Z-0a1b2c"]
    assert (theirs / "thesis.tex").read_text() == "years of work"
