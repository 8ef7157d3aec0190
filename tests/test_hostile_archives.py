"""Hostile archives: nothing is ever written outside the restored tree, whatever the Python patch level.

Every case runs through ``extract_tar`` (the path volumes, configuration and vector
stores restore by) into a target beside a decoy directory, and checks afterwards that
the decoy and the live target are byte for byte what they were and that no staging
directory is left. Cases marked "refused" must raise :class:`HostileArchive`;
the others are legitimate trees that must restore.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.components.files import extract_layers, extract_tar
from engine.components.untar import NAME_MAX, HostileArchive, TreeWriter, extract_into
from engine.errors import ComponentError

REG, DIR, SYM, LNK, CHR, BLK, FIFO = (t[0] for t in (b"0", b"5", b"2", b"1", b"3", b"4", b"6"))


def _tar(*members: tuple[str, int, str | None, bytes] | tuple[str, int, str | None, bytes, int]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            name, type_, link, content = member[:4]
            info = tarfile.TarInfo(name)
            info.type = bytes([type_])
            if link is not None:
                info.linkname = link
            info.size = len(content) if info.isreg() else 0
            info.mode = member[4] if len(member) > 4 else (0o755 if info.isdir() else 0o644)  # type: ignore[misc]
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    buf.seek(0)
    return buf


def _opener(buf: io.BytesIO) -> Any:
    @contextmanager
    def opened() -> Iterator[io.BytesIO]:
        yield buf

    return opened


def _state(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: type, mode, content or link target (nothing followed)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(base, target, decoy): a live target with data, and a decoy directory beside it."""
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_bytes(b"precious")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "secret.txt").write_bytes(b"must not change")
    (decoy / "passwd").write_bytes(b"root:x:0:0")
    yield tmp_path, target, decoy


def _long_chain() -> list[tuple[str, int, str | None, bytes]]:
    """The CVE-2025-4517 shape: symlinks that resolve to a path longer than PATH_MAX.

    Each step ``a``, ``b``, ... is a short symlink to a directory of 247 characters, one
    inside the other, so ``a/b/c/.../p`` resolves to over 3,900 characters; a link at the
    end of it climbs out, and realpath (and with it the ``data`` filter of unpatched
    Pythons) gives up resolving and approves a member written through ``escape``.
    """
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[str, int, str | None, bytes]] = []
    path = ""
    for step in steps:
        members.append((os.path.join(path, comp), DIR, None, b""))
        members.append((os.path.join(path, step), SYM, comp, b""))
        path = os.path.join(path, comp)
    linkpath = os.path.join("/".join(steps), "l" * 254)
    members.append((linkpath, SYM, "../" * len(steps), b""))
    members.append(("escape", SYM, linkpath + "/../decoy", b""))
    members.append(("escape/secret.txt", REG, None, b"overwritten"))
    return members


LONG_CHAIN = _long_chain()

REFUSED = {
    "dotdot": [("../decoy/secret.txt", REG, None, b"overwritten")],
    "nested-dotdot": [("ok.txt", REG, None, b"fine"), ("sub/../../decoy/secret.txt", REG, None, b"overwritten")],
    "absolute": [("/decoy-absolute", REG, None, b"pwned")],
    "empty-component": [("a//b", REG, None, b"x")],
    "through-symlink": [("link", SYM, "../decoy", b""), ("link/secret.txt", REG, None, b"overwritten")],
    "through-absolute-symlink": [("link", SYM, "/", b""), ("link/tmp/drproof-pwned", REG, None, b"x")],
    "through-file": [("f", REG, None, b"x"), ("f/inner", REG, None, b"y")],
    "link-then-write-dir": [("sub", SYM, "../decoy", b""), ("sub/passwd", REG, None, b"hacked")],
    "long-symlink-chain": LONG_CHAIN,
    "hardlink-outside": [("hard", LNK, "../decoy/secret.txt", b"")],
    "hardlink-through-symlink": [("l", SYM, "../decoy", b""), ("hard", LNK, "l/secret.txt", b"")],
    "hardlink-to-symlink": [("l", SYM, "../decoy/secret.txt", b""), ("hard", LNK, "l", b"")],
    "hardlink-to-nothing": [("hard", LNK, "missing", b"")],
    "char-device": [("null", CHR, None, b"")],
    "block-device": [("sda", BLK, None, b"")],
    "component-too-long": [("x" * (NAME_MAX + 1), REG, None, b"x")],
    "path-too-long": [("/".join(["y" * 200] * 25), REG, None, b"x")],
    "file-over-directory": [("d", DIR, None, b""), ("d/x", REG, None, b"1"), ("d", REG, None, b"2")],
}


