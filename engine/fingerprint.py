"""Content fingerprints that say *where* two states differ, not only *that* they do.

A fingerprint is a set of named parts (a table, a key space, a file, a range of vector
ids), each with a SHA-256 digest and a count, plus one digest over all parts. Comparing
two fingerprints lists the parts that are missing, unexpected or changed, which is what a
fidelity finding must tell an operator.

A fingerprint of many parts (a volume's, one part per file) keeps them out of memory and
out of the manifest: ``parts`` is empty and ``parts_artifact`` says where the sorted
stream of parts is and commits to it (:mod:`engine.partstream`). Code that reads parts
therefore goes through :meth:`Fingerprint.open_parts`, never ``parts`` directly, unless
it knows its kind keeps them inline (PostgreSQL, Redis, the vector store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, field_validator, model_validator


def _unset(value: object) -> bool:
    return value is None


# How a placeholder part's digest begins: what stands where a server could not be reached
# or a file, a store could not be read. Such a part never matches another, not even an
# identical placeholder (found by review: a vector store drproof could not read was
# "unreadable" at backup and after restore, and the restore was called proven).
UNMEASURED = ("unreadable:", "unreachable:")


@dataclass(slots=True)
class Part:
    """One named piece of a fingerprint: a digest and what it counted.

    A slotted dataclass, not a pydantic model: a volume's fingerprint holds one per
    file, and a model instance (its ``__dict__`` and fields-set) took 689 bytes where
    this takes 201 (issue 14). pydantic still validates it inside ``Fingerprint``
    (``__pydantic_config__`` forbids unknown keys there, as the model did) and writes it
    to JSON with the same keys in the same order.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    digest: str
    count: Annotated[int, Field(description="Rows, keys, vectors or bytes covered by this part.")]
    unit: Annotated[str, Field(description="What `count` counts: rows, keys, vectors, bytes, files.")]
    # A measured part (Redis expiry times) matches within a tolerance instead of by digest:
    # the same ``count``, and ``total`` within ``tolerance`` per counted item. Tolerance 0
    # on both sides: every item's value is in the digest, compared exactly. Left out of
    # the JSON when unset, which they are for all but expiry parts: three lines a file of
    # a volume's manifest (manifests that carry them as null read the same).
    total: Annotated[int | None, Field(exclude_if=_unset)] = None
    tolerance: Annotated[int | None, Field(exclude_if=_unset)] = None
    earliest: Annotated[
        int | None, Field(description="For expiry parts: the earliest expiry, ms since 1970.", exclude_if=_unset)
    ] = None

    @property
    def measured(self) -> bool:
        """False for a placeholder: a server that could not be reached, a file or store that could not be read."""
        return not self.digest.startswith(UNMEASURED)

    def matches(self, other: Part) -> bool:
        if not (self.measured and other.measured):
            return False  # two "could not read" placeholders say nothing about the data: never a match
        if self.tolerance is not None and other.tolerance is not None:
            if self.tolerance == other.tolerance == 0:
                return self.digest == other.digest
            return self.within_sum(other)
        if self.digest == other.digest:
            return True
        return self.count == other.count and _same_but_owner_ids(self.digest, other.digest)

    def within_sum(self, other: Part) -> bool:
        """Same count, totals within the larger of the two tolerances per item.

        The fallback where one side could not read exact values (a server without
        PEXPIRETIME, or a manifest from before per-key expiries).
        """
        tolerance = max(self.tolerance or 0, other.tolerance or 0)
        return (
            self.count == other.count
            and self.total is not None
            and other.total is not None
            and abs(self.total - other.total) <= tolerance * max(self.count, 1)
        )


def _same_but_owner_ids(expected: str, actual: str) -> bool:
    """Whether two tree entries' parts differ only in an owner a restore on this host could not give
    by name: content, mode and attributes equal, each owner equal as ``_same_owner`` judges it."""
    e_digest, _, e_rest = expected.partition(" ")
    a_digest, _, a_rest = actual.partition(" ")
    e_owner, _, e_attrs = e_rest.partition(" ")
    a_owner, _, a_attrs = a_rest.partition(" ")
    if not (e_owner and a_owner) or e_digest != a_digest or e_attrs != a_attrs:
        return False
    e_user, _, e_group = e_owner.partition(":")
    a_user, _, a_group = a_owner.partition(":")
    return _same_owner("u", e_user, a_user) and _same_owner("g", e_group, a_group)


