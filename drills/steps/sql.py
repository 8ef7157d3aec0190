"""sql: change a database on purpose (a migration, a fix) that earlier backups do not hold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from drills.crosscheck import CheckContext
from drills.steps.base import StepFailed, StepKind
from drills.strict import Name, Strict
from engine.components.postgres import PostgresComponent
from engine.lazy import lazy

if TYPE_CHECKING:
    import psycopg2

    from drills.runner import DrillRunner
else:
    psycopg2 = lazy("psycopg2")


class SqlSpec(Strict):
    target: Name = Field(description="A PostgreSQL component (any postgres kind).")
    statement: str = Field(min_length=1, description="SQL run in one transaction, e.g. a migration.")


class SqlStep(Strict):
    """Change a database on purpose (a migration, a fix): a change the earlier backups do not hold."""

    sql: SqlSpec


class Sql(StepKind):
    name: ClassVar[str] = "sql"
    model: ClassVar[type[Strict]] = SqlStep

    def cross_check(self, ctx: CheckContext, index: int, spec: dict[str, Any]) -> None:
        ctx.check_component_of(("steps", index, self.name, "target"), spec.get("target"), "postgres", "PostgreSQL")

    def run(self, run: DrillRunner, index: int, spec: Any) -> None:
        state = run.state
        assert state is not None
        comp = state.components[spec.target]
        with run.phase(f"sql on {spec.target}", "change", step=index + 1, component=spec.target) as rec:
            if not isinstance(comp, PostgresComponent):
                raise StepFailed(f"step {index + 1}: {spec.target!r} is a {comp.name}, not a PostgreSQL component")
            conn = comp.connect()
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(spec.statement)
                    rec["detail"] = f"{cur.statusmessage} ({cur.rowcount} rows)"
            except psycopg2.Error as exc:
                raise StepFailed(f"step {index + 1}: SQL on {spec.target!r} failed: {str(exc).strip()}") from exc
            finally:
                conn.close()
