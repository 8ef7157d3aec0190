"""postgres_checks: a restored PostgreSQL database works, not only holds the right rows.

This is the one assertion that queries a live system: the properties it judges (a
sequence ahead of its data, a populated materialized view, an index that agrees with its
table) exist only in the running database, not in anything the runner records. It runs
when assertions are evaluated, after the final fingerprints and before teardown, and the
ladder's rungs roll back whatever they touch, so the fingerprints the other assertions
judge are of the database exactly as the restore left it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from engine.components.postgres import PostgresComponent
from engine.components.postgres_checks import (
    CHECK_NAMES,
    SEVERITIES,
    CheckName,
    CheckResult,
    ladder_status,
    run_checks,
)
from engine.fingerprint import Fingerprint
from engine.journal import AssertionResult

# Findings are listed worst first; a rung that could not run ranks above the minor ones,
# because it is what keeps the result from passing.
_RANK = {"critical": 0, "major": 1, "not run": 2, "minor": 3}


class PostgresChecksParams(AssertionParams):
    components: list[str] | None = Field(
        default=None,
        description="Components to check; default: every component of kind postgres or a kind derived from it.",
    )
    checks: list[CheckName] | None = Field(
        default=None,
        min_length=1,
        description="Checks to run; default: all of " + ", ".join(CHECK_NAMES) + ".",
    )


class PostgresChecks(Assertion):
    name: ClassVar[str] = "postgres_checks"
    Params: ClassVar[type[AssertionParams]] = PostgresChecksParams
    description: ClassVar[str] = (
        "Per PostgreSQL component, a ladder of checks on the restored database: row counts against the backup, "
        "sequences ahead of their data, materialized views populated, constraints and foreign keys holding, "
        "btree indexes passing amcheck, roles and extensions present. Passes only if every check ran and none "
        "found anything critical or major."
    )

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, PostgresChecksParams)
        names = params.components or [n for n, c in state.components.items() if isinstance(c, PostgresComponent)]
        if not names:
            return [result(self.name, self.name, "error", "no PostgreSQL component in this stack to check")]
        return [self._one(name, params.checks, state) for name in names]

    def _one(self, name: str, checks: list[CheckName] | None, state: DrillState) -> AssertionResult:
        rid = f"{self.name}[{name}]"
        comp = state.components.get(name)
        if comp is None:
            return result(rid, self.name, "error", f"no component named {name!r} in this stack")
        if not isinstance(comp, PostgresComponent):
            return result(
                rid, self.name, "error", f"{name} is a {comp.name} component; these checks need a PostgreSQL one"
            )
        backup_name, baseline = _baseline(name, state)
        ladder = run_checks(comp, baseline, checks)
        evidence: dict[str, Any] = {
            "backup": backup_name,
            "backup_id": state.backups[backup_name].id if backup_name else None,
            "checks": {r.name: r.describe() for r in ladder},
            "findings_by_severity": {
                s: sum(1 for r in ladder for f in r.findings if f.severity == s) for s in SEVERITIES
            },
            "measured": "on the live database when assertions were evaluated, before teardown",
        }
        findings = _findings(ladder)
        status = ladder_status(ladder)
        if status == "fail":
            counts = evidence["findings_by_severity"]
            serious = ", ".join(f"{counts[s]} {s}" for s in ("critical", "major") if counts[s])
            where = ", ".join(r.name for r in ladder if r.blocking)
            return result(
                rid, self.name, "fail", f"{name}: {serious} finding(s) in {where}", evidence=evidence, findings=findings
            )
        if status == "not_run":
            missing = [r.name for r in ladder if r.not_run is not None]
            return result(
                rid,
                self.name,
                "error",
                f"{name}: {len(missing)} of {len(ladder)} checks could not run ({', '.join(missing)}), "
                "so the database is not verified",
                evidence=evidence,
                findings=findings,
            )
        minor = evidence["findings_by_severity"]["minor"]
        against = f" against backup {backup_name}" if backup_name else ""
        return result(
            rid,
            self.name,
            "pass",
            f"{name}: all {len(ladder)} checks ran{against}; nothing critical or major"
            + (f" ({minor} minor finding(s))" if minor else ""),
            evidence=evidence,
            findings=findings,
        )


def _baseline(name: str, state: DrillState) -> tuple[str | None, Fingerprint | None]:
    """The backup the database should match: the one last restored from, else the latest holding it.

    The same choice as fidelity makes, so the two assertions never judge a component
    against different backups.
    """
    restored = [r for r in state.restores if r.component == name and r.outcome == "ok"]
    if restored:
        backup_name: str | None = restored[-1].backup
    else:
        holding = [n for n, m in state.backups.items() if any(c.name == name for c in m.components)]
        backup_name = holding[-1] if holding else None
    if backup_name is None or backup_name not in state.backups:
        return None, None
    return backup_name, state.backups[backup_name].component(name).fingerprint


def _findings(ladder: list[CheckResult]) -> list[str]:
    ranked: list[tuple[int, int, str]] = []
    for order, r in enumerate(ladder):
        ranked += [(_RANK[f.severity], order, f.describe()) for f in r.findings]
        if r.not_run is not None:
            ranked.append((_RANK["not run"], order, f"[not run] {r.name}: {r.not_run}"))
    return [text for _, _, text in sorted(ranked, key=lambda t: t[:2])]
