"""A FAISS vector store: index, id map and metadata in one directory.

Three files make the store: ``index.faiss`` (an IndexIDMap2 over a flat index, so every
vector can be read back by id), ``ids.jsonl`` (vector id → document key) and
``metadata.json`` (embedding model name, dimension, metric). A restore that mixes an index
built for another model or dimension is worse than none, so the health check refuses a
store whose parts disagree. The fingerprint covers the raw bytes of each file *and* the
vectors themselves in id ranges, so a mismatch says which ids changed.
"""

from __future__ import annotations

import array
import errno
import functools
import json
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from pydantic import Field

from engine.components.base import WORKLOAD_MARK, ArtifactSource, Component, Health, SeedParams
from engine.components.files import (
    FLAGS_NOT_RECORDED,
    OWNERS_NOT_RECORDED,
    ROOT_PART,
    ContentDigest,
    FlaggedParts,
    OwnedParts,
    extract_tar,
    flagged_root_details,
    give_root_flags,
    room_for,
    root_part,
    tree_parts,
    with_owner_of,
    without_directories,
    without_owner,
    write_tar,
)
from engine.components.livechanges import LiveChanges, with_changes
from engine.errors import ComponentError
from engine.fingerprint import LEGACY_SCHEME, Fingerprint, Part, PartHasher
from engine.lazy import lazy
from engine.repository.base import BackupSetWriter

faiss = lazy("faiss")  # loaded on first use: see engine/lazy.py
np = lazy("numpy")

INDEX = "index.faiss"
IDS = "ids.jsonl"
META = "metadata.json"
BUCKET = 1000  # vector ids per fingerprint part
# A drill's live workload (drills/workload/vectors.py) adds vectors from this id up and
# records each id it adds in WORKLOAD_FILE, beside the store's files. The fingerprint
# leaves out exactly the recorded ids (scheme 2): a store whose own ids are large (63-bit
# hashes of document ids) is fingerprinted whole. Scheme 1 left out every id from here up.
WORKLOAD_IDS = 1 << 48
WORKLOAD_FILE = f"{WORKLOAD_MARK}.ids"
# Only that file is left out of the fingerprint, not any name holding the mark (found by
# review: ``notes-on-drproof_workload.txt`` rewritten was a match).
WORKLOAD_PART = f"file {WORKLOAD_FILE}"
# The first line the drill workload writes in WORKLOAD_FILE: the recorded fact scheme 5
# leaves the file and its ids out on (as volumes/6, redis/5 and postgres/7 leave out only
# what the workload marked). Schemes 2 to 4 took any file of that name as the workload's
# (found in s32: a store's own ``drproof_workload.ids`` was not compared, nor the vectors
# it listed). Scheme 5 also leaves out only ids of the workload's range (WORKLOAD_IDS up).
WORKLOAD_HEADER = "# drproof drill workload: these vectors are judged by the recovery point, not by fingerprints\n"
WORKLOAD_IDS_UNSEEN = (
    f"left out the file {WORKLOAD_FILE} and every vector it lists as a drill workload's, even where no workload "
    "wrote it: a restore that lost or changed a store's own file of that name, or those vectors, is not seen"
)


