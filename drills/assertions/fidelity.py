"""fidelity: after the drill, each component holds exactly what its backup captured."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext, str_list
from engine.backup import recorded_fingerprint
from engine.errors import DrproofError
from engine.fingerprint import Comparison, Fingerprint, compare
from engine.journal import AssertionResult


class FidelityParams(AssertionParams):
    components: list[str] | None = Field(default=None, description="Components to check; default: all.")
    against: Literal["backup", "before_disaster"] = Field(
        default="backup",
        description="`backup`: the fingerprint of the backup restored from (did the restore reproduce it?). "
        "`before_disaster`: the fingerprint taken just before the first disaster (did recovery bring back "
        "the state that was lost?); an old backup or a lost change then fails.",
    )
    backup: str | None = Field(
        default=None,
        description="With `against: backup`: the backup step to compare with, whichever set was restored (e.g. the "
        "real newest, after `restore: {pick: latest}` let the repository choose); default: the one restored from.",
    )


class Fidelity(Assertion):
    name: ClassVar[str] = "fidelity"
    Params: ClassVar[type[AssertionParams]] = FidelityParams
    description: ClassVar[str] = (
        "Per component, the content fingerprint at the end of the drill equals the fingerprint taken when the "
        "backup it was restored from was made; a mismatch names the table, key space, file or vector range."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        path = ("assertions", index, self.name, "components")
        ctx.check_components(path, params.get("components"))
        ctx.check_backup_ref(("assertions", index, self.name, "backup"), params.get("backup"), "backup step")
        for j, c in str_list(params.get("components")):
            if ctx.stateless(c):
                ctx.add((*path, j), f"{c!r} is a {ctx.kinds[c]}: it holds no data to compare; check it with http or command")
        if not ctx.backups:
            ctx.add(("assertions", index), "fidelity needs a backup step to compare against")

    def proves_restore(self, params: Any, component: str, backup: str) -> bool:
        assert isinstance(params, FidelityParams)
        return (
            not params.negative_control
            and params.against == "backup"
            and params.backup in (None, backup)
            and (params.components is None or component in params.components)
        )

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, FidelityParams)
        names = params.components or [n for n, c in state.components.items() if c.stateful]
        if params.against == "before_disaster":
            return [self._before_disaster(name, state) for name in names]
        return [self._one(name, state, params.backup) for name in names]

    def _before_disaster(self, name: str, state: DrillState) -> AssertionResult:
        rid = f"fidelity[{name}@before-disaster]"
        expected = state.fingerprints_before_disaster.get(name)
        if expected is None:
            return result(rid, self.name, "error", f"{name}: no fingerprint was taken before a disaster")
        if (unreadable := self._unreadable(rid, name, state)) is not None:
            return unreadable
        actual = state.final_fingerprints[name]
        diffs = _compared(rid, name, expected, actual)
        if not isinstance(diffs, Comparison):
            return diffs
        state.results[name].differences = diffs
        parts = diffs.compared
        evidence: dict[str, Any] = {
            "against": "the state just before the first disaster",
            "expected_sha256": expected.digest,
            "actual_sha256": actual.digest,
            "parts_compared": parts,
            "content_compared": expected.totals(),
        }
        if diffs:
            return result(
                rid,
                self.name,
                "fail",
                f"{name}: {diffs.total} of {parts} parts differ from the state before the disaster",
                evidence=evidence,
                findings=diffs.describe(),
            )
        return result(
            rid,
            self.name,
            "pass",
            f"{name}: all {parts} parts match the state before the disaster (sha256 {actual.digest[:12]}…)",
            evidence=evidence,
        )

    def _not_compared(self, rid: str, name: str, state: DrillState, what: str) -> AssertionResult:
        """A backup made by another tool: nothing recorded what it held, so nothing is compared.

        Never a pass. The restored state's fingerprint is the evidence, for the next test
        of the same source to compare sizes with (``drift``).
        """
        if (unreadable := self._unreadable(rid, name, state)) is not None:
            return unreadable
        actual = state.final_fingerprints[name]
        evidence = {
            "restored_from": what,
            "restored_sha256": actual.digest,
            "parts": actual.part_count,
            "content_restored": actual.totals(),
        }
        return result(
            rid,
            self.name,
            "not_compared",
            f"{name}: not compared: the {what} carries no fingerprint taken when it was made; the restored state "
            f"was fingerprinted ({actual.part_count} parts, sha256 {actual.digest[:12]}…) as evidence",
            evidence=evidence,
        )

    def _unreadable(self, rid: str, name: str, state: DrillState) -> AssertionResult | None:
        if name not in state.fingerprint_errors:
            return None
        restored = any(r.component == name and r.outcome == "ok" for r in state.restores)
        if not restored and (state.results[name].damaged_by or name in state.sandbox):
            # Lost and never brought back: a failed recovery, though nothing could be read.
            # Marked unmeasured, so a negative control does not count it as a detection.
            return result(
                rid,
                self.name,
                "fail",
                f"{name}: never restored, and could not be read after the drill",
                evidence={"measured": False},
                findings=[state.fingerprint_errors[name]],
            )
        return result(
            rid,
            self.name,
            "error",
            f"{name}: could not fingerprint after the drill",
            findings=[state.fingerprint_errors[name]],
        )

    def _one(self, name: str, state: DrillState, wanted: str | None = None) -> AssertionResult:
        rid = f"fidelity[{name}]"
        comp = state.results[name]
        foreign = getattr(state.source, "backups", {})
        if name in foreign:
            return self._not_compared(rid, name, state, f"{foreign[name].format.name} backup {foreign[name].location}")
        restored = [r for r in state.restores if r.component == name and r.outcome == "ok"]
        if wanted is not None:
            if wanted not in state.backups:
                return result(rid, self.name, "error", f"{name}: no backup named {wanted!r} was taken")
            backup_name = wanted
        elif restored:
            backup_name = restored[-1].backup
        else:
            holding = [n for n, m in state.backups.items() if any(c.name == name for c in m.components)]
            if not holding:
                return result(rid, self.name, "error", f"{name}: no backup holds this component; nothing to compare")
            backup_name = holding[-1]
        manifest = state.backups[backup_name]
        # Kept from the backup step (its parts in a temporary file when there are many),
        # else read from the repository.
        expected = recorded_fingerprint(state.repository, manifest, name)
        if expected is None:
            return result(rid, self.name, "error", f"{name}: backup {backup_name} recorded no fingerprint")
        if (unreadable := self._unreadable(rid, name, state)) is not None:
            return unreadable
        actual = state.final_fingerprints[name]
        diffs = _compared(rid, name, expected, actual)
        if not isinstance(diffs, Comparison):
            return diffs
        comp.differences = diffs
        evidence: dict[str, Any] = {
            "backup": backup_name,
            "backup_id": manifest.id,
            "restored_from": restored[-1].backup_id if restored else None,
            "expected_sha256": expected.digest,
            "actual_sha256": actual.digest,
            "parts_compared": diffs.compared,
            "content_compared": expected.totals(),
        }
        if name in state.proofs_deferred:
            evidence["proof"] = "this check is the restore's proof: the sandbox held nothing, so none was made before"
        unseen = [blind] if (blind := state.components[name].blind_spot(expected.scheme)) is not None else []
        unseen += state.components[name].comparison_notes(manifest.component(name).details)
        if unseen:  # an older scheme's fingerprint, what the set did not keep: what the comparison cannot see
            evidence["not_compared"] = "; ".join(unseen)
        findings = []
        if not restored and comp.damaged_by:
            findings.append(f"{name} was damaged by {', '.join(comp.damaged_by)} and never restored")
        findings += diffs.describe()
        if diffs:
            return result(
                rid,
                self.name,
                "fail",
                f"{name}: {diffs.total} of {evidence['parts_compared']} parts differ from backup {backup_name}",
                evidence=evidence,
                findings=findings,
            )
        return result(
            rid,
            self.name,
            "pass",
            f"{name}: all {evidence['parts_compared']} parts match backup {backup_name} (sha256 {actual.digest[:12]}…)",
            evidence=evidence,
            findings=findings,
        )


def _compared(rid: str, name: str, expected: Fingerprint, actual: Fingerprint) -> Comparison | AssertionResult:
    """The comparison, or an error result when the backup's stored parts cannot be read whole."""
    try:
        return compare(expected, actual)
    except DrproofError as exc:
        return result(
            rid, Fidelity.name, "error", f"{name}: could not compare with the backup's fingerprint", findings=[str(exc)]
        )
