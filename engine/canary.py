"""Canaries: a sentinel planted at backup time that proves *which* backup a restore brought back.

Fidelity proves a restored copy holds what a backup's fingerprint describes; it does not
say the backup was the one the operator meant (an older set restored by mistake is
faithful to itself). With a canary, the backup engine writes a random value into the
component just before taking the backup (a row in a ``drproof_canary`` table, a
``drproof:canary`` key, a ``.drproof-canary`` file) and records only its SHA-256 and the
moment in the manifest. After a restore, reading the value back and hashing it proves
that this very backup was restored, and how old it is. The value itself is never
written anywhere else and never printed.

It is opt-in (a canary writes into the data it protects): ``backup: {canary: true}`` in a
drill, ``canary: true`` on a component of backup-config.yaml.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from engine.components.base import Component
from engine.errors import ComponentError

CANARY_NAME = "drproof_canary"  # table; the Redis key is "drproof:canary", the file ".drproof-canary"


def plant(component: Component) -> dict[str, Any]:
    """Write a fresh random value into ``component``; return what the manifest records of it."""
    if not component.supports_canary:
        raise ComponentError(f"{component.name} {component.instance!r} cannot hold a canary")
    planted_at = datetime.now(UTC)
    value = f"{secrets.token_hex(16)}@{planted_at.isoformat()}"
    where = component.plant_canary(value)
    return {"sha256": digest(value), "planted_at": planted_at.isoformat(), "where": where}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