@pytest.mark.parametrize("members", list(REFUSED.values()), ids=list(REFUSED))
def test_hostile_member_is_refused_and_nothing_changes(site: tuple[Path, Path, Path], members: Any) -> None:
    base, target, decoy = site
    before_target, before_decoy = _state(target), _state(decoy)
    with pytest.raises(HostileArchive):
        extract_tar(_opener(_tar(*members)), target)
    assert _state(target) == before_target
    assert _state(decoy) == before_decoy
    assert not Path("/decoy-absolute").exists() and not Path("/tmp/drproof-pwned").exists()
    assert sorted(p.name for p in base.iterdir()) == ["decoy", "target"]  # no staging left behind


def test_quiet_control_a_tree_with_links_of_every_kind_restores(site: tuple[Path, Path, Path]) -> None:
    _base, target, decoy = site
    before_decoy = _state(decoy)
    members = [
        ("d", DIR, None, b""),
        ("d/a.txt", REG, None, b"alpha"),
        ("d/again.txt", LNK, "d/a.txt", b""),
        ("rel", SYM, "d/a.txt", b""),
        ("abs", SYM, "/srv/releases/42", b""),  # pointing outside is kept, never followed
        ("up", SYM, "../decoy", b""),
        ("fifo", FIFO, None, b""),
        ("./dot.txt", REG, None, b"dot"),
        ("u" * NAME_MAX, REG, None, b"long name"),
    ]
    extract_tar(_opener(_tar(*members)), target)
    state = _state(target)
    assert state["d/a.txt"] == ("file", 0o644, b"alpha")
    assert os.stat(target / "d/again.txt").st_ino == os.stat(target / "d/a.txt").st_ino
    assert state["rel"] == ("link", "d/a.txt") and state["abs"] == ("link", "/srv/releases/42")
    assert state["up"] == ("link", "../decoy")
    assert state["fifo"][:2] == ("other", stat.S_IFIFO)
    assert state["dot.txt"] == ("file", 0o644, b"dot")
    assert state["u" * NAME_MAX][2] == b"long name"
    assert "keep.txt" not in state  # replaced, not merged
    assert _state(decoy) == before_decoy


