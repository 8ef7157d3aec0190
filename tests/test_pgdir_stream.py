"""A directory dump archived while it is written, and read back file by file (``pgdir_stream``).

No server: a directory stands for pg_dump's, files are written and "closed" by the test,
and the archive is read back by the restore's extractor into files made beforehand.
Negative controls: every way a stream can disagree with its listing is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.components.pgdir_stream import DumpFollower, StreamExtractor, follow, listing_json, read_listing
from engine.errors import ComponentError, IntegrityError


def _extract(archive: bytes, listing: list[tuple[str, int]], target: Path) -> StreamExtractor:
    target.mkdir()
    for name, size in listing:
        with open(target / name, "wb") as fh:
            fh.truncate(size)
    extractor = StreamExtractor(target, listing)

    @contextlib.contextmanager
    def opened() -> Iterator[IO[bytes]]:
        yield io.BytesIO(archive)

    extractor.run(opened)
    return extractor


def _member_names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:
        return [m.name for m in tar]


def test_a_file_closed_before_it_was_archived_is_one_member_and_a_growing_one_comes_in_parts(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    sink = io.BytesIO()
    follower = DumpFollower(dump, sink, part=1000)
    (dump / "toc.dat").write_bytes(b"toc")  # never in the data stream
    big = dump / "3358.dat"
    with big.open("wb") as fh:
        fh.write(b"a" * 1500)
        fh.flush()
        follower.scan()
        follower.grow()  # 1500 bytes there: one part
        (dump / "3357.dat").write_bytes(b"small")
        follower.scan()
        follower.finish("3357.dat")
        fh.write(b"b" * 700)
        fh.flush()
        follower.grow()  # 700 more: under a part, waits
    follower.finish("3358.dat")
    follower.finish_all()
    follower.close()

    archive = sink.getvalue()
    assert _member_names(archive) == ["3358.dat.part000001", "3357.dat", "3358.dat.part000002"]
    assert follower.order == [("3357.dat", 5), ("3358.dat", 2200)]
    assert sorted(os.listdir(dump)) == ["toc.dat"], "archived files stay on disk"
    out = _extract(archive, follower.order, tmp_path / "out")
    assert out.error is None and out.completed == ["3357.dat", "3358.dat"]
    assert (tmp_path / "out" / "3358.dat").read_bytes() == b"a" * 1500 + b"b" * 700
    assert (tmp_path / "out" / "3357.dat").read_bytes() == b"small"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=300)), max_size=30),
    part=st.integers(1, 400),
)
def test_whatever_the_interleaving_the_restore_gets_every_file_back(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, bytes]], part: int
) -> None:
    """Quiet control: up to four files written in any interleaving, followed, read back byte for byte."""
    root = tmp_path_factory.mktemp("interleaved")
    dump = root / "dump"
    dump.mkdir()
    sink = io.BytesIO()
    follower = DumpFollower(dump, sink, part=part)
    expected: dict[str, bytes] = {}
    for index, data in writes:
        name = f"{3000 + index}.dat"
        with (dump / name).open("ab") as fh:
            fh.write(data)
        expected[name] = expected.get(name, b"") + data
        follower.scan()
        follower.grow()
    follower.finish_all()
    follower.close()
    listing = read_listing(listing_json(follower.order))
    assert dict(listing) == {n: len(d) for n, d in expected.items()}
    out = _extract(sink.getvalue(), listing, root / "out")
    assert out.error is None, out.error
    assert {n: (root / "out" / n).read_bytes() for n in expected} == expected


def _archive(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "listing", "problem"),
    [
        ([("1.dat", b"x"), ("2.dat", b"y")], [("1.dat", 1)], "does not announce"),
        ([("1.dat.part000002", b"x")], [("1.dat", 2)], "out of order"),
        ([("1.dat.part000001", b"x"), ("1.dat.part000001", b"x")], [("1.dat", 2)], "out of order"),
        ([("1.dat", b"x"), ("1.dat", b"x")], [("1.dat", 1)], "out of order"),
        ([("1.dat", b"xy")], [("1.dat", 1)], "larger than its listing"),
        ([("1.dat.part000001", b"xyz")], [("1.dat", 2)], "larger than its listing"),
        ([("1.dat", b"x")], [("1.dat", 1), ("2.dat", 1)], "ends without 1 file"),
        ([("1.dat.part000001", b"x")], [("1.dat", 2)], "ends without 1 file"),
        ([("../1.dat", b"x")], [("1.dat", 1)], "does not announce"),
    ],
    ids=[
        "unlisted",
        "part-skipped",
        "part-twice",
        "whole-twice",
        "too-long",
        "part-too-long",
        "missing",
        "short",
        "traversal",
    ],
)
def test_a_stream_that_disagrees_with_its_listing_is_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], listing: list[tuple[str, int]], problem: str
) -> None:
    out = _extract(_archive(members), listing, tmp_path / "out")
    assert isinstance(out.error, IntegrityError) and problem in str(out.error), out.error
    assert out.done


def test_damage_found_when_the_stream_closes_is_the_extractions_error(tmp_path: Path) -> None:
    """The repository's checks run as the stream closes, after every byte was written: still a failure."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "1.dat").write_bytes(b"\0")
    extractor = StreamExtractor(tmp_path / "out", [("1.dat", 1)])

    @contextlib.contextmanager
    def damaged() -> Iterator[IO[bytes]]:
        yield io.BytesIO(_archive([("1.dat", b"x")]))
        raise IntegrityError("the zstd frame's checksum does not match")

    extractor.run(damaged)
    assert extractor.completed == ["1.dat"]
    assert isinstance(extractor.error, IntegrityError) and "checksum" in str(extractor.error)


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        json.dumps({"format": 99, "files": []}).encode(),
        json.dumps({"format": 1, "files": [["../etc/passwd", 1]]}).encode(),
        json.dumps({"format": 1, "files": [["toc.dat", 1]]}).encode(),
        json.dumps({"format": 1, "files": [["1.dat", 1], ["1.dat", 1]]}).encode(),
        json.dumps({"format": 1, "files": [["1.dat", -1]]}).encode(),
    ],
    ids=["garbage", "format", "traversal", "toc", "twice", "negative"],
)
def test_a_listing_drproof_did_not_write_is_refused(doc: bytes) -> None:
    with pytest.raises(IntegrityError):
        read_listing(doc)


