"""The drill journal: what happened, when, and what was measured.

This model *is* the results.json schema (documented in docs/results-schema.md and
exported by ``drproof schema --results``). Reports are rendered only from it, so every
figure a report shows is one recorded here during the run, never recomputed or assumed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.fingerprint import PartDifference

SCHEMA_VERSION = 1

Verdict = Literal["pass", "fail", "error"]
# not_compared: the check had nothing to compare with (a backup made by another tool carries
# no fingerprint; no earlier restore test of a source to measure drift against). Never shown
# as a pass, and never evidence for a control; it does not by itself fail the run, whose
# verdict rests on the checks that did compare.
AssertionStatus = Literal["pass", "fail", "error", "not_run", "not_compared"]
PhaseStatus = Literal["ok", "failed", "refused", "error", "skipped"]
ControlStatus = Literal["evidenced", "failed", "not evidenced"]


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class SourceLocation(_Model):
    file: str
    line: int | None = None
    column: int | None = None


class Phase(_Model):
    """One timed phase: provisioning, seeding, a step of the timeline, or teardown."""

    name: str
    kind: str = Field(
        description="provision | seed | backup | wait | workload | change | disaster | restore | check | teardown"
    )
    step: int | None = Field(default=None, description="Number of the scenario step (1-based), if any.")
    component: str | None = None
    status: PhaseStatus
    started_at: datetime = Field(description="Wall-clock UTC start, for people.")
    finished_at: datetime
    offset_seconds: float = Field(description="Monotonic seconds from the drill start to the phase start.")
    duration_seconds: float = Field(description="Monotonic duration.")
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class BackupRecord(_Model):
    name: str
    id: str
    created_at: datetime
    components: list[str]
    artifacts: list[dict[str, Any]] = Field(description="key, size, raw_size, sha256 of each stored artifact.")
    manifest_sha256: str
    duration_seconds: float
    changed_while_archived: list[str] = Field(
        default_factory=list,
        description="Entries that changed, shrank, grew or vanished while the backup archived them, "
        "as `<component>: <path>: <what>` (the set stores and fingerprints what it read); empty when the "
        "data held still.",
    )


class DisasterRecord(_Model):
    step: int = Field(description="Number of the scenario step (1-based).")
    name: str
    fault: str
    target: str
    injected_at: datetime
    offset_seconds: float
    effect: dict[str, Any]


class WritePoint(_Model):
    seq: int
    offset_seconds: float = Field(description="When it was acknowledged, on the drill's clock.")


class RecoveryPoint(_Model):
    """What a restore kept of the workload's acknowledged writes to one component."""

    measured: bool
    reason: str = Field(default="", description="Why it was not measured, when it was not.")
    rate: float | None = Field(default=None, description="Configured writes per second.")
    acknowledged: int = 0
    failed_writes: int = Field(default=0, description="Writes the component refused or never answered.")
    survived: int = 0
    lost_writes: int = 0
    last_acknowledged: WritePoint | None = None
    newest_surviving: WritePoint | None = None
    loss_window_seconds: float | None = Field(
        default=None, description="From the newest surviving write to the last acknowledged one: the measured RPO."
    )
    lower_bound: bool = Field(
        default=False,
        description="No acknowledged write survived: the loss window, counted from the workload's start, is only a "
        "lower bound. It can fail an objective, never meet one.",
    )
    note: str = ""
    holes: list[int] = Field(default_factory=list, description="Up to 20 writes lost before the newest survivor.")
    hole_count: int = 0
    unprobed_seconds: float | None = Field(
        default=None,
        description="From the last acknowledged write to the disaster that stopped the workload: time no write "
        "probed, so the loss window may be up to this much longer. Null when the workload did not end at a disaster.",
    )


