"""Faults, by the name used in a disaster step's ``fault:``."""

from engine.faults.base import REPOSITORY_TARGET, Fault, FaultContext, FaultParams
from engine.faults.containers import KillContainer, RemoveContainer, RemoveVolume, StopContainer
from engine.faults.files import CorruptBytes, DeleteConfig, DeleteFiles, DeleteIndex, EncryptFiles, ModifyConfig
from engine.faults.postgres import DeleteDataDir, DropTable
from engine.faults.redis import FlushAll, Kill
from engine.faults.repository import CorruptArtifact
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
):
    faults.register(_fault)

__all__ = ["REPOSITORY_TARGET", "Fault", "FaultContext", "FaultParams", "faults"]
