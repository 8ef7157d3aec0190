"""Full disks on the worst day: the repository's, and the live data's.

Real ``drproof`` processes on small tmpfs mounts (root only; under CI=true a failure,
never a skip). Found by review: with the repository's disk full to the last byte,
``recovery restore``, ``verify``, ``backup`` and ``prune`` all died with a traceback out of
the lock's holder note, so nothing could be restored from a full backup disk; and a
backup that failed to start its set left a staging directory nobody ever removed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import mounted_tmpfs

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _drproof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs; unmounted afterwards, also on failure."""
    with mounted_tmpfs(tmp_path / "small", "20m") as mountpoint:
        yield mountpoint


def _fill(disk: Path) -> None:
    """Take every free byte of ``disk``."""
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (64 << 10))
                fh.flush()
        except OSError:
            pass
    st = os.statvfs(disk)
    assert st.f_bavail == 0


def _tree_hash(root: Path) -> str:
    """Every entry's path, type, mode and owner, and every file's bytes."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest.update(f"{path.relative_to(root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _volume(path: Path, files: int, size: int) -> Path:
    path.mkdir(parents=True)
    for i in range(files):
        (path / f"f{i}.bin").write_bytes(os.urandom(size))
    return path


def _config(path: Path, repo: Path, **components: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"repository": {"path": str(repo)}, "components": components}))
    return path


def test_a_full_repository_disk_still_restores_and_a_backup_fails_leaving_nothing(tmp_path: Path, tmpfs: Path) -> None:
    vol = _volume(tmp_path / "vol", 4, 1 << 20)
    config = _config(tmp_path / "backup-config.yaml", tmpfs / "repo", vol={"kind": "volumes", "path": str(vol)})
    done = _drproof("backup", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    backed_up = _tree_hash(vol)
    (vol / "f0.bin").write_bytes(b"the disaster")
    _fill(tmpfs)

    restored = _drproof("recovery", "restore", "--in-place", "--yes", "--config", str(config))
    assert "Traceback" not in restored.stderr, restored.stderr[-3000:]
    assert restored.returncode == 0 and "fidelity: match" in restored.stderr, restored.stderr[-3000:]
    assert _tree_hash(vol) == backed_up

    failed = _drproof("backup", "--config", str(config))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "is full" in failed.stderr and "nothing was published" in failed.stderr, failed.stderr[-3000:]
    assert list((tmpfs / "repo" / ".staging").iterdir()) == [], "the failed backup left its staging behind"
    assert list((tmpfs / "repo" / ".lock.holders").iterdir()) == [], "a cut-short holder note was left"
    listed = _drproof("recovery", "list", "--config", str(config))
    assert listed.returncode == 0 and listed.stdout.count("vol") == 1, listed.stdout


def test_a_restore_refused_for_a_full_live_disk_leaves_the_live_data_byte_for_byte(tmp_path: Path, tmpfs: Path) -> None:
    """The staged copy does not fit beside the live one; nothing changes (held at review), and the refusal says so.

    The message was the bare ``[Errno 28] No space left on device``, without what was kept or what to do;
    now the restore is refused before it writes a byte, saying how much room is missing.
    """
    vol = _volume(tmpfs / "vol", 12, 1 << 20)
    conf = tmpfs / "conf"
    conf.mkdir()
    for i in range(40):
        (conf / f"c{i}.yaml").write_text(f"key{i}: value{i}\n")
    config = _config(
        tmp_path / "backup-config.yaml",
        tmp_path / "repo",
        vol={"kind": "volumes", "path": str(vol)},
        conf={"kind": "configuration", "path": str(conf)},
    )
    done = _drproof("backup", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    (vol / "f0.bin").write_bytes(b"changed")
    (conf / "c0.yaml").write_text("key0: changed\n")
    _fill(tmpfs)
    for name, path in (("vol", vol), ("conf", conf)):
        before = _tree_hash(path)
        refused = _drproof("recovery", "restore", "--in-place", "--yes", "--config", str(config), "--components", name)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        said = refused.stderr
        assert "refusing to write the restored copy" in said and "short by" in said, said[-3000:]
        assert "nothing was changed" in said and "Free space there" in said and "--to" in said, said[-3000:]
        assert _tree_hash(path) == before
        assert sorted(p.name for p in tmpfs.iterdir()) == ["conf", "filler", "vol"]


def test_a_prune_on_a_full_repository_disk_deletes_nothing_and_does_not_advise_pruning(
    tmp_path: Path, tmpfs: Path
) -> None:
    """Each deletion is recorded before it happens; on a full disk that record fails. The advice was "prune"."""
    vol = _volume(tmp_path / "vol", 2, 1 << 20)
    config = _config(tmp_path / "backup-config.yaml", tmpfs / "repo", vol={"kind": "volumes", "path": str(vol)})
    for _ in range(2):
        done = _drproof("backup", "--config", str(config))
        assert done.returncode == 0, done.stderr[-3000:]
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "retention": {"keep_last": 1}}))
    _fill(tmpfs)
    failed = _drproof("recovery", "prune", "--config", str(config))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "was not deleted" in failed.stderr and "run the prune again" in failed.stderr, failed.stderr[-3000:]
    assert "or prune old sets" not in failed.stderr, failed.stderr[-3000:]
    assert len(list((tmpfs / "repo" / "sets").iterdir())) == 2
