"""The manifest: the single source of truth about what a backup set holds.

A backup set is complete if and only if its manifest exists; the manifest is written
last, after every artifact is on disk and hashed. Verification and restore trust
nothing but the digests recorded here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import IntegrityError, RepositoryError
from engine.fingerprint import Fingerprint

MANIFEST_NAME = "manifest.json"
VERIFIED_NAME = "verified.json"  # written beside the manifest by a full verification
VERIFIED_SIGNATURE = "verified.sig"  # its signature (Repository.verification_record)
# A manifest carries ~193 bytes per file of a volume's fingerprint, so this admits about
# 690,000 files (19.3 MB for 100,000 files of 100 B, measured), and refuses by size
# alone (before reading a byte) what would take gigabytes to parse: a 162 MB manifest
# took 2 GB and 34 s to list. Writing checks the
# same limit: a set whose manifest could not be read back must never be published.
MAX_MANIFEST_BYTES = 128 * 1024 * 1024
# A set holds a few artifacts per component; these bound every loop over a manifest
# (verify, restore, copy) whoever wrote it.
MAX_ARTIFACTS = 10_000
MAX_COMPONENTS = 1_000


def _segment(value: str) -> str:
    """One path segment drproof could have written: no separators, not . or .., not empty."""
    if not value or value in (".", "..") or len(value) > 200 or any(c in value for c in "/\\\0"):
        raise ValueError(f"{value!r} is not a plain name (no path separators, not . or ..)")
    return value


Segment = Annotated[str, AfterValidator(_segment)]


def _repository_id(value: str) -> str:
    """A repository identity as drproof makes one: 32 lowercase hex digits (``secrets.token_hex(16)``)."""
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{value[:40]!r} is not a repository identity (32 lowercase hex digits)")
    return value


RepositoryId = Annotated[str, AfterValidator(_repository_id)]


def _check_consistent(components: dict[str, list[str]], artifacts: list[tuple[str, str]]) -> None:
    """Every component names exactly the artifacts stored for it, and nothing is listed twice.

    Why: verify checks the artifacts a manifest lists, and restore opens the ones a
    component names; a manifest in which they disagree (an artifact entry deleted, listed
    twice) was not written by drproof, and it verified green while its restore could not
    find what it needed. Artifacts of no listed component are verified and never restored,
    as in sets the engine's own tests write without components.
    """
    stored: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for c, n in artifacts:  # one pass: a manifest may list 10,000 artifacts
        if (c, n) in seen:
            raise ValueError(f"artifact {c}/{n} is listed twice")
        seen.add((c, n))
        stored.setdefault(c, []).append(n)
    for name, names in components.items():
        if sorted(names) != sorted(stored.get(name, [])):
            raise ValueError(f"component {name!r} names artifacts {names} but the set lists {stored.get(name, [])}")


def _unique_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"component {n!r} is listed twice")
        seen.add(n)


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    component: Segment
    name: Segment
    path: str = Field(
        description="Path of the stored file, relative to the backup set: always `<component>/<name>.zst`."
    )
    compression: Literal["zstd"] = "zstd"
    size: int = Field(description="Stored (compressed) size in bytes.")
    sha256: str = Field(description="SHA-256 of the stored bytes; what `verify` re-computes.")
    raw_size: int = Field(description="Size before compression.")
    raw_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the content before compression; kept in sets from earlier drproof versions; "
        "no longer computed (a restore checks the stored digest and zstd's content checksum instead).",
    )

    @property
    def key(self) -> str:
        return f"{self.component}/{self.name}"

    @model_validator(mode="after")
    def _derived_path(self) -> ArtifactRecord:
        # drproof derives every stored path from the artifact's names; a manifest that says
        # otherwise (``../``, a link inside the set) was not written by drproof.
        if self.path != f"{self.component}/{self.name}.zst":
            raise ValueError(f"artifact path {self.path!r} is not {self.component}/{self.name}.zst")
        return self


class ComponentRecord(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: Segment
    kind: str
    artifacts: list[str]
    fingerprint: Fingerprint | None = Field(
        default=None, description="Content fingerprint taken when the backup was made."
    )
    details: dict[str, Any] = Field(default_factory=dict)
    parent: str | None = Field(
        default=None, description="For an incremental backup: the backup id this component's changes apply to."
    )


class Manifest(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    format: Literal[1] = 1
    id: Segment
    label: str | None = Field(default=None, description="A human name, e.g. the drill step's name.")
    created_at: AwareDatetime
    completed_at: AwareDatetime
    components: list[ComponentRecord] = Field(max_length=MAX_COMPONENTS)
    artifacts: list[ArtifactRecord] = Field(max_length=MAX_ARTIFACTS)
    tools: dict[str, str] = Field(default_factory=dict)
    encryption: dict[str, Any] | None = Field(
        default=None, description="Scheme, KDF parameters, key source and key fingerprint; never the key."
    )
    labels: dict[str, str] = Field(default_factory=dict)
    # The chain (engine/chain.py): set when the set is published, under the repository's
    # publishing lock; absent in sets of drproof versions before issue 17.
    sequence: int | None = Field(
        default=None, ge=1, description="Position in the repository's chain of sets, 1 for the first chained set."
    )
    previous_id: str | None = Field(default=None, description="The set this one follows in the chain.")
    previous_sha256: str | None = Field(
        default=None, description="SHA-256 of the stored manifest bytes of `previous_id`."
    )
    # Signed with the rest, so a set copied in from another repository that shares the
    # signing key is named (engine/chain.py); absent in sets of drproof versions before it.
    repository_id: RepositoryId | None = Field(
        default=None,
        description="Identity of the repository the set was written in (kept by its verbatim offsite copies), "
        "made when that repository's first set was written.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        _unique_names([c.name for c in self.components])
        _check_consistent(
            {c.name: c.artifacts for c in self.components}, [(a.component, a.name) for a in self.artifacts]
        )
        return self

    @classmethod
    def assemble(
        cls,
        *,
        backup_id: str,
        label: str | None,
        created_at: datetime,
        components: list[ComponentRecord],
        artifacts: list[ArtifactRecord],
        tools: dict[str, str],
        labels: dict[str, str],
        encryption: dict[str, Any] | None,
        completed_at: datetime | None = None,
    ) -> Manifest:
        """The manifest of a finished set; each component lists the artifacts written for it."""
        from datetime import UTC

        return cls(
            id=backup_id,
            label=label,
            created_at=created_at,
            completed_at=completed_at or datetime.now(UTC),
            components=[
                c.model_copy(update={"artifacts": [a.name for a in artifacts if a.component == c.name]})
                for c in components
            ],
            artifacts=artifacts,
            tools=tools,
            labels=labels,
            encryption=encryption,
        )

    def component(self, name: str) -> ComponentRecord:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def artifacts_of(self, component: str) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if a.component == component]

    def to_json(self) -> str:
        # Serialized by pydantic-core straight to text: building the dict tree first
        # (model_dump) held every per-file fingerprint part twice more, about 1 KB per
        # file of a volume at the moment a backup's memory peaks.
        text = self.model_dump_json(indent=2) + "\n"
        if len(text) > MAX_MANIFEST_BYTES:
            raise RepositoryError(
                f"backup {self.id}: its manifest would be {len(text)} bytes, over the {MAX_MANIFEST_BYTES}-byte "
                "limit readers enforce; the set is not published"
            )
        return text


class LimitDetails(BaseModel):
    """The few component details ``limits`` reads (a WAL gap, a source unhealthy at backup, a
    pgBackRest cluster's tablespaces), and nothing else.

    Why not the details whole: an inventory must stay light (issue 14), and a tree's
    details can be long. ``recovery list`` reads these to mark a sound set whose
    point-in-time objective is already lost; every other detail is skipped unparsed.
    """

    model_config = ConfigDict(defer_build=True, extra="ignore")

    backup_id: str | None = None
    wal_gap: str | None = None
    wal_gap_after: str | None = None
    unhealthy_at_backup: str | None = None  # engine.components.base.UNHEALTHY_AT_BACKUP
    tablespaces: list[str] | None = None  # a pgBackRest backup drproof cannot restore
    pgbackrest_label: str | None = None

    def as_details(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ComponentSummary(BaseModel):
    """A component as an inventory shows it: its fingerprint is not read."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    name: Segment
    kind: str
    artifacts: list[str] = Field(default_factory=list)
    parent: str | None = None
    details: LimitDetails = Field(default_factory=LimitDetails)


class ArtifactSummary(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    component: str
    name: str
    size: int


class ManifestSummary(BaseModel):
    """What ``recovery list`` shows of a set, read without its fingerprints.

    Why a model of its own: a manifest carries a fingerprint part per file of a volume,
    and listing ten sets of 100,000 files held every part of all ten (904 MB, issue 14).
    pydantic-core skips the values of ignored fields while it parses, so this reads a
    manifest of 300,000 file parts with a sixth of the memory and a tenth of the time.
    It is never a manifest: nothing restores, verifies or compares from it, and its type
    says so. A set whose fingerprints are damaged still lists; ``verify`` judges it.
    """

    model_config = ConfigDict(defer_build=True, extra="ignore")

    format: Literal[1] = 1
    id: Segment
    label: str | None = None
    created_at: AwareDatetime
    completed_at: AwareDatetime
    components: list[ComponentSummary] = Field(max_length=MAX_COMPONENTS)
    artifacts: list[ArtifactSummary] = Field(max_length=MAX_ARTIFACTS)
    labels: dict[str, str] = Field(default_factory=dict)
    sequence: int | None = Field(default=None, ge=1)  # as Manifest's: list must not show what verify refuses
    previous_id: str | None = None
    previous_sha256: str | None = None
    repository_id: RepositoryId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ManifestSummary:
        # Checked here too, so that `recovery list` names such a set rather than listing it.
        _unique_names([c.name for c in self.components])
        _check_consistent(
            {c.name: c.artifacts for c in self.components}, [(a.component, a.name) for a in self.artifacts]
        )
        return self

    @classmethod
    def of(cls, manifest: Manifest) -> ManifestSummary:
        return cls.model_validate(manifest.model_dump(exclude={"components": {"__all__": {"fingerprint"}}}))


def load_manifest(path: Path) -> Manifest:
    return load_as(path, Manifest)


# A manifest read whole, or as the inventory reads it.
ManifestModel = TypeVar("ManifestModel", Manifest, ManifestSummary)


def load_as(path: Path, model: type[ManifestModel]) -> ManifestModel:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise RepositoryError(f"{path}: manifest is {size} bytes, over the {MAX_MANIFEST_BYTES} limit")
        return model.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise RepositoryError(f"{path}: cannot read manifest: {exc.strerror}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{path}: malformed manifest ({loc}: {first['msg']})") from exc
