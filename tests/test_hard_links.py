"""Hard links: which names share one file is part of a tree's fingerprint, and restores keep it.

Found by review: replacing a hard link by a copy of equal content compared "match", and a
second name made after a full backup (``ln a b``) came back from the incremental chain as
a file of its own while the staged proof and fidelity said "match". Scheme 4 of volumes and
configuration records, in the part of every further name of a linked file, the first name
(in order of names) it shares the file with.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import backup as engine_backup
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.files import (
    FILE,
    LINK,
    LINKS_NOT_RECORDED,
    LinkedParts,
    extract_tar,
    link_token,
    tree_parts,
    write_tar,
)
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime


def _volume(root: Path, files: int = 6) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=300, symlinks=False), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def groups(root: Path) -> set[frozenset[str]]:
    """Which names share a file: the sets of two or more names of one inode."""
    by_inode: dict[int, set[str]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            by_inode.setdefault(path.stat().st_ino, set()).add(str(path.relative_to(root)))
    return {frozenset(names) for names in by_inode.values() if len(names) > 1}


def _recorded(manifest: object, comp: VolumesComponent) -> Fingerprint:
    fp = manifest.component(comp.instance).fingerprint  # type: ignore[attr-defined]
    assert fp is not None
    return fp


# -- what the fingerprint sees --------------------------------------------------------------


def test_a_hard_link_replaced_by_an_equal_copy_differs_and_is_named(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    a, b = comp.path / "dir000" / "file000000.bin", comp.path / "dir001" / "alias.bin"
    os.link(a, b)
    before = comp.fingerprint()
    assert before.scheme == "volumes/7"
    data = b.read_bytes()
    b.unlink()
    b.write_bytes(data)
    os.chmod(b, a.stat().st_mode & 0o7777)
    diffs = compare(before, comp.fingerprint())
    assert [d.part for d in diffs] == [f"{FILE}dir001/alias.bin"]
    assert diffs.describe() == [
        "file dir001/alias.bin: hard link to 'dir000/file000000.bin' lost (now a file of its own); "
        "content and mode as backed up"
    ]
    # And back: two equal files made one by a link is a link the backup did not have.
    os.unlink(b)
    os.link(a, b)
    assert compare(before, comp.fingerprint()) == []
    after = comp.fingerprint()
    b.unlink()
    b.write_bytes(data)
    os.chmod(b, a.stat().st_mode & 0o7777)
    (line,) = compare(comp.fingerprint(), after).describe()
    assert "hard link to 'dir000/file000000.bin' added" in line


def test_only_further_names_carry_the_link_and_a_tree_without_links_keeps_its_parts(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    plain = tree_parts(comp.path, links=True)
    assert not any(LINK in p.digest for p in plain.values())  # no hard link: no token
    first = comp.path / "dir000" / "file000000.bin"
    os.link(first, comp.path / "dir000" / "a later.bin")
    os.link(first, comp.path / "0-sorts-first.bin")
    parts = tree_parts(comp.path, links=True)
    assert parts[f"{FILE}0-sorts-first.bin"] == plain[f"{FILE}dir000/file000000.bin"]  # the first: no token
    assert parts[f"{FILE}dir001/file000001.bin"] == plain[f"{FILE}dir001/file000001.bin"]
    token = link_token("0-sorts-first.bin")
    assert parts[f"{FILE}dir000/file000000.bin"].digest.endswith(token)
    assert parts[f"{FILE}dir000/a later.bin"].digest.endswith(token)


def test_a_link_whose_other_name_is_outside_the_tree_is_no_link_of_the_tree(tmp_path: Path) -> None:
    comp = _volume(tmp_path / "in")
    os.link(comp.path / "dir000" / "file000000.bin", tmp_path / "outside.bin")
    assert not any(LINK in p.digest for p in tree_parts(comp.path, links=True).values())


def test_names_of_any_bytes_stay_one_token(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    first = root / os.fsdecode(b"a link:x y\xff")
    first.write_bytes(b"shared")
    os.link(first, root / "b")
    parts = tree_parts(root, links=True)
    assert parts[f"{FILE}b"].digest.endswith(" link:a%20link%3Ax%20y%FF")
    (root / "b").unlink()
    (root / "b").write_bytes(b"shared")
    (line,) = compare(Fingerprint.build("c", "volumes", parts, "volumes/4"), _fp(root)).describe()
    assert "hard link to 'a link:x y\\udcff' lost" in line


def _fp(root: Path) -> Fingerprint:
    return Fingerprint.build("c", "volumes", tree_parts(root, links=True), "volumes/4")


# -- full backups -------------------------------------------------------------------------


def test_a_full_backup_of_linked_names_restores_them_linked_and_matches(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    first = comp.path / "dir000" / "file000000.bin"
    for name in ("dir001/b.bin", "dir002/c.bin", "z.bin"):
        os.link(first, comp.path / name)
    os.link(comp.path / "dir001" / "file000001.bin", comp.path / "dir003" / "other.bin")
    expected = groups(comp.path)
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    recorded = _recorded(full, comp)
    assert compare(recorded, comp.fingerprint()) == []  # the archive's parts are the walk's
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, full, comp)
    assert groups(comp.path) == expected
    assert compare(recorded, comp.fingerprint()) == []


def test_a_scheme_3_backup_is_compared_without_links_and_says_so(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    os.link(comp.path / "dir000" / "file000000.bin", comp.path / "b.bin")
    old = comp.legacy_fingerprint("volumes/3")
    assert old is not None and old.scheme == "volumes/3"
    assert not any(" link:" in p.digest for p in old.parts.values())
    assert any(" " in p.digest for p in old.parts.values())  # owners, as scheme 3 had them
    assert compare(old, comp.fingerprint_like(old)) == []
    assert (comp.blind_spot("volumes/3") or "").startswith(LINKS_NOT_RECORDED)
    assert comp.blind_spot("volumes/7") is None


def test_configuration_sees_a_broken_hard_link(tmp_path: Path) -> None:
    comp = ConfigurationComponent("conf", ConfigurationParams(), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    first = sorted(p for p in comp.path.rglob("*") if p.is_file())[0]
    os.link(first, comp.path / "zz-alias")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    recorded = full.component(comp.instance).fingerprint
    assert recorded is not None and recorded.scheme == ConfigurationComponent.fingerprint_scheme
    assert compare(recorded, comp.fingerprint()) == []
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, full, comp)
    assert os.path.samefile(first, comp.path / "zz-alias")
    assert compare(recorded, comp.fingerprint()) == []
    data = (comp.path / "zz-alias").read_bytes()
    (comp.path / "zz-alias").unlink()
    (comp.path / "zz-alias").write_bytes(data)
    (line,) = compare(recorded, comp.fingerprint()).describe()
    assert "hard link to" in line and "lost" in line


# -- incremental chains -------------------------------------------------------------------


def _chain(tmp_path: Path, change: object) -> None:
    """Full backup, ``change(path)``, incremental; the chain's restore must give the live tree."""
    comp = _volume(tmp_path)
    os.link(comp.path / "dir000" / "file000000.bin", comp.path / "dir002" / "m.bin")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    change(comp.path)  # type: ignore[operator]
    expected, live = groups(comp.path), comp.fingerprint()
    inc = engine_backup.backup(repo, [comp], parent=full)
    assert compare(_recorded(inc, comp), live) == []
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, inc, comp)  # the staged proof passed
    assert groups(comp.path) == expected
    assert compare(_recorded(inc, comp), comp.fingerprint()) == []


