"""The slot map a Redis Cluster is read by must serve every slot exactly once (review-redistopo)."""

from __future__ import annotations

import pytest

from engine.components.redis_cluster import _by_master, _check_coverage, _spans
from engine.errors import ComponentError

A, B, C = ("127.0.0.1", 7000, "a"), ("127.0.0.1", 7001, "b"), ("127.0.0.1", 7002, "c")


def test_a_full_map_passes_and_names_each_masters_slots() -> None:
    ranges = [(0, 5460, *A), (5461, 10921, *B), (10922, 16383, *C)]
    _check_coverage(ranges, "x")  # quiet control
    assert _by_master(ranges)[A] == "0-5460"


def test_a_missing_range_is_named() -> None:
    with pytest.raises(ComponentError, match=r"serves slots 5461-10921 by no master"):
        _check_coverage([(0, 5460, *A), (10922, 16383, *C)], "x")


def test_a_slot_served_twice_is_named() -> None:
    with pytest.raises(ComponentError, match=r"serves slots 100 by no master \(or by two\)"):
        _check_coverage([(0, 16383, *A), (100, 100, *B)], "x")


def test_spans() -> None:
    assert _spans([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert _spans([]) == ""
