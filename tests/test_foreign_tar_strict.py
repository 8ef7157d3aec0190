"""Foreign tar archives and directory trees are read strictly: damage is an error, never a shorter restore.

A tar another tool wrote has no digest drproof recorded, so the archive itself must prove
it is whole: every header sound (tarfile would stop quietly at a damaged one), the
end-of-archive marker present (an archive cut at a member boundary looks whole
otherwise), a zstd stream's last frame finished (python-zstandard returns end-of-file
inside one), no header so large it would be read whole into memory, and something to
restore at all. Archives are built here with tarfile in both the form drproof's own
reader parses (pax) and the one it hands to tarfile (GNU), so both paths are held to it.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine.components.untar import TreeWriter
from engine.errors import ComponentError
from engine.foreign.trees import copy_tree, newest_in_tree, scan, unpack
from engine.streams import CHUNK


def _fresh(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}


def _tar(files: dict[str, bytes], fmt: int, root: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if root:
            info = tarfile.TarInfo(".")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TEN = {f"./file{i:02d}.txt": bytes([65 + i]) * 1800 for i in range(10)}


def _offset_of(data: bytes, name: str) -> int:
    """Where the header block naming ``name`` starts (its name field, or a pax record naming it)."""
    at = data.index(name.encode())
    return at - at % 512


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sound_archive_is_scanned_and_unpacked_whole(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "good.tar"
    path.write_bytes(_tar(TEN, FORMATS[fmt]))
    assert scan(path).files == 10
    stats = unpack(path, _fresh(tmp_path / "out"))
    assert stats.files == 10 and sorted(os.listdir(tmp_path / "out")) == sorted(n[2:] for n in TEN)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gz", [False, True])
def test_a_damaged_header_after_the_first_member_is_refused(fmt: str, gz: bool, tmp_path: Path) -> None:
    data = bytearray(_tar(TEN, FORMATS[fmt]))
    at = _offset_of(bytes(data), "file05.txt")
    data[at + 150] ^= 0x01  # one byte of the header's checksum field
    path = tmp_path / "bad.tar"
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    with pytest.raises(ComponentError, match="cannot unpack"):
        scan(path)
    with pytest.raises(ComponentError, match="cannot unpack"):
        unpack(path, _fresh(tmp_path / "out"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_archive_cut_at_a_member_boundary_is_refused(fmt: str, tmp_path: Path) -> None:
    data = _tar(TEN, FORMATS[fmt])
    path = tmp_path / "cut.tar"
    path.write_bytes(data[: _offset_of(data, "file05.txt")])
    with pytest.raises(ComponentError, match="cut short: no end-of-archive marker"):
        scan(path)
    with pytest.raises(ComponentError, match="cut short"):
        unpack(path, _fresh(tmp_path / "out"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lone_zero_block_is_not_the_end_of_the_archive(fmt: str, tmp_path: Path) -> None:
    data = _tar(TEN, FORMATS[fmt])
    end = len(data) - len(data.rstrip(b"\0"))
    body = data[: len(data) - end]
    body += b"\0" * (-len(body) % 512)
    path = tmp_path / "lone.tar"
    path.write_bytes(body + b"\0" * 512)
    with pytest.raises(ComponentError, match="cut short"):
        scan(path)
    path.write_bytes(body + b"\0" * 1024)  # the two zero blocks: whole
    assert scan(path).files == 10


def _zst(data: bytes, **kw: Any) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True, **kw).compress(data)


@pytest.mark.parametrize("cut", [2, 4, 5, 3000])
def test_a_zstd_stream_cut_short_is_refused(cut: int, tmp_path: Path) -> None:
    files = {f"./f{i:02d}": os.urandom(40_000) for i in range(50)}  # blocks of 128 KiB: cut points in several
    whole = _zst(_tar(files, tarfile.PAX_FORMAT))
    path = tmp_path / "cut.tar.zst"
    path.write_bytes(whole[:-cut])
    with pytest.raises(ComponentError, match="zstd stream is cut short"):
        scan(path)
    with pytest.raises(ComponentError, match="zstd stream is cut short"):
        unpack(path, _fresh(tmp_path / "out"))
    path.write_bytes(whole)
    assert scan(path).files == 50


def test_a_zstd_file_of_several_frames_is_read_to_its_last_frame(tmp_path: Path) -> None:
    data = _tar(TEN, tarfile.GNU_FORMAT)
    half = len(data) // 2
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    path = tmp_path / "frames.tar.zst"
    path.write_bytes(_zst(data[:half]) + skippable + _zst(data[half:]))
    assert unpack(path, _fresh(tmp_path / "out")).files == 10


@pytest.mark.parametrize("kind", ["pax", "gnu-longname"])
def test_a_huge_name_header_is_refused_before_it_is_read(kind: str, tmp_path: Path) -> None:
    """tarfile reads a pax or GNU long-name header whole: 2 MB of gzip could claim gigabytes."""
    size = 64 << 20
    header = tarfile.TarInfo("././@PaxHeader" if kind == "pax" else "././@LongLink")
    header.type, header.size = (tarfile.XHDTYPE if kind == "pax" else tarfile.GNUTYPE_LONGNAME), size
    fmt = tarfile.PAX_FORMAT if kind == "pax" else tarfile.GNU_FORMAT
    block = header.tobuf(format=tarfile.USTAR_FORMAT if kind == "pax" else fmt)
    path = tmp_path / "huge.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(_tar({"first.txt": b"1"}, fmt, root=False)[:1024])  # one member first: no offset-0 leniency
        out.write(block)
        zeros = b"x" * CHUNK
        for _ in range(size // CHUNK):
            out.write(zeros)
        out.write(b"\0" * 1024)
    with pytest.raises(ComponentError, match=r"header of 67108864 bytes .* refused"):
        scan(path)


def test_a_root_only_or_over_stripped_archive_holds_nothing_to_restore(tmp_path: Path) -> None:
    path = tmp_path / "root.tar"
    path.write_bytes(_tar({}, tarfile.GNU_FORMAT))
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        scan(path)
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        unpack(path, _fresh(tmp_path / "out1"))
    path.write_bytes(_tar({"uploads/a/file.txt": b"x"}, tarfile.PAX_FORMAT, root=False))
    assert scan(path, strip=2).files == 1
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        scan(path, strip=3)
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        unpack(path, _fresh(tmp_path / "out2"), strip=3)


def test_an_empty_directory_holds_nothing_to_restore(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        newest_in_tree(tmp_path / "empty")
    with pytest.raises(ComponentError, match="holds nothing to restore"):
        copy_tree(tmp_path / "empty", _fresh(tmp_path / "out"))


def test_an_unreadable_directory_in_the_backup_is_named(tmp_path: Path) -> None:
    """For real: as a user, or as root without the capabilities that read any directory."""
    if os.geteuid() != 0:
        _unreadable_dir_refused(tmp_path)
        return
    code = (
        "import sys; from pathlib import Path; import tests.test_foreign_tar_strict as t; "
        "t._unreadable_dir_refused(Path(sys.argv[1]))"
    )
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]
    done = subprocess.run([*drop, sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_an_unreadable_directory_is_named_even_as_root(tmp_path: Path) -> None:
    """Root reads a mode-000 directory anyway; faking the listing failure shows the refusal is wired."""
    tree = tmp_path / "tree"
    (tree / "private").mkdir(parents=True)
    (tree / "private" / "ledger.csv").write_text("1\n")
    real_scandir = os.scandir

    def refusing(path: Any = ".") -> Any:
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", refusing)
        with pytest.raises(ComponentError, match=r"cannot read the directory .*private"):
            newest_in_tree(tree)
        with pytest.raises(ComponentError, match=r"cannot read the directory .*private"):
            copy_tree(tree, _fresh(tmp_path / "out"))


def _unreadable_dir_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "private").mkdir(parents=True)
    (tree / "private" / "ledger.csv").write_text("1\n")
    (tree / "private").chmod(0)
    try:
        with pytest.raises(ComponentError, match="cannot read the directory"):
            copy_tree(tree, _fresh(tmp_path / "out"))
    finally:
        (tree / "private").chmod(0o700)


def _record_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real_add = TreeWriter.add

    def add(self: TreeWriter, member: Any, content: Iterable[bytes] | None) -> None:
        def counted(chunks: Iterable[bytes]) -> Iterable[bytes]:
            for chunk in chunks:
                sizes.append(len(chunk))
                yield chunk

        real_add(self, member, None if content is None else counted(content))

    monkeypatch.setattr(TreeWriter, "add", add)
    return sizes


def test_file_content_is_handed_on_in_chunks_not_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Iterating a file object yields lines: a file without newlines would be held whole."""
    big = b"\0" * (6 * CHUNK)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "disk.img").write_bytes(big)
    archive = tmp_path / "disk.tar.gz"
    archive.write_bytes(gzip.compress(_tar({"disk.img": big}, tarfile.GNU_FORMAT), compresslevel=1))
    sizes = _record_chunks(monkeypatch)
    copy_tree(tree, _fresh(tmp_path / "copy"))
    assert sum(sizes) == len(big) and max(sizes) <= CHUNK
    sizes.clear()
    unpack(archive, _fresh(tmp_path / "unpacked"))
    assert sum(sizes) == len(big) and max(sizes) <= CHUNK
    assert (tmp_path / "copy" / "disk.img").stat().st_size == len(big)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd"])
def test_damaged_compressed_data_is_a_domain_error_naming_the_file(kind: str, tmp_path: Path) -> None:
    """A flipped byte inside the compressed data: zlib.error (not an OSError) escaped as a traceback."""
    import bz2
    import lzma

    raw = _tar({f"./f{i}": os.urandom(2000) + b"a" * 30_000 for i in range(8)}, tarfile.PAX_FORMAT)
    packed = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "zstd": _zst}[kind](raw)
    data = bytearray(packed)
    if kind == "gzip":
        data[10] = 0xFF  # the first deflate block's type: reserved, zlib.error "invalid block type"
    else:
        for at in range(len(data) // 3, len(data) // 3 + 64):
            data[at] ^= 0xFF
    path = tmp_path / "damaged.tar.x"
    path.write_bytes(bytes(data))
    with pytest.raises(ComponentError, match=f"{path}: cannot unpack"):
        scan(path)
