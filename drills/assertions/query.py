"""query: a business check on a restored database, in SQL, read-only, with a timeout.

"Yesterday's orders are there" is the question a restore must answer, not "the bytes
match". The SQL runs in a read-only transaction (so a check cannot change what it
checks) with a statement timeout, and its result is judged against ``expect``. A result
that does not meet it fails the drill (exit 1) with what was read; SQL that cannot run
is an error (exit 2), except a table or column that does not exist in the restored
database: that is what a broken restore looks like, so it fails; but it read nothing (a
typo looks the same), so under a negative control (``outcome: fail``) it is an error,
never a detection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from drills.assertions.base import Assertion, AssertionParams, CheckParams, DrillState, result, unrestored_sandbox
from drills.assertions.expect import MAX_ROWS, Unjudgeable, describe, judge, shown, single_value
from drills.assertions.sql_text import statements_in
from drills.crosscheck import CheckContext
from drills.durations import Duration
from engine.components.postgres import PostgresComponent
from engine.errors import ConfigError, DrproofError
from engine.journal import AssertionResult
from engine.lazy import lazy
from engine.redaction import redact

if TYPE_CHECKING:
    import psycopg2
else:
    psycopg2 = lazy("psycopg2")

SHOWN_ROWS = 10  # rows of the result shown in the evidence (at most MAX_ROWS + 1 are read)
# SQLSTATEs that mean "the restored database lacks what the check reads": a failure of the
# restore, not of the check (undefined table, column, function, schema).
MISSING_OBJECT = {"42P01", "42703", "42883", "3F000"}


class QueryParams(CheckParams):
    target: str = Field(description="A PostgreSQL component (any postgres kind).")
    sql: str = Field(min_length=1, description="One SQL statement, run read-only.")
    timeout: Duration = Field(default=30.0, description="Statement timeout, e.g. 30s.")
    name: str | None = Field(default=None, description="Name in the report; default: the target.")

    @field_validator("sql")
    @classmethod
    def _one_statement(cls, sql: str) -> str:
        problem = one_statement_problem(sql)
        if problem:
            raise ValueError(problem)
        return sql


def one_statement_problem(sql: str) -> str | None:
    """Why ``sql`` is not exactly one statement, or None.

    A second statement could end the read-only transaction (``COMMIT; DELETE ...``) and
    write in the next one: the server runs every statement of the text it is sent.
    """
    count = statements_in(sql)
    if count == 1:
        return None
    if count < 0:
        return "the SQL has a quote or comment that never closes, so where its statement ends cannot be told"
    return (
        f"the SQL holds {count} statements; a query check runs exactly one (a second one could end the read-only "
        "transaction and write): split it into several checks"
    )


class Query(Assertion):
    name: ClassVar[str] = "query"
    Params: ClassVar[type[AssertionParams]] = QueryParams
    description: ClassVar[str] = (
        "A user's SQL check on a restored PostgreSQL component, in a read-only transaction with a timeout, "
        "judged against an expectation; a result that misses it fails, SQL that cannot run is an error."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        ctx.check_component_of(("assertions", index, self.name, "target"), params.get("target"), "postgres", "PostgreSQL")

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, QueryParams)
        rid = f"query[{params.name or params.target}]"
        comp = state.components.get(params.target)
        if not isinstance(comp, PostgresComponent):
            return [result(rid, self.name, "error", f"{params.target!r} is not a PostgreSQL component of this run")]
        evidence: dict[str, Any] = {"sql": redact(params.sql), "expect": describe(params.expect), "timeout_seconds": params.timeout}
        empty = unrestored_sandbox(state, params.target)
        if empty is not None:
            return [result(rid, self.name, "not_compared", empty, evidence={**evidence, "measured": False})]
        words = isinstance(params.expect, str) and not single_value(params.expect)  # rows / no rows
        try:
            rows, one_row = _read_only(comp, params.sql, params.timeout, explain=words)
        except psycopg2.Error as exc:
            text = redact(" ".join(str(exc).split()))
            evidence["sqlstate"] = exc.pgcode
            if exc.pgcode in MISSING_OBJECT:
                # A failed restore, but the query read nothing, and a typo looks the same: marked
                # unmeasured, so a negative control (outcome: fail) does not count it as a detection.
                # Found by review: `custmer_id` under outcome: fail made the drill pass.
                evidence["measured"] = False
                summary = f"{params.target}: what the query reads is missing from the restored database: {text}"
                return [result(rid, self.name, "fail", summary, evidence=evidence, findings=[text])]
            return [result(rid, self.name, "error", f"{params.target}: the query could not run: {text}", evidence=evidence)]
        except DrproofError as exc:
            return [result(rid, self.name, "error", f"{params.target}: could not run the query: {exc}", evidence=evidence)]
        return [_verdict(rid, params, rows, one_row, evidence)]


def _verdict(
    rid: str, params: QueryParams, rows: list[tuple[Any, ...]] | None, one_row: str | None, evidence: dict[str, Any]
) -> AssertionResult:
    """The result of what the query read: a pass or fail only when ``expect`` can judge it."""
    if rows is None:
        # SET, DO, CALL ...: no result at all, which `no rows` would have met (found by review).
        summary = f"{params.target}: the statement returned no result set, so there is nothing to judge: give a SELECT"
        return result(rid, Query.name, "error", summary, evidence=evidence)
    if one_row is not None:
        evidence["measured"] = False
        summary = (
            f"{params.target}: '{describe(params.expect)}' cannot fail on this query: it is {one_row}; "
            "judge its value instead (expect: '> 0', '= 42', {equals: ...})"
        )
        return result(rid, Query.name, "error", summary, evidence=evidence)
    evidence.update(
        rows_read=min(len(rows), MAX_ROWS),
        rows_truncated=len(rows) > MAX_ROWS,
        first_rows=[[shown(v) for v in row] for row in rows[:SHOWN_ROWS]],
    )
    why = _not_one_value(params, rows)
    if why is not None:
        evidence["measured"] = False
        return result(rid, Query.name, "error", f"{params.target}: {why}", evidence=evidence)
    value = rows[0][0] if rows and rows[0] else None
    try:
        held, seen = judge(params.expect, value, rows)
    except Unjudgeable as exc:
        evidence["measured"] = False
        summary = f"{params.target}: {exc}: cast it to text in the SQL (::text), or select one element"
        return result(rid, Query.name, "error", summary, evidence=evidence)
    if held:
        return result(rid, Query.name, "pass", f"{params.target}: {seen} meets '{describe(params.expect)}'", evidence=evidence)
    finding = f"expected {describe(params.expect)}, got {seen}"
    return result(rid, Query.name, "fail", f"{params.target}: {finding}", evidence=evidence, findings=[finding])


def _not_one_value(params: QueryParams, rows: list[tuple[Any, ...]]) -> str | None:
    """Why an expectation of one value cannot judge ``rows``, or None.

    Found by review: ``> 0`` judged only the first value of a result of several rows or
    columns, so `SELECT n FROM daily_counts` passed on its first day whatever the others held.
    """
    if not single_value(params.expect) or (len(rows) <= 1 and all(len(row) <= 1 for row in rows)):
        return None
    shape = f"{'more than ' + str(MAX_ROWS) if len(rows) > MAX_ROWS else len(rows)} row(s) of {len(rows[0])} column(s)"
    return (
        f"the query returned {shape}, and '{describe(params.expect)}' judges one value: make it return one "
        "(count(*), an aggregate, LIMIT 1, one column), or expect {rows: [...]}"
    )


def _read_only(
    comp: PostgresComponent, sql: str, timeout: float, explain: bool = False
) -> tuple[list[tuple[Any, ...]] | None, str | None]:
    """The first MAX_ROWS + 1 rows (one more than a `{rows: ...}` may list, so a longer result never
    matches it), None when the statement returns no result set; and, with ``explain``, why its
    plan always returns exactly one row (None when it can return none or several)."""
    problem = one_statement_problem(sql)  # checked at load too; here for callers that built params directly
    if problem:
        raise ConfigError(problem)
    conn = comp.connect()
    try:
        # The statement count above assumes standard strings (a restored database may set
        # them off, and then 'a\';DELETE...' would be two statements to the server).
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET standard_conforming_strings = on")
        conn.autocommit = False
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
            one_row = _always_one_row(cur, sql) if explain else None
            cur.execute(sql)
            rows = list(cur.fetchmany(MAX_ROWS + 1)) if cur.description is not None else None
            return rows, one_row
    finally:
        _end(conn)


def _end(conn: Any) -> None:
    """Roll the check's transaction back and close its connection, whatever state the connection is in.

    Found by review (s32): on a connection the server had ended (``pg_terminate_backend``,
    a restart), the rollback raised "connection already closed", which replaced the
    query's own error in the verdict, and ``close`` was never reached.
    """
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg2.Error:
        pass  # the connection broke: the query's own outcome (or error) is what the verdict says
    finally:
        conn.close()


def _always_one_row(cur: Any, sql: str) -> str | None:
    """Why the plan of ``sql`` returns exactly one row whatever the data, or None.

    Found by review: `SELECT count(*) FROM orders` under the default `rows` passed on an
    empty restored table (an aggregate returns its one row either way). The plan, not a
    reading of the SQL, says so; EXPLAIN without ANALYZE runs nothing. A statement EXPLAIN
    refuses is left to run as it is.
    """
    cur.execute("SAVEPOINT drproof_explain")
    try:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql)
        row = cur.fetchone()
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT drproof_explain")
        return None
    cur.execute("RELEASE SAVEPOINT drproof_explain")
    try:
        plan = row[0][0]["Plan"]
    except (TypeError, LookupError):
        return None
    return _one_row_plan(plan) if isinstance(plan, dict) else None


def _one_row_plan(plan: dict[str, Any]) -> str | None:
    kind = plan.get("Node Type")
    if kind == "Aggregate" and plan.get("Strategy") == "Plain" and "Filter" not in plan:  # no GROUP BY, no HAVING
        return "an aggregate without GROUP BY (count(*), max(...)), which returns one row whether the table holds any or not"
    outer = [p for p in plan.get("Plans", []) if isinstance(p, dict) and p.get("Parent Relationship") == "Outer"]
    if kind == "Result" and "One-Time Filter" not in plan and not outer:
        return "a SELECT of expressions with no FROM (EXISTS(...), a constant), which returns one row whatever they are"
    return None
