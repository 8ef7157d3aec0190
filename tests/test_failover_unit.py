"""Failover measurements from acknowledged writes, and their judgement, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drills.assertions.base import DrillState
from drills.assertions.failover import FailoverOutcome, FailoverParams
from drills.loader import load_scenario
from drills.workload.base import Ack
from drills.workload.failover import first_ack, lost_before, split_brain, tenures
from drills.workload.run import recovery_point
from engine.components.redis_digest import CLUSTER_SCRIPT, SCRIPT
from engine.errors import ValidationFailed
from engine.runtime import DockerRuntime, LocalRuntime, refusal

OLD, NEW = "127.0.0.1:1000", "127.0.0.1:2000"


def _acks(spans: list[tuple[str, float, float]], step: float = 0.1) -> list[Ack]:
    """Writes every ``step`` seconds acknowledged by each node over its span, numbered in time order."""
    times = sorted((t, node) for node, a, b in spans for t in _range(a, b, step))
    return [Ack(seq=i + 1, offset=t, node=node) for i, (t, node) in enumerate(times)]


def _range(a: float, b: float, step: float) -> list[float]:
    n = round((b - a) / step)
    return [round(a + i * step, 6) for i in range(n + 1)]


# -- which node took which writes -------------------------------------------------------------
def test_a_handover_is_not_a_split_brain() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    assert split_brain(acks, after=0.0) == []  # quiet control
    first = first_ack(acks, after=5.5, not_by=OLD)
    assert first is not None and first.node == NEW and first.offset == 6.0


def test_two_nodes_taking_writes_at_once_are_a_split_brain() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 3.0, 9.0)])
    [found] = split_brain(acks, after=0.0)  # negative control
    assert found["nodes"] == [OLD, NEW]
    assert found["overlap_seconds"] == pytest.approx(2.0)
    assert found["writes"] == {OLD: 41, NEW: 61}


def test_writes_before_the_fault_do_not_count_as_a_second_primary() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    assert [t.node for t in tenures(acks, after=5.5)] == [NEW]


def test_lost_before_names_only_writes_of_the_stretch_that_are_gone() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    survivors = {a.seq for a in acks if a.offset < 3.0 or a.node == NEW}
    lost = lost_before(acks, since=0.0, until=6.0, survivors=survivors)
    assert [a.offset for a in lost] == _range(3.0, 5.0, 0.1)


# -- the recovery point across a failover ------------------------------------------------------
def test_writes_lost_in_an_async_failover_are_a_window_not_holes() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    survivors = {a.seq for a in acks if a.offset <= 3.0 or a.node == NEW}  # 3.0 .. 5.0 never replicated
    point = recovery_point(acks, survivors, started_at=1.0, takeovers=[6.0])
    assert point["lost_writes"] == 20 and point["hole_count"] == 0
    assert point["loss_window_seconds"] == pytest.approx(2.0)
    assert "lost in failover" in point["note"]


def test_the_same_loss_without_the_takeover_is_holes() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    survivors = {a.seq for a in acks if a.offset <= 3.0 or a.node == NEW}
    point = recovery_point(acks, survivors, started_at=1.0)
    assert point["hole_count"] == 20


def test_a_synchronous_failover_that_kept_everything_has_no_window() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    point = recovery_point(acks, {a.seq for a in acks}, started_at=1.0, takeovers=[6.0])
    assert point["lost_writes"] == 0 and point["loss_window_seconds"] == 0 and point["hole_count"] == 0


def test_writes_a_second_primary_took_after_the_takeover_and_lost_are_holes() -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0), (OLD, 7.05, 8.05)])
    survivors = {a.seq for a in acks if not (a.node == OLD and a.offset > 6.0)}
    point = recovery_point(acks, survivors, started_at=1.0, takeovers=[6.0])
    assert point["hole_count"] == 11


@given(lost_from=st.floats(1.5, 4.9), takeover=st.floats(5.05, 5.95))
def test_the_failover_window_spans_the_lost_writes(lost_from: float, takeover: float) -> None:
    acks = _acks([(OLD, 1.0, 5.0), (NEW, 6.0, 9.0)])
    survivors = {a.seq for a in acks if a.offset < lost_from or a.node == NEW}
    point = recovery_point(acks, survivors, started_at=1.0, takeovers=[takeover])
    kept = max(a.offset for a in acks if a.node == OLD and a.offset < lost_from)
    assert point["loss_window_seconds"] == pytest.approx(5.0 - kept, abs=1e-6)
    assert point["hole_count"] == 0


# -- the failover_outcome check ------------------------------------------------------------------
def _record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "step": 6,
        "name": "kill_primary",
        "target": "db",
        "fault": "kill_primary",
        "strategy": "promote",
        "old_primary": "node0",
        "new_primary": "node1",
        "recovered_by": "promote",
        "rto_seconds": 1.2,
        "timeout_seconds": 60.0,
        "lost_writes": 0,
        "lost_seqs": [],
        "split_brain": [],
        "most_primaries_at_once": 1,
    }
    record.update(changes)
    return record


def _judge(record: dict[str, Any], **params: Any) -> Any:
    state = DrillState(repository=None)  # type: ignore[arg-type]
    state.failovers.append(record)
    [result] = FailoverOutcome().evaluate(FailoverParams(**params), state)
    return result


def test_a_clean_failover_passes() -> None:
    result = _judge(_record(rejoin={"ok": True, "node": "node0", "content_equal": True, "old_timeline_writes": 0}))
    assert result.status == "pass" and result.findings == []
    assert result.evidence["new_primary"] == "node1"


@pytest.mark.parametrize(
    ("changes", "params", "finding"),
    [
        ({"rto_seconds": None}, {}, "no node other than node0 acknowledged a write within 60 s"),
        ({"rto_seconds": 20.0}, {"max_rto": "15s"}, "failover took 20.00 s, over the 15s allowed"),
        ({}, {"recovered_by": "automatic"}, "the new primary came by promote, not by automatic"),
        (
            {
                "split_brain": [
                    {"nodes": ["node0", "node1"], "overlap_seconds": 2.0, "writes": {"node0": 5, "node1": 9}}
                ]
            },
            {},
            "split brain: node0 and node1 both acknowledged writes during 2.00 s",
        ),
        ({"most_primaries_at_once": 2}, {}, "2 nodes answered as primary at the same time"),
        ({"lost_writes": 3, "lost_seqs": [7, 8, 9]}, {"max_lost_writes": 0}, "lost 3 acknowledged write(s)"),
        ({"rejoin": {"ok": False, "node": "node0", "error": "boom"}}, {}, "node0 did not rejoin: boom"),
        (
            {
                "rejoin": {
                    "ok": True,
                    "node": "node0",
                    "content_equal": False,
                    "differences": ["x"],
                    "old_timeline_writes": 0,
                }
            },
            {},
            "node0 rejoined but differs from the new primary",
        ),
        (
            {
                "rejoin": {
                    "ok": True,
                    "node": "node0",
                    "content_equal": True,
                    "old_timeline_writes": 2,
                    "old_timeline_examples": [3, 4],
                }
            },
            {},
            "still holding 2 write(s) of its abandoned history",
        ),
    ],
)
def test_each_failure_is_a_finding(changes: dict[str, Any], params: dict[str, Any], finding: str) -> None:
    result = _judge(_record(**changes), **params)
    assert result.status == "fail"
    assert any(finding in f for f in result.findings), result.findings


def test_no_failover_step_is_an_error_not_a_pass() -> None:
    state = DrillState(repository=None)  # type: ignore[arg-type]
    [result] = FailoverOutcome().evaluate(FailoverParams(), state)
    assert result.status == "error"


# -- scenarios that cannot work are refused before anything starts ---------------------------------
def _scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\ndescription: t\nobjectives: {rto: 30s, rpo: 0s}\nstack:\n  components:\n"
        "    db: {kind: postgres-replicated}\n    plain: {kind: postgres}\n" + body
    )
    return path


def test_a_failover_without_a_workload_is_refused(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "steps:\n  - failover: {target: db, fault: kill_primary}\nassertions:\n  - rto\n")
    with pytest.raises(ValidationFailed, match="failover needs a workload step before it"):
        load_scenario(path)


def test_a_failover_on_a_single_server_is_refused(tmp_path: Path) -> None:
    body = "steps:\n  - workload: {}\n  - failover: {target: plain, fault: kill_primary}\nassertions:\n  - rto\n"
    with pytest.raises(ValidationFailed, match="'plain' is a postgres; kill_primary hits a replicated kind"):
        load_scenario(_scenario(tmp_path, body))


def test_rto_and_rpo_accept_a_failover_step(tmp_path: Path) -> None:
    body = (
        "steps:\n  - workload: {}\n  - failover: {target: db, fault: pause_primary, seconds: 2}\n"
        "assertions:\n  - rto\n  - rpo\n  - failover_outcome\n"
    )
    assert load_scenario(_scenario(tmp_path, body)).scenario.name == "t"


def test_topologies_need_the_replicas_capability() -> None:
    assert refusal(LocalRuntime, frozenset({"replicas"}), "postgres-replicated") is None
    assert refusal(DockerRuntime, frozenset({"replicas"}), "redis-sentinel") == (
        "needs replicas, redis-sentinel servers (runtimes that have it: local)"
    )


def test_the_cluster_script_is_the_same_script_read_key_by_key() -> None:
    assert CLUSTER_SCRIPT.startswith("#!lua flags=no-writes,allow-cross-slot-keys\n")
    assert "MGET" in SCRIPT and "MGET" not in CLUSTER_SCRIPT
    assert CLUSTER_SCRIPT.count("\n") == SCRIPT.count("\n") - 2  # 9 lines of MGET became 6, plus the flags line


def test_a_split_brain_names_its_nodes_in_one_order_whichever_wrote_first() -> None:
    """The record lists the pair in the order the nodes first wrote, which timing decides (a CI run under load)."""
    from drills.assertions.failover import _findings

    record: dict[str, Any] = {"rto_seconds": 1.0, "recovered_by": "promote"}
    for nodes in (["node1", "node0"], ["node0", "node1"]):
        record["split_brain"] = [{"nodes": nodes, "overlap_seconds": 3.5, "writes": {"node0": 1, "node1": 2}}]
        [finding] = _findings(FailoverParams(), record)
        assert finding.startswith("split brain: node0 and node1 both acknowledged writes during 3.50 s")
