"""The pieces of user checks that need no server: expectations, addresses, read-only commands,
restore plans."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drills import plan
from drills.assertions.expect import ExpectSpec, check_short_form, judge
from drills.assertions.http_check import HttpParams
from drills.assertions.redis_check import RedisCheckParams
from drills.validation import validate
from drills.yamlsource import load


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from([">", ">=", "<", "<=", "=", "!="]))
def test_a_comparison_holds_exactly_when_python_says_so(value: int, limit: int, op: str) -> None:
    expected = {
        ">": value > limit,
        ">=": value >= limit,
        "<": value < limit,
        "<=": value <= limit,
        "=": value == limit,
        "!=": value != limit,
    }[op]
    assert judge(check_short_form(f"{op} {limit}"), value)[0] is expected
    assert judge(check_short_form(f"{op}{limit}"), str(value).encode())[0] is expected  # bytes from Redis


def test_expectations_that_cannot_be_met_by_accident() -> None:
    assert judge("> 0", None) == (False, "nil (no value)") and judge("> 0", "") == (False, "'', not a number")
    assert judge("> 0", None, []) == (False, "no rows") and judge("= 0", None, [(None,)]) == (False, "NULL")
    # Nothing read is not the empty text (review: no row or a NULL met `equals: ""`).
    assert judge(ExpectSpec(equals=""), None, []) == (False, "no rows")
    assert judge(ExpectSpec(matches=".*"), None, [(None,)]) == (False, "NULL")
    assert judge(ExpectSpec(equals=""), "")[0] is True and judge(ExpectSpec(contains=""), "x")[0] is True
    assert judge("> 0", "NaN")[0] is False
    assert judge("rows", None, []) == (False, "0 row(s)") and judge("no rows", None, [])[0] is True
    assert judge(ExpectSpec(rows=[[1, "a"]]), None, [(1, "a")])[0] is True
    assert judge(ExpectSpec(rows=[[1, "a"]]), None, [(1, "a"), (2, "b")])[0] is False
    assert judge(ExpectSpec(matches=r"^ok$"), b"ok")[0] is True and judge(ExpectSpec(equals=5), "5")[0] is True
    for bad in ("about 5", "> five", "", "pass"):
        with pytest.raises(ValueError, match="not understood"):
            check_short_form(bad)
    with pytest.raises(ValidationError, match="exactly one"):
        ExpectSpec(equals=1, contains="x")
    with pytest.raises(ValidationError, match="not a regular expression"):
        ExpectSpec(matches="(")


def test_http_checks_only_reach_this_machine() -> None:
    for url in ("http://127.0.0.1:8080/health", "http://localhost/x", "http://[::1]:81/"):
        assert HttpParams(url=url).url == url
    for url in ("http://10.0.0.5/health", "http://example.com/", "file:///etc/passwd", "ftp://127.0.0.1/"):
        with pytest.raises(ValidationError, match="only request this machine"):
            HttpParams(url=url)
    with pytest.raises(ValidationError, match="either url or target"):
        HttpParams(url="http://127.0.0.1/", target="web")


def test_redis_checks_only_run_read_only_commands() -> None:
    assert RedisCheckParams(target="c", command=["hget", "k", "f"]).command[0] == "hget"
    for command in (["SET", "k", "v"], ["FLUSHALL"], ["DEL", "k"], ["CONFIG", "SET", "x", "y"], ["EVAL", "1", "0"]):
        with pytest.raises(ValidationError, match="not one of the read-only commands"):
            RedisCheckParams(target="c", command=command)


def test_a_plan_restores_independent_components_together_and_dependents_after() -> None:
    deps = {"web": {"db", "cache"}, "worker": {"web"}}
    running: set[str] = set()
    overlap: list[set[str]] = []
    lock = threading.Lock()
    finished: list[str] = []

    def work(name: str) -> bool:
        with lock:
            running.add(name)
            overlap.append(set(running))
        time.sleep(0.1)
        with lock:
            running.discard(name)
            finished.append(name)
        return True

    plan.run(["worker", "web", "db", "cache"], deps, 2, work, lambda n, f: pytest.fail(f"{n} skipped"))
    assert {"db", "cache"} in overlap  # restored at the same time
    assert finished.index("web") > max(finished.index("db"), finished.index("cache"))
    assert finished[-1] == "worker"


def test_a_component_whose_dependency_failed_is_not_attempted() -> None:
    skipped: dict[str, list[str]] = {}
    done: list[str] = []
    plan.run(
        ["db", "cache", "web"],
        {"web": {"db", "cache"}},
        1,
        lambda n: done.append(n) or n != "cache",
        lambda n, failed: skipped.setdefault(n, failed),
    )
    assert done == ["db", "cache"] and skipped == {"web": ["cache"]}


def test_the_critical_path_follows_what_finished_last() -> None:
    deps = {"web": {"db", "cache"}, "db": {"disk"}}
    assert plan.critical_path({"disk": 1.0, "db": 3.0, "cache": 2.0, "web": 4.0}, deps) == ["disk", "db", "web"]
    assert plan.cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert plan.cycle(deps) is None


WRONG_KINDS = """\
name: wrong-kinds
objectives: {rto: 1m}
stack:
  components:
    db: {kind: postgres}
    cache: {kind: redis}
steps:
  - backup: {name: b}
  - sql: {target: cache, statement: "select 1"}
assertions:
  - query: {target: cache, sql: "select 1", expect: rows}
  - redis: {target: db, command: [DBSIZE], expect: ">= 0"}
  - query: {target: db, sql: "select 1", expect: rows}
  - redis: {target: cache, command: [DBSIZE], expect: ">= 0"}
"""


def test_checks_and_sql_steps_refuse_a_target_of_another_kind(tmp_path: Path) -> None:
    """Negative control: each wrong target is named at its own line; the right ones pass quietly."""
    path = tmp_path / "wrong-kinds.yaml"
    path.write_text(WRONG_KINDS, encoding="utf-8")
    _, problems = validate(load(path))
    found = sorted((p.line, p.message) for p in problems)
    assert found == [
        (9, "'cache' is a redis, not a PostgreSQL component"),
        (11, "'cache' is a redis, not a PostgreSQL component"),
        (12, "'db' is a postgres, not a Redis component"),
    ], found


def test_a_query_of_several_statements_is_refused_at_its_line(tmp_path: Path) -> None:
    """A second statement could end the check's read-only transaction and write (review)."""
    path = tmp_path / "two.yaml"
    path.write_text(
        WRONG_KINDS.split("assertions:")[0].replace("target: cache", "target: db", 1)
        + "assertions:\n"
        + '  - query: {target: db, sql: "select 1; -- one statement, a comment after it"}\n'
        + '  - query: {target: db, sql: "COMMIT; DELETE FROM orders; SELECT 1"}\n',
        encoding="utf-8",
    )
    _, problems = validate(load(path))
    assert [(p.line, "holds 3 statements" in p.message) for p in problems] == [(12, True)], problems
