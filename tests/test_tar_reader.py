"""drproof's own tar reader gives exactly the members tarfile gives, or hands the archive to tarfile.

Restores read archives with :mod:`engine.components.tarread` (issue 14: tarfile's header
parsing was 40 % of a restore of small files). It reads what drproof writes and passes
anything else, from that member on, to tarfile. These tests hold the two equal on
random trees archived by ``write_tar`` and on archives tarfile writes in every format,
show each kind of header it does not read going to tarfile intact, and show damage
(a bad checksum, a cut stream) refused where tarfile would quietly stop.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.components import tarread, xattrs
from engine.components.files import write_tar
from engine.streams import CHUNK

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ours(data: bytes, read_content: bool = True) -> list[tuple[Any, ...]]:
    out = []
    for member, content in tarread.members(io.BytesIO(data)):
        body = b"".join(content) if content is not None and read_content else None
        owner = (member.uid, member.gid, member.uname, member.gname, xattrs.from_pax(member.pax_headers))
        out.append((member.name, member.type, member.mode, int(member.mtime), member.size, member.linkname, owner, body))
    return out


def _tarfile(data: bytes, read_content: bool = True) -> list[tuple[Any, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for info in tar:
            body = None
            if info.isreg() and read_content:
                f = tar.extractfile(info)
                assert f is not None
                body = f.read()
            owner = (info.uid, info.gid, info.uname, info.gname, xattrs.from_pax(info.pax_headers))
            out.append((info.name, info.type, info.mode, int(info.mtime), info.size, info.linkname, owner, body))
    return out


names = st.text(st.sampled_from(["a", "b", "é", " ", "-", ".", "x", "\udc80"]), min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@PROPERTY
@given(
    files=st.lists(
        st.tuples(st.lists(names, min_size=1, max_size=3), st.sampled_from([0, 1, 511, 512, 513, 5000, 70_000])),
        min_size=1,
        max_size=8,
    ),
    long_name=st.booleans(),
    extras=st.sets(st.sampled_from(["symlink", "hardlink", "fifo", "empty-dir", "long-link"])),
)
def test_reading_what_write_tar_writes_agrees_with_tarfile(
    tmp_path: Path, files: list[tuple[list[str], int]], long_name: bool, extras: set[str]
) -> None:
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for i, (path, size) in enumerate(files):
        target = root.joinpath(*[os.fsdecode(os.fsencode(p)) for p in path])
        if any(p.exists() and not p.is_dir() for p in target.parents) or target.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(size))
        target.chmod(0o640 if i % 2 else 0o755)
        if os.geteuid() == 0 and i % 3:  # owners the reader must give as tarfile does: named, and not
            os.chown(target, 1 if i % 3 == 1 else 4321, 1 if i % 3 == 1 else 4322)
        if i % 4 == 1:  # extended attributes: pax records, one of them not UTF-8 (hdrcharset=BINARY)
            os.setxattr(target, "user.a", b"plain")
            os.setxattr(target, "user.b", b"\xff\x00" * i)
    if long_name:
        deep = root / ("d" * 90) / ("e" * 90)
        deep.mkdir(parents=True)
        (deep / "f.txt").write_text("a path over 100 bytes: pax")
    if "symlink" in extras:
        os.symlink("../somewhere", root / "link")
    if "long-link" in extras:
        os.symlink("t" * 150, root / "long-link")
    if "hardlink" in extras:
        (root / "linked").write_text("two names")
        os.link(root / "linked", root / "second")
    if "fifo" in extras:
        os.mkfifo(root / "pipe")
    if "empty-dir" in extras:
        (root / "empty").mkdir(mode=0o700)
    sink = io.BytesIO()
    write_tar(root, sink)
    data = sink.getvalue()
    assert _ours(data) == _tarfile(data)
    assert _ours(data, read_content=False) == _tarfile(data, read_content=False)  # content left unread


def _archive(fmt: int, *members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, 0o644, 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


ODD = {
    # GNU long names ("././@LongLink" headers) and the GNU magic: tarfile's.
    "gnu-long-name": (tarfile.GNU_FORMAT, [(_info("n" * 150, size=3), b"abc"), (_info("after", size=1), b"z")]),
    # A base-256 number (an mtime before 1970 in GNU format).
    "gnu-negative-mtime": (tarfile.GNU_FORMAT, [(_info("old", size=2, mtime=-5), b"ok")]),
    # pax headers with keys drproof never writes.
    "pax-comment": (
        tarfile.PAX_FORMAT,
        [(_info("x", size=1, pax_headers={"comment": "v"}), b"1"), (_info("y", size=1), b"2")],
    ),
    # Extended attributes, as drproof and GNU tar --xattrs write them.
    "pax-xattr": (
        tarfile.PAX_FORMAT,
        [(_info("x", size=1, pax_headers={"SCHILY.xattr.user.k": "v"}), b"1"), (_info("y", size=1), b"2")],
    ),
    # Owners in pax records: a user name over ustar's 32 bytes, a non-ASCII group, an id over 8 octal digits.
    "pax-owners": (
        tarfile.PAX_FORMAT,
        [
            (_info("o", size=1, uid=5, gid=6, uname="u" * 40, gname="grüppe"), b"1"),
            (_info("big", size=1, uid=8**8, gid=7, uname="", gname="g"), b"2"),
        ],
    ),
    # An old tar's directory: a regular-file type with a trailing slash.
    "v7-directory": (tarfile.USTAR_FORMAT, [(_info("d/", tarfile.AREGTYPE), None), (_info("d/f", size=1), b"f")]),
    # A contiguous file: read as a regular one.
    "contiguous": (tarfile.USTAR_FORMAT, [(_info("c", tarfile.CONTTYPE, size=4), b"cont")]),
    # A long name split into ustar's prefix and name.
    "ustar-prefix": (tarfile.USTAR_FORMAT, [(_info("p" * 120 + "/" + "q" * 90, size=1), b"q")]),
    # Device nodes and FIFOs parse (the writer refuses devices).
    "devices": (
        tarfile.USTAR_FORMAT,
        [
            (_info("null", tarfile.CHRTYPE), None),
            (_info("sda", tarfile.BLKTYPE), None),
            (_info("p", tarfile.FIFOTYPE), None),
        ],
    ),
}


@pytest.mark.parametrize("case", list(ODD), ids=list(ODD))
def test_archives_in_other_forms_read_as_tarfile_reads_them(case: str) -> None:
    fmt, members = ODD[case]
    data = _archive(fmt, *members)
    assert _ours(data) == _tarfile(data)


def test_a_global_pax_header_goes_to_tarfile_with_what_follows() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        tar.addfile(_info("a", size=1), io.BytesIO(b"a"))
    data = buf.getvalue()
    assert _ours(data) == _tarfile(data) == [("a", tarfile.REGTYPE, 0o644, 1_700_000_000, 1, "", (0, 0, "", "", {}), b"a")]


def test_the_reader_passes_a_member_it_cannot_read_to_tarfile_from_that_member_on() -> None:
    first = _archive(tarfile.PAX_FORMAT, (_info("plain", size=5), b"plain"))[:1024]  # its member, no end blocks
    rest = _archive(tarfile.GNU_FORMAT, (_info("l" * 200, size=4), b"long"), (_info("tail", size=4), b"tail"))
    data = first + rest
    ours = list(tarread.members(io.BytesIO(data)))
    assert [type(m).__name__ for m, _ in ours] == ["Member", "TarInfo", "TarInfo"]
    assert _ours(data) == _tarfile(data)


def _damaged_checksum(data: bytes, offset: int) -> bytes:
    return data[: offset + 10] + bytes([data[offset + 10] ^ 1]) + data[offset + 11 :]


def test_a_damaged_header_after_the_first_is_an_error_not_the_end() -> None:
    data = _archive(tarfile.PAX_FORMAT, (_info("a", size=1), b"a"), (_info("b", size=1), b"b"))
    damaged = _damaged_checksum(data, 1024)  # the second member's header
    assert [m[0] for m in _tarfile(damaged)] == ["a"]  # tarfile quietly stops: a shorter restore
    with pytest.raises(tarfile.ReadError, match="bad checksum"):
        _ours(damaged)
    with pytest.raises(tarfile.ReadError, match="bad checksum"):
        _ours(_damaged_checksum(data, 0))


@pytest.mark.parametrize("size", [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 17, 3 * tarread.READ_SIZE + 511])
@pytest.mark.parametrize("read_content", [True, False])
def test_members_larger_than_the_buffer_stream_through(size: int, read_content: bool) -> None:
    """Content over a read's size comes in pieces from the stream; unread content is skipped."""
    big = os.urandom(size)
    data = _archive(
        tarfile.PAX_FORMAT,
        (_info("small", size=3), b"abc"),
        (_info("big", size=size), big),
        (_info("after", size=2), b"ok"),
    )
    assert _ours(data, read_content) == _tarfile(data, read_content)
    pieces = [(m.name, [len(c) for c in content]) for m, content in tarread.members(io.BytesIO(data)) if content]
    assert pieces[1][0] == "big" and max(pieces[1][1]) <= CHUNK and sum(pieces[1][1]) == size


