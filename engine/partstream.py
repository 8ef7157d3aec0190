"""Fingerprint parts as one sorted stream: how a fingerprint of many parts is kept.

Why: a volume's fingerprint has a part per file and directory. Held as objects and
written into the manifest, it made a backup's memory and its manifest grow with the file
count (issue 14: about 0.9 KB a file in memory and 193 bytes of manifest, so 1,000,000
files could not be backed up at all). A fingerprint of more than ``INLINE_PARTS`` parts
now keeps them in a stream of records sorted by name: a temporary file while it is
taken (:class:`PartSpool`), an artifact of the backup set once it is backed up
(``fingerprint.parts``: compressed, hashed and encrypted like every artifact). The
manifest keeps the record count, the SHA-256 of the stream and the totals per unit
(:class:`~engine.fingerprint.PartsArtifact`), so it still commits to every part, and
comparing two fingerprints is a merge of two sorted streams in flat memory.

The stream is ``MAGIC``, then five fields per part, each ended by a NUL byte: name,
digest, count (decimal), unit, and ``""`` or ``"total,tolerance,earliest"`` (empty for
unset). No name holds a NUL (paths cannot; configuration key paths are JSON-escaped),
so splitting on NUL is the whole parser. Text is UTF-8 with surrogates passed through,
so every name round-trips, undecodable file names included. Records are in strictly
increasing order of name (Python's code-point order), one per name: a stream read back
out of order, with a name twice, cut short, longer or shorter than its manifest says,
or whose SHA-256 differs, is an :class:`~engine.errors.IntegrityError` naming the set
and the component, never a comparison that passes.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import heapq
import itertools
import operator
import os
import tempfile
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from engine.errors import IntegrityError, RepositoryError
from engine.fingerprint import (
    FIELDS,
    Batch,
    Fingerprint,
    Part,
    PartsArtifact,
    name_bytes,
    part_at,
    part_fields,
    records,
)
from engine.manifest import ArtifactRecord, Manifest

if TYPE_CHECKING:
    from engine.repository.base import BackupSetWriter

MAGIC = b"drproof fingerprint parts 1\0"
PARTS_ARTIFACT = "fingerprint.parts"  # the artifact name, beside the component's own
# A fingerprint of up to this many parts stays inline in the manifest: small trees (a
# configuration directory, a test's volume) keep a manifest one can read on its own. At
# about 200 bytes of JSON a part, that is at most 400 KB of manifest.
INLINE_PARTS = 2000
# Parts held in memory before a sorted run of them goes to the temporary file: about
# 350 bytes each, so some 17 MB.
BUFFER_PARTS = 50_000
READ_SIZE = 1 << 20
# No record drproof writes comes near this (a path is at most 4 KiB): a stream with a
# longer one is damage or forgery, refused before it can fill memory.
MAX_RECORD = 1 << 20

# -- writing records ------------------------------------------------------------------------


def encode(recs: list[tuple[str, Part]]) -> bytes:
    """The records' bytes in stream form (without ``MAGIC``)."""
    if "\0" in "".join(map(operator.itemgetter(0), recs)):
        raise ValueError("a fingerprint part's name cannot hold a NUL byte")
    # One f-string a part: the fastest of the ways measured (a third of a microsecond).
    text = "".join(
        [
            f"{n}\0{p.digest}\0{p.count}\0{p.unit}\0"
            + ("\0" if p.total is None and p.tolerance is None and p.earliest is None else part_fields(n, p)[4] + "\0")
            for n, p in recs
        ]
    )
    return text.encode("utf-8", "surrogatepass")


# -- reading records ------------------------------------------------------------------------