def test_a_file_written_again_after_it_was_closed_fails_the_backup(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    follower = DumpFollower(dump, io.BytesIO())
    (dump / "1.dat").write_bytes(b"x")
    follower.scan()
    follower.finish("1.dat")
    (dump / "1.dat").write_bytes(b"y")
    with pytest.raises(ComponentError, match="again"):
        follower.scan()
    follower.close()


def test_a_file_no_directory_dump_holds_fails_the_backup(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "notes.txt").write_bytes(b"x")
    follower = DumpFollower(dump, io.BytesIO())
    with pytest.raises(ComponentError, match=r"notes\.txt"):
        follower.scan()
    follower.close()


_WRITER = """
import os, sys, time
d = sys.argv[1]
with open(os.path.join(d, "toc.dat"), "wb") as fh:
    fh.write(b"toc")
big = open(os.path.join(d, "10.dat"), "wb")
for i in range(6):
    big.write(bytes([65 + i]) * 5000)
    big.flush()
    time.sleep(0.08)
    if i == 2:
        with open(os.path.join(d, "11.dat"), "wb") as fh:
            fh.write(b"closed early")
big.close()
"""


def test_following_a_real_writer_archives_files_in_the_order_they_were_closed(tmp_path: Path) -> None:
    """The file closed first comes first, though the other was opened before it and written after."""
    dump = tmp_path / "dump"
    dump.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(dump)])
    sink = io.BytesIO()
    order = follow(dump, proc, sink, part=4000)
    assert proc.wait() == 0
    assert order == [("11.dat", 12), ("10.dat", 30000)]
    assert not (dump / "10.dat").exists() and (dump / "toc.dat").read_bytes() == b"toc"
    out = _extract(sink.getvalue(), order, tmp_path / "out")
    assert out.error is None
    assert (tmp_path / "out" / "10.dat").read_bytes() == b"".join(bytes([65 + i]) * 5000 for i in range(6))
