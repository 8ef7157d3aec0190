"""Running writers in background threads and turning their records into a recovery point."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drills.workload.base import Ack, Writer


@dataclass
class Stream:
    """One component's writer, its thread and what it recorded."""

    writer: Writer
    rate: float
    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    last_error: str = ""
    # When a new primary acknowledged its first write after each failover (drill clock):
    # the recovery point judges the writes before each on their own (``recovery_point``).
    takeovers: list[float] = field(default_factory=list)
    thread: threading.Thread | None = None


class Workload:
    """Writes to every stream at its rate until stopped; records acknowledged writes.

    Writes are paced against the monotonic clock (a slow write is not made up for
    with a burst), and a failing write is counted and retried on the next tick: a
    workload that stopped at the first error would hide how long an outage lasted.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.streams: dict[str, Stream] = {}
        self._stop = threading.Event()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        # When, on the drill clock, the writers were told to stop, and why ("disaster":
        # the moment of the loss, so the time since each stream's last acknowledged write
        # was never probed by a write; see ``recovery_point``'s ``stopped_at``).
        self.stop_requested_at: float | None = None
        self.stop_reason = ""
        self._next_seq = 1
        self._seq_lock = threading.Lock()

    def add(self, name: str, writer: Writer, rate: float) -> None:
        self.streams[name] = Stream(writer=writer, rate=rate)

    def start(self) -> None:
        errors: dict[str, BaseException] = {}
        for stream in self.streams.values():
            try:
                stream.writer.open()
            except Exception as exc:
                errors[stream.writer.component.instance] = exc
        if errors:
            from engine.errors import ComponentError

            raise ComponentError("the workload could not start: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.started_at = self.clock()
        for name, stream in self.streams.items():
            stream.thread = threading.Thread(target=self._loop, args=(stream,), name=f"workload-{name}", daemon=True)
            stream.thread.start()

    def _seq(self) -> int:
        with self._seq_lock:
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def _loop(self, stream: Stream) -> None:
        interval = 1.0 / stream.rate
        tick = time.monotonic()
        while not self._stop.is_set():
            seq = self._seq()
            try:
                node = stream.writer.write(seq)
            except Exception as exc:  # an outage, not a bug: count it and keep trying
                stream.failures += 1
                stream.last_error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                stream.acks.append(Ack(seq=seq, offset=self.clock(), node=node))
            tick += interval
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def stop(self, reason: str = "") -> None:
        if self._stop.is_set():
            return
        self.stop_requested_at, self.stop_reason = self.clock(), reason
        self._stop.set()
        for stream in self.streams.values():
            if stream.thread is not None:
                stream.thread.join(timeout=30)
            with contextlib.suppress(Exception):
                stream.writer.close()
        self.stopped_at = self.clock()

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._stop.is_set()


def recovery_point(
    acks: list[Ack],
    survivors: set[int],
    started_at: float,
    takeovers: Sequence[float] = (),
    stopped_at: float | None = None,
) -> dict[str, Any]:
    """What a restore (or a failover) kept of the acknowledged writes, and the window it lost.

    The loss window runs from the newest acknowledged write that came back to the last
    one acknowledged at all; when nothing came back, from the workload's start, which
    makes the figure a lower bound (marked as such).

    ``takeovers`` are the moments a new primary acknowledged its first write after a
    failover. The writes before each are judged on their own: those acknowledged after
    the newest one that survived were lost *in that failover* (the replica had not
    received them), and the longest such span is a loss window too. A lost write that
    is neither (one acknowledged before a write that survived, in the same stretch) is a
    hole: damage, whatever the window.

    ``stopped_at`` is the moment of the loss when the workload ended there (a disaster):
    the time from the last acknowledged write to it was probed by no write (a slow rate,
    or writes failing), so the real loss window may be that much longer than the one
    measured (``unprobed_seconds``; found by review: one write every 5 s, the backup
    after it and the disaster 3 s later measured "0.00 s lost").
    """
    acked = sorted(acks, key=lambda a: a.seq)
    if not acked:
        return {"acknowledged": 0, "measured": False, "reason": "no write was acknowledged"}
    last = max(acked, key=lambda a: a.offset)
    kept = [a for a in acked if a.seq in survivors]
    lost = [a for a in acked if a.seq not in survivors]
    at_failover, windows = _lost_in_failovers(acked, survivors, started_at, sorted(takeovers))
    since = max(takeovers, default=started_at)
    after = [a for a in kept if a.offset >= since]  # kept since the last takeover (or the start)
    newest_kept = max(after, key=lambda a: a.offset, default=None)
    lower_bound = newest_kept is None and last.offset >= since
    if lower_bound:
        window, bound = last.offset - since, "lower bound: no acknowledged write survived"
    else:
        window, bound = (last.offset - newest_kept.offset if newest_kept else 0.0), ""
    newest_any = max(kept, key=lambda a: a.offset) if kept else None
    # Writes lost *before* the newest survivor are holes, not a window: a restore that
    # kept a later write but dropped an earlier one is damaged, whatever its RPO.
    holes = [
        a.seq for a in lost if a.seq not in at_failover and newest_any is not None and a.offset < newest_any.offset
    ]
    if at_failover:
        bound = "; ".join(filter(None, [f"{len(at_failover)} acknowledged write(s) lost in failover(s)", bound]))
    return {
        "measured": True,
        "acknowledged": len(acked),
        "survived": len(kept),
        "lost_writes": len(lost),
        "last_acknowledged": {"seq": last.seq, "offset_seconds": round(last.offset, 6)},
        "newest_surviving": (
            {"seq": newest_any.seq, "offset_seconds": round(newest_any.offset, 6)} if newest_any else None
        ),
        "loss_window_seconds": round(max(0.0, window, *windows), 6),
        "lower_bound": lower_bound,
        "note": bound,
        "holes": holes[:20],
        "hole_count": len(holes),
        "unprobed_seconds": None if stopped_at is None else round(max(0.0, stopped_at - last.offset), 6),
    }


def _lost_in_failovers(
    acked: list[Ack], survivors: set[int], started_at: float, takeovers: list[float]
) -> tuple[set[int], list[float]]:
    """The writes lost in each failover (after the newest survivor before its takeover), and each window."""
    lost: set[int] = set()
    windows: list[float] = []
    begin = started_at
    for end in takeovers:
        stretch = [a for a in acked if begin <= a.offset < end]
        newest = max((a for a in stretch if a.seq in survivors), key=lambda a: a.offset, default=None)
        tail = [a for a in stretch if a.seq not in survivors and (newest is None or a.offset > newest.offset)]
        if tail:
            lost.update(a.seq for a in tail)
            windows.append(max(a.offset for a in tail) - (newest.offset if newest else begin))
        begin = end
    return lost, windows
