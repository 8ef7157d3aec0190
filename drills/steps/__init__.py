"""Step kinds, by the YAML key of the step (``- backup: ...``)."""

from drills.steps.backup import Backup
from drills.steps.base import StepFailed, StepKind
from drills.steps.disaster import Disaster
from drills.steps.failover import Failover
from drills.steps.prune import Prune
from drills.steps.restore import Restore
from drills.steps.sql import Sql
from drills.steps.wait import Wait
from drills.steps.workload import Workload
from engine.registry import Registry

step_kinds: Registry[type[StepKind]] = Registry("step")
step_kinds.register(Backup)
step_kinds.register(Wait)
step_kinds.register(Workload)
step_kinds.register(Sql)
step_kinds.register(Disaster)
step_kinds.register(Restore)
step_kinds.register(Failover)
step_kinds.register(Prune)

__all__ = ["StepFailed", "StepKind", "step_kinds"]
