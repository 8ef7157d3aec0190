"""Assertions, by the name used in ``assertions:``."""

from drills.assertions.backup_integrity import BackupIntegrity
from drills.assertions.base import Assertion, AssertionParams, DrillState, RestoreAttempt
from drills.assertions.canary import Canary
from drills.assertions.command_check import CommandCheck
from drills.assertions.drift import Drift
from drills.assertions.failover import FailoverOutcome
from drills.assertions.fidelity import Fidelity
from drills.assertions.freshness import Freshness
from drills.assertions.http_check import HttpCheck
from drills.assertions.postgres_checks import PostgresChecks
from drills.assertions.query import Query
from drills.assertions.redis_check import RedisCheck
from drills.assertions.repository_integrity import RepositoryIntegrity
from drills.assertions.rpo import Rpo
from drills.assertions.rto import Rto
from engine.registry import Registry

assertion_kinds: Registry[type[Assertion]] = Registry("assertion")
assertion_kinds.register(Fidelity)
assertion_kinds.register(Rto)
assertion_kinds.register(Rpo)
assertion_kinds.register(BackupIntegrity)
assertion_kinds.register(PostgresChecks)
assertion_kinds.register(Freshness)
assertion_kinds.register(Drift)
assertion_kinds.register(Query)
assertion_kinds.register(RedisCheck)
assertion_kinds.register(HttpCheck)
assertion_kinds.register(CommandCheck)
assertion_kinds.register(Canary)
assertion_kinds.register(FailoverOutcome)
assertion_kinds.register(RepositoryIntegrity)

__all__ = ["Assertion", "AssertionParams", "DrillState", "RestoreAttempt", "assertion_kinds"]
