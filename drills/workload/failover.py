"""What the workload's acknowledgements say about one failover: when, by whom, what was lost.

Pure functions of the acknowledged writes (each with the node that took it), so every
figure of a failover drill comes from writes an application would have seen succeed,
and each can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from drills.workload.base import Ack


def first_ack(acks: Iterable[Ack], after: float, not_by: str | None = None) -> Ack | None:
    """The first write acknowledged after ``after`` (drill clock) by a node other than ``not_by``."""
    return min((a for a in acks if a.offset > after and a.node != not_by), key=lambda a: a.offset, default=None)


def lost_before(acks: Iterable[Ack], since: float, until: float, survivors: set[int]) -> list[Ack]:
    """Writes acknowledged in [since, until) that the topology no longer holds."""
    return sorted((a for a in acks if since <= a.offset < until and a.seq not in survivors), key=lambda a: a.seq)


@dataclass(frozen=True)
class Tenure:
    """The span in which one node acknowledged writes."""

    node: str
    first: float
    last: float
    writes: int


def tenures(acks: Iterable[Ack], after: float) -> list[Tenure]:
    """Per node, the first and last write it acknowledged after ``after``, in order of first."""
    spans: dict[str, list[float]] = {}
    for a in acks:
        if a.offset > after and a.node is not None:
            spans.setdefault(a.node, []).append(a.offset)
    found = [Tenure(n, min(o), max(o), len(o)) for n, o in spans.items()]
    return sorted(found, key=lambda t: t.first)


def split_brain(acks: Iterable[Ack], after: float) -> list[dict[str, Any]]:
    """Pairs of nodes that both acknowledged writes during a common span after ``after``.

    A handover (the old primary's last write before the new one's first) is not a split
    brain; two primaries taking writes at the same time is: what one took, the other
    does not have, and one of the two histories will be thrown away.
    """
    spans = tenures(acks, after)
    found = []
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if b.first <= a.last:
                found.append(
                    {
                        "nodes": [a.node, b.node],
                        "overlap_seconds": round(min(a.last, b.last) - b.first, 6),
                        "writes": {a.node: a.writes, b.node: b.writes},
                    }
                )
    return found
