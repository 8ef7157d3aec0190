"""drift: what a restore test brought back is not suddenly smaller than last time.

Fidelity proves a restore holds what the backup held; it cannot tell that the backup
itself held half of yesterday's data (a job pointed at the wrong database, a truncated
export, a filter gone wrong), and a backup made by another tool has no fingerprint to be
faithful to. What it can tell is the restored size: rows per table, keys, files and
bytes per component. Compared with the previous restore test of the same source that
passed, a drop beyond the allowed share is a finding.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from engine.journal import AssertionResult

MAX_FINDINGS = 20


class DriftParams(AssertionParams):
    max_drop: float = Field(
        default=20.0,
        ge=0,
        le=100,
        description="Largest drop allowed, in percent of the previous restore test's figure, of any component's "
        "rows, keys, files, vectors or bytes, or of any table's rows.",
    )
    components: list[str] | None = Field(default=None, description="Components to compare; default: all restored.")


class Drift(Assertion):
    name: ClassVar[str] = "drift"
    Params: ClassVar[type[AssertionParams]] = DriftParams
    description: ClassVar[str] = (
        "Restore tests with --history: the restored rows per table and the keys, files, vectors and bytes per "
        "component are not smaller than in the previous passing restore test of the same source by more than "
        "max_drop percent; not compared when there is none."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if ctx.source is None:
            ctx.add(("assertions", index), "drift compares restore tests of one source: it needs a `source:`")
        ctx.check_components(("assertions", index, self.name, "components"), params.get("components"))

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, DriftParams)
        previous = state.previous_restore_test
        if previous is None or not previous.content:
            why = state.previous_why or "no earlier passing restore test of this source is recorded"
            return [result("drift", self.name, "not_compared", f"not compared: {why}")]
        # A component that came back empty has no content: it is compared too (found by
        # review: it was left out, so a backup that shrank to nothing passed drift).
        names = params.components or [n for n in state.results if state.results[n].content or n in previous.content]
        unmeasured = {n: state.fingerprint_errors[n] for n in names if n in state.fingerprint_errors}
        if unmeasured:
            why = "; ".join(f"{n}: {e}" for n, e in unmeasured.items())
            return [result("drift", self.name, "error", f"what came back could not be measured: {why}")]
        findings: list[str] = []
        compared = 0
        for name in names:
            before = previous.content.get(name)
            if before is None:
                continue
            now = state.results[name]
            compared += 1
            findings += _drops(name, before.get("content", {}), now.content, params.max_drop, vanished=True)
            findings += _drops(name, before.get("rows", {}), now.row_counts, params.max_drop, vanished=True)
        evidence = {
            "previous_run": previous.started_at.isoformat(),
            "previous_backup_id": previous.backup_id,
            "components_compared": compared,
            "max_drop_percent": params.max_drop,
        }
        if compared == 0:
            return [
                result("drift", self.name, "not_compared", "not compared: no component of this test was in the previous one")
            ]
        if findings:
            shown = findings[:MAX_FINDINGS] + ([f"and {len(findings) - MAX_FINDINGS} more"] if len(findings) > MAX_FINDINGS else [])
            return [
                result(
                    "drift",
                    self.name,
                    "fail",
                    f"{len(findings)} figure(s) dropped more than {params.max_drop:g}% since the restore test of "
                    f"{previous.started_at:%Y-%m-%d %H:%M} UTC",
                    evidence=evidence,
                    findings=shown,
                )
            ]
        of_backup = f" (backup {previous.backup_id})" if previous.backup_id != "foreign backups" else ""
        summary = (
            f"{compared} component(s) within {params.max_drop:g}% of the restore test of "
            f"{previous.started_at:%Y-%m-%d %H:%M} UTC{of_backup}"
        )
        return [result("drift", self.name, "pass", summary, evidence=evidence)]


def _drops(name: str, before: dict[str, int], now: dict[str, int], max_drop: float, vanished: bool = False) -> list[str]:
    """Each figure that fell by more than ``max_drop`` percent (or, with ``vanished``, disappeared)."""
    out = []
    for key, old in sorted(before.items()):
        new = now.get(key)
        if new is None:
            if vanished and old > 0:
                out.append(f"{name}: {key} is gone (had {old:,})")
            continue
        if old > 0 and (old - new) * 100.0 / old > max_drop:
            out.append(f"{name}: {key} {old:,} → {new:,} ({(new - old) * 100.0 / old:+.1f}%)")
    return out
