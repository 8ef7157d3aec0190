"""Comparing two fingerprints: one walk over two streams of parts sorted by name.

Why a module of its own: a volume of a million files is compared part by part after
every restore, twice (the staged copy, then the live tree). A loop over the parts in
Python costs about a microsecond a part and side; most parts match, so this compares
whole runs of names and digests at once (list slices, compared in C) and falls back to
one part at a time only where they differ. The run grows while it keeps matching and
shrinks at a difference, so a stream with many differences costs no more than the
plain loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import methodcaller

from engine.fingerprint import FIELDS, UNMEASURED, Batch, Comparison, Part, PartDifference, part_at

_placeholder = methodcaller("startswith", UNMEASURED)

_FIRST_RUN = 16
_LONGEST_RUN = 8192


class _Cursor:
    """A position in a stream of batches, with the current batch's names and digests as columns."""

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches
        self.fields: Batch = []
        self.names: list[str] = []
        self.digests: list[str] = []
        self.extras: list[str] = []
        self.i = 0
        self.done = False
        self._load()

    def _load(self) -> None:
        for f in self._batches:
            if f:
                self.fields, self.i = f, 0
                self.names, self.digests, self.extras = f[0::FIELDS], f[1::FIELDS], f[4::FIELDS]
                return
        self.done = True

    @property
    def left(self) -> int:
        """Parts left in the current batch."""
        return len(self.names) - self.i

    def advance(self, k: int = 1) -> None:
        self.i += k
        if self.i >= len(self.names):
            self._load()

    @property
    def name(self) -> str:
        return self.names[self.i]

    def part(self) -> Part:
        return part_at(self.fields, self.i * FIELDS)


# Told of each difference: (name, "missing" | "unexpected" | "changed", the expected
# side's cursor or None, the actual side's cursor or None). A cursor's ``part()`` is the
# part at the difference, valid only during the call.
Found = Callable[[str, str, "_Cursor | None", "_Cursor | None"], None]


class _Result:
    """A :class:`Comparison` being built: the first ``limit`` differences listed, all counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.listed: list[PartDifference] = []
        self.total = 0

    def add(self, name: str, change: str, expected: _Cursor | None, actual: _Cursor | None) -> None:
        self.total += 1
        if len(self.listed) < self.limit:
            self.listed.append(
                PartDifference(
                    part=name,
                    change=change,
                    expected=expected.part() if expected is not None else None,
                    actual=actual.part() if actual is not None else None,
                )
            )


def merge(expected: Iterator[Batch], actual: Iterator[Batch], limit: int) -> Comparison:
    """The differences between two streams of parts, each sorted by name without repeats."""
    out = _Result(limit)
    compared = walk(expected, actual, out.add)
    return Comparison(out.listed, total=out.total, compared=compared)


def walk(expected: Iterator[Batch], actual: Iterator[Batch], found: Found) -> int:
    """Call ``found`` for every part that differs; return how many names were compared."""
    e, a = _Cursor(expected), _Cursor(actual)
    compared = 0
    run = _FIRST_RUN
    while not e.done and not a.done:
        k = min(run, e.left, a.left)
        i, j = e.i, a.i
        if (
            e.names[i : i + k] == a.names[j : j + k]
            and e.digests[i : i + k] == a.digests[j : j + k]
            and not any(e.extras[i : i + k])  # a part measured within a tolerance is judged alone
            and not any(map(_placeholder, e.digests[i : i + k]))  # as is a placeholder, which never matches
        ):
            compared += k
            e.advance(k)
            a.advance(k)
            run = min(run * 2, _LONGEST_RUN)
            continue
        run = _FIRST_RUN
        compared += 1
        _one(e, a, found)
    for cursor, missing in ((e, True), (a, False)):
        while not cursor.done:
            compared += 1
            found(cursor.name, "missing" if missing else "unexpected", *((cursor, None) if missing else (None, cursor)))
            cursor.advance()
    return compared


def _one(e: _Cursor, a: _Cursor, found: Found) -> None:
    """Compare the parts under both cursors and move past the smaller name (or both)."""
    en, an = e.name, a.name
    if en == an:
        if not e.part().matches(a.part()):
            found(en, "changed", e, a)
        e.advance()
        a.advance()
    elif en < an:
        found(en, "missing", e, None)
        e.advance()
    else:
        found(an, "unexpected", None, a)
        a.advance()