def test_a_name_linked_after_the_full_backup_is_a_link_after_the_chain_restore(tmp_path: Path) -> None:
    _chain(tmp_path, lambda p: os.link(p / "dir001" / "file000001.bin", p / "dir003" / "alias.bin"))


def test_a_new_name_that_sorts_first_relinks_the_group(tmp_path: Path) -> None:
    _chain(tmp_path, lambda p: os.link(p / "dir000" / "file000000.bin", p / "0.bin"))


def test_a_link_broken_after_the_full_backup_stays_broken(tmp_path: Path) -> None:
    def change(p: Path) -> None:
        data = (p / "dir002" / "m.bin").read_bytes()
        (p / "dir002" / "m.bin").unlink()
        (p / "dir002" / "m.bin").write_bytes(data)

    _chain(tmp_path, change)


def test_the_first_name_removed_leaves_the_others_linked(tmp_path: Path) -> None:
    def change(p: Path) -> None:
        os.link(p / "dir002" / "m.bin", p / "dir003" / "n.bin")
        (p / "dir000" / "file000000.bin").unlink()

    _chain(tmp_path, change)


def test_a_linked_file_rewritten_in_place_is_one_file_after_the_chain(tmp_path: Path) -> None:
    def change(p: Path) -> None:
        with open(p / "dir002" / "m.bin", "r+b") as fh:
            fh.write(b"rewritten through one name")

    _chain(tmp_path, change)


# -- property: any small tree of links ----------------------------------------------------

