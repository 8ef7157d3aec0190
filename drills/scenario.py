"""The scenario schema, assembled from the registries.

Component kinds, faults and assertions contribute their own parameter models, so the
schema (and ``drproof schema``) always matches exactly what is installed: registering a
new fault makes it valid YAML, documented in the JSON Schema, with no edit here.
Unknown keys are errors everywhere; a misspelt check must never silently not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)

from drills.assertions import assertion_kinds
from drills.durations import Duration
from drills.repository_spec import backend_models, union
from drills.signing_spec import SigningSpec
from drills.source import SOURCE_BACKUP, SourceSpec
from drills.steps import step_kinds
from drills.steps.backup import BackupSpec
from drills.steps.disaster import DisasterCommon
from drills.steps.restore import RestoreSpec
from drills.steps.sql import SqlSpec
from drills.steps.workload import WorkloadSpec
from drills.strict import NAME_PATTERN, Name, Strict, literal, none_is_empty, tagged
from engine.components import component_kinds
from engine.runtime import runtimes

__all__ = [
    "NAME_PATTERN",
    "BackupSpec",
    "DisasterCommon",
    "Name",
    "RestoreSpec",
    "SqlSpec",
    "Strict",
    "WorkloadSpec",
]


# -- stack ---------------------------------------------------------------------------------


def _component_model(kind: Any) -> type[Strict]:
    # Data kinds take ``seed:`` (what to fill them with); a service takes ``run:`` (how to start it).
    params: dict[str, Any] = {
        kind.params_key: (
            kind.Params,
            Field(
                default_factory=kind.Params,
                description="Deterministic seed data." if kind.stateful else "How to run and check the service.",
            ),
        )
    }
    model = create_model(
        f"{kind.name.capitalize()}Component",
        __base__=Strict,
        __doc__=kind.description,
        kind=(literal(kind.name), Field(description="Component kind.")),
        description=(str, Field(default="", description="What this component stands for in your stack.")),
        depends_on=(
            list[Name],
            Field(
                default_factory=list,
                description="Components this one needs running first: it is started after them, and a restore "
                "brings it back only once they are back (independent ones in parallel, see `restore.parallel`).",
            ),
        ),
        **params,
    )
    return tagged(model, kind.name)


_component_models = [_component_model(k) for k in component_kinds]
if TYPE_CHECKING:  # built from the registries at import time; opaque to a static checker
    ComponentSpec = Any
    RuntimeName = str
else:
    ComponentSpec = Annotated[Union[tuple(_component_models)], Field(discriminator="kind")]  # noqa: UP007
    RuntimeName = Literal[tuple(runtimes.names())]


class Stack(Strict):
    runtime: RuntimeName = Field(default="local", description="Where the stack runs (overridable with --runtime).")
    images: dict[Literal["postgres", "redis"], str] = Field(
        default_factory=dict,
        description="Container images per component kind for the docker runtime "
        "(defaults: postgres:17, redis:8). The local runtime ignores them, except that an absolute "
        "`postgres` path to a directory holding `postgres` and `initdb` (e.g. /usr/lib/postgresql/15/bin) "
        "runs its server and client tools from there instead of the embedded wheel.",
    )
    components: dict[Name, ComponentSpec] = Field(
        default_factory=dict,
        description="Named components; the name is how steps and assertions refer to them. At least one, unless "
        "the scenario has a `source`.",
    )


class OffsiteSpec(Strict):
    path: Path | None = Field(
        default=None,
        description="Directory standing for the offsite store (relative to the scenario). Default: a private "
        "directory in the run's work directory, removed afterwards.",
    )


class DrillRepositoryCommon(Strict):
    """Keys every backend takes in a drill, besides its own."""

    offsite: Annotated[OffsiteSpec | None, BeforeValidator(none_is_empty)] = Field(
        default=None,
        description="A second repository every backup step copies its new set to, verbatim and verified; a backup "
        "whose copy fails (after 3 attempts) fails. `offsite: {}` uses a private directory.",
    )
    encryption: bool = Field(
        default=False,
        description="Encrypt every set (AES-256-GCM) with a random key made for this run and kept only in memory.",
    )
    signing: bool | SigningSpec = Field(
        default=False,
        description="Sign and chain every set's manifest (Ed25519) and check each before it is restored: `true` "
        "with a key pair made for this run and kept only in memory, or keys as in backup-config.yaml (`key_file`, "
        "`public_keys`, ...). Without it the report says integrity against a repository writer is not proven.",
    )


# One model per registered backend (engine.repository), each with the keys above.
REPOSITORY_MODELS = backend_models("DrillRepository", DrillRepositoryCommon)

if TYPE_CHECKING:
    RepositorySpec = Any
else:
    RepositorySpec = union(REPOSITORY_MODELS)


class Objectives(Strict):
    rto: Duration | None = Field(default=None, description="Recovery time objective, e.g. 5m.")
    rpo: Duration | None = Field(
        default=None,
        description="Recovery point objective, e.g. 30s: the most acknowledged writes a disaster may lose, measured "
        "by a `workload` step and judged by the `rpo` assertion.",
    )


# -- steps ---------------------------------------------------------------------------------


STEP_MODELS: dict[str, type[Strict]] = {k.name: tagged(k.model, k.name) for k in step_kinds}


def _single_key(value: Any) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    if isinstance(value, Strict):
        return value.drproof_tag
    return None


def _bare_name(value: Any) -> Any:
    """`- backup` means `- backup: {}`: steps and assertions with all defaults."""
    return {value: None} if isinstance(value, str) else value


if TYPE_CHECKING:
    Step = Any
else:
    Step = Annotated[
        Union[tuple(Annotated[m, Tag(t)] for t, m in STEP_MODELS.items())],  # noqa: UP007
        Discriminator(
            _single_key,
            custom_error_type="step_shape",
            custom_error_message="a step is a mapping with exactly one key: " + ", ".join(STEP_MODELS),
        ),
        BeforeValidator(_bare_name),
    ]


# -- assertions ----------------------------------------------------------------------------


def _assertion_model(kind: Any) -> type[Strict]:
    fields: dict[str, Any] = {
        kind.name: (Annotated[kind.Params, BeforeValidator(none_is_empty)], Field(default_factory=kind.Params))
    }
    model = create_model(
        f"{''.join(p.capitalize() for p in kind.name.split('_'))}Assertion",
        __base__=Strict,
        __doc__=kind.description,
        **fields,
    )
    return tagged(model, kind.name)


ASSERTION_MODELS = {k.name: _assertion_model(k) for k in assertion_kinds}


if TYPE_CHECKING:
    AssertionSpec = Any
else:
    AssertionSpec = Annotated[
        Union[tuple(Annotated[m, Tag(t)] for t, m in ASSERTION_MODELS.items())],  # noqa: UP007
        Discriminator(
            _single_key,
            custom_error_type="assertion_shape",
            custom_error_message="an assertion is a name or a mapping with exactly one key: "
            + ", ".join(ASSERTION_MODELS),
        ),
        BeforeValidator(_bare_name),
    ]


# -- report and scenario -------------------------------------------------------------------


ReportFormat = Literal["html", "json", "junit"]
_ALL_FORMATS: tuple[ReportFormat, ...] = ("html", "json", "junit")


class ReportSpec(Strict):
    title: str | None = Field(default=None, description="Report title; default: the scenario name.")
    operator: str | None = Field(default=None, description="Who runs the drill, for the audit trail.")
    formats: list[ReportFormat] = Field(default_factory=lambda: list(_ALL_FORMATS), min_length=1)


class Scenario(Strict):
    """A disaster-recovery drill."""

    version: Literal[1] = Field(default=1, description="Scenario format version.")
    name: Name
    description: str = ""
    objectives: Objectives = Field(default_factory=Objectives)
    source: SourceSpec | None = Field(
        default=None,
        description="A restore test: real backups from the team's repository, restored into a sandbox the runtime "
        "builds (their components join `stack.components`, which may then be empty). See "
        "[restore tests](restore-tests.md).",
    )
    stack: Stack = Field(default_factory=lambda: Stack(components={}))
    repository: RepositorySpec = Field(
        default_factory=lambda: REPOSITORY_MODELS["local"].model_validate({"type": "local"})
    )
    steps: list[Step] = Field(
        default_factory=list,
        description="The timeline, run in order. Default with a `source`: one `restore: {from: source}`.",
    )
    assertions: list[AssertionSpec] = Field(min_length=1, description="What must hold for the drill to pass.")
    report: ReportSpec = Field(default_factory=ReportSpec)
    controls: list[str] = Field(
        default_factory=list,
        description="Compliance control ids this drill is evidence for, e.g. `NIST CP-9(1)`; each is judged on "
        "the run's results and shown in the report; see [controls](controls.md) for the catalogue.",
    )

    @model_validator(mode="after")
    def _restore_test_steps(self) -> Scenario:
        """A restore test with no steps restores its source: that is what it is for."""
        if self.source is not None and not self.steps:
            self.steps = [STEP_MODELS["restore"].model_validate({"restore": {"from": SOURCE_BACKUP}})]
        return self

    def step_kind(self, index: int) -> str:
        tag: str | None = type(self.steps[index]).drproof_tag
        assert tag is not None
        return tag


def assertion_params(spec: Strict) -> tuple[str, BaseModel]:
    tag = type(spec).drproof_tag
    assert tag is not None
    params = getattr(spec, tag)
    assert isinstance(params, BaseModel)
    return tag, params
