"""A volume's per-file parts kept out of memory and out of the manifest (issue 14).

A fingerprint of many parts keeps them in a sorted stream: a temporary file while it is
taken, the ``fingerprint.parts`` artifact once backed up. The manifest commits to the
stream (record count, SHA-256, totals), and comparisons are merges of two streams.
These tests hold the streamed form equal to the inline one it replaces (the spool, the
merge, the order of the walk), show a healthy round trip, an incremental chain, an
encrypted set and an inline (old-format) manifest working, and show every kind of
damage to the stored parts caught and named: missing, truncated, reordered, duplicated,
disagreeing with the manifest, or named in the manifest but not in the set.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import backup as engine_backup
from engine import partstream
from engine.components.files import DIR, FILE, extract_tar, tree_parts, tree_parts_into, write_tar
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.crypto import Encryption
from engine.errors import IntegrityError, RestoreMismatch
from engine.fingerprint import MAX_LISTED, Fingerprint, Part, compare
from engine.manifest import Manifest
from engine.partstream import MAGIC, PARTS_ARTIFACT, PartSpool
from engine.repository import LocalRepository
from tests.conftest import DirsRuntime

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Names that sort in every tricky way: "/" against ".", "-" and " ", prefixes, non-ASCII,
# and an undecodable byte of a file name (a surrogate from os.fsdecode).
name_chars = st.sampled_from(["a", "b", "/", ".", "-", " ", "é", "\udc80", "0"])
part_names = st.builds(
    lambda p, s: f"{p} {s}", st.sampled_from(["dir", "file", "key"]), st.text(name_chars, max_size=6)
)
parts_st = st.builds(
    Part,
    digest=st.sampled_from(["d1", "d2", "d3", "unreadable: Permission denied"]),
    count=st.integers(0, 5000),
    unit=st.sampled_from(["bytes", "directories", "keys"]),
)


@pytest.fixture
def external(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fingerprint keeps its parts in a stream, however few: the path a large volume takes."""
    monkeypatch.setattr(partstream, "INLINE_PARTS", 0)
    monkeypatch.setattr(partstream, "BUFFER_PARTS", 5)


def _spooled(records: list[tuple[str, Part]], buffer: int = 5) -> Fingerprint:
    spool = PartSpool(buffer=buffer)
    for name, part in records:
        spool[name] = part
    return spool.fingerprint("c", "volumes", "volumes/2")


def _parts(fp: Fingerprint) -> dict[str, Part]:
    with fp.open_parts() as parts:
        return dict(parts)


# -- the spool and the merge against the inline form -------------------------------------------


@FAST
@given(records=st.lists(st.tuples(part_names, parts_st), max_size=60), buffer=st.integers(1, 8))
def test_a_spooled_fingerprint_is_the_inline_one(records: list[tuple[str, Part]], buffer: int) -> None:
    """Any order, repeated names (the last wins), runs that overlap: the same parts, digest and totals."""
    inline = Fingerprint.build("c", "volumes", dict(records), "volumes/2")
    old = partstream.INLINE_PARTS
    partstream.INLINE_PARTS = 0
    try:
        streamed = _spooled(records, buffer)
    finally:
        partstream.INLINE_PARTS = old
    assert streamed.external or not records
    assert streamed.digest == inline.digest
    assert streamed.part_count == inline.part_count
    assert streamed.totals() == inline.totals()
    assert list(_parts(streamed).items()) == list(inline.parts.items())
    # Every part matches its copy but a placeholder ("unreadable: ..."), which never matches.
    placeholders = sum(not p.measured for p in inline.parts.values())
    assert compare(inline, streamed).total == placeholders and compare(streamed, inline).total == placeholders


@FAST
@given(
    records=st.lists(st.tuples(part_names, parts_st), max_size=40),
    removed=st.sets(st.text(name_chars, min_size=1, max_size=3), max_size=3),
    later=st.lists(st.tuples(part_names, parts_st), max_size=10),
)
def test_a_spool_forgets_what_a_layer_removes_and_keeps_what_follows(
    records: list[tuple[str, Part]], removed: set[str], later: list[tuple[str, Part]]
) -> None:
    from engine.components.files import _under

    spool = PartSpool(buffer=3)
    for name, part in records:
        spool[name] = part
    spool.drop(lambda name: _under(name, removed))
    for name, part in later:
        spool[name] = part
    expected = {n: p for n, p in records if not _under(n, removed)}
    expected.update(dict(later))
    assert _parts(spool.fingerprint("c", "volumes", "volumes/2")) == dict(sorted(expected.items()))