_NAMES = ["a", "b", "d/c", "d/e", "f g", "z"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    links=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_NAMES)), max_size=6),
    later=st.lists(
        st.tuples(st.sampled_from(["link", "copy", "unlink"]), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
        max_size=4,
    ),
)
def test_any_tree_of_links_round_trips_in_full_and_incremental_backups(
    tmp_path: Path, links: list[tuple[str, str]], later: list[tuple[str, str, str]]
) -> None:
    work = Path(os.path.join(tmp_path, os.urandom(6).hex()))
    root = work / "rt" / "files"
    root.mkdir(parents=True)
    (root / "d").mkdir()
    for n, name in enumerate(_NAMES):
        (root / name).write_bytes(b"content %d" % n)
    _apply(root, [("link", a, b) for a, b in links])
    # The parts of the walk, of the archive written and of the tree extracted agree.
    walked = tree_parts(root, links=True)
    archived, extracted = LinkedParts(), LinkedParts()
    buf = io.BytesIO()
    write_tar(root, buf, parts=archived)
    copy = work / "copy"
    extract_tar(lambda: _opened(buf.getvalue()), copy, parts=extracted)
    assert dict(archived) == walked == dict(extracted) == tree_parts(copy, links=True)
    assert groups(copy) == groups(root)
    # And through a chain.
    comp = VolumesComponent("files", VolumesParams(files=0), DirsRuntime(work / "rt"))  # type: ignore[arg-type]
    comp.provision()
    repo = LocalRepository(work / "repo")
    full = engine_backup.backup(repo, [comp])
    _apply(root, later)
    expected, live = groups(root), comp.fingerprint()
    inc = engine_backup.backup(repo, [comp], parent=full)
    shutil.rmtree(root)
    engine_backup.restore(repo, inc, comp)
    assert groups(root) == expected
    assert compare(live, comp.fingerprint()) == []
    shutil.rmtree(work)


def _apply(root: Path, ops: list[tuple[str, str, str]]) -> None:
    for op, a, b in ops:
        src, dst = root / a, root / b
        if op == "unlink":
            if src.exists() and len([n for n in _NAMES if (root / n).exists()]) > 1:
                src.unlink()
            continue
        if a == b or not src.exists():
            continue
        if dst.exists():
            dst.unlink()
        if op == "link":
            os.link(src, dst)
        else:
            dst.write_bytes(src.read_bytes())


def _opened(data: bytes) -> object:
    import contextlib

    return contextlib.nullcontext(io.BytesIO(data))


def test_an_incremental_on_a_scheme_3_set_restores_linked_names_linked(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    os.link(comp.path / "dir000" / "file000000.bin", comp.path / "dir002" / "m.bin")
    repo = LocalRepository(tmp_path / "repo")
    old = comp.legacy_fingerprint("volumes/3")
    full = engine_backup.backup(repo, [comp], fingerprints={comp.instance: old})  # type: ignore[dict-item]
    assert _recorded(full, comp).scheme == "volumes/3"
    expected = groups(comp.path)
    inc = engine_backup.backup(repo, [comp], parent=full)
    assert _recorded(inc, comp).scheme == "volumes/7"
    # Every entry: scheme 4 digests modes apart, so no part of scheme 3 is one of scheme 4.
    assert inc.component(comp.instance).details["changed"] == len(list(comp.path.rglob("*")))
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, inc, comp)
    assert groups(comp.path) == expected
    assert compare(_recorded(inc, comp), comp.fingerprint()) == []


# -- modes apart from content (scheme 4) ----------------------------------------------------


def test_a_mode_change_alone_is_named_as_one_on_every_kind_of_entry(tmp_path: Path) -> None:
    """Found by review: a chmod was "content differs (sha256 …)". The backup's parts (of the archive)
    against the tree: each entry whose mode alone changed is named so, with both modes."""
    comp = _volume(tmp_path)
    big = comp.path / "dir000" / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # several records: the chunked digest
    os.mkfifo(comp.path / "fifo")
    os.link(comp.path / "dir001" / "file000001.bin", comp.path / "dir003" / "alias.bin")
    repo = LocalRepository(tmp_path / "repo")
    recorded = _recorded(engine_backup.backup(repo, [comp]), comp)
    assert compare(recorded, comp.fingerprint()) == []
    for rel, mode in (("dir000/file000000.bin", 0o4755), ("dir000/big.bin", 0o600), ("dir002", 0o700), ("fifo", 0o600)):
        os.chmod(comp.path / rel, mode)
    os.chmod(comp.path / "dir001" / "file000001.bin", 0o640)  # both names of the linked file
    assert compare(recorded, comp.fingerprint()).describe() == [
        "dir dir002: mode differs (0755 → 0700); content as backed up",
        "file dir000/big.bin: mode differs (0644 → 0600); content as backed up",
        "file dir000/file000000.bin: mode differs (0644 → 4755); content as backed up",
        "file dir001/file000001.bin: mode differs (0644 → 0640); content as backed up",
        "file dir003/alias.bin: mode differs (0644 → 0640); content as backed up",
        "file fifo: mode differs (0644 → 0600); content as backed up",
    ]
    big.write_bytes(b"other")
    (line,) = [d for d in compare(recorded, comp.fingerprint()).describe() if "big.bin" in d]
    assert line.startswith("file dir000/big.bin: content differs (sha256 ") and "mode differs (0644 → 0600)" in line


