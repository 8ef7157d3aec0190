"""Content fingerprints that say *where* two states differ, not only *that* they do.

A fingerprint is a set of named parts (a table, a key space, a file, a range of vector
ids), each with a SHA-256 digest and a count, plus one digest over all parts. Comparing
two fingerprints lists the parts that are missing, unexpected or changed, which is what a
fidelity finding must tell an operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


def _unset(value: object) -> bool:
    return value is None


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
    # the same ``count``, and ``total`` within ``tolerance`` per counted item. Left out of
    # the JSON when unset, which they are for all but expiry parts: three lines a file of
    # a volume's manifest (manifests that carry them as null read the same).
    total: Annotated[int | None, Field(exclude_if=_unset)] = None
    tolerance: Annotated[int | None, Field(exclude_if=_unset)] = None
    earliest: Annotated[
        int | None, Field(description="For expiry parts: the earliest expiry, ms since 1970.", exclude_if=_unset)
    ] = None

    def matches(self, other: Part) -> bool:
        if self.tolerance is not None and other.tolerance is not None:
            return (
                self.count == other.count
                and self.total is not None
                and other.total is not None
                and abs(self.total - other.total) <= self.tolerance * max(self.count, 1)
            )
        return self.digest == other.digest


# How a kind computes its parts. Fingerprints in manifests of earlier drproof versions have
# no scheme and are "1"; a kind that changes what its parts cover gives the new way a new
# scheme and keeps computing the old one, so old backups are still compared.
LEGACY_SCHEME = "1"


class Fingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str
    kind: str
    digest: str
    parts: dict[str, Part]
    scheme: str = Field(default=LEGACY_SCHEME, description="How the parts were computed (see each kind's docs).")

    @classmethod
    def build(cls, component: str, kind: str, parts: dict[str, Part], scheme: str = LEGACY_SCHEME) -> Fingerprint:
        h = hashlib.sha256()
        ordered = {name: parts[name] for name in sorted(parts)}  # stored in order: manifests read alike
        for name, part in ordered.items():
            h.update(name.encode("utf-8", "surrogateescape") + b"\0")
            h.update(part.digest.encode() + b"\0")
        return cls(component=component, kind=kind, digest=h.hexdigest(), parts=ordered, scheme=scheme)


def summarize(fingerprint: Fingerprint) -> str:
    """What a fingerprint covers, in a few words: "2 parts: 1,500 rows, 1 roles"."""
    totals: dict[str, int] = {}
    for part in fingerprint.parts.values():
        totals[part.unit] = totals.get(part.unit, 0) + part.count
    counted = ", ".join(f"{n:,} {unit}" for unit, n in sorted(totals.items()) if n)
    return f"{len(fingerprint.parts)} parts" + (f": {counted}" if counted else "")


class PartDifference(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
        if self.expected.tolerance is not None and self.actual.total is not None and self.expected.total is not None:
            return (
                f"{self.part}: {self.expected.count} → {self.actual.count} {self.actual.unit}, expiry times "
                f"{'within' if abs(self.expected.total - self.actual.total) <= self.expected.tolerance * max(self.expected.count, 1) else 'beyond'}"
                f" {self.expected.tolerance} s each"
            )
        counts = ""
        if self.expected.count != self.actual.count:
            counts = f", {self.expected.count} → {self.actual.count} {self.actual.unit}"
        return (
            f"{self.part}: content differs (sha256 {self.expected.digest[:12]}… → {self.actual.digest[:12]}…{counts})"
        )


def compare(expected: Fingerprint, actual: Fingerprint) -> list[PartDifference]:
    """The parts that differ; two fingerprints of different schemes never compare equal."""
    if expected.scheme != actual.scheme:
        return [
            PartDifference(
                part=f"fingerprint scheme {expected.scheme} (backup) against {actual.scheme} (now)",
                change="changed",
                expected=Part(digest=expected.digest, count=len(expected.parts), unit="parts"),
                actual=Part(digest=actual.digest, count=len(actual.parts), unit="parts"),
            )
        ]
    diffs: list[PartDifference] = []
    for name in sorted(set(expected.parts) | set(actual.parts)):
        e = expected.parts.get(name)
        a = actual.parts.get(name)
        if a is None:
            diffs.append(PartDifference(part=name, change="missing", expected=e))
        elif e is None:
            diffs.append(PartDifference(part=name, change="unexpected", actual=a))
        elif not e.matches(a):
            diffs.append(PartDifference(part=name, change="changed", expected=e, actual=a))
    return diffs


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