class ComponentResult(_Model):
    name: str
    kind: str
    seed: dict[str, Any] = Field(default_factory=dict)
    damaged_by: list[str] = Field(default_factory=list, description="Names of disaster steps that hit it.")
    restored_from: str | None = Field(default=None, description="Backup id of the last successful restore.")
    restore_seconds: float | None = Field(default=None, description="Duration of the restore operation itself.")
    rto_seconds: float | None = Field(
        default=None, description="From the first disaster to restored and healthy; null if never recovered."
    )
    healthy: bool | None = None
    health_detail: str | None = None
    fingerprint_at_backup: str | None = None
    fingerprint_final: str | None = None
    differences: list[PartDifference] = Field(default_factory=list)
    recovery_point: RecoveryPoint | None = Field(default=None, description="Measured when a workload ran.")
    content: dict[str, int] = Field(
        default_factory=dict,
        description="What the final fingerprint counted, by unit (rows, keys, files, bytes, vectors): the size "
        "of what was restored, compared across restore tests of the same source.",
    )
    row_counts: dict[str, int] = Field(
        default_factory=dict, description="Rows per table (and materialized view) in the final fingerprint."
    )


class AssertionResult(_Model):
    id: str = Field(description="Unique within the run, e.g. `fidelity[db]`.")
    name: str = Field(description="Assertion type: fidelity | rto | backup_integrity | timeline.")
    status: AssertionStatus
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    findings: list[str] = Field(default_factory=list, description="What is wrong, one line each, most specific first.")
    source: SourceLocation | None = None
    expected: Literal["pass", "fail"] = Field(
        default="pass", description="`fail` for a negative control: the status then says whether it failed as it must."
    )
    observed: str | None = Field(
        default=None, description="For a negative control: what the check itself concluded (pass | fail | ...)."
    )


class Measured(_Model):
    rto_seconds: float | None = Field(description="Stack RTO: first disaster → every damaged component recovered.")
    components: dict[str, float | None] = Field(description="Per-component RTO in seconds (null: not recovered).")
    drill_seconds: float
    rpo_seconds: float | None = Field(
        default=None, description="Stack RPO: the worst loss window of any component with a workload (null: none)."
    )
    rpo_components: dict[str, float | None] = Field(default_factory=dict, description="Per-component loss window.")
    critical_path: list[str] = Field(
        default_factory=list,
        description="The chain of dependent components that set the stack's RTO, first restored first.",
    )


class Objectives(_Model):
    rto_seconds: float | None = None
    rpo_seconds: float | None = None


class ScenarioInfo(_Model):
    name: str
    description: str = ""
    file: str
    sha256: str
    source: str = Field(description="The scenario file as run, for the evidence appendix.")


class ControlResult(_Model):
    """How this run bears on one compliance control the scenario declared (see docs/controls.md).

    The description travels with the result so a report renders from results.json alone.
    """

    id: str = Field(description="Control id as written in the scenario, e.g. `NIST CP-9(1)`.")
    framework: str
    title: str
    description: str = Field(default="", description="What the control asks, in drproof's words.")
    status: ControlStatus = Field(
        description="evidenced: the rule was met by passing checks or recorded facts; failed: a relevant check "
        "ran and did not pass; not evidenced: this run did not produce the evidence."
    )
    evidence: list[str] = Field(default_factory=list, description="Assertion ids and facts the status rests on.")


class TrendPoint(_Model):
    """One earlier (or this) run of the same scenario, as the report's trend chart needs it."""

    started_at: datetime
    verdict: str
    rto_seconds: float | None
    rpo_seconds: float | None
    backup_age_seconds: float | None = Field(default=None, description="Restore tests: the restored backup's age.")


class History(_Model):
    """This run seen against the recorded runs of the same scenario (``drproof run --history``).

    Kept in results.json so the trend a report shows is the one the gate judged, even when
    the history database is later pruned or lost.
    """

    runs: list[TrendPoint] = Field(description="Oldest first, at most the last 20, this run last.")
    last_pass_rto_seconds: float | None = Field(description="RTO of the last earlier run that passed.")
    rto_change_percent: float | None = Field(
        description="This run's RTO against baseline_rto_seconds (before 0.2: last_pass_rto_seconds), in percent; "
        "positive means slower."
    )
    regression_threshold_percent: float | None = Field(description="--fail-on-regression, if given.")
    regressed: bool = False
    baseline_rto_seconds: float | None = Field(
        default=None, description="Median RTO of the last passing runs the gate compares with."
    )
    baseline_runs: int = Field(default=0, description="How many passing runs that median is of.")
    noise_seconds: float | None = Field(
        default=None, description="Spread of those runs' RTOs (1.4826 times their median absolute deviation)."
    )
    allowed_seconds: float | None = Field(
        default=None,
        description="How much slower than the baseline this run may be: the largest of the threshold's share, "
        "the floor and three times the noise.",
    )