@FAST
@given(
    a=st.dictionaries(part_names, parts_st, max_size=40),
    b=st.dictionaries(part_names, parts_st, max_size=40),
    limit=st.integers(1, 50),
)
def test_the_streamed_comparison_lists_what_the_inline_one_does(
    a: dict[str, Part], b: dict[str, Part], limit: int
) -> None:
    expected, actual = (
        Fingerprint.build("c", "volumes", a, "volumes/2"),
        Fingerprint.build("c", "volumes", b, "volumes/2"),
    )
    naive = [
        (n, "missing" if n not in b else "unexpected" if n not in a else "changed")
        for n in sorted(set(a) | set(b))
        if n not in a or n not in b or not a[n].matches(b[n])  # a placeholder never matches
    ]
    old = partstream.INLINE_PARTS
    partstream.INLINE_PARTS = 0
    try:
        streamed_e, streamed_a = _spooled(list(a.items())), _spooled(list(b.items()))
    finally:
        partstream.INLINE_PARTS = old
    for e, x in ((expected, actual), (streamed_e, streamed_a), (expected, streamed_a), (streamed_e, actual)):
        diffs = compare(e, x, limit=limit)
        assert [(d.part, d.change) for d in diffs] == naive[:limit]
        assert diffs.total == len(naive)
        assert diffs.compared == len(set(a) | set(b))


def test_a_comparison_lists_a_thousand_differences_and_counts_the_rest() -> None:
    a = {f"file f{i:05d}": Part(digest="x", count=1, unit="bytes") for i in range(MAX_LISTED + 500)}
    b = {n: Part(digest="y", count=1, unit="bytes") for n in a}
    diffs = compare(Fingerprint.build("c", "v", a), Fingerprint.build("c", "v", b))
    assert len(diffs) == MAX_LISTED and diffs.total == MAX_LISTED + 500
    assert diffs.describe()[-1] == "and 500 more parts differ (not listed)"


# -- the order a tree is walked and archived in ------------------------------------------------


tree_names = st.lists(st.text(st.sampled_from(["a", "b", ".", "-", " ", "é", "0"]), min_size=1, max_size=4), max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(tree_names, min_size=1, max_size=12))
def test_a_tree_is_walked_and_archived_in_the_order_of_part_names(tmp_path: Path, paths: list[list[str]]) -> None:
    """Files arrive sorted, and so do directories, so a spool of them sorts nothing.

    Names around "/" ("a.b", "a-b", "a b" beside a directory "a") are where a plain
    directory walk goes out of order.
    """
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for path in paths:
        parts = [p for p in path if p not in (".", "..")]
        if not parts:
            continue
        target = root.joinpath(*parts)
        if any(parent.is_file() for parent in target.parents) or target.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("/".join(parts))
    walked: list[str] = []
    tree_parts_into(root, _Recorder(walked))
    archived: list[str] = []
    write_tar(root, io.BytesIO(), parts=_Recorder(archived))
    assert walked == archived
    files = [n for n in walked if n.startswith(FILE)]
    assert files == sorted(files)
    # Directories may not ("a.b" is visited before "a"): the spool sorts those few.
    assert sorted(n for n in walked if n.startswith(DIR)) == sorted(set(walked) - set(files))
    spool = PartSpool(buffer=2)
    tree_parts_into(root, spool)
    streamed = spool.fingerprint("c", "volumes", "volumes/2")
    assert streamed.digest == Fingerprint.build("c", "volumes", tree_parts(root), "volumes/2").digest


class _Recorder:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def __setitem__(self, name: str, part: Part) -> None:
        self.names.append(name)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.sets(st.sampled_from(["hardlink", "symlink", "fifo", "empty-dir"])), size=st.integers(0, 3000))