def _same_owner(kind: str, expected: str, actual: str) -> bool:
    """``name#id`` recorded at the backup against what owns the entry here, as a restore gives owners.

    A restore gives the owner by name where this host has the name, else by number (as GNU
    tar does as root). So the recorded name, where this host has it, must be the owner's
    here; otherwise (no name recorded, or none such here) the numbers must be equal.
    Found by planning restore tests: a sandbox host without the application's user would
    otherwise fail every restored file on its owner.
    """
    e_name, _, e_id = expected.rpartition("#")
    a_name, _, a_id = actual.rpartition("#")
    if e_name and a_name == e_name:
        return True
    if e_name and _known(kind, e_name):
        return False  # the restore would have given the name this host has: anyone else is wrong
    return e_id == a_id


def _known(kind: str, name: str) -> bool:
    import grp
    import pwd

    try:
        pwd.getpwnam(name) if kind == "u" else grp.getgrnam(name)
    except KeyError:
        return False
    return True


# A part name JSON cannot hold, as a manifest stores it: this mark, then the name's bytes
# in hexadecimal. No part name starts with NUL (every one starts with its kind).
STORED_BYTES = "\0bytes:"


def _undecodable(name: str) -> bool:
    if name.isascii():
        return False
    try:
        name.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def stored_names(parts: dict[str, Any]) -> dict[str, Any]:
    """``parts`` with every name a manifest's JSON can hold, and give back (``read_names``).

    A file name that is not UTF-8 reaches drproof with lone surrogates, which JSON
    cannot carry: pydantic wrote U+FFFD, the stored name differed from the file's, and
    every restore of the set was refused (found by review). Such a name is stored as its
    bytes; every other name as it always was.
    """
    if not any(_undecodable(name) for name in parts):
        return parts
    return {(STORED_BYTES + name_bytes(n).hex() if _undecodable(n) else n): p for n, p in parts.items()}


def read_names(parts: dict[str, Any]) -> dict[str, Any]:
    if not any(isinstance(n, str) and n.startswith(STORED_BYTES) for n in parts):
        return parts
    return {
        (
            bytes.fromhex(n[len(STORED_BYTES) :]).decode("utf-8", "surrogateescape")
            if n.startswith(STORED_BYTES)
            else n
        ): p
        for n, p in parts.items()
    }


def name_bytes(name: str) -> bytes:
    """A part name as the fingerprint's digest hashes it.

    Undecodable bytes of a file name (``os.fsdecode``'s surrogates) hash as those bytes;
    any other lone surrogate (which no file name produces) as UTF-8 would if it allowed it.
    """
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


# Parts as they pass through a stream (``engine.partstream``) or a comparison: five fields
# per part (name, digest, count, unit, and "" or "total,tolerance,earliest"), in lists of
# whole parts. Plain strings: a million parts are compared without a Part object each.
FIELDS = 5
Batch = list[str]


def part_fields(name: str, part: Part) -> tuple[str, str, str, str, str]:
    extra = ""
    if part.total is not None or part.tolerance is not None or part.earliest is not None:
        extra = ",".join("" if v is None else str(v) for v in (part.total, part.tolerance, part.earliest))
    return name, part.digest, str(part.count), part.unit, extra


def part_at(f: Batch, i: int) -> Part:
    """The part whose fields start at ``f[i]``; ValueError if they are not a part's."""
    count = int(f[i + 2])
    if not f[i + 4]:
        return Part(f[i + 1], count, f[i + 3])
    total, tolerance, earliest = (int(x) if x else None for x in f[i + 4].split(","))
    return Part(f[i + 1], count, f[i + 3], total, tolerance, earliest)