def test_a_scheme_3_set_still_restores_proven_and_compares_green(tmp_path: Path) -> None:
    """An older drproof's set (modes in the digest, no links): its restore is proven in scheme 3."""
    comp = _volume(tmp_path)
    os.link(comp.path / "dir000" / "file000000.bin", comp.path / "dir002" / "m.bin")
    os.chmod(comp.path / "dir001" / "file000001.bin", 0o600)
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp], fingerprints={comp.instance: comp.legacy_fingerprint("volumes/3")})  # type: ignore[dict-item]
    recorded = _recorded(full, comp)
    assert recorded.scheme == "volumes/3"
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, full, comp)  # the staged proof, in scheme 3
    assert compare(recorded, comp.fingerprint_like(recorded)) == []


# -- hard links of symbolic links and FIFOs: not kept, and said so ----------------------------


def _linked_specials(root: Path) -> None:
    """A symbolic link and a FIFO with two names each (``ln`` of a symlink links the link itself)."""
    os.symlink("dir000/file000000.bin", root / "s1")
    os.link(root / "s1", root / "s2", follow_symlinks=False)
    os.mkfifo(root / "p1")
    os.link(root / "p1", root / "p2")
    assert os.lstat(root / "s2").st_nlink == 2 and os.lstat(root / "p2").st_nlink == 2


def _judged_notes(repo: LocalRepository, comp: VolumesComponent, manifest: object) -> list[str]:
    from drills.recovery import _judge

    outcome = _judge(repo, comp, manifest, lambda _m: None)  # type: ignore[arg-type]
    assert outcome.fidelity == "match", outcome.differences
    return outcome.notes


def test_hard_links_of_symlinks_and_fifos_are_named_by_the_set_and_by_fidelity(tmp_path: Path) -> None:
    """Before: a full and an incremental set of such a tree restored them as separate entries, and
    fidelity said a plain "match": nothing anywhere said the links were not kept (review-trees leftover)."""
    comp = _volume(tmp_path)
    _linked_specials(comp.path)
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    details = full.component(comp.instance).details
    assert details["hard_links_not_kept"]["count"] == 2
    assert details["hard_links_not_kept"]["entries"] == [
        "p2: a FIFO hard-linked to 'p1'; restored as a FIFO of its own",
        "s2: a symbolic link hard-linked to 's1'; restored as a symbolic link of its own",
    ]
    [note] = comp.comparison_notes(details)
    assert note.startswith("hard links between symbolic links or FIFOs are not kept: 2 such name(s)")

    (comp.path / "dir001" / "file000001.bin").write_bytes(b"changed")
    incremental = engine_backup.backup(repo, [comp], parent=full)
    assert incremental.component(comp.instance).details["hard_links_not_kept"]["count"] == 2, "the walk sees all"

    shutil.rmtree(comp.path)
    engine_backup.restore(repo, incremental, comp)
    assert os.lstat(comp.path / "s2").st_nlink == 1 and os.readlink(comp.path / "s2") == "dir000/file000000.bin"
    assert _judged_notes(repo, comp, incremental) == [note]


def test_a_tree_without_linked_symlinks_or_fifos_has_no_such_note(tmp_path: Path) -> None:
    """Quiet control: a hard-linked regular file, a plain symlink and a FIFO of one name each."""
    comp = _volume(tmp_path)
    os.link(comp.path / "dir000" / "file000000.bin", comp.path / "alias.bin")
    os.symlink("alias.bin", comp.path / "s1")
    os.mkfifo(comp.path / "p1")
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    assert "hard_links_not_kept" not in full.component(comp.instance).details
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, full, comp)
    assert _judged_notes(repo, comp, full) == []