def test_parts_digested_while_extracting_equal_the_backup_s(tmp_path: Path, extras: set[str], size: int) -> None:
    """The restore side digests what it writes, hard links read back from the file they share."""
    root, out = tmp_path / "src", tmp_path / "out"
    for d in (root, out):
        shutil.rmtree(d, ignore_errors=True)
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.bin").write_bytes(os.urandom(size))
    (root / "a.txt").write_text("a")
    if "hardlink" in extras:
        os.link(root / "sub" / "file.bin", root / "second-name")
    if "symlink" in extras:
        os.symlink("sub/file.bin", root / "link")
    if "fifo" in extras:
        os.mkfifo(root / "pipe")
    if "empty-dir" in extras:
        (root / "empty").mkdir(mode=0o750)
    backed_up: dict[str, Part] = {}
    sink = io.BytesIO()
    write_tar(root, sink, parts=backed_up)
    restored: dict[str, Part] = {}
    extract_tar(lambda: _Opened(sink.getvalue()), out, parts=restored)
    assert restored == backed_up == tree_parts(root)


class _Opened:
    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def __enter__(self) -> io.BytesIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        pass


# -- a volume backed up with its parts in an artifact -----------------------------------------------


def _volume(root: Path, name: str = "live", files: int = 30) -> VolumesComponent:
    comp = VolumesComponent("files", VolumesParams(files=files, file_size=300, directories=3), DirsRuntime(root / name))  # type: ignore[arg-type]
    comp.provision()
    return comp


def _restore_into(repo: LocalRepository, manifest: Manifest, root: Path) -> VolumesComponent:
    target = _volume(root, "restored")
    engine_backup.restore(repo, manifest, target)
    return target


def _fidelity(repo: LocalRepository, manifest: Manifest, comp: VolumesComponent) -> int:
    expected = engine_backup.recorded_fingerprint(repo, manifest, "files")
    assert expected is not None
    return compare(expected, comp.fingerprint_like(expected)).total