def records(source: Iterable[Batch]) -> Iterator[tuple[str, Part]]:
    """(name, part) of every part in ``source``; ValueError for fields that are not a part's."""
    for f in source:
        if not any(f[4::FIELDS]):  # the common case, without a Python loop per part
            yield from zip(f[0::FIELDS], map(Part, f[1::FIELDS], map(int, f[2::FIELDS]), f[3::FIELDS]), strict=True)
            continue
        for i in range(0, len(f), FIELDS):
            yield f[i], part_at(f, i)


class PartsSource(Protocol):
    """Where the parts of a fingerprint kept out of memory are read from."""

    def open(self) -> AbstractContextManager[Iterator[Batch]]:
        """Every part, in increasing order of name, checked against the fingerprint by the end."""

    def raw(self) -> AbstractContextManager[Callable[[int], bytes]]:
        """The stream of records as stored (``engine.partstream``), to copy into a backup set."""


class PartsArtifact(BaseModel):
    """Where a fingerprint's parts are stored, and what the manifest commits them to be."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    artifact: str = Field(description="The artifact of the same component holding the parts, sorted by name.")
    count: int = Field(ge=0, description="How many parts (records) it holds.")
    sha256: str = Field(description="SHA-256 of the stream of records before compression.")
    totals: dict[str, int] = Field(
        default_factory=dict, description="The sum of the parts' counts per unit, as the stream gives them."
    )


# How a kind computes its parts. Fingerprints in manifests of earlier drproof versions have
# no scheme and are "1"; a kind that changes what its parts cover gives the new way a new
# scheme and keeps computing the old one, so old backups are still compared.
LEGACY_SCHEME = "1"


class Fingerprint(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    component: str
    kind: str
    digest: str = Field(description="SHA-256 over every part's name and digest, in order of name.")
    parts: dict[str, Part] = Field(description="The parts, by name; empty when they are in `parts_artifact`.")
    scheme: str = Field(default=LEGACY_SCHEME, description="How the parts were computed (see each kind's docs).")
    parts_artifact: Annotated[
        PartsArtifact | None,
        Field(
            description="For a fingerprint of many parts (a volume's): the artifact holding them, "
            "its record count and the SHA-256 of its records. Absent when the parts are inline.",
            exclude_if=_unset,
        ),
    ] = None
    # Where stored parts are read from: a temporary file while the fingerprint is fresh,
    # the backup set once bound to it (``engine.partstream.reading_stored``).
    _source: PartsSource | None = PrivateAttr(default=None)

    @field_serializer("parts", when_used="json")
    def _storable(self, parts: dict[str, Part]) -> dict[str, Part]:
        return stored_names(parts)

    @field_validator("parts", mode="before")
    @classmethod
    def _read_back(cls, parts: Any) -> Any:
        return read_names(parts) if isinstance(parts, dict) else parts

    @model_validator(mode="after")
    def _one_place(self) -> Fingerprint:
        if self.parts_artifact is not None and self.parts:
            raise ValueError("a fingerprint's parts are either inline or in an artifact, not both")
        return self

    @classmethod
    def build(cls, component: str, kind: str, parts: dict[str, Part], scheme: str = LEGACY_SCHEME) -> Fingerprint:
        h = hashlib.sha256()
        ordered = {name: parts[name] for name in sorted(parts)}  # stored in order: manifests read alike
        for name, part in ordered.items():
            h.update(name_bytes(name) + b"\0")
            h.update(part.digest.encode() + b"\0")
        return cls(component=component, kind=kind, digest=h.hexdigest(), parts=ordered, scheme=scheme)

    @property
    def external(self) -> bool:
        """Whether the parts are kept in a stream (``parts_artifact``) rather than inline."""
        return self.parts_artifact is not None

    @property
    def part_count(self) -> int:
        return self.parts_artifact.count if self.parts_artifact is not None else len(self.parts)

    def unmeasured(self) -> str | None:
        """Why nothing was measured, when every part is a placeholder (a server unreachable); else None.

        Such a fingerprint is no reading of the data: compared, it would list every part
        of the backup as "missing", findings of a loss nobody measured (found by review:
        a killed server's fidelity check "failed as expected" on them).
        """
        if self.external or not self.parts or any(p.measured for p in self.parts.values()):
            return None
        return "; ".join(sorted({f"{name}: {p.digest}" for name, p in self.parts.items()}))[:500]

    def totals(self) -> dict[str, int]:
        """The sum of the parts' counts per unit (rows, bytes, files...)."""
        if self.parts_artifact is not None:
            return dict(self.parts_artifact.totals)
        totals: dict[str, int] = {}
        for part in self.parts.values():
            totals[part.unit] = totals.get(part.unit, 0) + part.count
        return totals

    def open_parts(self) -> AbstractContextManager[Iterator[tuple[str, Part]]]:
        """Every part as (name, part), in increasing order of name, wherever they are kept.

        Stored parts are checked as they are read (order, count, the manifest's SHA-256):
        a consumer must read to the end, inside the context, before it trusts a verdict.
        """
        return _as_records(self.open_batches())

    def open_batches(self) -> AbstractContextManager[Iterator[Batch]]:
        """As :meth:`open_parts`, in the fields of whole parts (``FIELDS`` strings each)."""
        if self.parts_artifact is None:
            return _inline(self.parts)
        if self._source is None:
            from engine.errors import IntegrityError

            raise IntegrityError(
                f"the fingerprint of {self.component!r} keeps its {self.parts_artifact.count:,} parts in artifact "
                f"{self.parts_artifact.artifact!r}, and no backup set was given to read them from"
            )
        return self._source.open()

    def with_source(self, source: PartsSource) -> Fingerprint:
        """A copy whose stored parts are read from ``source`` (the copy shares nothing mutable)."""
        copy = self.model_copy()
        copy._source = source
        return copy

    @property
    def source(self) -> PartsSource | None:
        return self._source

    def __eq__(self, other: object) -> bool:
        # Where the stored parts are read from is not part of what a fingerprint says.
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return self.__dict__ == other.__dict__


@contextmanager
def _inline(parts: dict[str, Part]) -> Iterator[Iterator[Batch]]:
    # Sorted again: a manifest's dict is in whatever order its JSON had.
    fields: Batch = []
    for name in sorted(parts):
        fields.extend(part_fields(name, parts[name]))
    yield iter([fields] if fields else [])


@contextmanager
def _as_records(batches: AbstractContextManager[Iterator[Batch]]) -> Iterator[Iterator[tuple[str, Part]]]:
    with batches as source:
        yield records(source)


def summarize(fingerprint: Fingerprint) -> str:
    """What a fingerprint covers, in a few words: "2 parts: 1,500 rows, 1 roles"."""
    counted = ", ".join(f"{n:,} {unit}" for unit, n in sorted(fingerprint.totals().items()) if n)
    return f"{fingerprint.part_count} parts" + (f": {counted}" if counted else "")


class PartDifference(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    part: str
    change: str = Field(description="missing | unexpected | changed")
    expected: Part | None = None
    actual: Part | None = None

    def describe(self) -> str:
        return self._describe() + self._expiry_note()

    def _expiry_note(self) -> str:
        """Why keys with a time to live can be fewer after a restore than at the backup."""
        e = self.expected
        if e is None or e.earliest is None or self.change == "unexpected":
            return ""
        import time
        from datetime import UTC, datetime

        if e.earliest > time.time() * 1000:
            return ""
        when = datetime.fromtimestamp(e.earliest / 1000, UTC).isoformat(timespec="seconds")
        return f" (keys of it have a time to live; the earliest expired at {when}, after the backup)"

    def _describe(self) -> str:
        if self.change == "missing" and self.expected:
            return f"{self.part}: missing after restore (had {self.expected.count} {self.expected.unit})"
        if self.change == "unexpected" and self.actual:
            return f"{self.part}: present after restore but not in the backup ({self.actual.count} {self.actual.unit})"
        assert self.expected is not None and self.actual is not None
        if self.expected.tolerance is not None and self.actual.tolerance is not None:
            return self._expiry_change(self.expected, self.actual)
        counts = ""
        if self.expected.count != self.actual.count:
            counts = f", {self.expected.count} → {self.actual.count} {self.actual.unit}"
        e_digest, e_owner, e_attrs = _entry_split(self.expected)
        a_digest, a_owner, a_attrs = _entry_split(self.actual)
        (e_attrs, e_link), (a_attrs, a_link) = _link_split(e_attrs), _link_split(a_attrs)
        (e_mode, e_attrs), (a_mode, a_attrs) = _mode_split(e_attrs), _mode_split(a_attrs)
        (e_attrs, e_flags), (a_attrs, a_flags) = _flags_split(e_attrs), _flags_split(a_attrs)
        notes = []
        if e_mode != a_mode and e_mode and a_mode:
            notes.append(f"mode differs ({e_mode} → {a_mode})")
        if e_owner != a_owner and e_owner and a_owner:
            notes.append(f"owner differs ({e_owner} → {a_owner})")
        if e_attrs != a_attrs and (e_owner and a_owner):
            notes.append(_attrs_change(e_attrs, a_attrs))
        if e_flags != a_flags and (e_owner and a_owner):
            notes.append(_flags_change(e_flags, a_flags))
        if e_link != a_link and (e_owner and a_owner):
            notes.append(_link_change(e_link, a_link))
        if notes and e_digest == a_digest:
            kept = "content as backed up" if e_mode != a_mode else "content and mode as backed up"
            return f"{self.part}: {'; '.join(notes)}; {kept}"
        content = f"content differs (sha256 {e_digest[:12]}… → {a_digest[:12]}…{counts})"
        return f"{self.part}: " + "; ".join([content, *notes])

    def _expiry_change(self, e: Part, a: Part) -> str:
        counts = f"{e.count} → {a.count} {a.unit}"
        shift = "" if e.total is None or a.total is None else f"; their sum moved {a.total - e.total:+d} s"
        if e.tolerance == a.tolerance == 0:
            return f"{self.part}: {counts}, the expiry moment of at least one key differs{shift}"
        tolerance = max(e.tolerance or 0, a.tolerance or 0)
        verdict = "within" if e.within_sum(a) else "beyond"
        return (
            f"{self.part}: {counts}, expiry times {verdict} {tolerance} s each{shift} (compared as a sum only:"
            " one side could not read each key's moment exactly, or predates per-key expiries)"
        )


def _entry_split(part: Part) -> tuple[str, str, str]:
    """(digest, owner, attributes) of a part of a tree entry ("<sha256> user:group[ xattrs:<digest>]").

    Owner "" where the part records none (another kind, an older scheme), attributes ""
    where the entry has none.
    """
    if not part.measured:
        return part.digest, "", ""  # "unreadable: <why>" is no digest and no owner
    digest, _, rest = part.digest.partition(" ")
    owner, _, attrs = rest.partition(" ")
    return digest, owner, attrs


# What ends the part of a further name of a hard-linked file (engine.components.files.link_token).
_LINK = " link:"


def _link_split(attrs: str) -> tuple[str, str]:
    """(attributes, name linked to) of what follows the owner in a tree entry's part.

    The link token is last, and the attribute token holds no space, so the first
    " link:" is the token, whatever the name it carries holds.
    """
    if attrs.startswith(_LINK[1:]):
        return "", attrs[len(_LINK) - 1 :]
    cut = attrs.find(_LINK)
    return (attrs, "") if cut < 0 else (attrs[:cut], attrs[cut + len(_LINK) :])


def _mode_split(attrs: str) -> tuple[str, str]:
    """(permission bits, the rest) of what follows the owner in a scheme-4 part ("mode:0644 ..."); "" before."""
    if not attrs.startswith("mode:"):
        return "", attrs
    mode, _, rest = attrs[len("mode:") :].partition(" ")
    return mode, rest


_FLAGS = "fflags:"


def _flags_split(attrs: str) -> tuple[str, str]:
    """(the rest, inode flags) of a tree entry's attributes ("xattrs:<digest> fflags:schg"); flags "" where none."""
    if attrs.startswith(_FLAGS):
        return "", attrs[len(_FLAGS) :]
    cut = attrs.find(" " + _FLAGS)
    return (attrs, "") if cut < 0 else (attrs[:cut], attrs[cut + len(_FLAGS) + 1 :])


def _flags_change(expected: str, actual: str) -> str:
    """What a finding says of inode flags that differ: each flag lost or added, by what it protects."""
    from engine.components.fflags import described

    if actual == "?" or expected == "?":
        return f"inode flags could not be compared ({described(expected)} → {described(actual)})"
    e, a = set(filter(None, expected.split(","))), set(filter(None, actual.split(",")))
    said = []
    if e - a:
        said.append(f"lost {described(','.join(sorted(e - a)))}")
    if a - e:
        said.append(f"added {described(','.join(sorted(a - e)))}")
    return f"inode flags differ ({'; '.join(said)})"


def _link_change(expected: str, actual: str) -> str:
    from urllib.parse import unquote

    def shown(quoted: str) -> str:
        return repr(unquote(quoted, errors="surrogateescape"))

    if not actual:
        return f"hard link to {shown(expected)} lost (now a file of its own)"
    if not expected:
        return f"hard link to {shown(actual)} added (the backup had a file of its own)"
    return f"hard link to {shown(expected)} lost, linked to {shown(actual)} instead"


def _attrs_change(expected: str, actual: str) -> str:
    if not actual:
        return "extended attributes (ACLs, capabilities, user.*) lost"
    if not expected:
        return "extended attributes present that the backup did not have"
    return "extended attributes differ"


# A comparison lists at most this many differences and counts the rest: a volume whose
# million files all changed must not hold (or report) a million findings.
MAX_LISTED = 1000


class Comparison(list[PartDifference]):
    """The differences between two fingerprints: the first ``MAX_LISTED`` listed, all counted.

    A list, so ``if diffs`` and iteration read as before; ``total`` is how many parts
    differ (``len`` is how many are listed) and ``compared`` how many parts were compared.
    """

    def __init__(self, listed: Iterable[PartDifference] = (), total: int = 0, compared: int = 0) -> None:
        super().__init__(listed)
        self.total = max(total, len(self))
        self.compared = compared

    @property
    def unlisted(self) -> int:
        return self.total - len(self)

    def describe(self) -> list[str]:
        """One line per listed difference, and one saying how many more were not listed."""
        lines = [d.describe() for d in self]
        if self.unlisted:
            lines.append(f"and {self.unlisted:,} more parts differ (not listed)")
        return lines


def compare(expected: Fingerprint, actual: Fingerprint, limit: int = MAX_LISTED) -> Comparison:
    """The parts that differ; two fingerprints of different schemes never compare equal.

    A merge of the two sorted streams of parts (:mod:`engine.partmerge`): memory stays
    flat however many parts either has, and stored parts are checked against their
    manifest as they pass.
    """
    if expected.scheme != actual.scheme:
        return Comparison(
            [
                PartDifference(
                    part=f"fingerprint scheme {expected.scheme} (backup) against {actual.scheme} (now)",
                    change="changed",
                    expected=Part(digest=expected.digest, count=expected.part_count, unit="parts"),
                    actual=Part(digest=actual.digest, count=actual.part_count, unit="parts"),
                )
            ],
            total=1,
            compared=max(expected.part_count, actual.part_count),
        )
    from engine.partmerge import merge  # here, not at the top: partmerge is built on this module

    with expected.open_batches() as theirs, actual.open_batches() as ours:
        return merge(theirs, ours, limit)


class PartHasher:
    """Incrementally hashes a sequence of records into one :class:`Part`.

    Each record is length-prefixed so that ("ab", "c") and ("a", "bc") never collide.
    """

    def __init__(self, unit: str) -> None:
        self._h = hashlib.sha256()
        self.count = 0
        self.unit = unit

    def add(self, record: bytes, count: int = 1) -> None:
        self._h.update(len(record).to_bytes(8, "big"))
        self._h.update(record)
        self.count += count

    def add_all(self, records: Iterable[bytes]) -> None:
        for r in records:
            self.add(r)

    def part(self) -> Part:
        return Part(digest=self._h.hexdigest(), count=self.count, unit=self.unit)
