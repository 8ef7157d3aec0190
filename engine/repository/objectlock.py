"""S3 Object Lock as drproof uses it: what it asks for on each write, and what holds a set.

Each object drproof writes into an S3 repository configured with Object Lock (artifacts,
manifests, verification records, lease objects) carries its own retention: a mode and a
retain-until date ``retention`` after the write. Until then the store refuses to delete
or overwrite that version; COMPLIANCE refuses everyone, GOVERNANCE everyone without the
``s3:BypassGovernanceRetention`` permission (drproof never asks to bypass). A legal hold
holds a version with no date at all.

Retention (prune) asks the store which versions of a set are still held (:class:`Hold`)
and keeps such a set whole, naming the object and the date, instead of trying deletes the
store would refuse half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from engine.errors import RepositoryError

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True)
class ObjectLock:
    """The retention drproof puts on every object it writes."""

    mode: LockMode
    retention: timedelta

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0):
            raise ValueError("object lock retention must be positive")

    def headers(self, now: datetime) -> dict[str, object]:
        """boto3 arguments of a PUT (or multipart upload start) that lock the new version."""
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": now + self.retention}

    def describe(self) -> str:
        days = self.retention / timedelta(days=1)
        span = f"{days:g} day{'s' if days != 1 else ''}" if days >= 1 else f"{self.retention.total_seconds():g} s"
        return f"{self.mode} for {span}"


@dataclass(frozen=True)
class Hold:
    """One stored version the store will not let anyone delete yet, and until when."""

    backup_id: str
    key: str
    version_id: str | None
    mode: str | None
    until: datetime | None
    legal_hold: bool = False

    def reason(self) -> str:
        if self.legal_hold:
            return f"object lock: {self.key} is under a legal hold"
        assert self.until is not None
        return f"object lock: {self.key} is locked ({self.mode}) until {self.until.isoformat()}"

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "object": self.key,
            "version_id": self.version_id,
            "mode": self.mode,
            "until": self.until.isoformat() if self.until else None,
            "legal_hold": self.legal_hold,
        }


class ObjectLocked(RepositoryError):
    """The store refused to delete (or overwrite) a version because Object Lock holds it."""

    def __init__(self, message: str, holds: list[Hold] | None = None) -> None:
        super().__init__(message)
        self.holds = holds or []