def test_setuid_and_setgid_bits_of_files_are_dropped_directory_bits_kept(site: tuple[Path, Path, Path]) -> None:
    _base, target, _decoy = site
    extract_tar(
        _opener(_tar(("shared", DIR, None, b"", 0o3775), ("shared/sh", REG, None, b"#!", 0o6755))),
        target,
    )
    assert stat.S_IMODE((target / "shared" / "sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "shared").stat().st_mode) == 0o3775


def test_a_later_member_replaces_an_earlier_symlink_instead_of_writing_through_it(
    site: tuple[Path, Path, Path],
) -> None:
    _base, target, decoy = site
    extract_tar(_opener(_tar(("f", SYM, "../decoy/secret.txt", b""), ("f", REG, None, b"mine"))), target)
    assert (target / "f").read_bytes() == b"mine" and not (target / "f").is_symlink()
    assert (decoy / "secret.txt").read_bytes() == b"must not change"


@pytest.mark.parametrize("removal", ["link/secret.txt", "link", "../decoy/secret.txt", "/etc/passwd", "."])
def test_removal_lists_never_follow_links_out(site: tuple[Path, Path, Path], removal: str) -> None:
    _base, target, decoy = site
    before_decoy = _state(decoy)

    layers = [(_opener(_tar(("link", SYM, "../decoy", b""), ("a", REG, None, b"a"))), []), (_opener(_tar()), [removal])]
    try:
        extract_layers(layers, target)
    except HostileArchive:
        pass
    else:
        # Only the link itself may go: "link/secret.txt" passes through a link, so it names nothing here.
        assert (target / "a").read_bytes() == b"a"
    assert _state(decoy) == before_decoy


def test_a_missing_parent_of_the_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"parent directory .* does not exist"):
        extract_tar(_opener(_tar(("a", REG, None, b"a"))), tmp_path / "missing" / "target")


def test_tree_writer_refuses_names_the_python_filter_would_approve(tmp_path: Path) -> None:
    """No realpath is involved: a member through a created link fails on O_NOFOLLOW itself."""
    root = tmp_path / "root"
    root.mkdir()
    with TreeWriter(root) as writer, pytest.raises(HostileArchive, match="passes through"):
        extract_into(_tar(*LONG_CHAIN), writer)


def test_a_restore_killed_between_its_renames_is_put_back_before_the_next_one(site: tuple[Path, Path, Path]) -> None:
    """The live tree set aside by an interrupted swap is the live data: a later refusal must keep it."""
    _base, target, _decoy = site
    before = _state(target)
    os.rename(target, target.with_name("target.drproof-replaced"))  # killed right here last time
    with pytest.raises(HostileArchive):
        extract_tar(_opener(_tar(("../escape", REG, None, b"x"))), target)
    assert _state(target) == before


@pytest.mark.parametrize("mtime", ["inf", "nan", "1e400", "-1e300", "1e12"])
def test_a_member_whose_time_no_file_can_have_is_refused_and_nothing_changes(
    site: tuple[Path, Path, Path], mtime: str
) -> None:
    """A pax ``mtime`` of infinity, NaN or far out of range raised a traceback from os.utime (review)."""
    base, target, _decoy = site
    before = _state(target)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        info.pax_headers = {"mtime": mtime}
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(HostileArchive, match="modification time"):
        extract_tar(_opener(buf), target)
    assert _state(target) == before
    assert sorted(p.name for p in base.iterdir()) == ["decoy", "target"]


def test_a_target_that_is_a_link_is_restored_where_it_points(tmp_path: Path) -> None:
    """``vol -> disk/vol``: the data behind the link are restored, the link stays (review: it was replaced)."""
    real = tmp_path / "disk" / "vol"
    real.mkdir(parents=True)
    (real / "old.txt").write_bytes(b"damaged")
    link = tmp_path / "vol"
    link.symlink_to(real)
    extract_tar(_opener(_tar(("new.txt", REG, None, b"restored"))), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert _state(real) == {"new.txt": ("file", 0o644, b"restored")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "vol"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["vol"]


def test_a_target_that_is_a_mount_point_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount point cannot be renamed aside: refused up front, no staged copy left (review: EBUSY, copy left)."""
    target = tmp_path / "vol"
    target.mkdir()
    (target / "keep.txt").write_bytes(b"live")
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target or real_ismount(p))
    with pytest.raises(ComponentError, match=r"mount point.*nothing was changed"):
        extract_tar(_opener(_tar(("new.txt", REG, None, b"x"))), target)
    assert _state(target) == {"keep.txt": ("file", 0o644, b"live")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]


def _with_pax(pax: dict[str, str], kind: bytes = tarfile.REGTYPE) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/member")
        info.type, info.mode, info.mtime = kind, 0o644, 1_700_000_000
        info.size = 1 if kind == tarfile.REGTYPE else 0
        info.pax_headers = pax
        tar.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    buf.seek(0)
    return buf


IMPOSSIBLE_HEADERS = {
    "uid -2": {"uid": "-2"},
    "uid -1 (chown: leave alone)": {"uid": "-1"},
    "uid 2**32-1 (chown: leave alone)": {"uid": str(2**32 - 1)},
    "uid 2**32": {"uid": str(2**32)},
    "gid 10**30": {"gid": str(10**30)},
    "gid -1": {"gid": "-1"},
    "user name with NUL": {"uname": "root\0x"},
    "group name with NUL": {"gname": "root\0x"},
    "attribute name with NUL": {"SCHILY.xattr.user.a\0b": "v"},
    "attribute name of 300 bytes": {"SCHILY.xattr.user." + "a" * 300: "v"},
    "empty attribute name": {"SCHILY.xattr.": "v"},
    "attribute value over 64 KiB": {"SCHILY.xattr.user.big": "v" * 70_000},
}


@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE], ids=["file", "dir", "symlink"])
@pytest.mark.parametrize("pax", list(IMPOSSIBLE_HEADERS.values()), ids=list(IMPOSSIBLE_HEADERS))
def test_an_owner_or_attribute_no_file_can_have_is_refused_naming_the_member(
    site: tuple[Path, Path, Path], pax: dict[str, str], kind: bytes
) -> None:
    """Before: OverflowError / ValueError from os.chown, pwd.getpwnam or os.setxattr (a traceback),
    and an id of -1 or 2**32-1 was taken by chown as "leave the owner alone" (review finding 4)."""
    base, target, _decoy = site
    before = _state(target)
    with pytest.raises(HostileArchive, match="'d/member'"):
        extract_tar(_opener(_with_pax(pax, kind)), target)
    assert _state(target) == before
    assert sorted(p.name for p in base.iterdir()) == ["decoy", "target"]


@pytest.mark.parametrize("number", [0, 3_000_000_000, 2**32 - 2])
def test_quiet_control_the_largest_ids_a_file_can_have_restore(site: tuple[Path, Path, Path], number: int) -> None:
    _base, target, _decoy = site
    extract_tar(_opener(_with_pax({"uid": str(number), "gid": str(number), "SCHILY.xattr.user.a": "v" * 1000})), target)
    st = (target / "d" / "member").lstat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (number, number)
    assert (target / "d" / "member").read_bytes() == b"x"
