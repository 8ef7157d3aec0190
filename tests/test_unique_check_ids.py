"""Every check's id is unique in a run (docs/results-schema.md), whatever the scenario repeats.

Two unnamed ``query`` checks of one target were both ``query[shop-db]`` in results.json and
junit.xml, one passing and one failing (found by review).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drills.runner import unique_ids
from engine.journal import AssertionResult


def _result(id: str, status: str = "pass") -> AssertionResult:
    return AssertionResult(id=id, name=id.split("[")[0], status=status, summary="s")  # type: ignore[arg-type]


def test_a_repeated_id_gets_a_number_in_the_scenarios_order() -> None:
    out = unique_ids([_result("query[shop-db]"), _result("rto[stack]"), _result("query[shop-db]", "fail")])
    assert [(a.id, a.status) for a in out] == [("query[shop-db]", "pass"), ("rto[stack]", "pass"), ("query[shop-db]#2", "fail")]


@given(st.lists(st.sampled_from(["a", "a#2", "b", "a#3", "c"]), max_size=12))
def test_ids_are_unique_and_unrepeated_ones_unchanged(ids: list[str]) -> None:
    out = unique_ids([_result(i) for i in ids])
    assert len({a.id for a in out}) == len(out)
    first = {i: ids.index(i) for i in ids}
    assert all(out[n].id == i for i, n in first.items())  # the first of each keeps its id
