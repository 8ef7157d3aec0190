"""Faults, by the name used in a disaster step's ``fault:``."""

from engine.faults.application import KillProcess, StopProcess
from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams
from engine.faults.containers import KillContainer, RemoveContainer, RemoveVolume, StopContainer
from engine.faults.failover import KillPrimary, KillReplica, KillSentinelMajority, LagReplica, PausePrimary, StopPrimary
from engine.faults.files import CorruptBytes, DeleteConfig, DeleteFiles, DeleteIndex, EncryptFiles, ModifyConfig
from engine.faults.integrity import DeleteManifest, ForgeArtifact, ReplaySet, SkewClock
from engine.faults.objectlock import DeleteLockedObject
from engine.faults.offsite import DeleteLocalBackups, LoseEncryptionKey, OffsiteUnavailable
from engine.faults.postgres import DeleteAllRows, DeleteDataDir, DropTable, TruncateTable
from engine.faults.postgres_storage import CorruptPage, DeleteWalSegments
from engine.faults.redis import ExpireKeys, FlushAll, Kill
from engine.faults.repository import CorruptArtifact, DeleteArtifact, TruncateArtifact
from engine.faults.vectorstore import SwapModel, TruncateIndex
from engine.registry import Registry

faults: Registry[type[Fault]] = Registry("fault")
for _fault in (
    DropTable,
    DeleteDataDir,
    FlushAll,
    Kill,
    DeleteIndex,
    CorruptBytes,
    DeleteFiles,
    EncryptFiles,
    DeleteConfig,
    ModifyConfig,
    CorruptArtifact,
    KillContainer,
    StopContainer,
    RemoveContainer,
    RemoveVolume,
    DeleteAllRows,
    TruncateTable,
    CorruptPage,
    DeleteWalSegments,
    ExpireKeys,
    TruncateIndex,
    SwapModel,
    TruncateArtifact,
    DeleteArtifact,
    DeleteLocalBackups,
    LoseEncryptionKey,
    OffsiteUnavailable,
    KillProcess,
    StopProcess,
    KillPrimary,
    StopPrimary,
    PausePrimary,
    KillReplica,
    LagReplica,
    KillSentinelMajority,
    DeleteLockedObject,
    ForgeArtifact,
    ReplaySet,
    DeleteManifest,
    SkewClock,
):
    faults.register(_fault)


def fits(fault: type[Fault], kind: str) -> bool:
    """Whether ``fault`` can hit a component of ``kind``.

    A kind built on another (postgres-physical on postgres) is the same server
    underneath, so every fault for the base kind fits it too, with no list to update
    when a variant is added.
    """
    from engine.components import component_kinds

    if kind in fault.targets:
        return True
    if kind not in component_kinds:
        return False
    lineage = {c.__dict__["name"] for c in component_kinds.get(kind).__mro__ if isinstance(c.__dict__.get("name"), str)}
    return bool(lineage & fault.targets)


__all__ = ["REPOSITORY_TARGET", "Fault", "FaultContext", "FaultParams", "faults", "fits"]