def workload_marked(root: Path) -> bool:
    """Whether the store's ``WORKLOAD_FILE`` is the drill workload's: a regular file (never a link) that opens with
    ``WORKLOAD_HEADER``."""
    try:
        fd = os.open(root / WORKLOAD_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        header = WORKLOAD_HEADER.encode("ascii")
        return os.read(fd, len(header)) == header
    finally:
        os.close(fd)


_HEADER = struct.Struct("<4siqqqBi4siqqqBiQ")  # IDMap2 header, Flat header, code count


class StoreUnreadable(ValueError):
    """Why drproof cannot read a store's vectors; ``advice`` says what the operator can do."""

    advice: ClassVar[str] = "every file of the store must be readable for a restore of it to be proven"


class UnsupportedLayout(StoreUnreadable):
    advice: ClassVar[str] = (
        "drproof's vectorstore kind reads only an IndexIDMap2 over a flat index (IndexFlatL2 or IndexFlatIP), so no "
        "restore of this backup could be proven: convert the store to that layout, or back the directory up as a "
        "`volumes` component"
    )


class DamagedStore(StoreUnreadable):
    advice: ClassVar[str] = (
        "the live store is damaged, and a backup of it would preserve the damage: repair or rebuild it first"
    )


class LinkedFile(StoreUnreadable):
    advice: ClassVar[str] = (
        "the archive would hold the link, not the file it points to: point the component at the directory that "
        "holds the files, or replace the link by the file"
    )


def _open(path: Path) -> BinaryIO:
    """Open one of the store's files for reading, never through a symbolic link, only a regular file.

    Why: the archive stores a link as a link, so a fingerprint read through it described
    2,000 vectors the backup did not hold. Refusing links keeps the vector parts and the
    ``file`` parts (which record the link) about the same thing. Found by review: a set
    whose metadata.json or index.faiss was a FIFO (the archive recreates one) hung the
    restore for ever in this open, waiting for a writer; the open does not wait now
    (``O_NONBLOCK``), and anything but a regular file is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise LinkedFile(f"{path.name} is a symbolic link (to {os.readlink(path)})") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DamagedStore(f"{path.name} is not a regular file (a FIFO, socket or device), so it holds no data to read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# What faiss's four-character codes stand for, to name an index drproof does not read.
_FOURCC = {
    b"IxMp": "IndexIDMap",
    b"IxM2": "IndexIDMap2",
    b"IxF2": "IndexFlatL2",
    b"IxFI": "IndexFlatIP",
    b"IxFl": "IndexFlat",
    b"IwFl": "IndexIVFFlat",
    b"IHNf": "IndexHNSWFlat",
    b"IxSQ": "IndexScalarQuantizer",
    b"IxPq": "IndexPQ",
    b"IwPQ": "IndexIVFPQ",
}


def _index_name(fourcc: bytes) -> str:
    return _FOURCC.get(fourcc, f"an index of type {fourcc!r}")


_METRIC_L2 = 1  # faiss's METRIC_L2; METRIC_INNER_PRODUCT is 0
_METRICS = {0: "inner product", _METRIC_L2: "l2"}


def _check_flags(name: str, inner: bytes, outer_flags: tuple[int, int], inner_flags: tuple[int, int]) -> None:
    """Refuse header fields faiss acts on that disagree: the metric the inner index searches by, ``is_trained``.

    Why: faiss searches with the inner index's metric field, while drproof read only the
    outer one; one changed field made an l2 store search by inner product unnoticed.
    A flat index is always trained: a cleared flag makes faiss refuse every add.
    """
    (trained, metric), (trained2, metric2) = outer_flags, inner_flags
    if trained != 1 or trained2 != 1:
        raise DamagedStore(f"{name}: its header says the index is not trained (a flat index always is)")
    if metric not in _METRICS or metric2 not in _METRICS:
        raise DamagedStore(f"{name}: metric type {metric}/{metric2} in its header is neither l2 nor inner product")
    if metric2 != metric:
        raise DamagedStore(
            f"{name}: the index searches by {_METRICS[metric2]} but its id map's header says {_METRICS[metric]}"
        )
    if (inner == b"IxFI") != (metric2 == 0):
        raise DamagedStore(f"{name}: an {_index_name(inner)} whose header says it searches by {_METRICS[metric2]}")


def check_index_layout(path: Path) -> None:
    """Refuse an index file whose length fields disagree with its size, before faiss reads it.

    faiss trusts the lengths stored in the file: one flipped bit in a length makes it try
    to allocate many gigabytes before failing. The store always writes IndexIDMap2 over a
    flat index, whose size follows exactly from its dimension and vector count. Raises
    ``UnsupportedLayout`` for another index type, ``DamagedStore`` for a damaged one.
    """
    with _open(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_HEADER.size)
        _check_header(path.name, size, head, fh.fileno())


def _check_header(name: str, size: int, head: bytes, fd: int) -> None:
    """``check_index_layout`` of the open file ``fd`` of ``size`` bytes, starting with ``head``."""
    outer, inner = head[:4], head[37:41]  # a sub-index follows the 37-byte header of an id map
    if outer != b"IxM2":
        what = _index_name(outer) + (f" over {_index_name(inner)}" if outer == b"IxMp" and inner else "")
        raise UnsupportedLayout(f"{name} is {what}, not an IndexIDMap2 over a flat index")
    if len(head) < _HEADER.size:
        raise DamagedStore(f"{name}: {size} bytes, too short for an index header")
    _, d, ntotal, _, _, trained, metric, inner, d2, ntotal2, _, _, trained2, metric2, codes = _HEADER.unpack(head)
    if inner not in (b"IxF2", b"IxFI"):
        raise UnsupportedLayout(f"{name} is an IndexIDMap2 over {_index_name(inner)}, not over a flat index")
    _check_flags(name, inner, (trained, metric), (trained2, metric2))
    if d != d2 or ntotal != ntotal2 or d <= 0 or ntotal < 0 or codes != ntotal * d:
        raise DamagedStore(f"{name}: inconsistent header (d={d}/{d2}, ntotal={ntotal}/{ntotal2}, codes={codes})")
    expected = _HEADER.size + codes * 4 + 8 + ntotal * 8
    if size != expected:
        raise DamagedStore(f"{name}: {size} bytes, but its header describes {expected}")
    (ids,) = struct.unpack("<Q", os.pread(fd, 8, _HEADER.size + codes * 4))
    if ids != ntotal:
        raise DamagedStore(f"{name}: id map holds {ids} entries for {ntotal} vectors")


_PROBE_ROWS = 4096  # rows read at a time by the health probe


def _header_numbers(path: Path) -> tuple[int, int, int]:
    """Dimension, vector count and metric of an index file ``check_index_layout`` accepted."""
    with _open(path) as fh:
        fields = _HEADER.unpack(fh.read(_HEADER.size))
    return int(fields[1]), int(fields[2]), int(fields[6])


def _probe(path: Path, d: int, ntotal: int) -> str | None:
    """What is wrong with the stored rows, or None: every row finite, and the first found under its own id.

    The probe queries with the first stored vector for its nearest neighbour by exact L2
    distance. Why L2 whatever the store's metric: the probe shows that the rows and the
    id map line up, and that question must have one right answer. Under inner product a
    longer vector pointing the same way outranks the first one, and float32 rounding can
    rank a normalised near-duplicate above it, so a healthy store failed the probe. By
    L2 the row itself is at distance exactly 0, and on a tie the earlier row wins. Every
    row is checked for NaN and infinity while it is read: faiss can never return such a
    vector (a NaN only in the first row used to read "returned id -1"; elsewhere it passed).
    """
    row = d * 4
    ids_at = _HEADER.size + ntotal * row + 8
    with _open(path) as fh:
        fd = fh.fileno()

        def id_at(pos: int) -> int:
            return int(np.frombuffer(_read_exactly(fd, 8, ids_at + pos * 8), dtype="<i8")[0])

        query = np.frombuffer(_read_exactly(fd, row, _HEADER.size), dtype="<f4")
        best_pos, best = 0, None
        for start in range(0, ntotal, _PROBE_ROWS):
            n = min(_PROBE_ROWS, ntotal - start)
            block = np.frombuffer(_read_exactly(fd, n * row, _HEADER.size + start * row), dtype="<f4").reshape(n, d)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad = start + int(np.argmin(finite))
                return f"the stored vector with id {id_at(bad)} holds NaN or infinity: no search can return it"
            score = ((block - query) ** 2).sum(axis=1)
            pos = int(np.argmin(score))
            if best is None or score[pos] < best:
                best_pos, best = start + pos, float(score[pos])
        first, found = id_at(0), id_at(best_pos)
    return None if found == first else f"probe query for id {first} returned id {found}"


def _stored_ids(path: Path, d: int, ntotal: int) -> Any:
    """The ids stored after the vectors of an index file ``check_index_layout`` accepted."""
    with _open(path) as fh:
        data = _read_exactly(fh.fileno(), ntotal * 8, _HEADER.size + ntotal * d * 4 + 8)
    return np.frombuffer(data, dtype="<i8")


def _ids_disagree(stored: Any, named: Any) -> list[str]:
    """What is wrong between the index's ids and those the id map names (as many of each).

    Why: a search answers with the index's ids and the application looks each up in the
    id map. Found by review: health counted the id map's lines only, so a map naming ids
    the index does not hold, or an index holding one id twice (one of its vectors then
    unreachable by id), was a healthy store.
    """
    problems = []
    distinct = np.unique(stored)
    if len(distinct) != len(stored):
        problems.append(f"index holds {len(stored)} vectors under only {len(distinct)} distinct ids")
    unnamed = np.setdiff1d(distinct, named, assume_unique=True)
    stray = np.setdiff1d(named, distinct)
    if len(unnamed) or len(stray):
        examples = [f"{IDS} names {int(i)}" for i in stray[:2]] + [f"index holds {int(i)}" for i in unnamed[:2]]
        problems.append(
            f"the id map names {len(stray)} ids the index does not hold, and none for {len(unnamed)} of the index's "
            f"ids (e.g. {'; '.join(examples)})"
        )
    return problems


def _store_disagrees(meta: dict[str, Any], header: tuple[int, int, int], named: Any, stored: Any, kept: int) -> list[str]:
    """What metadata.json, the index header (dimension, count, metric) and the id map say against each other.

    ``kept`` is the index's vectors less a drill workload's (recorded in ``WORKLOAD_FILE``),
    which metadata.json's ``count`` does not include. Shared by ``health`` and the backup's
    own judgement of the store (``health_at_backup``), so both find the same problems.
    """
    d, ntotal, metric_type = header
    problems = []
    if d != meta.get("dimension"):
        problems.append(f"index dimension {d} but metadata says {meta.get('dimension')}")
    metric = "l2" if metric_type == _METRIC_L2 else "inner_product"
    if metric != meta.get("metric"):
        problems.append(f"index metric {metric} but metadata says {meta.get('metric')}")
    count = meta.get("count")
    if count is not None and (isinstance(count, bool) or count != kept):
        besides = f" (besides {ntotal - kept} of a drill's workload)" if ntotal != kept else ""
        problems.append(f"index holds {kept} vectors{besides} but metadata says count {count!r}")
    if ntotal != len(named):
        problems.append(f"index holds {ntotal} vectors but the id map has {len(named)}")
    else:
        problems += _ids_disagree(stored, named)
    return problems


def _nonfinite(rows: bytes | memoryview, d: int) -> Any:
    """The positions, among ``rows`` (float32 rows of ``d``), of the rows holding NaN or infinity."""
    block = np.frombuffer(rows, dtype="<f4").reshape(-1, d)
    return np.flatnonzero(~np.isfinite(block).all(axis=1))


class NonFinite:
    """The stored rows found holding NaN or infinity: how many, and the id of the first (memory constant)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None

    def add(self, ids: list[int]) -> None:
        if ids and self.first is None:
            self.first = ids[0]
        self.count += len(ids)


def _read_exactly(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, or StoreUnreadable: the file was cut short after its layout was checked."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise StoreUnreadable(f"{INDEX} changed while it was read; read it again once nothing writes the store")
    return data


def _bucket_count(totals: dict[str, int]) -> int:
    """The fewest ``vectors #`` parts a fingerprint of its ``vectors`` can have (at most BUCKET in each):
    parts that are no file of the restored store (``room_for``), never more than there are."""
    return -(-totals.get("vectors", 0) // BUCKET)


def _bucket_parts(
    parts: dict[str, Part], fd: int, row: int, stored_ids: Any, order: Any, nonfinite: NonFinite | None = None
) -> None:
    """A ``vectors #`` part per BUCKET rows, taken in ``order`` (positions in the file, by id).

    ``nonfinite``, if given, counts the rows holding NaN or infinity (the first by id), found in the
    bytes read for the parts: a backup judges its source without reading the index again.
    """
    for start in range(0, len(order), BUCKET):
        chunk = order[start : start + BUCKET]
        first, n = int(chunk[0]), len(chunk)
        h = PartHasher("vectors")
        if int(chunk[-1]) - first == n - 1 and bool((np.diff(chunk) == 1).all()):
            # Ids ascending in file order (as the store writes them): one read.
            view = memoryview(_read_exactly(fd, n * row, _HEADER.size + first * row))
            if nonfinite is not None:
                nonfinite.add([int(stored_ids[chunk[i]]) for i in _nonfinite(view, row // 4)])
            for i, pos in enumerate(chunk.tolist()):
                h.add(int(stored_ids[pos]).to_bytes(8, "big", signed=True) + view[i * row : (i + 1) * row])
        else:
            for pos in chunk.tolist():
                vector = _read_exactly(fd, row, _HEADER.size + pos * row)
                if nonfinite is not None and len(_nonfinite(vector, row // 4)):
                    nonfinite.add([int(stored_ids[pos])])
                h.add(int(stored_ids[pos]).to_bytes(8, "big", signed=True) + vector)
        lo, hi = int(stored_ids[chunk[0]]), int(stored_ids[chunk[-1]])
        parts[f"vectors #{start // BUCKET:04d} (ids {lo}-{hi})"] = h.part()


def _index_part_without(fd: int, fields: tuple[Any, ...], stored_ids: Any, keep: Any, apart: bool) -> Part:
    """The ``file index.faiss`` part of the open index as it would be holding only the rows ``keep`` marks.

    Why from the file's own bytes: the part was taken from an index rebuilt by faiss
    from the kept vectors, which normalised every header field it does not keep (the
    inner metric, ``is_trained``), so damage faiss acts on compared as a match; and the
    rebuild held the store several times over (8.6 GB for 1M x 384). Here the header is
    the file's, with only its three counts patched (as faiss writes an index of the kept
    rows), then the kept rows, a block at a time, and the kept ids. ``apart``: the scheme
    writes the permission bits after the owner (``mode_token``), not in the digest.
    """
    d, ntotal, kept = int(fields[1]), int(fields[2]), int(keep.sum())
    patched = list(fields)
    patched[2] = patched[9] = kept
    patched[14] = kept * d
    digest = ContentDigest(_digested_mode(os.fstat(fd).st_mode, apart))
    digest.add(_HEADER.pack(*patched))
    row = d * 4
    for start in range(0, ntotal, _PROBE_ROWS):
        n = min(_PROBE_ROWS, ntotal - start)
        block = np.frombuffer(_read_exactly(fd, n * row, _HEADER.size + start * row), dtype=np.uint8)
        digest.add(block.reshape(n, row)[keep[start : start + n]].tobytes())
    digest.add(struct.pack("<Q", kept))
    digest.add(np.ascontiguousarray(stored_ids[keep], dtype="<i8").tobytes())
    return digest.part()


def _ids_part_without(path: Path, left_out: set[int], apart: bool) -> Part:
    """The ``file ids.jsonl`` part as the file would be without the lines of the ids ``left_out``."""
    with _open(path) as fh:
        digest = ContentDigest(_digested_mode(os.fstat(fh.fileno()).st_mode, apart))
        pending: list[bytes] = []
        size = 0
        for line in fh:
            if int(json.loads(line)["id"]) not in left_out:
                pending.append(line)
                size += len(line)
                if size >= _IDS_PIECE:
                    digest.add(b"".join(pending))
                    pending, size = [], 0
        digest.add(b"".join(pending))
    return digest.part()


_IDS_PIECE = 1 << 20  # bytes of id-map lines digested at a time


def _digested_mode(mode: int, apart: bool) -> int:
    """The mode a file's content digest holds: only its type where the scheme writes the permission bits apart."""
    return stat.S_IFMT(mode) if apart else mode


def _file_parts(root: Path, scheme: str) -> dict[str, Part]:
    """The ``file`` and ``dir`` parts of the store's directory, without the workload's record (``_without_record``)."""
    flags = scheme in FLAGGED_SCHEMES
    parts = _without_record(tree_parts(root, owners=scheme in OWNED_SCHEMES, links=flags, flags=flags), root, scheme)
    return without_directories(parts) if scheme == LEGACY_SCHEME else parts


def _without_record(parts: dict[str, Part], root: Path, scheme: str) -> dict[str, Part]:
    """``parts`` without the workload's record: in scheme 5 only where it is marked (``workload_marked``)."""
    if scheme == SCHEME and not workload_marked(root):
        return dict(parts)  # the store's own file of that name, if it has one: compared
    return {k: v for k, v in parts.items() if k != WORKLOAD_PART}


def _parts_sink(scheme: str) -> dict[str, Part]:
    """An empty dict of parts that takes what ``scheme`` records (the archive's, as ``_file_parts`` reads them)."""
    return FlaggedParts() if scheme in FLAGGED_SCHEMES else OwnedParts()


# Scheme 4: each entry's inode flags (chattr +i, +a ...: engine.components.fflags), with the
# permission bits after the owner and hard links, as volumes/5 records them. Scheme 3: each
# file's and directory's owner (engine.components.files.owned). Scheme 2: every id.
SCHEME = "vectorstore/5"
FLAGGED = "vectorstore/4"
FLAGGED_SCHEMES = (SCHEME, FLAGGED)
OWNED = "vectorstore/3"
OWNED_SCHEMES = (*FLAGGED_SCHEMES, OWNED)


def _reason(exc: Exception) -> str:
    """An exception as a message: drproof's own say what they mean; others keep their type's name."""
    return str(exc) if isinstance(exc, StoreUnreadable) else f"{type(exc).__name__}: {exc}"


def _json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words, for a message."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def read_metadata(root: Path) -> dict[str, Any]:
    """``metadata.json`` of the store at ``root`` as the object every reader of it expects.

    Why checked here: many tools write a per-document list there; every ``meta.get``
    then raised AttributeError, a traceback from health, dry run, restore and the
    ``swap_model`` fault alike. Raises ``StoreUnreadable`` (a ValueError) or OSError.
    """
    with _open(root / META) as fh:
        text = fh.read()
    try:
        meta = json.loads(text)
    except RecursionError:
        # Found by review: a backup whose metadata.json opened 200,000 arrays stopped
        # the restore's expectation check with a RecursionError traceback.
        raise StoreUnreadable(f"{root / META} nests its JSON too deeply to be read") from None
    if not isinstance(meta, dict):
        raise StoreUnreadable(
            f"{root / META} holds a JSON {_json_kind(meta)}, not an object with model, dimension and metric"
        )
    return meta


class VectorstoreParams(SeedParams):
    vectors: int = Field(default=1000, ge=1, le=100_000_000, description="Number of vectors.")
    dimension: int = Field(default=64, ge=1, le=65536, description="Embedding dimension.")
    metric: Literal["l2", "inner_product"] = Field(default="l2", description="Distance metric of the index.")
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Name of the embedding model recorded in the metadata (no model is loaded).",
    )


class VectorstoreComponent(Component):
    name: ClassVar[str] = "vectorstore"
    server: ClassVar[str | None] = "directory"
    Params: ClassVar[type[SeedParams]] = VectorstoreParams
    description: ClassVar[str] = "A FAISS index with its id map and embedding metadata, backed up as one archive."

    params: VectorstoreParams
    path: Path

    def provision(self) -> None:
        self.path = self.runtime.directory(self.instance)
        # The three files change together; a writer in another thread (the workload)
        # holds this while it changes them, and backup, restore and fingerprint hold it
        # while they read or replace them, so none sees half a write.
        self.store_lock = threading.RLock()
        p = self.params
        # What a restored store must match; the standalone engine sets it from the
        # configuration (or to None when the operator declared no expectation).
        self.expected: dict[str, Any] | None = {"model": p.model, "dimension": p.dimension, "metric": p.metric}

    def seed(self) -> dict[str, Any]:
        p = self.params
        rng = np.random.default_rng(p.random_seed)
        vectors = rng.standard_normal((p.vectors, p.dimension), dtype=np.float32)
        if p.metric == "inner_product":
            faiss.normalize_L2(vectors)
        ids = np.arange(1, p.vectors + 1, dtype=np.int64) * 7  # sparse ids: the id map matters
        flat = faiss.IndexFlatL2(p.dimension) if p.metric == "l2" else faiss.IndexFlatIP(p.dimension)
        index = faiss.IndexIDMap2(flat)
        index.add_with_ids(vectors, ids)
        faiss.write_index(index, str(self.path / INDEX))
        with open(self.path / IDS, "w", encoding="utf-8") as fh:
            for i in ids.tolist():
                fh.write(json.dumps({"id": i, "document": f"doc-{i:09d}"}) + "\n")
        meta = {
            "model": p.model,
            "dimension": p.dimension,
            "metric": p.metric,
            "count": p.vectors,
            "index_type": "IDMap2,Flat",
        }
        (self.path / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return {"vectors": p.vectors, "dimension": p.dimension, "metric": p.metric, "model": p.model}

    def _meta(self, root: Path) -> dict[str, Any]:
        return read_metadata(root)

    fingerprint_scheme: ClassVar[str] = SCHEME
    legacy_blind_spots: ClassVar[dict[str, str]] = {
        LEGACY_SCHEME: "the backup's fingerprint (scheme 1, from an earlier drproof) left every vector with an id "
        "of 2^48 or more out, and recorded no owners or extended attributes (ACLs, capabilities, user.*): those are "
        "not compared",
        "vectorstore/2": f"{OWNERS_NOT_RECORDED}; {WORKLOAD_IDS_UNSEEN}",
        OWNED: f"{FLAGS_NOT_RECORDED}; {WORKLOAD_IDS_UNSEEN}",
        FLAGGED: f"the backup's fingerprint (scheme 4, from an earlier drproof) {WORKLOAD_IDS_UNSEEN}",
    }

    def fingerprint(self) -> Fingerprint:
        with self.store_lock:
            return self._fingerprint()

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        if scheme not in self.legacy_blind_spots:
            return None
        with self.store_lock:
            return self._fingerprint(scheme=scheme)

    def _workload(self, root: Path, stored_ids: Any, scheme: str) -> Any:
        """A mask of the workload's vectors among ``stored_ids``: the recorded ones (scheme 1: an id range).

        Scheme 5: only where the workload marked its record (``WORKLOAD_HEADER``), and only
        ids of its range; a store's own file of that name leaves nothing out.
        """
        if scheme == LEGACY_SCHEME:
            return stored_ids >= WORKLOAD_IDS
        nothing = np.zeros(len(stored_ids), dtype=bool)
        if scheme == SCHEME and not workload_marked(root):
            return nothing
        try:
            with _open(root / WORKLOAD_FILE) as fh:  # never a FIFO or a link (to /dev/zero): found by review
                text = fh.read().decode("ascii")
        except FileNotFoundError:
            return nothing
        text = text.removeprefix(WORKLOAD_HEADER)  # older schemes read a marked record as their own rule did
        recorded = np.array([int(line) for line in text.split()], dtype=np.int64)
        mask = np.isin(stored_ids, recorded)
        return mask & (stored_ids >= WORKLOAD_IDS) if scheme == SCHEME else mask

    def _fingerprint(self, root: Path | None = None, scheme: str | None = None) -> Fingerprint:
        """The store's fingerprint; of a staged copy at ``root`` before a restore swaps it in."""
        root = root or self.path
        scheme = scheme or self.fingerprint_scheme
        parts = _file_parts(root, scheme)
        if scheme in FLAGGED_SCHEMES:
            parts[ROOT_PART] = root_part(root)
        return self._fingerprint_from(parts, root, scheme)

    def _fingerprint_from(
        self, parts: dict[str, Part], root: Path, scheme: str, strict: bool = False, problems: list[str] | None = None
    ) -> Fingerprint:
        """The fingerprint of the store at ``root`` whose file parts (as read) are ``parts``.

        A store whose vectors cannot be read gets a ``vectors`` part saying why; ``strict``
        (a backup) raises instead, because such a part proves nothing about a restore.
        ``problems``, if given, gets what ``health`` would find wrong, judged on this read.
        """
        parts = dict(parts)
        try:
            return self._vector_parts_from_file(parts, root, scheme, problems)
        except ComponentError:  # the coverage check: never a mere "unreadable"
            raise
        except Exception as exc:  # json ValueError, layout ValueError, files OSError
            if strict:
                raise self._unbackupable(root, exc) from exc
            parts["vectors"] = Part(digest=f"unreadable: {_reason(exc)}"[:300], count=0, unit="vectors")
            return self._fp(parts, scheme)

    def _checked(self, parts: dict[str, Part], expected: int, scheme: str, held: int = 0) -> Fingerprint:
        """The fingerprint, once its vector parts are seen to cover every vector they should.

        ``held`` is the vectors the index holds, ``expected`` those not left out. None
        covered of many held is refused too. Why: found by review, scheme 1 left out every
        id of 2^48 or more, so a store keyed by 63-bit hashes of its documents had no
        vector part (nor index rows in its ``file`` part), and a restore whose every vector
        differed compared as a match; a workload record naming every id did the same.
        """
        covered = sum(p.count for name, p in parts.items() if name.startswith("vectors #"))
        if covered != expected:
            raise ComponentError(
                f"vectorstore {self.instance!r}: the fingerprint covers {covered} of {expected} vectors; refusing a "
                "fingerprint that leaves vectors out"
            )
        if held and not covered:
            left_out = (
                "scheme 1 (an earlier drproof) leaves every id of 2^48 or more out"
                if scheme == LEGACY_SCHEME
                else f"{WORKLOAD_FILE} records every one as a drill workload's"
            )
            raise ComponentError(
                f"vectorstore {self.instance!r}: the fingerprint covers none of the {held} vectors the store holds "
                f"({left_out}); it would prove nothing about them, so it is refused"
            )
        return self._fp(parts, scheme)

    def _vector_parts_from_file(
        self, parts: dict[str, Part], root: Path, scheme: str, problems: list[str] | None = None
    ) -> Fingerprint:
        """The vector parts read straight from ``index.faiss``, a bucket at a time.

        Why: loading the index with faiss and copying its vectors out with
        ``reconstruct_n`` held the store twice in memory (750 MB peak RSS for 200k
        vectors of dimension 384, bench/redis_vectors.py), so the fingerprint's memory
        grew with the store. The file's layout is fixed and checked first
        (``check_index_layout``): the vectors are float32 rows after the header, the ids
        int64 after them, exactly the bytes faiss would hand back. Reading the ids and
        then one bucket of rows at a time gives the same parts in a few MB.

        A drill workload's vectors are left out of the vector parts, and the ``file``
        parts of the index and id map are digested as those files would be without them
        (``_index_part_without``), also streaming. The metadata and id map must be
        readable too, or this raises (the caller says why).

        ``problems`` (a backup judging its source, ``health_at_backup``) gets what ``health``
        would find, from this same read: the id map is then held as int64 (8 bytes an id,
        as ``health`` holds it), and every fingerprinted row is checked for NaN and infinity
        as its bucket is read. A drill workload's rows (drproof's own writes) are not.
        """
        index_path = root / INDEX
        meta = self._meta(root)
        check_index_layout(index_path)
        named = self._id_map_ids(root) if problems is not None else None
        if named is None:
            self._count_ids(root)
        with _open(index_path) as fh:
            fd = fh.fileno()
            fields = _HEADER.unpack(_read_exactly(fd, _HEADER.size, 0))
            d, ntotal = int(fields[1]), int(fields[2])
            stored_ids = np.frombuffer(_read_exactly(fd, ntotal * 8, _HEADER.size + ntotal * d * 4 + 8), dtype="<i8")
            keep = ~self._workload(root, stored_ids, scheme)
            if not keep.all():
                index, ids = f"file {INDEX}", f"file {IDS}"
                apart, left_out = scheme in FLAGGED_SCHEMES, set(stored_ids[~keep].tolist())
                parts[index] = with_owner_of(_index_part_without(fd, fields, stored_ids, keep, apart), parts[index])
                parts[ids] = with_owner_of(_ids_part_without(root / IDS, left_out, apart), parts[ids])
            positions = np.flatnonzero(keep)
            order = positions[np.argsort(stored_ids[positions], kind="stable")]
            nonfinite = NonFinite() if problems is not None else None
            _bucket_parts(parts, fd, d * 4, stored_ids, order, nonfinite)
        if problems is not None and named is not None and nonfinite is not None:
            header = (d, ntotal, int(fields[6]))
            problems += _store_disagrees(meta, header, named, stored_ids, len(order))
            if nonfinite.count:
                problems.append(
                    f"{nonfinite.count} stored vector(s) hold NaN or infinity (e.g. the one with id {nonfinite.first}): "
                    "no search can return them"
                )
        return self._checked(parts, len(order), scheme, held=ntotal)

    def _unbackupable(self, root: Path, exc: Exception) -> ComponentError:
        """The error for a store whose vectors cannot be read: the backup stops before anything is published."""
        advice = exc.advice if isinstance(exc, StoreUnreadable) else StoreUnreadable.advice
        return ComponentError(
            f"vectorstore {self.instance!r}: cannot back up {root}: {_reason(exc)}; {advice}; nothing was published"
        )

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """Refuse a store whose vectors cannot be read, before anything is archived.

        Why: its fingerprint held only an "unreadable" part, the same in the backup and
        in any restore of it, so an IndexIDMap, IVF or HNSW store (or one already
        damaged) was backed up "complete", verified and its restore "proven".
        """
        if incremental is not None:  # not a kind with incremental backups: the base says so
            return super().backup_fingerprinted(writer, incremental)
        problems: list[str] = []
        with self.store_lock:
            read = _file_parts(self.path, self.fingerprint_scheme)
            whole = {**read, ROOT_PART: root_part(self.path)} if self.fingerprint_scheme == SCHEME else read
            fp = self._fingerprint_from(whole, self.path, self.fingerprint_scheme, strict=True, problems=problems)
            archived = _parts_sink(self.fingerprint_scheme)
            details = self._archive(writer, archived)
        self._same_as_archived(read, archived)
        self._judged = Health(ok=not problems, detail="; ".join(problems) or "judged on the bytes backed up")
        return details, fp

    _judged: Health | None = None  # the source's health as the last backup's read found it

    def health_at_backup(self, details: dict[str, Any]) -> Health:
        """The store as the backup's own read judged it; ``health`` only for a backup that did not judge it.

        Why: ``health`` reads every row of the index for its probe, and the backup has just
        read them all for the fingerprint (docs/performance.md, issue 14): the problems are
        taken from that read (``_vector_parts_from_file``), and the index is not read again.
        The probe itself adds nothing there: on a flat index whose rows are all finite, the
        first row is its own nearest neighbour (distance 0, and the earlier row wins a tie).
        """
        judged, self._judged = self._judged, None
        return judged if judged is not None else self.health()

    def _same_as_archived(self, read: dict[str, Part], archived: dict[str, Part]) -> None:
        """Refuse a backup whose files changed between the fingerprint's read and the archive's.

        Why: the store lock orders drproof's own threads only. An application that
        rewrote its index meanwhile (temporary file and rename) gave a set that verified
        clean and whose every restore was refused, as the fingerprint described other
        bytes than the archive held. The vector parts come from the index bytes the
        ``file`` part digests, so equal file parts mean the whole fingerprint is the
        archive's.
        """
        archived = _without_record(archived, self.path, self.fingerprint_scheme)
        changed = sorted(k.split(" ", 1)[1] for k in read.keys() | archived.keys() if read.get(k) != archived.get(k))
        if changed:
            raise ComponentError(
                f"vectorstore {self.instance!r}: the store changed while it was archived ({', '.join(changed)}); "
                "its fingerprint would not describe the archived bytes, so no restore of it could be proven and "
                "nothing was published: pause the application's writes for the backup, or "
                "back up a snapshot of the directory"
            )

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        self._judged = None  # not judged on this read: ``health_at_backup`` asks ``health``
        with self.store_lock:
            return self._archive(writer, None)

    def _archive(self, writer: BackupSetWriter, parts: dict[str, Part] | None) -> dict[str, Any]:
        """Archive the store as ``store.tar``; ``parts`` gets the file parts of the bytes archived.

        The details name the entries whose inode flags their file system could not say
        (``LiveChanges.flags_unreadable``): recorded as not readable, and every comparison
        with the set says so (``comparison_notes``).
        """
        changes = LiveChanges()
        with writer.artifact(self.instance, "store.tar") as sink:
            entries = write_tar(self.path, sink, parts=parts, changes=changes)
        root = flagged_root_details(self.path, changes)  # its flags given after the swap (``give_root_flags``)
        details = {
            "files": entries,
            "faiss_version": faiss.__version__,
            "method": "tar of index, id map and metadata",
            "root": root,
        }
        return with_changes(details, changes)

    proves_while_staging: ClassVar[bool] = True

    def restore(self, source: ArtifactSource) -> None:
        """Extract beside the store, prove the staged copy, swap it in; its inode flags are given last.

        A set of scheme 4 or 5 is proven with the ``file`` parts as the archive has them, digested
        while extracted (owners and inode flags included): the flags are given only after the
        proof (an immutable file takes no further change), so the staged files do not have
        them yet. The fidelity check that follows reads the restored store itself, and names
        an entry that lost its flag (a restore run by anyone but root cannot set +i or +a).
        """
        expected = source.fingerprint
        scheme = expected.scheme if expected is not None else None
        archived = _parts_sink(scheme) if scheme in FLAGGED_SCHEMES else None

        def check(staging: Path) -> None:
            self._compatible(staging)
            if archived is not None and expected is not None:
                read = _without_record(archived, staging, expected.scheme)
                if ROOT_PART in expected.parts:  # given after the swap: the fidelity check reads it
                    read[ROOT_PART] = expected.parts[ROOT_PART]
                fp = self._fingerprint_from(read, staging, expected.scheme)
                self.prove_restored(expected, fp, f"staged in {staging}")
                return
            self._prove_staged(expected, staging)

        root = source.details.get("root")
        with self.store_lock:
            room = room_for([source], "store.tar", other_parts=_bucket_count)
            extract_tar(functools.partial(source.open, "store.tar"), self.path, check, archived, root, room)
            give_root_flags(self.path, root, f"vectorstore {self.instance!r}")

    def _prove_staged(self, expected: Fingerprint | None, staging: Path) -> None:
        """Prove the staged store against a set of an older scheme, by reading it."""
        scheme = expected.scheme if expected is not None else None
        if expected is not None and scheme == OWNED and os.geteuid() != 0:
            # Nobody but root may give files away: refusing the restore for owners it
            # cannot set would leave nothing restorable. The rest is proven here; the
            # fidelity check that follows names every owner that differs.
            scheme = "vectorstore/2"
            expected = Fingerprint.build(
                expected.component, expected.kind, {n: without_owner(p) for n, p in expected.parts.items()}, scheme
            )
        self.prove_restored(expected, self._fingerprint(staging, scheme), f"staged in {staging}")

    def _compatible(self, staged: Path) -> None:
        """Refuse a store built for another embedding model, dimension or metric.

        Queries would still run against such an index, returning confident nonsense, so
        the mismatch must stop the restore rather than surface later as bad search.
        """
        if not self.expected:
            return
        try:
            meta = self._meta(staged)
        except StoreUnreadable as exc:
            raise ComponentError(f"vectorstore {self.instance!r}: {exc}; the live store was left untouched") from exc
        except (OSError, ValueError) as exc:
            raise ComponentError(f"vectorstore {self.instance!r}: the backup has no readable {META}: {exc}") from exc
        wrong = [
            f"{key} {meta.get(key)!r} (expected {value!r})"
            for key, value in self.expected.items()
            if value is not None and meta.get(key) != value
        ]
        wrong += self._index_disagrees(staged)
        if wrong:
            raise ComponentError(
                f"vectorstore {self.instance!r}: refusing to restore a store built with "
                + ", ".join(wrong)
                + "; the live store was left untouched"
            )

    def _index_disagrees(self, staged: Path) -> list[str]:
        """What the staged index's own header says against the expected dimension and metric.

        Why: metadata.json only claims them. Found by review: a set whose metadata said
        dimension 8, l2 over an index of dimension 16 (or searched by inner product) passed
        this check, replaced a healthy live store, and was found unhealthy only after the
        swap. An index whose layout cannot be read is left to the proof that follows.
        """
        assert self.expected is not None
        try:
            check_index_layout(staged / INDEX)
            d, _, metric_type = _header_numbers(staged / INDEX)
        except (StoreUnreadable, OSError):
            return []
        stated = {"dimension": d, "metric": "l2" if metric_type == _METRIC_L2 else "inner_product"}
        return [
            f"an index of {key} {stated[key]!r} (expected {value!r})"
            for key, value in self.expected.items()
            if key in stated and value is not None and stated[key] != value
        ]

    def health(self) -> Health:
        """Dimension, metric and count as the files state them, and a probe query; memory bounded.

        Why not ``faiss.read_index``: loading the index to check three numbers held the
        whole store plus ~290 MB (1.83 GB for 1M x 384). The layout is checked first
        (``check_index_layout``), so the header's numbers are the file's; the probe reads
        the rows a block at a time and asks which stored vector is nearest the first,
        as a flat index's search would answer it. The id map must name exactly the index's
        ids (``_ids_disagree``): both sets are held as int64, 8 bytes an id, a few times over,
        far less than the vectors' 4 bytes a dimension. metadata.json's ``count``, where it
        has one, must be the index's vectors less a drill workload's (``_store_disagrees``).
        """
        try:
            meta = self._meta(self.path)
            check_index_layout(self.path / INDEX)
            d, ntotal, metric_type = _header_numbers(self.path / INDEX)
            named = self._id_map_ids(self.path)
            stored = _stored_ids(self.path / INDEX, d, ntotal)
            kept = ntotal - int(self._workload(self.path, stored, SCHEME).sum())
        except Exception as exc:  # json ValueError, layout ValueError, files OSError
            return Health(ok=False, detail=f"cannot load the store: {_reason(exc)}"[:500])
        problems = _store_disagrees(meta, (d, ntotal, metric_type), named, stored, kept)
        metric = "l2" if metric_type == _METRIC_L2 else "inner_product"
        if problems:
            return Health(ok=False, detail="; ".join(problems))
        wrong = _probe(self.path / INDEX, d, ntotal) if ntotal else None
        if wrong:
            return Health(ok=False, detail=wrong)
        probed = "probe query ok" if ntotal else "no vectors to probe"
        return Health(ok=True, detail=f"{ntotal} vectors, dim {d}, {metric}, model {meta.get('model')}; {probed}")

    def _id_map_ids(self, root: Path) -> Any:
        """The ids the id map names, in its order, as int64 (8 bytes each, not a Python int's 36)."""
        named = array.array("q")
        with _open(root / IDS) as fh:
            for line in fh:
                entry = json.loads(line)
                named.append(int(entry["id"]))
                str(entry["document"])
        return np.frombuffer(named, dtype=np.int64) if named else np.zeros(0, dtype=np.int64)

    def _count_ids(self, root: Path) -> int:
        """The id map's entries, each parsed as ``_ids`` would, without holding them."""
        count = 0
        with _open(root / IDS) as fh:
            for line in fh:
                entry = json.loads(line)
                int(entry["id"]), str(entry["document"])
                count += 1
        return count

    def tool_versions(self) -> dict[str, str]:
        return {"faiss": faiss.__version__}
