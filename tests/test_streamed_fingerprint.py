"""A volume's fingerprint taken while archiving equals the one taken by reading the tree.

A backup digests each file as tarfile copies it (one read of the tree instead of two);
a restore is then judged by ``fingerprint()``, which reads the restored tree. If the two
ways of digesting ever disagreed, every restore would look damaged, or worse, a
damaged one could look whole. The property covers sizes around the 1 MiB record
boundary, empty files, modes, symlinks, hard links and FIFOs.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.components.files import tree_parts, write_tar
from engine.fingerprint import Part
from engine.streams import CHUNK

sizes = st.sampled_from([0, 1, 4095, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 17]) | st.integers(0, 70_000)
entries = st.lists(
    st.tuples(st.sampled_from(["a", "b/c", "b/d/e", "f g", "é"]), st.text("xyz", min_size=1, max_size=6), sizes),
    min_size=1,
    max_size=6,
    unique_by=lambda e: (e[0], e[1]),
)


def _build(root: Path, spec: list[tuple[str, str, int]], modes: list[int], extras: set[str]) -> None:
    for i, (folder, name, size) in enumerate(spec):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"{name}.bin"
        f.write_bytes(bytes((i * 7 + k) % 251 for k in range(min(size, 300))) * (size // 300 + 1))
        os.truncate(f, size)
        f.chmod(modes[i % len(modes)])
    first = root / spec[0][0] / f"{spec[0][1]}.bin"
    if "symlink" in extras:
        os.symlink(os.path.relpath(first, root), root / "link-to-first")
    if "dangling" in extras:
        os.symlink("nowhere/at/all", root / "dangling")
    if "hardlink" in extras:
        os.link(first, root / "second-name")
    if "fifo" in extras:
        os.mkfifo(root / "pipe")
    if "dirlink" in extras:
        os.symlink(spec[0][0], root / "dir-link")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=entries,
    modes=st.lists(st.sampled_from([0o600, 0o644, 0o640, 0o755, 0o700]), min_size=1, max_size=3),
    extras=st.sets(st.sampled_from(["symlink", "dangling", "hardlink", "fifo", "dirlink"])),
)
def test_parts_digested_while_archiving_equal_parts_read_from_the_tree(
    tmp_path: Path, spec: list[tuple[str, str, int]], modes: list[int], extras: set[str]
) -> None:
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    _build(root, spec, modes, extras)

    streamed: dict[str, Part] = {}
    sink = io.BytesIO()
    write_tar(root, sink, parts=streamed)

    assert streamed == tree_parts(root)
    # And the archive holds what was digested: extracting it gives the same parts.
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue()), mode="r|") as tar:
        tar.extractall(out, filter="tar")
    assert tree_parts(out) == streamed


def test_a_file_growing_while_archived_is_fingerprinted_as_archived(tmp_path: Path) -> None:
    """The header fixes the size; bytes appended afterwards are neither archived nor digested."""
    root = tmp_path / "live"
    root.mkdir()
    log = root / "app.log"
    log.write_bytes(b"x" * (CHUNK + 10))
    real_info = tarfile.TarFile.gettarinfo

    def growing(self: tarfile.TarFile, name: object, *args: object, **kw: object) -> tarfile.TarInfo:
        info = real_info(self, name, *args, **kw)  # type: ignore[arg-type]
        with open(log, "ab") as fh:
            fh.write(b"appended after the header")
        return info

    streamed: dict[str, Part] = {}
    tarfile.TarFile.gettarinfo = growing  # type: ignore[method-assign,assignment]
    try:
        write_tar(root, io.BytesIO(), parts=streamed)
    finally:
        tarfile.TarFile.gettarinfo = real_info  # type: ignore[method-assign]
    assert streamed["file app.log"].count == CHUNK + 10
    log.write_bytes(b"x" * (CHUNK + 10))
    assert tree_parts(root)["file app.log"] == streamed["file app.log"]
