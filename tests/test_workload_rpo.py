"""The recovery point is computed from acknowledged writes alone, and judged strictly."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st

from drills.assertions.base import DrillState
from drills.assertions.rpo import Rpo, RpoParams
from drills.workload.base import Ack, Writer
from drills.workload.run import Workload, recovery_point
from engine.journal import ComponentResult, RecoveryPoint


def _acks(n: int, step: float = 0.1) -> list[Ack]:
    return [Ack(seq=i + 1, offset=1.0 + i * step) for i in range(n)]


def test_everything_after_the_backup_lost_gives_the_time_since_the_last_survivor() -> None:
    acks = _acks(50)  # offsets 1.0 .. 5.9
    point = recovery_point(acks, {a.seq for a in acks[:20]}, started_at=1.0)
    assert point["survived"] == 20 and point["lost_writes"] == 30
    assert point["newest_surviving"]["seq"] == 20
    assert point["loss_window_seconds"] == round(5.9 - 2.9, 6)
    assert point["hole_count"] == 0


def test_nothing_lost_is_a_zero_window() -> None:
    acks = _acks(10)
    point = recovery_point(acks, {a.seq for a in acks} | {999}, started_at=1.0)
    assert point["loss_window_seconds"] == 0 and point["lost_writes"] == 0


def test_nothing_survived_is_a_lower_bound_from_the_start() -> None:
    point = recovery_point(_acks(10), set(), started_at=0.5)
    assert point["newest_surviving"] is None
    assert point["loss_window_seconds"] == round(1.9 - 0.5, 6)
    assert "lower bound" in point["note"] and point["lower_bound"] is True
    assert recovery_point(_acks(10), {3}, started_at=0.5)["lower_bound"] is False


def test_a_write_lost_before_a_surviving_one_is_a_hole() -> None:
    acks = _acks(10)
    point = recovery_point(acks, {a.seq for a in acks} - {3}, started_at=1.0)
    assert point["hole_count"] == 1 and point["holes"] == [3]
    assert point["loss_window_seconds"] == 0


def test_no_acknowledged_write_is_not_measured() -> None:
    assert recovery_point([], {1, 2}, started_at=0)["measured"] is False


@given(
    n=st.integers(1, 200),
    kept=st.sets(st.integers(1, 200)),
    step=st.floats(0.001, 2),
)
def test_window_and_counts_are_consistent(n: int, kept: set[int], step: float) -> None:
    acks = _acks(n, step)
    point = recovery_point(acks, kept, started_at=0.0)
    survivors = {a.seq for a in acks} & kept
    assert point["survived"] == len(survivors)
    assert point["survived"] + point["lost_writes"] == n
    assert point["loss_window_seconds"] >= 0
    if survivors == {a.seq for a in acks}:
        assert point["loss_window_seconds"] == 0
    if max(survivors, default=0) == n:
        assert point["loss_window_seconds"] == 0  # the last write came back
    assert point["hole_count"] == len([s for s in range(1, max(survivors, default=0)) if s not in survivors])


def _state(points: dict[str, RecoveryPoint | None], objective: float | None = 5.0, ran: bool = True) -> DrillState:
    state = DrillState(repository=None)  # type: ignore[arg-type]
    for name, point in points.items():
        state.results[name] = ComponentResult(name=name, kind="postgres", recovery_point=point)
    state.rpo_objective = objective
    state.workload_ran = ran
    return state


def _point(window: float, lost: int = 1, holes: int = 0) -> RecoveryPoint:
    return RecoveryPoint(
        measured=True, acknowledged=100, survived=100 - lost, lost_writes=lost, loss_window_seconds=window,
        hole_count=holes, holes=list(range(holes)),
    )  # fmt: skip


def test_rpo_passes_within_and_fails_over_the_objective_naming_the_component() -> None:
    ok = Rpo().evaluate(RpoParams(), _state({"db": _point(1.0), "cache": _point(4.9)}))
    assert ok[0].status == "pass" and "cache" in ok[0].summary
    bad = Rpo().evaluate(RpoParams(), _state({"db": _point(1.0), "cache": _point(5.1)}))
    assert bad[0].status == "fail"
    assert any(f.startswith("cache: lost 1 of 100") for f in bad[0].findings)


def test_rpo_fails_on_holes_even_with_no_window() -> None:
    r = Rpo().evaluate(RpoParams(), _state({"db": _point(0.0, holes=2)}))
    assert r[0].status == "fail" and "lost before a surviving one" in r[0].findings[0]


def test_rpo_is_never_green_when_not_measured() -> None:
    assert Rpo().evaluate(RpoParams(), _state({}, ran=False))[0].status == "error"
    assert Rpo().evaluate(RpoParams(), _state({"db": _point(0.0)}, objective=None))[0].status == "error"
    assert Rpo().evaluate(RpoParams(), _state({"db": None}))[0].status == "error"
    one = Rpo().evaluate(RpoParams(component="cfg"), _state({"db": _point(0.0), "cfg": None}))
    assert one[0].status == "error" and "cfg" in one[0].summary


def test_max_lost_writes_is_a_second_limit() -> None:
    r = Rpo().evaluate(RpoParams(max_lost_writes=0), _state({"db": _point(0.5, lost=3)}))
    assert r[0].status == "fail" and "more than the 0 allowed" in r[0].findings[0]


class _Flaky(Writer):
    name: ClassVar[str] = "flaky"

    def __init__(self) -> None:
        self.component: Any = type("C", (), {"instance": "flaky"})()
        self.written: list[int] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        return None

    def write(self, seq: int) -> None:
        if seq % 3 == 0:
            raise ConnectionError("server gone")
        with self.lock:
            self.written.append(seq)

    def survivors(self) -> set[int]:
        return set(self.written)


def test_workload_paces_counts_failures_and_acknowledges_only_successes() -> None:
    t0 = time.monotonic()
    workload = Workload(lambda: time.monotonic() - t0)
    writer = _Flaky()
    workload.add("flaky", writer, rate=200)
    workload.start()
    time.sleep(0.3)
    workload.stop()
    stream = workload.streams["flaky"]
    acked = [a.seq for a in stream.acks]
    assert acked == writer.written  # acknowledged means it was written, nothing else
    assert stream.failures >= 1 and "server gone" in stream.last_error
    assert 20 <= len(acked) + stream.failures <= 80  # paced near 200/s, not a busy loop
    assert not workload.running


def test_workload_vectors_leave_the_store_fingerprint_unchanged_and_are_counted(tmp_path: Any) -> None:
    """Fidelity compares the seed; the workload's vectors are judged only by the RPO."""
    from drills.workload.vectors import VectorWriter
    from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
    from tests.conftest import DirsRuntime

    comp = VectorstoreComponent("v", VectorstoreParams(vectors=50, dimension=8), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    before = comp.fingerprint()
    writer = VectorWriter(comp)
    writer.open()
    for seq in (3, 4, 9):
        writer.write(seq)
    assert writer.survivors() == {3, 4, 9}
    assert comp.health().ok, "index and id map stay consistent"
    assert comp.fingerprint().digest == before.digest
    # A seed vector changed next to the workload's is still caught, by file and by id range.
    import faiss
    import numpy as np

    index = faiss.read_index(str(comp.path / "index.faiss"))
    index.remove_ids(np.array([7], dtype=np.int64))
    faiss.write_index(index, str(comp.path / "index.faiss"))
    changed = {d for d in comp.fingerprint().parts if comp.fingerprint().parts[d] != before.parts.get(d)}
    assert "file index.faiss" in changed


def test_a_restore_is_not_undone_by_the_vector_workload(tmp_path: Any) -> None:
    """Writes made after the backup are lost by the restore and stay lost: the writer reads the restored store."""
    from drills.workload.vectors import VectorWriter
    from engine import backup as engine_backup
    from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
    from engine.fingerprint import compare
    from engine.repository import LocalRepository
    from tests.conftest import DirsRuntime

    comp = VectorstoreComponent("v", VectorstoreParams(vectors=50, dimension=8), DirsRuntime(tmp_path))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    writer = VectorWriter(comp)
    writer.open()
    for seq in (1, 2):
        writer.write(seq)
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    for seq in (3, 4):
        writer.write(seq)
    engine_backup.restore(repo, manifest, comp)
    assert writer.survivors() == {1, 2}
    writer.write(5)
    assert writer.survivors() == {1, 2, 5}, "the writes the restore removed came back"
    health = comp.health()
    assert health.ok, health.detail
    assert not list(compare(manifest.component("v").fingerprint, comp.fingerprint()))


def test_a_component_that_acknowledged_no_write_makes_the_stack_rpo_an_error() -> None:
    """Found by review: its every write failed, so it was "not written" and the stack passed on the others."""
    none = RecoveryPoint(measured=False, acknowledged=0, failed_writes=40, reason="acknowledged none of 40 write(s)")
    r = Rpo().evaluate(RpoParams(), _state({"db": _point(1.0), "cache": none}))
    assert r[0].status == "error" and "cache" in r[0].summary
    # Quiet control: a component no workload wrote to at all is named, not judged.
    ok = Rpo().evaluate(RpoParams(), _state({"db": _point(1.0), "cfg": None}))
    assert ok[0].status == "pass" and ok[0].evidence["not_written"] == ["cfg"]
    assert ok[0].summary.endswith("not measured (no workload wrote to them): cfg")


def test_time_no_write_probed_before_the_disaster_keeps_the_rpo_from_passing() -> None:
    """Found by review: one write every 5 s, the disaster 4.3 s after the last: "0.00 s", within 1 s."""
    sparse = _point(0.0, lost=0).model_copy(update={"unprobed_seconds": 4.3, "rate": 0.2})
    r = Rpo().evaluate(RpoParams(max="1s"), _state({"db": sparse}))
    assert r[0].status == "error" and "up to 4.30 s" in r[0].findings[0]
    # Over the objective anyway: a failure, not an error.
    over = _point(2.0).model_copy(update={"unprobed_seconds": 4.3, "rate": 0.2})
    assert Rpo().evaluate(RpoParams(max="1s"), _state({"db": over}))[0].status == "fail"
    # Quiet control: a write every 50 ms leaves 0.04 s unprobed; the measured window stands.
    dense = _point(0.5).model_copy(update={"unprobed_seconds": 0.04, "rate": 20.0})
    ok = Rpo().evaluate(RpoParams(max="1s"), _state({"db": dense}))
    assert ok[0].status == "pass" and ok[0].evidence["measured_seconds"] == 0.5


def test_recovery_point_counts_the_time_from_the_last_write_to_the_disaster() -> None:
    point = recovery_point(_acks(10), {1, 2, 3}, started_at=1.0, stopped_at=2.5)
    assert point["unprobed_seconds"] == round(2.5 - 1.9, 6)
    assert recovery_point(_acks(10), {1}, started_at=1.0)["unprobed_seconds"] is None  # not stopped by a disaster
