"""``source:``: a restore test of the team's own backups, read from their repository.

A synthetic drill proves drproof can round-trip data it seeded itself. A restore test
proves what an auditor asks for: that last night's real backup restores, into a sandbox
the runtime builds, within the RTO, with its data whole. The scenario names the
production backup-config (for its repository and encryption key source only: drproof
never connects to the servers that file names), a rule for which set to take, and the
components to restore. The repository is opened read-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from drills.durations import Duration
from drills.foreign_source import ForeignSpec, S3Spec
from drills.strict import Name, Strict
from engine.components import component_kinds
from engine.errors import ChainBroken
from engine.journal import BackupRecord
from engine.manifest import Manifest
from engine.picking import Pick, Picked, pick_set
from engine.repository.base import Repository
from engine.repository.readonly import ReadOnlyRepository
from engine.runtime import refusal

if TYPE_CHECKING:
    from drills.backup_config import BackupConfig
    from engine.components.base import Component
    from engine.runtime.base import Runtime

SOURCE_BACKUP = "source"  # the name steps and checks use for the backup a restore test restores


class PickById(Strict):
    id: str = Field(min_length=1, description="The backup id to restore, as `drproof recovery list` shows it.")


class PickLatestWithin(Strict):
    latest_within: Duration = Field(
        description="Restore the newest set; the `freshness` check fails when it is older than this (e.g. 26h)."
    )


class PickRandomWithin(Strict):
    random_within: Duration = Field(description="Restore a set chosen at random among those of this window (e.g. 30d).")
    seed: int | None = Field(
        default=None, description="Seed of the random choice; default: a fresh one, recorded in the results."
    )


def _pick_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return next((k for k in ("id", "latest_within", "random_within") if k in value), str(next(iter(value))))
    if isinstance(value, PickById | PickLatestWithin | PickRandomWithin):
        return {PickById: "id", PickLatestWithin: "latest_within", PickRandomWithin: "random_within"}[type(value)]
    return None


if TYPE_CHECKING:
    PickSpec = Any
else:
    PickSpec = Annotated[
        Union[  # noqa: UP007
            Annotated[Literal["latest"], Tag("latest")],
            Annotated[PickById, Tag("id")],
            Annotated[PickLatestWithin, Tag("latest_within")],
            Annotated[PickRandomWithin, Tag("random_within")],
        ],
        Discriminator(
            _pick_tag,
            custom_error_type="pick_shape",
            custom_error_message="pick is `latest`, or a mapping with one of: id, latest_within, random_within",
        ),
    ]


class SourceSpec(Strict):
    """The real backups a restore test restores into a sandbox."""

    config: Path | None = Field(
        default=None,
        description="The production backup-config.yaml (relative to the scenario): only its repository, offsite "
        "and encryption key source are used; drproof never connects to the servers it names.",
    )
    backups: dict[Name, ForeignSpec] | None = Field(
        default=None,
        description="Instead of `config`: backups drproof did not make, by sandbox component name (a pg_dump file, "
        "a Redis RDB, a tar, ...); see [restore tests](restore-tests.md#backups-not-made-by-drproof).",
    )
    s3: S3Spec | None = Field(default=None, description="Endpoint and region for `s3://` paths of `backups`.")
    repository: Literal["primary", "offsite"] = Field(
        default="primary", description="Read the configured primary repository, or its offsite copy."
    )
    pick: PickSpec = Field(
        default="latest",
        description="Which set: `latest`, `{id: ...}`, `{latest_within: 26h}` (the newest, and `freshness` fails "
        "beyond it) or `{random_within: 30d, seed: N}` (one at random in the window; the seed is recorded).",
    )
    components: list[Name] | None = Field(
        default=None, description="Components to restore into the sandbox; default: every component of the set."
    )

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> SourceSpec:
        if (self.config is None) == (self.backups is None):
            raise ValueError("give either `config` (a drproof repository) or `backups` (backups made by other tools)")
        return self

    def rule(self) -> Pick:
        p = self.pick
        if isinstance(p, PickById):
            return Pick("id", backup_id=p.id)
        if isinstance(p, PickLatestWithin):
            return Pick("latest_within", within_seconds=p.latest_within)
        if isinstance(p, PickRandomWithin):
            return Pick("random_within", within_seconds=p.random_within, seed=p.seed)
        return Pick("latest")

    @property
    def freshness_limit(self) -> float | None:
        return self.pick.latest_within if isinstance(self.pick, PickLatestWithin) else None


@dataclass
class OpenedSource:
    """The chosen set, the repository it is read from (read-only), and how it was chosen."""

    config_path: Path
    config: BackupConfig
    repository: Repository
    manifest: Manifest
    picked: Picked
    opened_at: datetime
    components: list[str] = field(default_factory=list)
    freshness_limit: float | None = None  # the pick's `latest_within`, if it gave one

    @property
    def backup_id(self) -> str:
        return self.manifest.id

    @property
    def label(self) -> str:
        return f"backup {self.manifest.id}"

    @property
    def taken_at(self) -> datetime | None:
        return self.manifest.created_at

    @property
    def taken_at_from(self) -> str:
        return "the set's manifest (created_at)"

    @property
    def dated_by_file_stamp(self) -> list[str]:
        """None: a drproof set records when it was taken in its manifest, which a copy keeps."""
        return []

    @property
    def age_seconds(self) -> float:
        """How old the backup was when the test opened it (negative: dated in the future)."""
        return (self.opened_at - self.manifest.created_at).total_seconds()


def open_source(spec: SourceSpec, base_dir: Path) -> OpenedSource:
    """Load the backup-config, open its repository read-only and pick the set to restore.

    Every failure here is a DrproofError (a config that does not validate, a repository
    that cannot be read, no set that fits): the test could not run, which is exit 2,
    never a pass.
    """
    from drills.backup_config import load_config
    from drills.standalone import repository

    assert spec.config is not None
    config_path = spec.config if spec.config.is_absolute() else base_dir / spec.config
    config = load_config(config_path)
    repo = ReadOnlyRepository(repository(config, None, offsite=spec.repository == "offsite", create=False))
    now = datetime.now(UTC)
    sets = repo.summaries()
    wanted = spec.components or []
    rule = spec.rule()
    if rule.how in ("latest", "latest_within"):
        doubts = repo.chain_audit().doubts_about_latest()
        if doubts:
            raise ChainBroken(
                "refusing to pick the latest backup: the repository leaves open which set is the newest: "
                + "; ".join(str(d) for d in doubts)
            )
    picked = pick_set(sets, wanted, rule, now)
    manifest = repo.get(picked.summary.id)
    names = spec.components or [c.name for c in manifest.components]
    return OpenedSource(config_path, config, repo, manifest, picked, now, names, spec.freshness_limit)


def sandbox_component(opened: OpenedSource, name: str, runtime: Runtime, runtime_name: str) -> Component:
    """The component ``name`` of the chosen set, bound to a sandbox server of the right version.

    Its kind is the one the backup recorded; its settings (a database name, parallel
    jobs, a vector store's expectations) come from the backup-config's entry of the same
    name, never its connection details. The runtime is asked for the server version the
    backup needs before the component creates it.
    """
    from drills.steps.base import StepFailed

    try:
        record = opened.manifest.component(name)
    except KeyError:
        held = ", ".join(c.name for c in opened.manifest.components)
        raise StepFailed(f"backup {opened.manifest.id} holds no component {name!r} (it holds: {held})") from None
    if record.kind not in component_kinds:
        raise StepFailed(f"backup {opened.manifest.id}: {name!r} is of kind {record.kind!r}, unknown to this drproof")
    kind = component_kinds.get(record.kind)
    why = refusal(type(runtime), kind.needs, kind.server)
    if why is not None:
        raise StepFailed(f"{name!r} ({kind.name}) cannot be restored on the {runtime_name} runtime: it {why}")
    spec = opened.config.components.get(name)
    params = spec.sandbox_params(record) if spec is not None and spec.name == kind.name else kind.Params()
    wanted = kind.server_wanted(record, opened.manifest.id)
    if wanted is not None:
        runtime.want(name, wanted)
    comp = kind(name, params, runtime)
    if spec is not None and spec.name == kind.name:
        spec.configure(comp)
    return comp


def source_record(opened: OpenedSource) -> BackupRecord:
    """The restored backup as the results list backups: what it holds and how long it took to take."""
    m = opened.manifest
    return BackupRecord(
        name=SOURCE_BACKUP,
        id=m.id,
        created_at=m.created_at,
        components=[c.name for c in m.components if c.name in opened.components],
        artifacts=[{"key": a.key, "size": a.size, "raw_size": a.raw_size, "sha256": a.sha256} for a in m.artifacts],
        manifest_sha256=hashlib.sha256(m.to_json().encode()).hexdigest(),
        duration_seconds=round((m.completed_at - m.created_at).total_seconds(), 6),
    )