def batches(read: Callable[[int], bytes], what: str, tap: Callable[[bytes], object] | None = None) -> Iterator[Batch]:
    """The fields of a stream's records, a batch of whole records at a time.

    ``tap`` sees every byte read (``MAGIC`` included): the SHA-256 of the stream.
    """
    head = b""
    while len(head) < len(MAGIC) and (more := read(READ_SIZE)):
        head += more
    if head[: len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{what}: not a stream of fingerprint parts (it does not start as one)")
    if tap is not None:
        tap(head)
    pending = head[len(MAGIC) :]
    carry: Batch = []
    for chunk in itertools.chain(iter(functools.partial(read, READ_SIZE), b""), (b"",)):  # b"": the end
        if tap is not None and chunk:
            tap(chunk)
        data = pending + chunk
        cut = data.rfind(b"\0") + 1
        pending = data[cut:]
        if len(pending) > MAX_RECORD:
            raise IntegrityError(f"{what}: a field of over {MAX_RECORD} bytes; no fingerprint part has one")
        if not cut:
            continue
        try:
            fields = data[:cut].decode("utf-8", "surrogatepass").split("\0")
        except UnicodeDecodeError as exc:
            raise IntegrityError(f"{what}: records that are not text ({exc.reason})") from None
        fields.pop()  # after the last NUL: nothing
        if carry:
            fields[:0] = carry
        whole = len(fields) - len(fields) % FIELDS
        carry = fields[whole:]
        del fields[whole:]
        if fields:
            yield fields
    if pending or carry:
        raise IntegrityError(f"{what}: the stream ends in the middle of a record (truncated)")


def _digest_text(f: Batch) -> bytes:
    """What ``Fingerprint.digest`` hashes of these records: name NUL digest NUL each."""
    text = "\0".join(itertools.chain.from_iterable(zip(f[0::FIELDS], f[1::FIELDS], strict=True))) + "\0"
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(
            name_bytes(n) + b"\0" + d.encode() + b"\0" for n, d in zip(f[0::FIELDS], f[1::FIELDS], strict=True)
        )


class Tally:
    """Counts, orders and totals records as they pass: what a manifest commits a stream to."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.totals: dict[str, int] = {}
        self.sha256 = hashlib.sha256()
        self.digest = hashlib.sha256()
        self._last: str | None = None

    def add(self, f: Batch, digest: bool = False) -> None:
        names = f[0::FIELDS]
        if (self._last is not None and not self._last < names[0]) or not all(
            map(operator.lt, names, itertools.islice(names, 1, None))
        ):
            raise IntegrityError(f"{self.what}: parts out of order or named twice (near {names[0]!r})")
        self._last = names[-1]
        self.count += len(names)
        units = f[3::FIELDS]
        try:
            if units.count(units[0]) == len(units):
                self.totals[units[0]] = self.totals.get(units[0], 0) + sum(map(int, f[2::FIELDS]))
            else:
                for unit, count in zip(units, f[2::FIELDS], strict=True):
                    self.totals[unit] = self.totals.get(unit, 0) + int(count)
            if any(f[4::FIELDS]):
                for i in range(0, len(f), FIELDS):
                    part_at(f, i)
        except ValueError:
            raise IntegrityError(f"{self.what}: a part's count or tolerance is not a number") from None
        if digest:
            self.digest.update(_digest_text(f))

    def check(self, meta: PartsArtifact) -> None:
        """Refuse a stream that is not the one the manifest describes."""
        if self.count != meta.count:
            raise IntegrityError(f"{self.what}: {self.count:,} parts stored, the manifest records {meta.count:,}")
        if self.sha256.hexdigest() != meta.sha256:
            raise IntegrityError(f"{self.what}: the parts' SHA-256 differs from the manifest's")
        if self.totals != meta.totals:
            raise IntegrityError(f"{self.what}: the parts' totals differ from the manifest's")


def checked(source: Iterable[Batch], meta: PartsArtifact, tally: Tally) -> Iterator[Batch]:
    """``source`` (whose bytes ``tally.sha256`` is fed) proven against ``meta`` by its end."""
    for f in source:
        tally.add(f)
        if tally.count > meta.count:
            raise IntegrityError(f"{tally.what}: more parts stored than the {meta.count:,} the manifest records")
        yield f
    tally.check(meta)


# -- parts stored in a backup set ----------------------------------------------------------------

Opener = Callable[[], AbstractContextManager[IO[bytes]]]


class StoredParts:
    """The parts of a fingerprint read from its backup set, checked against the manifest."""

    def __init__(self, opener: Opener, meta: PartsArtifact, what: str) -> None:
        self._opener = opener
        self._meta = meta
        self.what = what

    @contextmanager
    def _stream(self) -> Iterator[IO[bytes]]:
        with contextlib.ExitStack() as stack:
            try:
                stream = stack.enter_context(self._opener())
            except IntegrityError:
                raise
            except (RepositoryError, OSError) as exc:
                raise IntegrityError(f"{self.what}: its fingerprint's parts cannot be read ({exc})") from exc
            yield stream

    @contextmanager
    def open(self) -> Iterator[Iterator[Batch]]:
        with self._stream() as stream:
            tally = Tally(self.what)
            parts = checked(batches(stream.read, self.what, tally.sha256.update), self._meta, tally)
            yield parts
            for _ in parts:  # a consumer that stopped early still gets every check
                pass

    @contextmanager
    def raw(self) -> Iterator[Callable[[int], bytes]]:
        with self._stream() as stream:
            yield stream.read


def reading_stored(
    fp: Fingerprint, open_artifact: Callable[[str], AbstractContextManager[IO[bytes]]], what: str
) -> Fingerprint:
    """``fp`` (from a manifest) with its stored parts read through ``open_artifact(name)``."""
    if fp.parts_artifact is None:
        return fp
    meta = fp.parts_artifact
    return fp.with_source(StoredParts(lambda: open_artifact(meta.artifact), meta, what))


OpenRecord = Callable[[ArtifactRecord], AbstractContextManager[IO[bytes]]]


def reading_from_set(manifest: Manifest, component: str, fp: Fingerprint, open_record: OpenRecord) -> Fingerprint:
    """``fp``, the fingerprint ``manifest`` records of ``component``, reading its parts from the set.

    ``open_record`` opens an artifact's content (``Repository.open_artifact``). Errors
    name the set and the component; an artifact the set does not list is one.
    """
    artifacts = {a.name: a for a in manifest.artifacts_of(component)}
    what = f"backup {manifest.id}: component {component!r}"

    def open_artifact(name: str) -> AbstractContextManager[IO[bytes]]:
        if name not in artifacts:
            raise IntegrityError(
                f"{what}: its fingerprint's parts are in artifact {name!r}, which the set does not hold"
            )
        return open_record(artifacts[name])

    return reading_stored(fp, open_artifact, what)


def parts_problems(manifest: Manifest, open_record: OpenRecord, skip: Collection[str] = ()) -> list[str]:
    """Why the stored parts of each fingerprint of the set are not the ones its manifest records.

    Read to the end with every check (order, count, totals, SHA-256): what ``verify``
    adds to the artifacts' own checks. ``skip``: artifact keys already found damaged.
    """
    problems = []
    for record in manifest.components:
        fp = record.fingerprint
        if fp is None or fp.parts_artifact is None or f"{record.name}/{fp.parts_artifact.artifact}" in skip:
            continue
        try:
            with reading_from_set(manifest, record.name, fp, open_record).open_batches() as parts:
                for _ in parts:
                    pass
        except IntegrityError as exc:
            problems.append(str(exc))
    return problems


def store_parts(writer: BackupSetWriter, component: str, fp: Fingerprint) -> None:
    """Write the parts of ``fp`` into the set as its ``parts_artifact`` names (nothing if inline).

    Done by the engine for every component, whichever way its fingerprint was taken: a
    manifest that points at parts the set does not hold must never be published.
    """
    if fp.parts_artifact is None:
        return
    source = fp.source
    if source is None:
        raise IntegrityError(f"the fingerprint of {component!r} has no parts to store")
    with writer.artifact(component, fp.parts_artifact.artifact) as sink, source.raw() as read:
        while chunk := read(READ_SIZE):
            sink.write(chunk)


# -- parts taken now: sorted in bounded memory ----------------------------------------------------


class _Scratch:
    """An anonymous temporary file, closed (so gone) when nothing holds it any more."""

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="drproof-parts-")
        os.unlink(path)
        self.fd = fd
        self._closer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._closer()


@dataclass(frozen=True, slots=True)
class _Run:
    offset: int
    length: int
    first: str
    last: str


class PartSpool:
    """Parts added in any order, handed back sorted by name, in bounded memory.

    A dict-like sink (``spool[name] = part``; a later part of the same name wins) for
    code that produces parts one at a time: archiving a tree, extracting one, walking
    one. Up to ``BUFFER_PARTS`` are held in memory; each time the buffer fills it is
    sorted and written to an anonymous temporary file as a run. Runs that follow one
    another in order (the common case: drproof archives and walks trees in the order of
    part names) are only concatenated; others are merged once, at the end.

    Names starting with one of ``exclude``, or equal to one of ``exclude_exact``, are not
    parts at all (a volume leaves out the live workload's directory and files); :meth:`drop`
    forgets parts already added (an incremental layer's removals). ``owners`` tells the
    code taking parts of a tree that this fingerprint's scheme records who owns each entry
    (:func:`engine.components.files.owned`), ``links`` that it records which names share a
    file (:func:`engine.components.files.link_token`), ``fflags`` that it records inode
    flags (:mod:`engine.components.fflags`).
    """

    def __init__(
        self,
        exclude: tuple[str, ...] = (),
        buffer: int | None = None,
        owners: bool = False,
        exclude_exact: frozenset[str] = frozenset(),
        links: bool = False,
        fflags: bool = False,
    ) -> None:
        self.owners = owners
        self.links = links
        self.fflags = fflags
        self._exclude = exclude
        self._exclude_exact = exclude_exact
        self._limit = buffer or BUFFER_PARTS
        self._buffer: list[tuple[str, Part]] = []
        self._file: _Scratch | None = None
        self._size = 0
        self._runs: list[_Run] = []
        self._drops: list[tuple[int, Callable[[str], bool]]] = []

    def __setitem__(self, name: str, part: Part) -> None:
        # A prefix test and a set look-up, no call: this runs per file.
        if not name.startswith(self._exclude) and name not in self._exclude_exact:
            buffer = self._buffer
            buffer.append((name, part))
            if len(buffer) >= self._limit:
                self._spill()

    def drop(self, covered: Callable[[str], bool]) -> None:
        """Forget every part added so far whose name ``covered`` accepts."""
        self._buffer = [r for r in self._buffer if not covered(r[0])]
        if self._runs:
            self._drops.append((len(self._runs), covered))

    def _sorted_buffer(self) -> list[tuple[str, Part]]:
        """The buffer sorted by name, the last of each name kept (the sort is stable)."""
        buf = self._buffer
        self._buffer = []
        buf.sort(key=operator.itemgetter(0))
        if len({name for name, _ in buf}) != len(buf):
            buf = [r for i, r in enumerate(buf) if i + 1 == len(buf) or buf[i + 1][0] != r[0]]
        return buf

    def _spill(self) -> None:
        buf = self._sorted_buffer()
        # A run per kind of part ("dir ...", "file ..."): a tree gives directories and
        # files each in order but interleaved, so runs of one kind follow one another.
        for start, end in _kinds([name for name, _ in buf]):
            self._runs.append(self._write(buf[start:end]))

    def _write(self, recs: list[tuple[str, Part]]) -> _Run:
        if self._file is None:
            self._file = _Scratch()
        data = encode(recs)
        os.pwrite(self._file.fd, data, self._size)
        run = _Run(self._size, len(data), recs[0][0], recs[-1][0])
        self._size += len(data)
        return run

    def fingerprint(self, component: str, kind: str, scheme: str) -> Fingerprint:
        """The fingerprint of every part added: inline when small, else over this spool's stream.

        The spool is spent: its temporary file now belongs to the fingerprint, and is
        removed when the fingerprint is.
        """
        if not self._runs and len(self._buffer) <= INLINE_PARTS:
            return Fingerprint.build(component, kind, dict(self._buffer), scheme)
        self._spill()
        if self._drops or not _chained(self._runs):
            self._merge()
        local = _LocalParts(self._file, sorted(self._runs, key=lambda r: r.first))
        meta, digest = local.describe()
        if meta.count <= INLINE_PARTS:  # fewer than it seemed: duplicates or removals
            return Fingerprint.build(component, kind, dict(local.records()), scheme)
        fp = Fingerprint(component=component, kind=kind, digest=digest, parts={}, scheme=scheme, parts_artifact=meta)
        return fp.with_source(local)

    def _merge(self) -> None:
        """Merge every run into one, the last part of each name kept, dropped ones left out."""
        assert self._file is not None
        old, runs, drops = self._file, self._runs, self._drops
        self._file, self._size, self._runs, self._drops = None, 0, [], []
        streams = [_numbered(_LocalParts(old, [run]).records(), index) for index, run in enumerate(runs)]
        merged = heapq.merge(*streams, key=operator.itemgetter(0))  # ties: earlier runs first
        out: list[tuple[str, Part]] = []
        for name, group in itertools.groupby(merged, key=operator.itemgetter(0)):
            *_, (_, index, part) = group
            if any(index < before and covered(name) for before, covered in drops):
                continue
            out.append((name, part))
            if len(out) >= self._limit:
                self._runs.append(self._write(out))
                out = []
        if out:
            self._runs.append(self._write(out))
        old.close()


def _kinds(names: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of each stretch of sorted ``names`` sharing the word before their first space."""
    i = 0
    while i < len(names):
        head, space, _ = names[i].partition(" ")
        if space:  # every name from "head " up to (not including) "head!" starts with "head "
            j = bisect.bisect_left(names, head + "!", i)
        else:
            j = i + 1
            while j < len(names) and " " not in names[j]:
                j += 1
        yield i, j
        i = j


def _numbered(parts: Iterator[tuple[str, Part]], index: int) -> Iterator[tuple[str, int, Part]]:
    for name, part in parts:
        yield name, index, part


def _chained(runs: list[_Run]) -> bool:
    """Whether the runs, ordered by their first name, follow one another without overlap."""
    ordered = sorted(runs, key=lambda r: r.first)
    return all(a.last < b.first for a, b in itertools.pairwise(ordered))


class _LocalParts:
    """Sorted runs in a temporary file, read in order: a fresh fingerprint's parts."""

    def __init__(self, file: _Scratch | None, runs: list[_Run]) -> None:
        self._file = file  # closed (and so removed) when the fingerprint holding this goes
        self._runs = runs
        self.what = "the fingerprint's temporary parts"

    def _chunks(self) -> Iterator[bytes]:
        yield MAGIC
        fd = self._file.fd if self._file is not None else -1
        for run in self._runs:
            pos, end = run.offset, run.offset + run.length
            while pos < end:
                data = os.pread(fd, min(READ_SIZE, end - pos), pos)
                if not data:
                    raise IntegrityError(f"{self.what}: the temporary file was cut short")
                pos += len(data)
                yield data

    def _reader(self) -> Callable[[int], bytes]:
        chunks = self._chunks()
        return lambda _size: next(chunks, b"")

    def records(self) -> Iterator[tuple[str, Part]]:
        return records(batches(self._reader(), self.what))

    @contextmanager
    def open(self) -> Iterator[Iterator[Batch]]:
        yield batches(self._reader(), self.what)

    @contextmanager
    def raw(self) -> Iterator[Callable[[int], bytes]]:
        yield self._reader()

    def describe(self) -> tuple[PartsArtifact, str]:
        """What a manifest records of these parts, and the fingerprint's digest over them."""
        tally = Tally(self.what)
        for f in batches(self._reader(), self.what, tally.sha256.update):
            tally.add(f, digest=True)
        meta = PartsArtifact(
            artifact=PARTS_ARTIFACT, count=tally.count, sha256=tally.sha256.hexdigest(), totals=tally.totals
        )
        return meta, tally.digest.hexdigest()
