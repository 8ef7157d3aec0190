"""Retention plans: properties that must hold for any history of backups and any policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.manifest import ComponentRecord, Manifest
from engine.retention import Policy, plan

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _manifest(i: int, hours: int, comps: list[str]) -> Manifest:
    t = BASE + timedelta(hours=hours)
    return Manifest(
        id=f"{i:04d}",
        created_at=t,
        completed_at=t,
        artifacts=[],
        components=[ComponentRecord(name=c, kind="volumes", artifacts=[]) for c in comps],
    )


histories = st.lists(
    st.tuples(
        st.integers(0, 24 * 400),
        st.lists(st.sampled_from(["db", "cache", "files"]), min_size=1, unique=True),
        st.booleans(),
    ),
    max_size=60,
)
policies = st.builds(
    Policy, keep_last=st.integers(0, 5), daily=st.integers(0, 7), weekly=st.integers(0, 5), monthly=st.integers(0, 12)
)


def _setup(history: list[tuple[int, list[str], bool]]) -> tuple[list[Manifest], set[str]]:
    manifests = [_manifest(i, h, comps) for i, (h, comps, _) in enumerate(history)]
    verified = {m.id for m, (_, _, ok) in zip(manifests, history, strict=True) if ok}
    return manifests, verified


@settings(max_examples=300, deadline=None)
@given(histories, policies)
def test_plan_invariants(history: list[tuple[int, list[str], bool]], policy: Policy) -> None:
    manifests, verified = _setup(history)
    decisions = plan(manifests, policy, verified)
    assert sorted(d.backup_id for d in decisions) == sorted(m.id for m in manifests)
    kept = {d.backup_id for d in decisions if d.keep}
    newest_first = sorted(manifests, key=lambda m: (m.created_at, m.id), reverse=True)
    # keep_last: the newest N are always kept.
    assert {m.id for m in newest_first[: policy.keep_last]} <= kept
    # daily: the newest backup of each of the N most recent days is kept.
    days: list[str] = []
    for m in newest_first:
        day = m.created_at.date().isoformat()
        if day not in days and len(days) < policy.daily:
            days.append(day)
            assert m.id in kept
    # Safety: every component that has a verified backup keeps at least one.
    for comp in {c.name for m in manifests for c in m.components}:
        holding = {m.id for m in manifests if m.id in verified and any(c.name == comp for c in m.components)}
        if holding:
            assert holding & kept, comp
    # Every kept backup says why.
    assert all(d.reasons for d in decisions if d.keep)
    assert not any(d.reasons for d in decisions if not d.keep)


@settings(max_examples=200, deadline=None)
@given(histories, policies)
def test_plan_is_idempotent(history: list[tuple[int, list[str], bool]], policy: Policy) -> None:
    manifests, verified = _setup(history)
    kept = [
        m
        for m, d in zip(
            sorted(manifests, key=lambda m: (m.created_at, m.id), reverse=True),
            plan(manifests, policy, verified),
            strict=True,
        )
        if d.keep
    ]
    assert all(d.keep for d in plan(kept, policy, verified & {m.id for m in kept}))


def test_grandfather_father_son_example() -> None:
    # One backup a day at 02:00 for 100 days.
    manifests = [_manifest(i, 24 * i + 2, ["db"]) for i in range(100)]
    decisions = plan(manifests, Policy(daily=7, weekly=4, monthly=3), verified=set())
    kept = [d for d in decisions if d.keep]
    assert [d.backup_id for d in kept[:7]] == [f"{i:04d}" for i in range(99, 92, -1)]
    assert len(kept) <= 7 + 4 + 3
    assert any("monthly" in r for d in kept for r in d.reasons)


def test_only_verified_backup_of_a_component_survives_any_policy() -> None:
    old_files = _manifest(0, 0, ["files"])
    recent = [_manifest(i, 24 * i, ["db"]) for i in range(1, 10)]
    decisions = plan([old_files, *recent], Policy(keep_last=2), verified={"0000"})
    by_id = {d.backup_id: d for d in decisions}
    assert by_id["0000"].keep and by_id["0000"].reasons == ["only verified backup of files left"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 24 * 60), st.booleans()), min_size=1, max_size=40), policies)
def test_kept_incremental_backups_keep_their_whole_chain(history: list[tuple[int, bool]], policy: Policy) -> None:
    manifests: list[Manifest] = []
    for i, (hours, incremental) in enumerate(sorted(history)):
        m = _manifest(i, hours, ["files"])
        if incremental and manifests:
            m.components[0].parent = manifests[-1].id
        manifests.append(m)
    decisions = {d.backup_id: d for d in plan(manifests, policy, verified=set())}
    by_id = {m.id: m for m in manifests}
    for m in manifests:
        if decisions[m.id].keep:
            parent = m.components[0].parent
            while parent is not None:
                assert decisions[parent].keep, (m.id, parent)
                parent = by_id[parent].components[0].parent