class Scope(_Model):
    """What this run tested, as an auditor reads it: the team's real backup, or data drproof seeded.

    A synthetic drill proves that drproof's round trip works on data it made minutes
    before; a restore test proves that a real backup restores. Evidence that does not
    say which it is would be read as the stronger one.
    """

    kind: Literal["synthetic", "restore-test"]
    statement: str = Field(description="One sentence: what was restored, from where, into what.")
    systems: list[str] = Field(default_factory=list, description="The components tested, as `name (kind)`.")
    backup_id: str | None = Field(default=None, description="Restore tests: the backup restored.")
    backup_taken_at: datetime | None = None
    backup_age_seconds: float | None = Field(default=None, description="Its age when the test opened it.")
    repository: str | None = Field(default=None, description="Where it was read from (no credentials).")
    source: str | None = Field(
        default=None,
        description="Restore tests: the repository and components tested, the key runs are grouped by in the history.",
    )
    source_config: str | None = Field(default=None, description="The backup-config that names that repository.")
    picked: str | None = Field(default=None, description="How the backup was chosen.")
    seed: int | None = Field(default=None, description="The seed of a random pick, to repeat it.")


class Identity(_Model):
    """Who ran the drill and from what, read from the machine and the CI system, not the scenario.

    A name typed into the YAML (``report.operator``) proves nothing: anyone can write any
    name. What the environment says (the OS account, the host, the CI job and its URL, the
    commit of the scenario file) can be checked against the CI system's own records, so
    the operator is kept apart, as a display name only. Every field is ``None`` when it
    could not be read ("not recorded"), never guessed.
    """

    user: str | None = Field(default=None, description="The OS account that ran drproof.")
    host: str | None = Field(default=None, description="The host name of the machine that ran it.")
    ci_provider: str | None = Field(
        default=None, description="github-actions | gitlab-ci | jenkins | buildkite | circleci; null when not in CI."
    )
    ci_job_url: str | None = Field(default=None, description="The CI job's (or run's) web page.")
    ci_run_id: str | None = Field(default=None, description="The CI system's id of the run (or build, or pipeline).")
    ci_job: str | None = Field(default=None, description="The CI job or workflow name.")
    ci_actor: str | None = Field(default=None, description="Who the CI system says started the run.")
    git_commit: str | None = Field(default=None, description="HEAD of the repository holding the scenario file.")
    git_dirty: bool | None = Field(
        default=None, description="Whether that repository had uncommitted changes to tracked files."
    )
    scenario_git_state: Literal["committed", "modified", "untracked"] | None = Field(
        default=None, description="The scenario file itself against that commit."
    )
    git_problem: str | None = Field(default=None, description="Why the git facts are not recorded, when they are not.")
    display_name: str | None = Field(
        default=None, description="`report.operator` from the scenario: a display name, not an identity."
    )


class Results(_Model):
    schema_version: int = SCHEMA_VERSION
    drproof_version: str
    scenario: ScenarioInfo
    verdict: Verdict
    exit_code: int
    runtime: dict[str, str]
    repository: dict[str, str]
    environment: dict[str, str]
    tools: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    objectives: Objectives
    measured: Measured
    components: list[ComponentResult]
    phases: list[Phase]
    backups: list[BackupRecord]
    disasters: list[DisasterRecord]
    assertions: list[AssertionResult]
    controls: list[ControlResult] = Field(
        default_factory=list, description="Compliance controls the scenario declared, judged on this run."
    )
    error: str | None = Field(default=None, description="Why the drill could not run to the end, if it could not.")
    report: dict[str, Any] = Field(default_factory=dict, description="Report options: title, operator, formats.")
    history: History | None = Field(default=None, description="Trend against earlier runs, with --history.")
    scope: Scope | None = Field(
        default=None, description="What was tested: a real backup (restore test) or seeded data; absent in older results."
    )
    identity: Identity | None = Field(
        default=None, description="Who ran it, where, from which CI job and commit; absent in older results."
    )
