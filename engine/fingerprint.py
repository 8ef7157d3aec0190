"""Content fingerprints that say *where* two states differ, not only *that* they do.

A fingerprint is a set of named parts (a table, a key space, a file, a range of vector
ids), each with a SHA-256 digest and a count, plus one digest over all parts. Comparing
two fingerprints lists the parts that are missing, unexpected or changed, which is what a
fidelity finding must tell an operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest: str
    count: int = Field(description="Rows, keys, vectors or bytes covered by this part.")
    unit: str = Field(description="What `count` counts: rows, keys, vectors, bytes, files.")


class Fingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str
    kind: str
    digest: str
    parts: dict[str, Part]

    @classmethod
    def build(cls, component: str, kind: str, parts: dict[str, Part]) -> Fingerprint:
        h = hashlib.sha256()
        ordered = {name: parts[name] for name in sorted(parts)}  # stored in order: manifests read alike
        for name, part in ordered.items():
            h.update(name.encode("utf-8", "surrogateescape") + b"\0")
            h.update(part.digest.encode() + b"\0")
        return cls(component=component, kind=kind, digest=h.hexdigest(), parts=ordered)


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
        if self.change == "missing" and self.expected:
            return f"{self.part}: missing after restore (had {self.expected.count} {self.expected.unit})"
        if self.change == "unexpected" and self.actual:
            return f"{self.part}: present after restore but not in the backup ({self.actual.count} {self.actual.unit})"
        assert self.expected is not None and self.actual is not None
        counts = ""
        if self.expected.count != self.actual.count:
            counts = f", {self.expected.count} → {self.actual.count} {self.actual.unit}"
        return (
            f"{self.part}: content differs (sha256 {self.expected.digest[:12]}… → {self.actual.digest[:12]}…{counts})"
        )


def compare(expected: Fingerprint, actual: Fingerprint) -> list[PartDifference]:
    diffs: list[PartDifference] = []
    for name in sorted(set(expected.parts) | set(actual.parts)):
        e = expected.parts.get(name)
        a = actual.parts.get(name)
        if a is None:
            diffs.append(PartDifference(part=name, change="missing", expected=e))
        elif e is None:
            diffs.append(PartDifference(part=name, change="unexpected", actual=a))
        elif e.digest != a.digest:
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
