"""Repositories someone else wrote: crafted manifests, bombs and copies that try to write elsewhere.

Everything here is what a person with write access to a repository (or a broken disk)
can do without the key: rewrite a manifest, plant a tiny artifact that claims to be
huge, point an artifact path out of the set. Each is refused with a message, quickly, and
leaves live data, the receiving repository and files beside it as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine import backup as engine_backup
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.errors import IntegrityError, RepositoryError
from engine.manifest import MAX_ARTIFACTS, MAX_MANIFEST_BYTES
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _volume(root: Path, files: int = 12) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=1024), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _manifest_path(repo: LocalRepository, backup_id: str) -> Path:
    return repo.root / "sets" / backup_id / "manifest.json"


def _edit_manifest(repo: LocalRepository, backup_id: str, change: Any) -> None:
    path = _manifest_path(repo, backup_id)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_repository_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        repo = LocalRepository(tmp_path / "repo")
        comp = _volume(tmp_path / "live")
        manifest = engine_backup.backup(repo, [comp])
        repo.record_verification(repo.verify(manifest.id))
        with repo.lock(exclusive=False):
            pass
    finally:
        os.umask(old)
    entries = [p for p in (tmp_path / "repo").rglob("*")]
    assert any(p.name == "manifest.json" for p in entries) and any(p.name == "verified.json" for p in entries)
    for p in entries:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["artifacts"][0].update(path="../../decoy.zst"), "is not files/files.tar.zst"),
        (lambda d: d["artifacts"][0].update(component="..", path="../files.tar.zst"), "component"),
        (lambda d: d.update(id="another-set"), "says it is set another-set"),
        (lambda d: d.update(artifacts=d["artifacts"] * (MAX_ARTIFACTS + 1)), "artifacts"),
    ],
    ids=["path-escapes", "dotdot-component", "replayed-id", "too-many-artifacts"],
)
def test_a_crafted_manifest_is_unreadable_and_named(tmp_path: Path, change: Any, problem: str) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [_volume(tmp_path / "live")])
    _edit_manifest(repo, manifest.id, change)
    assert repo.list() == []
    assert problem in repo.broken[manifest.id], repo.broken
    with pytest.raises(RepositoryError, match=problem.split()[0]):
        repo.get(manifest.id)


def test_an_oversized_manifest_is_refused_by_its_size_alone(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [_volume(tmp_path / "live")])
    path = _manifest_path(repo, manifest.id)
    os.truncate(path, MAX_MANIFEST_BYTES + 1)  # sparse: parsing it would take gigabytes
    assert repo.list() == []
    assert "over the" in repo.broken[manifest.id]


def test_copy_never_writes_outside_the_receiving_repository(tmp_path: Path) -> None:
    source = LocalRepository(tmp_path / "source")
    target = LocalRepository(tmp_path / "target")
    manifest = engine_backup.backup(source, [_volume(tmp_path / "live")])
    decoy = tmp_path / "target" / "decoy.zst"
    decoy.write_bytes(b"keep me")
    # A manifest as the source would have to hand it over to escape: the model refuses it.
    bad = manifest.model_dump()
    bad["artifacts"][0]["path"] = "../../decoy.zst"
    with pytest.raises(ValueError, match=r"is not files/files\.tar\.zst"):
        type(manifest).model_validate(bad)
    # A source whose artifact changes between listing and copying: nothing is published.
    stored = tmp_path / "source" / "sets" / manifest.id / manifest.artifacts[0].path
    stored.write_bytes(b"swapped")
    with pytest.raises(IntegrityError, match="damaged in the source"):
        target.import_set(manifest, source)
    assert decoy.read_bytes() == b"keep me"
    assert target.list() == [] and list((tmp_path / "target" / ".staging").iterdir()) == []


def _bomb(size: int) -> bytes:
    """One zstd frame of ``[`` + ``size`` spaces + ``]``, built without holding it in memory."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19, write_checksum=True).stream_writer(out, closefd=False) as z:
        z.write(b"[")
        block = b" " * (1 << 20)
        for _ in range(size // len(block)):
            z.write(block)
        z.write(b"]")
    return out.getvalue()


BOMB_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine import backup as engine_backup
    from engine.components.volumes import VolumesComponent, VolumesParams
    from engine.errors import IntegrityError
    from engine.repository import LocalRepository
    from tests.conftest import DirsRuntime

    root, backup_id = Path(sys.argv[1]), sys.argv[2]
    repo = LocalRepository(root / "repo")
    comp = VolumesComponent("files", VolumesParams(), DirsRuntime(root / "live"))
    comp.provision()
    try:
        engine_backup.restore(repo, repo.get(backup_id), comp)
        print("restored")
    except IntegrityError as exc:
        print("refused:", exc)
    # VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across exec.
    hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
    print("peak_kb", hwm[0].split()[1])
    """
)


@pytest.mark.parametrize(
    ("bomb_size", "honest_size", "expected"),
    [
        (1 << 30, True, "over the 268435456-byte limit"),
        (200 << 20, True, "decompression bomb"),
        (1 << 30, False, "more than the 100 bytes"),
    ],
    ids=["over-the-limit", "implausible-ratio", "size-understated"],
)
def test_a_decompression_bomb_in_a_removal_list_is_refused_before_memory_grows(
    tmp_path: Path, bomb_size: int, honest_size: bool, expected: str
) -> None:
    comp = _volume(tmp_path / "live")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    (comp.path / "new.txt").write_text("x")
    inc = engine_backup.backup(repo, [comp], parent=full)
    # 1 GiB of JSON-looking spaces in a few dozen KiB, with a manifest entry that matches it.
    bomb = _bomb(bomb_size)
    assert len(bomb) < 64 * 1024
    stored = tmp_path / "repo" / "sets" / inc.id / "files" / "changes.json.zst"
    stored.write_bytes(bomb)

    def rehash(doc: dict[str, Any]) -> None:
        for a in doc["artifacts"]:
            if a["name"] == "changes.json":
                a.update(sha256=hashlib.sha256(bomb).hexdigest(), size=len(bomb))
                a["raw_size"] = bomb_size + 2 if honest_size else 100

    _edit_manifest(repo, inc.id, rehash)
    before = comp.fingerprint()
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(tmp_path), inc.id],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout, out.stdout
    # Refused by its recorded size or ratio before a byte is read, or, understated, the moment it outgrows it.
    assert expected in out.stdout, out.stdout
    peak_mb = int(out.stdout.split("peak_kb")[1]) / 1024
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
    assert comp.fingerprint() == before
