"""backup_integrity: verification sees exactly the damage there is, and restore refuses it.

On an undamaged backup the check proves every stored byte still matches its manifest.
After a ``corrupt_artifact`` fault it proves the opposite direction: that verification
names the damaged artifact and that no restore went ahead from it. Both directions
matter: a checker that never fires is as useless as one that always does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext, suggest
from engine.errors import DrproofError
from engine.journal import AssertionResult


class BackupIntegrityParams(AssertionParams):
    backup: str | None = Field(
        default=None, description="Backup step name; default: the one a repository fault damaged, else the latest."
    )


class BackupIntegrity(Assertion):
    name: ClassVar[str] = "backup_integrity"
    Params: ClassVar[type[AssertionParams]] = BackupIntegrityParams
    description: ClassVar[str] = (
        "Re-hashes every stored artifact of a backup: passes when verification reports exactly the artifacts "
        "damaged on purpose (none, if none were) and every restore from a damaged artifact was refused."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        ref = params.get("backup")
        if ctx.foreign:
            ctx.add(
                ("assertions", index),
                "backup_integrity re-reads a drproof repository against its manifest; backups made by other tools "
                "have neither, and restoring them is what this test proves",
            )
        elif not ctx.backups:
            ctx.add(("assertions", index), "backup_integrity needs a backup step")
        elif isinstance(ref, str) and ref not in ctx.backups:
            ctx.add(
                ("assertions", index, self.name, "backup"),
                f"no backup step named {ref!r}; {suggest(ref, ctx.backups)}(backups: {', '.join(ctx.backups)})",
            )

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, BackupIntegrityParams)
        damaged_by_fault: dict[str, set[str]] = {}
        for d in state.disasters:
            if "backup_id" in d.effect and "artifact" in d.effect:
                damaged_by_fault.setdefault(d.effect["backup_id"], set()).add(d.effect["artifact"])
        if params.backup:
            name = params.backup
        elif damaged_by_fault:
            name = state.backup_name_of(next(iter(damaged_by_fault))) or ""
        else:
            name = list(state.backups)[-1] if state.backups else ""
        rid = f"backup_integrity[{name or '?'}]"
        if name not in state.backups:
            return [result(rid, self.name, "error", f"no backup named {name!r} was taken")]
        manifest = state.backups[name]
        try:
            report = state.repository_of(name).verify(manifest.id)
        except DrproofError as exc:
            return [result(rid, self.name, "error", f"verification could not run: {exc}")]
        expected = damaged_by_fault.get(manifest.id, set())
        found = set(report.damaged)
        evidence: dict[str, Any] = {
            "backup": name,
            "backup_id": manifest.id,
            "artifacts_checked": len(report.checks),
            "bytes_hashed": sum(c.actual_size or 0 for c in report.checks),
            "damaged_on_purpose": sorted(expected),
            "reported_damaged": sorted(found),
        }
        findings = []
        if found - expected:
            findings += [f"{a}: damaged, but no fault of this drill touched it" for a in sorted(found - expected)]
        if expected - found:
            findings += [f"{a}: damaged on purpose, but verification did not notice" for a in sorted(expected - found)]
        findings += [
            f"{r.component}: the restore from {name} (step {r.step + 1}) was expected to be refused, "
            "but the backup verified clean and the restore went ahead"
            for r in state.restores
            if r.backup_id == manifest.id and r.expected == "refused" and r.outcome == "ok"
        ]
        damaged_components = {a.split("/", 1)[0] for a in expected}
        attempts = [r for r in state.restores if r.backup_id == manifest.id and r.component in damaged_components]
        evidence["restore_attempts"] = [
            {"component": r.component, "outcome": r.outcome, "detail": r.detail} for r in attempts
        ]
        findings += [
            f"{r.component}: restored from damaged backup {name} (step {r.step + 1}) instead of being refused"
            for r in attempts
            if r.outcome == "ok"
        ]
        if findings:
            return [
                result(
                    rid,
                    self.name,
                    "fail",
                    f"backup {name}: integrity check did not hold",
                    evidence=evidence,
                    findings=findings,
                )
            ]
        if expected:
            refused = sum(1 for r in attempts if r.outcome == "refused")
            tail = f"; {refused} restore attempt(s) refused" if attempts else "; no restore was attempted from it"
            return [
                result(
                    rid,
                    self.name,
                    "pass",
                    f"backup {name}: verification named the {len(expected)} damaged artifact(s){tail}",
                    evidence=evidence,
                )
            ]
        return [
            result(
                rid,
                self.name,
                "pass",
                f"backup {name}: all {len(report.checks)} artifacts match their SHA-256 "
                f"({evidence['bytes_hashed']} bytes re-hashed)",
                evidence=evidence,
            )
        ]