@pytest.mark.usefixtures("external")
def test_a_volume_round_trips_with_its_parts_in_an_artifact(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    fp = manifest.component("files").fingerprint
    assert fp is not None and fp.parts == {} and fp.parts_artifact is not None
    assert fp.parts_artifact.count == fp.part_count == 30 + 3 + 1 + 1  # files, directories, the symlink, the root (dir .)
    assert PARTS_ARTIFACT in manifest.component("files").artifacts
    stored = json.loads((repo.root / "sets" / manifest.id / "manifest.json").read_text())
    assert stored["components"][0]["fingerprint"]["parts"] == {}
    assert repo.verify(manifest.id).ok
    read_back = repo.get(manifest.id)
    assert read_back.component("files").fingerprint == fp
    restored = _restore_into(repo, read_back, tmp_path)
    assert _fidelity(repo, read_back, restored) == 0
    assert restored.fingerprint().digest == comp.fingerprint().digest == fp.digest
    # The summary of the set says what it covers without reading the parts.
    from engine.fingerprint import summarize

    assert summarize(fp) == "35 parts: 9,000 bytes, 4 directories"


@pytest.mark.usefixtures("external")
def test_an_incremental_chain_merges_against_its_parent_s_stored_parts(tmp_path: Path) -> None:
    comp = _volume(tmp_path)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    full = engine_backup.backup(repo, [comp])
    files = sorted(p for p in comp.path.rglob("*.bin") if not p.is_symlink())
    files[0].write_bytes(b"changed")
    files[1].unlink()
    (comp.path / "dir001").chmod(0o750)
    (comp.path / "new dir").mkdir()
    (comp.path / "new dir" / "n.txt").write_text("new")
    inc = engine_backup.backup(repo, [comp], parent=full)
    changes = inc.component("files").details
    assert changes["changed"] == 4 and changes["removed"] == 1, changes  # file, mode, dir, new file
    restored = _restore_into(repo, repo.get(inc.id), tmp_path)
    assert _fidelity(repo, repo.get(inc.id), restored) == 0
    assert restored.fingerprint().digest == comp.fingerprint().digest


def test_an_encrypted_set_keeps_its_parts_encrypted_and_restores(tmp_path: Path, external: None) -> None:
    comp = _volume(tmp_path)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo", Encryption(key=os.urandom(32), source="test"))
    manifest = engine_backup.backup(repo, [comp])
    raw = (repo.root / "sets" / manifest.id / "files" / f"{PARTS_ARTIFACT}.zst").read_bytes()
    assert b"dir000" not in raw and b"dir000" not in _unzstd_or_empty(raw)
    assert repo.verify(manifest.id).ok
    restored = _restore_into(repo, repo.get(manifest.id), tmp_path)
    assert _fidelity(repo, repo.get(manifest.id), restored) == 0


def _unzstd_or_empty(data: bytes) -> bytes:
    try:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    except zstandard.ZstdError:
        return b""


def test_an_inline_manifest_of_many_parts_still_restores_and_compares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier drproof kept every part in the manifest; a restore now streams its own."""
    comp = _volume(tmp_path)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    fp = manifest.component("files").fingerprint
    assert fp is not None and not fp.external and len(fp.parts) == 35
    monkeypatch.setattr(partstream, "INLINE_PARTS", 0)
    restored = _restore_into(repo, repo.get(manifest.id), tmp_path)
    assert restored.fingerprint().external
    assert _fidelity(repo, repo.get(manifest.id), restored) == 0
    (restored.path / "dir000" / "file000000.bin").write_bytes(b"other")
    diffs = compare(fp, restored.fingerprint())
    assert [(d.part, d.change) for d in diffs] == [("file dir000/file000000.bin", "changed")]


# -- damage to the stored parts: caught and named --------------------------------------------------


def _backed_up(tmp_path: Path) -> tuple[VolumesComponent, LocalRepository, Manifest]:
    comp = _volume(tmp_path)
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    return comp, repo, engine_backup.backup(repo, [comp])


def _raw_parts(repo: LocalRepository, manifest: Manifest) -> bytes:
    stored = repo.root / "sets" / manifest.id / "files" / f"{PARTS_ARTIFACT}.zst"
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored.read_bytes())).read()


def _records(raw: bytes) -> list[bytes]:
    fields = raw[len(MAGIC) :].split(b"\0")[:-1]
    return [b"\0".join(fields[i : i + 5]) + b"\0" for i in range(0, len(fields), 5)]


def _replace_parts(repo: LocalRepository, manifest: Manifest, raw: bytes, meta: dict[str, Any] | None = None) -> None:
    """Store ``raw`` as the parts artifact with an artifact record that matches it (a forgery's)."""
    stored = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    (repo.root / "sets" / manifest.id / "files" / f"{PARTS_ARTIFACT}.zst").write_bytes(stored)
    path = repo.root / "sets" / manifest.id / "manifest.json"
    doc = json.loads(path.read_text())
    for a in doc["artifacts"]:
        if a["name"] == PARTS_ARTIFACT:
            a.update(size=len(stored), sha256=hashlib.sha256(stored).hexdigest(), raw_size=len(raw))
    doc["components"][0]["fingerprint"]["parts_artifact"].update(meta or {})
    path.write_text(json.dumps(doc))


def _cut(raw: bytes) -> bytes:
    return raw[: len(raw) - 40]


def _dropped_record(raw: bytes) -> bytes:
    return MAGIC + b"".join(_records(raw)[1:])


def _swapped(raw: bytes) -> bytes:
    recs = _records(raw)
    recs[2], recs[3] = recs[3], recs[2]
    return MAGIC + b"".join(recs)


def _doubled(raw: bytes) -> bytes:
    recs = _records(raw)
    return MAGIC + b"".join([*recs[:3], recs[2], *recs[3:]])


def _other_digest(raw: bytes) -> bytes:
    recs = _records(raw)
    name, digest, *rest = recs[5].split(b"\0")
    recs[5] = b"\0".join([name, b"f" * len(digest), *rest])
    return MAGIC + b"".join(recs)


def _not_parts(raw: bytes) -> bytes:
    return b"not a parts stream at all" + raw


@pytest.mark.usefixtures("external")
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_cut, "truncated"),
        (_dropped_record, "the manifest records"),
        (_swapped, "out of order or named twice"),
        (_doubled, "out of order or named twice"),
        (_other_digest, "SHA-256 differs"),
        (_not_parts, "not a stream of fingerprint parts"),
    ],
    ids=["truncated", "a-part-missing", "reordered", "duplicated", "digest-disagrees", "not-parts"],
)
def test_damaged_parts_are_refused_and_named_wherever_they_are_read(tmp_path: Path, damage: Any, problem: str) -> None:
    """Rewritten with a matching artifact record, so only the fingerprint's own checks can tell."""
    comp, repo, manifest = _backed_up(tmp_path)
    _replace_parts(repo, manifest, damage(_raw_parts(repo, manifest)))
    read_back = repo.get(manifest.id)
    named = f"backup {manifest.id}: component 'files'"
    report = repo.verify(manifest.id)
    assert not report.ok and report.damaged == []
    assert any(named in f and problem in f for f in report.findings), report.findings
    with pytest.raises(IntegrityError, match=problem) as caught:
        engine_backup.restore(repo, read_back, _volume(tmp_path, "target"))
    assert named in str(caught.value) and "refusing to restore" in str(caught.value)
    with pytest.raises(IntegrityError, match=problem):
        _fidelity(repo, read_back, comp)
    with pytest.raises(IntegrityError, match=problem):  # an incremental on top of it is not taken
        engine_backup.backup(repo, [comp], parent=read_back)
    assert [m.id for m in repo.list()] == [manifest.id]


