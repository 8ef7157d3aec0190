"""canary: the restore brought back *this* backup, as the sentinel planted in it proves.

The backup engine planted a random value in each component just before the backup and
recorded only its SHA-256 and the moment (``engine.canary``). Reading the value back from
the restored component and hashing it proves which backup was restored (not an older one
that happens to be faithful to itself) and how old it is. The value is never shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from drills.durations import format_duration
from engine import canary
from engine.errors import DrproofError
from engine.journal import AssertionResult
from engine.manifest import Manifest


class CanaryParams(AssertionParams):
    components: list[str] | None = Field(
        default=None, description="Components to check; default: every restored one whose backup planted a canary."
    )


class Canary(Assertion):
    name: ClassVar[str] = "canary"
    Params: ClassVar[type[AssertionParams]] = CanaryParams
    description: ClassVar[str] = (
        "The sentinel planted at backup time (`backup: {canary: true}`, or `canary: true` in backup-config) is "
        "back, byte for byte: the restore brought back that very backup; its age is reported."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        ctx.check_components(("assertions", index, self.name, "components"), params.get("components"))
        if not ctx.backups:
            ctx.add(("assertions", index), "canary needs a backup step with `canary: true`, or a source")
        if ctx.foreign:
            ctx.add(("assertions", index), "canary needs a backup drproof took: other tools plant none")

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, CanaryParams)
        planted = _planted(state)
        names = params.components or list(planted)
        if not names:
            return [result("canary", self.name, "error", "no restored backup planted a canary (take it with canary: true)")]
        return [self._one(name, planted.get(name), state) for name in names]

    def _one(self, name: str, planted: tuple[Manifest, dict[str, Any]] | None, state: DrillState) -> AssertionResult:
        rid = f"canary[{name}]"
        if planted is None:
            return result(rid, self.name, "error", f"{name}: the backup it was restored from planted no canary")
        manifest, record = planted
        evidence = {"backup_id": manifest.id, "planted_at": record["planted_at"], "where": record["where"]}
        try:
            value = state.components[name].read_canary()
        except (DrproofError, NotImplementedError) as exc:
            return result(rid, self.name, "error", f"{name}: cannot read the canary: {exc}", evidence=evidence)
        except Exception as exc:  # a driver error: the component does not answer
            return result(rid, self.name, "error", f"{name}: cannot read the canary: {type(exc).__name__}", evidence=evidence)
        if value is None:
            finding = f"no canary in {record['where']}: the restored state is not from backup {manifest.id}"
            return result(rid, self.name, "fail", f"{name}: {finding}", evidence=evidence, findings=[finding])
        if canary.digest(value) != record["sha256"]:
            finding = f"the canary in {record['where']} is another backup's: this is not backup {manifest.id}"
            return result(rid, self.name, "fail", f"{name}: {finding}", evidence=evidence, findings=[finding])
        age = (datetime.now(UTC) - datetime.fromisoformat(record["planted_at"])).total_seconds()
        evidence["age_seconds"] = round(age, 3)
        summary = f"{name}: the canary of backup {manifest.id} is back ({format_duration(max(round(age), 0))} old)"
        return result(rid, self.name, "pass", summary, evidence=evidence)


def _planted(state: DrillState) -> dict[str, tuple[Manifest, dict[str, Any]]]:
    """For each component, the backup it was last restored from and that backup's canary record."""
    out: dict[str, tuple[Manifest, dict[str, Any]]] = {}
    for attempt in state.restores:
        manifest = state.backups.get(attempt.backup)
        if attempt.outcome != "ok" or manifest is None:
            continue
        try:
            record = manifest.component(attempt.component).details.get("canary")
        except KeyError:
            continue
        if isinstance(record, dict) and "sha256" in record:
            out[attempt.component] = (manifest, record)
        else:
            out.pop(attempt.component, None)
    return out
