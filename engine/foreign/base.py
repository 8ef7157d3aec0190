"""Backups drproof did not make: the contract every foreign format fulfils.

Most teams already have backups: a ``pg_dump`` file, a pgBackRest stanza, a Redis RDB
file, a tar of a volume. A restore test of them proves they restore; it cannot prove they
hold what the source held when they were taken, because no fingerprint was recorded then.
So a foreign format only *inspects* what it is given (when it was taken, from which
server version, how big) and *restores* it into a fresh, empty sandbox component; the
restored state is then fingerprinted as evidence, never compared with a reference it
does not have.

A format is one module here plus one registration line in ``engine/foreign/__init__.py``;
its ``Params`` model is what a scenario writes for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.components.base import Component


class ForeignParams(BaseModel):
    """What a scenario says about one foreign backup; unknown keys are errors."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    path: str = Field(
        description="The backup: a local path (relative to the scenario) or an S3 URL `s3://bucket/key` "
        "(a key prefix ending in `/` for a directory)."
    )


@dataclass
class ForeignFacts:
    """What inspecting a foreign backup found, before anything is restored."""

    taken_at: datetime | None  # when the backup was taken, as it records it (or its file's time)
    taken_at_from: str  # where that time comes from: "the dump's header", "file modification time"
    server_version: str | None = None  # the version of the server it was taken from, when it says
    server_major: int | None = None
    size_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # for the report: format, database, ...

    @property
    def dated_by_file_stamp(self) -> bool:
        """Whether ``taken_at`` is the backup file's (or directory's) own modification time.

        Any copy, ``touch`` or upload resets that stamp to "now": found by review, a month-old
        plain dump copied nightly to where the restore test reads it passed ``freshness``
        as one second old. A time the backup records inside itself (a dump's header, an
        RDB's ctime, backup_label, the members of a tar) is not reset by a copy.
        """
        text = self.taken_at_from
        return "modification time" in text and "of a file in it" not in text


class ForeignFormat(ABC):
    name: ClassVar[str]  # what a scenario writes as `format:`
    kinds: ClassVar[tuple[str, ...]]  # component kinds it restores into; the first is the default
    # The kind of server whose version the backup pins ("postgres", "redis"), if any: the
    # runtime is asked for that version (``Runtime.want``) before the sandbox starts.
    server: ClassVar[str | None] = None
    Params: ClassVar[type[ForeignParams]]
    description: ClassVar[str]

    def __init__(self, params: ForeignParams) -> None:
        self.params = params

    @abstractmethod
    def inspect(self, local: Path) -> ForeignFacts:
        """Read what the backup says about itself; raise ComponentError if it is not one."""

    @abstractmethod
    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        """Restore into ``component``, a fresh and empty sandbox one; return what was done."""

    def component_params(self, kind: type[Component], facts: ForeignFacts) -> Any:
        """The sandbox component's parameters (a database name the dump names, ...)."""
        return kind.Params()
