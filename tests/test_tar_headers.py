"""drproof's own tar headers are byte for byte the ones tarfile writes.

``write_tar`` writes the headers of plain entries itself (issue 14: tarfile's
per-member machinery cost ten times tar's CPU per small file) and hands everything else
to tarfile. Whatever the tree, the archive and the fingerprint parts must be exactly
what tarfile alone produces, and GNU tar must read the archive.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.components import files
from engine.streams import CHUNK
from tests.integration.servers import require


def _archive(root: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, dict[str, object]]:
    monkeypatch.setattr(files, "FAST_HEADERS", fast)
    sink = io.BytesIO()
    parts: dict[str, files.Part] = {}
    files.write_tar(root, sink, parts=parts)
    return sink.getvalue(), {k: dataclasses.asdict(v) for k, v in parts.items()}


def _varied_tree(root: Path) -> None:
    (root / "empty-dir").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    for size in (0, 1, 511, 512, 513, CHUNK - 1, CHUNK, CHUNK + 1):
        (root / f"size-{size}.bin").write_bytes(os.urandom(size))
    (root / "exec.sh").write_text("#!/bin/sh\n")
    (root / "exec.sh").chmod(0o4755)
    (root / ("n" * 100)).write_text("a name of exactly 100 bytes")
    (root / ("long" * 30)).write_text("a name over 100 bytes: a pax header")
    (root / "deep" / ("d" * 60) / ("e" * 60)).mkdir(parents=True)
    (root / "deep" / ("d" * 60) / ("e" * 60) / "f.txt").write_text("a path over 100 bytes")
    (root / "café.txt").write_text("a non-ASCII name")
    os.symlink("size-1.bin", root / "link")
    os.symlink("x" * 150, root / "long-link")
    os.symlink("ünïcode", root / "unicode-link")
    os.link(root / "size-513.bin", root / "hard-link")
    os.mkfifo(root / "fifo")
    (root / "stranger").write_text("owned by a uid no passwd entry names")
    os.chown(root / "stranger", 54321, 54321)
    (root / "old").write_text("mtime before 1970")
    os.utime(root / "old", (-100, -100))
    (root / "future").write_text("mtime past the 12-byte field")
    os.utime(root / "future", (8**11 + 5, 8**11 + 5))
    (root / "fraction").write_text("a fractional mtime")
    os.utime(root / "fraction", (1_700_000_000.75, 1_700_000_000.75))


def test_a_varied_tree_archives_to_the_same_bytes_and_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _varied_tree(tmp_path / "tree")
    fast = _archive(tmp_path / "tree", True, monkeypatch)
    slow = _archive(tmp_path / "tree", False, monkeypatch)
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]


def test_gnu_tar_lists_and_extracts_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("GNU tar", shutil.which("tar") is not None, "apt-get install tar")  # fails, not skips, when CI=true
    _varied_tree(tmp_path / "tree")
    data, _ = _archive(tmp_path / "tree", True, monkeypatch)
    (tmp_path / "a.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(out)], check=True)
    for name in ("size-513.bin", "n" * 100, "exec.sh"):
        assert (out / name).read_bytes() == (tmp_path / "tree" / name).read_bytes()
    assert os.readlink(out / "link") == "size-1.bin"
    assert (out / "private").stat().st_mode & 0o7777 == 0o700


_names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/"), min_size=1, max_size=110
).filter(lambda n: n not in (".", ".."))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(
        st.tuples(_names, st.integers(0, 3 * 512 + 7), st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o2750])),
        min_size=1,
        max_size=6,
        unique_by=lambda e: e[0],
    )
)
def test_any_plain_tree_archives_alike(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, entries: list[tuple[str, int, int]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    for name, size, mode in entries:
        path = root / name
        path.write_bytes(b"z" * size)
        path.chmod(mode)
    assert _archive(root, True, monkeypatch) == _archive(root, False, monkeypatch)
    with tarfile.open(fileobj=io.BytesIO(_archive(root, True, monkeypatch)[0])) as tar:
        assert sorted(tar.getnames()) == sorted(n for n, _, _ in entries)


@pytest.mark.parametrize("size", [0, 1, 100, CHUNK - 1, CHUNK])
@pytest.mark.parametrize("mode", [0o100644, 0o100755, 0o104700])
def test_the_small_file_part_is_the_general_one(size: int, mode: int) -> None:
    data = os.urandom(size)
    fast, general = files.small_file_part(mode, data), files.content_part(data, mode)
    assert fast == general and dataclasses.asdict(fast) == dataclasses.asdict(general)