@pytest.mark.parametrize("cut", [100, 512, 700, 1024 + 200])
def test_a_cut_archive_is_an_error(cut: int) -> None:
    data = _archive(tarfile.PAX_FORMAT, (_info("a", size=600), os.urandom(600)), (_info("b", size=1), b"b"))
    with pytest.raises(tarfile.ReadError):
        _ours(data[:cut])


def test_an_empty_stream_is_no_archive() -> None:
    with pytest.raises(tarfile.ReadError, match="empty file"):
        _ours(b"")


def test_a_tree_of_many_directories_restores_with_few_descriptors_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One descriptor per directory ran into the open-files limit (1,024 by default)."""
    from engine.components import untar
    from engine.components.files import extract_tar, tree_parts

    monkeypatch.setattr(untar, "MAX_OPEN_DIRS", 3)
    root = tmp_path / "src"
    for i in range(40):
        d = root / f"d{i:02d}" / "inner"
        d.mkdir(parents=True)
        (d / "f.txt").write_text(str(i))
        (d.parent).chmod(0o750 if i % 2 else 0o755)
    os.link(root / "d00" / "inner" / "f.txt", root / "d39" / "inner" / "same.txt")
    sink = io.BytesIO()
    write_tar(root, sink)
    most = 0

    class Counting(dict[str, Any]):
        def __setitem__(self, name: str, part: Any) -> None:
            nonlocal most
            most = max(most, len(os.listdir("/proc/self/fd")))
            super().__setitem__(name, part)

    parts = Counting()
    before = len(os.listdir("/proc/self/fd"))
    extract_tar(lambda: _Stream(sink.getvalue()), tmp_path / "out", parts=parts)
    assert dict(parts) == tree_parts(root) == tree_parts(tmp_path / "out")
    assert most - before < 12, (most, before)  # three cached, the current chain, the streams


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> io.BytesIO:
        return io.BytesIO(self.data)

    def __exit__(self, *exc: object) -> None:
        pass
