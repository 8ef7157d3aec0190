"""Mapping drill results onto the compliance controls they can be evidence for.

Auditors ask "which control does this report support?". A scenario answers by listing
control ids under ``controls:``; after the run each listed control is judged against the
recorded results only, never against the scenario's intentions. That is why a control is
a tick only when the run itself produced the evidence (a passing check, a recorded fact):
a check that was not configured, or a fact the run did not record, gives
``not evidenced``, which an auditor must read as "this report does not show it".

Ids are ``<FRAMEWORK> <control>``, the framework written as a short upper-case prefix
(NIST, ISO, SOC2, HIPAA, DORA) and the control exactly as the framework numbers it, so
that the string a user types is the one an auditor searches for. See docs/controls.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from engine.components import component_kinds
from engine.journal import ControlResult, ControlStatus, Results

__all__ = [
    "CATALOGUE",
    "Control",
    "Coverage",
    "control_ids",
    "coverage",
    "evaluate",
    "judge",
]


@dataclass(frozen=True)
class _Finding:
    """What one requirement of a rule concluded: met, broken, or simply not shown."""

    status: ControlStatus
    evidence: list[str] = field(default_factory=list)


# -- requirements: small judgements over Results that the rules combine ----------------------
# Each returns "evidenced" only on something this run recorded. Absence is "not evidenced";
# "failed" is kept for a check that ran and did not pass, so an auditor sees the gap.

Requirement = Callable[[Results], _Finding]


def _assertion(name: str) -> Requirement:
    """Every assertion of this type that the scenario expects to pass did pass.

    Negative controls (``expect: fail``) are left out: a fidelity check that "passes" by
    finding a difference proves detection, not recovery, and must not tick a recovery
    control. ``error`` counts as failed: the check was asked for and gave no assurance.
    """

    def requirement(results: Results) -> _Finding:
        relevant = [a for a in results.assertions if a.name == name and a.expected == "pass"]
        broken = [f"{a.id}: {a.status}" for a in relevant if a.status in ("fail", "error")]
        if broken:
            return _Finding("failed", broken)
        passed = [a.id for a in relevant if a.status == "pass"]
        if not passed or len(passed) != len(relevant):
            return _Finding("not evidenced")
        return _Finding("evidenced", [f"{i}: pass" for i in passed])

    return requirement


def _rpo_if_set(results: Results) -> _Finding:
    """The RPO is part of recovery only when the scenario set an objective for it.

    A drill measures it with a workload (``rpo``); a restore test by the age of the real
    backup it restored (``freshness``), the data a loss at that moment would cost.
    """
    if results.objectives.rpo_seconds is None:
        return _Finding("evidenced")
    if results.scope is not None and results.scope.kind == "restore-test":
        return _assertion("freshness")(results)
    return _assertion("rpo")(results)


def _restored(results: Results) -> _Finding:
    """At least one restore completed; a restore that broke is a failure.

    A ``refused`` restore is the expected outcome of a damaged-backup drill, so it is
    neither evidence nor failure.
    """
    phases = [p for p in results.phases if p.kind == "restore"]
    broken = [f"{p.name}: {p.status}" for p in phases if p.status in ("failed", "error")]
    if broken:
        return _Finding("failed", broken)
    done = [f"{p.name}: ok" for p in phases if p.status == "ok"]
    return _Finding("evidenced", done) if done else _Finding("not evidenced")


def _fully_recovered(results: Results) -> _Finding:
    """Every component of the stack was restored and is healthy: reconstitution, not a sample."""
    if not results.components:
        return _Finding("not evidenced")
    unhealthy = [f"{c.name}: unhealthy" for c in results.components if c.restored_from and c.healthy is False]
    if unhealthy:
        return _Finding("failed", unhealthy)
    if any(not c.restored_from or c.healthy is not True for c in results.components):
        return _Finding("not evidenced")
    return _Finding("evidenced", [f"{c.name}: restored from {c.restored_from}, healthy" for c in results.components])


_FIDELITY_ID = re.compile(r"^fidelity\[(?P<component>[^\]@]+)(?:@before-disaster)?\](?:#\d+)?$")


def _holds_data(kind: str) -> bool:
    """A kind whose content a fidelity check can compare (an application holds none)."""
    return kind not in component_kinds or component_kinds.get(kind).stateful


def _every_restore_compared(results: Results) -> _Finding:
    """Each restored component that holds data had its content compared, and it matched.

    Found by review: with ``fidelity: {components: [uploads]}`` and app-config restored too,
    full recovery (CP-4(4)), "comes back whole and unaltered" (SOC2 A1.3) and "bring back
    any data that was lost" (HIPAA) were evidenced by ``fidelity[uploads]: pass`` alone,
    while app-config ended the drill holding other data than its backup. A restore whose
    result nobody compared is restored, not recovered.
    """
    compared = {
        m.group("component")
        for a in results.assertions
        if a.name == "fidelity" and a.expected == "pass" and a.status == "pass"
        if (m := _FIDELITY_ID.match(a.id))
    }
    restored = [c.name for c in results.components if c.restored_from and _holds_data(c.kind)]
    if not restored or any(name not in compared for name in restored):
        return _Finding("not evidenced")
    return _Finding("evidenced", [f"fidelity compared for every restored component: {', '.join(restored)}"])


def _backed_up(results: Results) -> _Finding:
    if not results.backups:
        return _Finding("not evidenced")
    return _Finding(
        "evidenced",
        [
            f"backup {b.name} ({b.id}) at {b.created_at:%Y-%m-%d %H:%M:%S} UTC: {', '.join(b.components)}"
            for b in results.backups
        ],
    )


def _disrupted(results: Results) -> _Finding:
    if not results.disasters:
        return _Finding("not evidenced")
    return _Finding(
        "evidenced",
        [
            f"disaster {d.name}: {d.fault} on {d.target}" if d.name != d.fault else f"disaster {d.fault} on {d.target}"
            for d in results.disasters
        ],
    )


def _fact(where: str, key: str) -> Requirement:
    """A fact the run recorded about its repository or runtime; never inferred from config."""

    def requirement(results: Results) -> _Finding:
        facts: dict[str, str] = getattr(results, where)
        if key not in facts:
            return _Finding("not evidenced")
        return _Finding("evidenced", [f"{where} {key}: {facts[key]}"])

    return requirement


def _signed(results: Results) -> _Finding:
    """The repository signs its manifests and checks them: only then is a backup "known to be intact".

    Digests in a manifest prove nothing against whoever can rewrite the manifest too; an
    unsigned repository records an ``integrity`` fact saying so, which is never evidence.
    """
    return _fact("repository", "signing")(results)


def _completed(results: Results) -> _Finding:
    """The drill ran unattended to the end and every assertion was evaluated."""
    if results.error is not None or not results.assertions or any(a.status == "not_run" for a in results.assertions):
        return _Finding("not evidenced")
    return _Finding(
        "evidenced",
        [f"scenario {results.scenario.name} (sha256 {results.scenario.sha256[:16]}…) ran to the end unattended"],
    )


def _verdict(results: Results) -> _Finding:
    """The whole drill, as defined, passed; a failing drill is a failed test of the plan."""
    when = f"{results.started_at:%Y-%m-%d %H:%M:%S} UTC"
    if results.verdict == "fail":
        return _Finding("failed", [f"drill of {when}: fail"])
    if results.verdict != "pass":
        return _Finding("not evidenced")
    return _Finding("evidenced", [f"drill of {when}: pass, {len(results.assertions)} assertions"])


def _all_of(*requirements: Requirement) -> Callable[[Results], tuple[ControlStatus, list[str]]]:
    """Failed if any requirement failed, evidenced only if all are, else not evidenced."""

    def rule(results: Results) -> tuple[ControlStatus, list[str]]:
        findings = [r(results) for r in requirements]
        failed = [e for f in findings if f.status == "failed" for e in f.evidence]
        if failed:
            return "failed", failed
        if all(f.status == "evidenced" for f in findings):
            return "evidenced", [e for f in findings for e in f.evidence]
        return "not evidenced", []

    return rule


# -- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """One control: who asks, what they ask (in our words), and the rule a run must meet."""

    id: str
    framework: str
    title: str
    description: str
    rule_text: str
    rule: Callable[[Results], tuple[ControlStatus, list[str]]] = field(repr=False, compare=False)


_NIST = "NIST SP 800-53 r5"
_ISO = "ISO/IEC 27001:2022"
_SOC2 = "SOC 2 (TSC 2017)"
_HIPAA = "HIPAA Security Rule"
_DORA = "EU DORA"

CATALOGUE: tuple[Control, ...] = (
    Control(
        "NIST CP-4",
        _NIST,
        "Contingency plan testing",
        "Exercise the contingency plan with defined tests, look at the outcome and act on what failed.",
        "the drill ran to the end and its verdict is pass (a fail verdict makes it failed)",
        _all_of(_verdict),
    ),
    Control(
        "NIST CP-4(3)",
        _NIST,
        "Contingency plan testing: automated testing",
        "Run the contingency test by machine rather than by hand, so it can be repeated identically.",
        "the drill ran unattended from its versioned scenario and evaluated every assertion",
        _all_of(_completed),
    ),
    Control(
        "NIST CP-4(4)",
        _NIST,
        "Contingency plan testing: full recovery and reconstitution",
        "Bring the whole system back to a known, working state as part of the test, not just a part of it.",
        "every component was restored and is healthy, every fidelity check passed, and each component that holds "
        "data had its content compared",
        _all_of(_fully_recovered, _assertion("fidelity"), _every_restore_compared),
    ),
    Control(
        "NIST CP-4(5)",
        _NIST,
        "Contingency plan testing: self-challenge",
        "Disrupt the system on purpose to find out whether the recovery plan really holds.",
        "at least one disaster was injected",
        _all_of(_disrupted),
    ),
    Control(
        "NIST CP-9",
        _NIST,
        "System backup",
        "Take backups of system data at a defined frequency and protect them.",
        "at least one backup set was recorded (frequency itself is not shown by one run)",
        _all_of(_backed_up),
    ),
    Control(
        "NIST CP-9(1)",
        _NIST,
        "System backup: testing for reliability and integrity",
        "Check that backups can be read back intact and hold the information they should.",
        "a backup_integrity assertion passed, every fidelity assertion passed, and the repository recorded a "
        "`signing` fact (its manifests signed and checked; unsigned, integrity against anyone who can write the "
        "repository is not proven)",
        _all_of(_assertion("backup_integrity"), _assertion("fidelity"), _signed),
    ),
    Control(
        "NIST CP-9(2)",
        _NIST,
        "System backup: test restoration using sampling",
        "Actually restore part of the backed-up information when testing, not only verify the files.",
        "a restore completed and every fidelity assertion passed",
        _all_of(_restored, _assertion("fidelity")),
    ),
    Control(
        "NIST CP-9(8)",
        _NIST,
        "System backup: cryptographic protection",
        "Encrypt backups so that a stolen or leaked copy discloses nothing and cannot be altered unnoticed.",
        "the repository recorded an `encryption` and a `signing` fact (encrypted artifacts, signed manifests) and at "
        "least one backup set was written to it",
        _all_of(_fact("repository", "encryption"), _signed, _backed_up),
    ),
    Control(
        "NIST CP-10",
        _NIST,
        "System recovery and reconstitution",
        "Be able to recover to a known state within the recovery time and point objectives.",
        "an rto assertion passed, and an rpo assertion (freshness in a restore test) passed when an RPO objective is set",
        _all_of(_assertion("rto"), _rpo_if_set),
    ),
    Control(
        "NIST CP-10(4)",
        _NIST,
        "System recovery: restore within time period",
        "Restore from state known to be intact within a set time.",
        "an rto assertion passed, a backup_integrity assertion passed, and the repository recorded a `signing` fact",
        _all_of(_assertion("rto"), _assertion("backup_integrity"), _signed),
    ),
    Control(
        "ISO A.5.29",
        _ISO,
        "Information security during disruption",
        "Keep information protected while systems are being disrupted and recovered.",
        "the repository recorded an `encryption` fact and the runtime recorded an `isolation` fact",
        _all_of(_fact("repository", "encryption"), _fact("runtime", "isolation")),
    ),
    Control(
        "ISO A.5.30",
        _ISO,
        "ICT readiness for business continuity",
        "Plan, run and test ICT recovery against the continuity objectives that were set.",
        "an rto assertion passed, and an rpo assertion (freshness in a restore test) passed when an RPO objective is set",
        _all_of(_assertion("rto"), _rpo_if_set),
    ),
    Control(
        "ISO A.8.13",
        _ISO,
        "Information backup",
        "Keep backups as the backup policy says and test regularly that they restore.",
        "a backup set was recorded, a restore completed and every fidelity assertion passed",
        _all_of(_backed_up, _restored, _assertion("fidelity")),
    ),
    Control(
        "SOC2 A1.2",
        _SOC2,
        "Backup and recovery infrastructure",
        "Operate backup processes and recovery infrastructure, including a copy kept away from the primary.",
        "a backup set was recorded and the repository recorded an `offsite` fact",
        _all_of(_backed_up, _fact("repository", "offsite")),
    ),
    Control(
        "SOC2 A1.3",
        _SOC2,
        "Recovery plan testing",
        "Test the recovery plan, including whether the backed-up data comes back whole and unaltered.",
        "a restore completed, every fidelity assertion passed, and every restored component that holds data had "
        "its content compared",
        _all_of(_restored, _assertion("fidelity"), _every_restore_compared),
    ),
    Control(
        "HIPAA 164.308(a)(7)(ii)(B)",
        _HIPAA,
        "Disaster recovery plan",
        "Have procedures that bring back any data that was lost.",
        "a disaster was injected, a restore completed, every fidelity assertion passed, and every restored "
        "component that holds data had its content compared",
        _all_of(_disrupted, _restored, _assertion("fidelity"), _every_restore_compared),
    ),
    Control(
        "HIPAA 164.308(a)(7)(ii)(D)",
        _HIPAA,
        "Testing and revision procedures",
        "Test contingency plans from time to time and revise them on what the tests show.",
        "the drill ran to the end and its verdict is pass (a fail verdict makes it failed); "
        "revision is shown by the drill history, not by one run",
        _all_of(_verdict),
    ),
    Control(
        "DORA 12(2)",
        _DORA,
        "Art. 12(2): testing of backup and restoration",
        "Test backup and restoration procedures periodically.",
        "a backup set was recorded, a restore completed and every fidelity assertion passed; "
        "periodicity is shown by the drill history, not by one run",
        _all_of(_backed_up, _restored, _assertion("fidelity")),
    ),
    Control(
        "DORA 12(3)",
        _DORA,
        "Art. 12(3): restoration on segregated systems",
        "Restore onto systems kept apart from the source systems.",
        "the runtime recorded an `isolation` fact and a restore completed",
        _all_of(_fact("runtime", "isolation"), _restored),
    ),
)

_BY_ID = {c.id: c for c in CATALOGUE}


def control_ids() -> list[str]:
    """Every id a scenario may list, in catalogue order (used for did-you-mean)."""
    return list(_BY_ID)


def judge(control: Control, results: Results) -> ControlResult:
    status, evidence = control.rule(results)
    return ControlResult(
        id=control.id,
        framework=control.framework,
        title=control.title,
        description=control.description,
        status=status,
        evidence=evidence,
    )


def evaluate(declared: Iterable[str], results: Results) -> list[ControlResult]:
    """Judge the controls a scenario declared, in its order; only those, so a report never
    claims coverage nobody asked it to show. Unknown ids were rejected at validation."""
    return [judge(_BY_ID[i], results) for i in dict.fromkeys(declared) if i in _BY_ID]


@dataclass(frozen=True)
class Coverage:
    """Controls down, runs across: the status each run gave each control.

    ``None`` in a cell means the run did not declare that control, which is different
    from a declared control that the run did not evidence.
    """

    controls: list[str]
    runs: list[str]
    cells: dict[str, list[ControlStatus | None]]

    def evidenced_by_any(self) -> list[str]:
        return [c for c in self.controls if "evidenced" in self.cells[c]]


def coverage(results_list: Sequence[Results]) -> Coverage:
    """Build the matrix from recorded control results, for a future summary view.

    Rows are every control any run declared, in catalogue order; columns are runs,
    labelled by scenario name and start time so two runs of one scenario stay apart.
    """
    declared = {c.id for r in results_list for c in r.controls}
    order = [c for c in _BY_ID if c in declared] + sorted(declared - set(_BY_ID))
    runs = [f"{r.scenario.name}@{r.started_at:%Y-%m-%dT%H:%M:%S}" for r in results_list]
    cells: dict[str, list[ControlStatus | None]] = {}
    for control in order:
        row: list[ControlStatus | None] = []
        for r in results_list:
            found = next((c.status for c in r.controls if c.id == control), None)
            row.append(found)
        cells[control] = row
    return Coverage(controls=order, runs=runs, cells=cells)
