"""Running writers in background threads and turning their records into a recovery point."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
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
                stream.writer.write(seq)
            except Exception as exc:  # an outage, not a bug: count it and keep trying
                stream.failures += 1
                stream.last_error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                stream.acks.append(Ack(seq=seq, offset=self.clock()))
            tick += interval
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def stop(self) -> None:
        if self._stop.is_set():
            return
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


def recovery_point(acks: list[Ack], survivors: set[int], started_at: float) -> dict[str, Any]:
    """What a restore kept of the acknowledged writes, and the window it lost.

    The loss window runs from the newest acknowledged write that came back to the last
    one acknowledged at all; when nothing came back, from the workload's start, which
    makes the figure a lower bound (marked as such).
    """
    acked = sorted(acks, key=lambda a: a.seq)
    if not acked:
        return {"acknowledged": 0, "measured": False, "reason": "no write was acknowledged"}
    last = max(acked, key=lambda a: a.offset)
    kept = [a for a in acked if a.seq in survivors]
    lost = [a for a in acked if a.seq not in survivors]
    newest_kept = max(kept, key=lambda a: a.offset) if kept else None
    if newest_kept is None:
        window, bound = last.offset - started_at, "lower bound: no acknowledged write survived"
    else:
        window, bound = last.offset - newest_kept.offset, ""
    # Writes lost *before* the newest survivor are holes, not a window: a restore that
    # kept a later write but dropped an earlier one is damaged, whatever its RPO.
    holes = [a.seq for a in lost if newest_kept is not None and a.offset < newest_kept.offset]
    return {
        "measured": True,
        "acknowledged": len(acked),
        "survived": len(kept),
        "lost_writes": len(lost),
        "last_acknowledged": {"seq": last.seq, "offset_seconds": round(last.offset, 6)},
        "newest_surviving": (
            {"seq": newest_kept.seq, "offset_seconds": round(newest_kept.offset, 6)} if newest_kept else None
        ),
        "loss_window_seconds": round(max(0.0, window), 6),
        "note": bound,
        "holes": holes[:20],
        "hole_count": len(holes),
    }
