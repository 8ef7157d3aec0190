"""The tar sniffer passes every byte through and picks out exactly the wanted member."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.components.tarsniff import TarSniffer

FORMATS = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
MEMBER = st.tuples(st.from_regex(r"[a-z]{1,12}(/[a-z]{1,12}){0,3}", fullmatch=True), st.binary(max_size=3000))


@settings(max_examples=150)
@given(
    fmt=FORMATS,
    members=st.lists(MEMBER, max_size=6),
    manifest=st.binary(max_size=6000),
    position=st.integers(0, 6),
    cuts=st.lists(st.integers(1, 1500), min_size=1, max_size=40),
)
def test_member_is_captured_whatever_the_write_sizes(
    fmt: int, members: list[tuple[str, bytes]], manifest: bytes, position: int, cuts: list[int]
) -> None:
    buf = io.BytesIO()
    entries = list(members)
    entries.insert(min(position, len(entries)), ("backup_manifest", manifest))
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name if name != "backup_manifest" or data is manifest else name + "x")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    out = io.BytesIO()
    sniffer = TarSniffer(out, "backup_manifest")
    pos, i = 0, 0
    while pos < len(raw):
        step = cuts[i % len(cuts)]
        sniffer.write(raw[pos : pos + step])
        pos, i = pos + step, i + 1
    assert out.getvalue() == raw
    assert sniffer.captured == manifest


def test_long_names_in_the_ustar_prefix_are_joined() -> None:
    buf = io.BytesIO()
    name = "a" * 120 + "/backup_manifest"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    sniffer = TarSniffer(io.BytesIO(), name)
    sniffer.write(buf.getvalue())
    assert sniffer.captured == b"abc"


def test_absent_member_leaves_nothing_captured() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("base/1")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    sniffer = TarSniffer(io.BytesIO(), "backup_manifest")
    sniffer.write(buf.getvalue())
    assert sniffer.captured is None
