"""``source: {backups: ...}``: restore tests of backups drproof did not make.

Each entry names a component of the sandbox, the format of its backup (a registered
``engine.foreign`` format) and where the backup is (a local path or an S3 URL). The
backups are inspected (when taken, from which server version) before anything starts,
each sandbox server is of the version its backup needs, and each backup is restored into
a fresh, empty component. No fingerprint was taken when they were made, so fidelity is
*not compared*: the restored state's fingerprint is recorded as evidence instead, and a
`drift` check compares its size with the previous restore test of the same source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, create_model

from drills.strict import Strict, literal, tagged
from engine.components import component_kinds
from engine.errors import ConfigError
from engine.foreign import ForeignFacts, ForeignFormat, foreign_formats
from engine.foreign.fetch import S3Location, is_s3, materialize
from engine.runtime.base import ServerWanted

if TYPE_CHECKING:
    from engine.components.base import Component
    from engine.runtime.base import Runtime


def _format_model(fmt: type[ForeignFormat]) -> type[Strict]:
    kinds: Any = Literal[tuple(fmt.kinds)]
    model: Any = create_model(
        f"{''.join(p.capitalize() for p in fmt.name.split('_'))}Backup",
        __base__=(Strict, fmt.Params),
        __doc__=fmt.description,
        format=(literal(fmt.name), Field(description="The backup's format.")),
        kind=(
            kinds,
            Field(default=fmt.kinds[0], description="Component kind of the sandbox: " + ", ".join(fmt.kinds) + "."),
        ),
    )
    return tagged(model, fmt.name)


FOREIGN_MODELS = [_format_model(f) for f in foreign_formats]
if TYPE_CHECKING:
    ForeignSpec = Any
else:
    ForeignSpec = Annotated[Union[tuple(FOREIGN_MODELS)], Field(discriminator="format")]  # noqa: UP007


class S3Spec(Strict):
    endpoint_url: str | None = Field(default=None, description="For S3-compatible stores (MinIO, Ceph, SeaweedFS).")
    region: str | None = Field(default=None, description="The bucket's region; default: us-east-1.")


@dataclass
class ForeignBackup:
    name: str
    format: ForeignFormat
    location: str
    local: Path
    facts: ForeignFacts
    kind: str
    # Seconds its download from S3 took (0 for a local path): part of the restore's time,
    # as it would be on the day, though it happens before the sandbox starts.
    fetch_seconds: float = 0.0


@dataclass
class ForeignSource:
    """The foreign backups of a restore test, inspected, in the order the scenario lists them."""

    backups: dict[str, ForeignBackup]
    opened_at: datetime
    components: list[str] = field(default_factory=list)
    freshness_limit: float | None = None

    @property
    def backup_id(self) -> str:
        return "foreign backups"

    @property
    def label(self) -> str:
        oldest = min(self.backups.values(), key=lambda b: b.facts.taken_at or self.opened_at)
        return f"the oldest foreign backup ({oldest.name}: {oldest.location})"

    @property
    def taken_at(self) -> datetime | None:
        """The oldest backup's time: a stack restored from them is that old."""
        times = [b.facts.taken_at for b in self.backups.values()]
        return None if not times or any(t is None for t in times) else min(t for t in times if t is not None)

    @property
    def taken_at_from(self) -> str:
        """Where the time of each backup comes from, for the evidence."""
        return "; ".join(f"{n}: {b.facts.taken_at_from}" for n, b in self.backups.items())

    @property
    def dated_by_file_stamp(self) -> list[str]:
        """The backups dated only by their file's own modification time, which a copy resets."""
        return [n for n, b in self.backups.items() if b.facts.dated_by_file_stamp]

    @property
    def age_seconds(self) -> float:
        taken = self.taken_at
        return (self.opened_at - taken).total_seconds() if taken is not None else float("nan")

    def describe(self) -> str:
        return "; ".join(f"{b.name}: {b.format.name} {b.location}" for b in self.backups.values())


def open_foreign(specs: dict[str, Any], s3: S3Spec | None, base_dir: Path, workdir: Path) -> ForeignSource:
    """Fetch (from S3) and inspect every foreign backup, before any sandbox server starts."""
    location = S3Location(s3.endpoint_url, s3.region) if s3 is not None else None
    backups: dict[str, ForeignBackup] = {}
    for name, spec in specs.items():
        fmt = foreign_formats.get(spec.format)(spec)
        started = time.monotonic()
        local = materialize(spec.path, base_dir, workdir, location)
        fetched = time.monotonic() - started if is_s3(spec.path) else 0.0
        backups[name] = ForeignBackup(name, fmt, spec.path, local, fmt.inspect(local), spec.kind, fetched)
    return ForeignSource(backups, datetime.now(UTC), list(backups))


def foreign_component(backup: ForeignBackup, runtime: Runtime) -> Component:
    """A sandbox component for one foreign backup, its server of the version the backup needs."""
    if backup.kind not in component_kinds:
        raise ConfigError(f"{backup.name!r}: unknown component kind {backup.kind!r}")
    kind = component_kinds.get(backup.kind)
    facts = backup.facts
    server = backup.format.server
    if server is not None and facts.server_major is not None and facts.server_version is not None:
        why = f"the {backup.format.name} backup of {backup.name!r} ({backup.location}) was taken from {facts.server_version}"
        runtime.want(backup.name, ServerWanted(server, facts.server_major, facts.server_version, why))
    return kind(backup.name, backup.format.component_params(kind, facts), runtime)
