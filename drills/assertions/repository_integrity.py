"""repository_integrity: the signatures and the chain name exactly the forgeries there are.

``backup_integrity`` proves stored bytes match their manifest; nothing there stops whoever
can write the repository from rewriting the manifest too. This check audits the drill's
repository the way ``drproof recovery verify`` does (engine/chain.py): every manifest's
signature, every link of the chain, every date. On a healthy signed repository it passes
with nothing named (the quiet control); after the integrity faults (``forge_artifact``,
``replay_set``, ``delete_manifest``, ``skew_clock``) it passes only if each set they
touched is named, for the right reason, and no other set is. On an unsigned repository it
is ``not compared``: nothing there proves integrity against a repository writer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.crosscheck import CheckContext
from engine.chain import NOT_PROVEN, ChainAudit
from engine.errors import DrproofError
from engine.journal import AssertionResult

# What the audit must call each fault's set; skew_clock depends on its direction.
EXPECTED_KIND = {"forge_artifact": "altered", "replay_set": "altered", "delete_manifest": "manifest-missing"}
IGNORED_KINDS = frozenset({"legacy", "unproven-origin"})


class RepositoryIntegrityParams(AssertionParams):
    pass


class RepositoryIntegrity(Assertion):
    name: ClassVar[str] = "repository_integrity"
    Params: ClassVar[type[AssertionParams]] = RepositoryIntegrityParams
    description: ClassVar[str] = (
        "Audits the repository's signed, chained manifests: passes when the audit names exactly the sets the drill's "
        "integrity faults forged, replayed, hid or misdated (none, if none were), each for that reason; not compared "
        "on an unsigned repository (`repository.signing`)."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        if not ctx.backups:
            ctx.add(("assertions", index), "repository_integrity needs a backup step")

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        rid = "repository_integrity"
        try:
            found = state.repository.chain_audit()
        except DrproofError as exc:
            return [result(rid, self.name, "error", f"the audit could not run: {exc}")]
        if not found.verifies:
            return [result(rid, self.name, "not_compared", f"not compared: integrity {NOT_PROVEN}")]
        expected = _expected(state, found)
        pruned, lost = _skewed_gone(state, found)
        named = {(f.backup_id, f.kind) for f in found.findings if f.kind not in IGNORED_KINDS}
        findings = [
            f"{backup_id}: {why}, but the audit did not name it as {kind}"
            for (backup_id, kind), why in sorted(expected.items())
            if (backup_id, kind) not in named
        ]
        findings += [
            f"{f.backup_id}: {f.detail} ({f.kind}), but no fault of this drill touched it"
            for f in found.findings
            if f.kind not in IGNORED_KINDS and (f.backup_id, f.kind) not in expected
        ]
        findings += [
            f"{r.component}: restored from {r.backup_id}, which {expected_why}"
            for r in state.restores
            for (backup_id, _kind), expected_why in expected.items()
            if r.outcome == "ok" and r.backup_id == backup_id and _kind != "future-dated"
        ]
        findings += lost
        evidence = _evidence(found, expected)
        if pruned:
            evidence["misdated_sets_deleted_by_retention"] = pruned
        if findings:
            return [
                result(
                    rid,
                    self.name,
                    "fail",
                    "the repository audit did not see what was done to it",
                    evidence=evidence,
                    findings=findings,
                )
            ]
        if expected or pruned:
            names = ", ".join(
                [f"{b} ({k})" for b, k in sorted(expected)] + [f"{b} (deleted by retention)" for b in pruned]
            )
            return [
                result(
                    rid,
                    self.name,
                    "pass",
                    f"the audit accounted for every forgery and named nothing else: {names}",
                    evidence=evidence,
                )
            ]
        keys = ", ".join(sorted({st.signature.key_fingerprint or "?" for st in found.sets.values() if st.signature}))
        return [
            result(
                rid,
                self.name,
                "pass",
                f"all {len(found.sets)} sets signed by a trusted key ({keys}), the chain unbroken, no date out of place",
                evidence=evidence,
            )
        ]


def _expected(state: DrillState, found: ChainAudit) -> dict[tuple[str, str], str]:
    """(set, finding kind) the faults of this drill must have caused, with why."""
    out: dict[tuple[str, str], str] = {}
    for d in state.disasters:
        if d.fault in EXPECTED_KIND and isinstance(d.effect.get("backup_id"), str):
            out[(d.effect["backup_id"], EXPECTED_KIND[d.fault])] = f"{d.fault} (step {d.step}) hit it"
        if d.fault == "skew_clock":
            kind = "future-dated" if float(d.effect.get("clock_offset_days", 0)) > 0 else "before-predecessor"
            skewed = set(d.effect.get("skewed_created_at") or [])
            for backup_id, st in found.sets.items():
                if st.summary.created_at.isoformat() in skewed:
                    out[(backup_id, kind)] = (
                        f"it was taken with the clock {d.effect.get('clock_offset_days')} days off (step {d.step})"
                    )
    return out


def _skewed_gone(state: DrillState, found: ChainAudit) -> tuple[list[str], list[str]]:
    """Sets taken with a skewed clock that are gone: deleted by retention (a signed tombstone), or lost."""
    present = {st.summary.created_at.isoformat() for st in found.sets.values()}
    buried = {t.created_at: t.backup_id for t in found.tombstones.values() if t.trusted}
    pruned, lost = [], []
    for d in state.disasters:
        if d.fault != "skew_clock":
            continue
        for when in d.effect.get("skewed_created_at") or []:
            if when in present:
                continue
            if when in buried:
                pruned.append(buried[when])
            else:
                lost.append(
                    f"the set taken at {when} with the clock off (step {d.step}) is gone, and no signed record says retention deleted it"
                )
    return pruned, lost


def _evidence(found: ChainAudit, expected: dict[tuple[str, str], str]) -> dict[str, Any]:
    return {
        "sets": len(found.sets),
        "order": found.order,
        "findings": [{"backup_id": f.backup_id, "kind": f.kind, "detail": f.detail} for f in found.findings],
        "expected": [{"backup_id": b, "kind": k, "why": why} for (b, k), why in sorted(expected.items())],
        "notes": found.notes,
    }
