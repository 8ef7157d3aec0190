"""The catalog queries' own text: mistakes a round trip on a quiet server may not show.

``string_agg(x, ',' ORDER BY 1)`` sorts by the constant 1, not by ``x``: the list comes in
whatever order the server reads it, and a restore that reads it in another order looks
damaged (found by review in three queries; one more was written this way since). An
aggregate's ORDER BY must name what it sorts.
"""

from __future__ import annotations

import re

import pytest

from engine.components.postgres_catalog import CLASSES, ObjectClass

_POSITIONAL = re.compile(r"(string_agg|array_agg)\((?:[^()]|\([^()]*\))*ORDER BY \d")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.prefix)
@pytest.mark.parametrize("server", [130000, 150000, 160000, 170000, 180000])
@pytest.mark.parametrize("full", [True, False], ids=["scheme4", "scheme3"])
def test_no_aggregate_sorts_by_a_constant(cls: ObjectClass, server: int, full: bool) -> None:
    sql = cls.sql(server, full)
    assert not _POSITIONAL.search(sql), _POSITIONAL.search(sql)


def test_the_check_fires_on_the_mistake() -> None:
    assert _POSITIONAL.search("string_agg(pg_describe_object(c, o, 0), ';' ORDER BY 1)")
    assert not _POSITIONAL.search("string_agg(d.t, ';' ORDER BY d.t)")