@pytest.mark.usefixtures("external")
@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"count": 33}, "than the 33 the manifest records"),
        ({"count": 36}, "35 parts stored, the manifest records 36"),
        ({"sha256": "0" * 64}, "SHA-256 differs"),
        ({"totals": {"bytes": 1, "directories": 3}}, "totals differ"),
        ({"artifact": "elsewhere"}, "which the set does not hold"),
    ],
    ids=["count-under", "count-over", "sha256", "totals", "artifact-not-in-set"],
)
def test_a_manifest_that_disagrees_with_its_parts_is_refused(
    tmp_path: Path, meta: dict[str, Any], problem: str
) -> None:
    comp, repo, manifest = _backed_up(tmp_path)
    _replace_parts(repo, manifest, _raw_parts(repo, manifest), meta)
    report = repo.verify(manifest.id)
    assert not report.ok and any(problem in f for f in report.findings), report.findings
    with pytest.raises(IntegrityError, match=problem):
        _fidelity(repo, repo.get(manifest.id), comp)
    with pytest.raises(IntegrityError, match=problem):
        engine_backup.restore(repo, repo.get(manifest.id), _volume(tmp_path, "target"))


@pytest.mark.usefixtures("external")
def test_missing_or_damaged_stored_parts_are_refused_before_anything_is_touched(tmp_path: Path) -> None:
    comp, repo, manifest = _backed_up(tmp_path)
    stored = repo.root / "sets" / manifest.id / "files" / f"{PARTS_ARTIFACT}.zst"
    data = stored.read_bytes()
    stored.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    report = repo.verify(manifest.id)
    assert report.damaged == [f"files/{PARTS_ARTIFACT}"] and report.findings == []  # said once, by the artifact
    target = _volume(tmp_path, "target")
    (target.path / "keep.txt").write_text("live data")
    with pytest.raises(IntegrityError, match=PARTS_ARTIFACT):
        engine_backup.restore(repo, repo.get(manifest.id), target)
    stored.unlink()
    with pytest.raises(IntegrityError, match=f"files/{PARTS_ARTIFACT} missing"):
        engine_backup.restore(repo, repo.get(manifest.id), target)
    assert sorted(p.name for p in target.path.iterdir()) == ["keep.txt"]
    with pytest.raises(IntegrityError, match=f"backup {manifest.id}: component 'files'"):
        _fidelity(repo, repo.get(manifest.id), comp)


@pytest.mark.usefixtures("external")
def test_a_forged_but_consistent_parts_stream_fails_the_staged_proof_naming_the_file(tmp_path: Path) -> None:
    """The merge finds the one part that differs, whoever made the stream agree with its manifest."""
    _, repo, manifest = _backed_up(tmp_path)
    raw = _other_digest(_raw_parts(repo, manifest))
    _replace_parts(repo, manifest, raw, {"sha256": hashlib.sha256(raw).hexdigest()})
    target = _volume(tmp_path, "target")
    with pytest.raises(RestoreMismatch, match=r"in 1 part\(s\): file dir\d+/file\d+\.bin: content differs"):
        engine_backup.restore(repo, repo.get(manifest.id), target)
    assert list(target.path.iterdir()) == []


def test_a_part_name_with_a_nul_byte_is_never_written(tmp_path: Path) -> None:
    spool = PartSpool(buffer=1)
    with pytest.raises(ValueError, match="NUL"):
        spool["file a\0b"] = Part("d", 1, "bytes")
