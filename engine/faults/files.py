"""Faults that hit directory components: vectorstore, volumes and configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.components.configuration import ConfigurationComponent
from engine.components.files import walk_files
from engine.components.vectorstore import INDEX, VectorstoreComponent
from engine.components.volumes import VolumesComponent
from engine.errors import FaultError
from engine.faults.base import Fault, FaultContext, FaultParams, flip_bytes


def _dir(ctx: FaultContext) -> Path:
    comp = ctx.component
    path = getattr(comp, "path", None)
    if not isinstance(path, Path):
        raise FaultError(f"component {getattr(comp, 'instance', '?')!r} has no directory")
    return path


def _inside(root: Path, rel: str, fault: str) -> Path:
    """A path named in a fault's parameters, refused if it leaves the component's directory."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise FaultError(f"{fault}: {rel!r} is outside the component's directory")
    return path


def _named(root: Path, rel: str, fault: str) -> Path:
    """The entry ``rel`` names itself, not what it resolves to: deleting a link inside the
    tree (``sites-enabled/shop.conf``) removed the file it points to and left the link."""
    _inside(root, rel, fault)
    name = Path(rel).name  # resolve the directories on the way, as rm does, not the last name
    path = (root / rel).parent.resolve() / name
    if name in ("", ".", "..") or not path.is_relative_to(root.resolve()):
        raise FaultError(f"{fault}: {rel!r} is outside the component's directory")
    return path


def _regular_files(root: Path) -> list[Path]:
    return [f for f in walk_files(root) if f.is_file() and not f.is_symlink()]


def _pick(ctx: FaultContext, files: list[Path], fraction: float, count: int | None) -> list[Path]:
    if not files:
        raise FaultError(f"no files to damage in {ctx.component.instance if ctx.component else '?'!r}")
    n = count if count is not None else max(1, round(len(files) * fraction))
    return sorted(ctx.rng.sample(files, min(n, len(files))))


# -- vectorstore ---------------------------------------------------------------------------


class DeleteIndex(Fault):
    name: ClassVar[str] = "delete_index"
    targets: ClassVar[frozenset[str]] = frozenset({VectorstoreComponent.name})
    Params: ClassVar[type[FaultParams]] = FaultParams
    description: ClassVar[str] = "Delete the FAISS index file; id map and metadata survive."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        path = _dir(ctx) / INDEX
        if not path.exists():
            raise FaultError(f"delete_index: {path.name} does not exist")
        size = path.stat().st_size
        path.unlink()
        return {"deleted": INDEX, "bytes": size}


class CorruptBytesParams(FaultParams):
    file: str = Field(default=INDEX, description="File in the store to damage.")
    count: int = Field(default=16, ge=1, le=1_000_000, description="How many bytes to invert.")


class CorruptBytes(Fault):
    name: ClassVar[str] = "corrupt_bytes"
    targets: ClassVar[frozenset[str]] = frozenset({VectorstoreComponent.name})
    Params: ClassVar[type[FaultParams]] = CorruptBytesParams
    description: ClassVar[str] = "Invert bytes at random offsets of a store file, as bit rot or a bad disk would."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, CorruptBytesParams)
        path = _inside(_dir(ctx), p.file, "corrupt_bytes")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise FaultError(f"corrupt_bytes: {p.file} does not exist in the store") from None
        if size == 0:
            raise FaultError(f"corrupt_bytes: {p.file} is empty, so there is nothing to corrupt")
        offsets = sorted(ctx.rng.sample(range(size), min(p.count, size)))
        with open(path, "r+b") as fh:
            for off in offsets:
                fh.seek(off)
                byte = fh.read(1)
                fh.seek(off)
                fh.write(flip_bytes(byte))
            fh.flush()
            os.fsync(fh.fileno())
        return {"file": p.file, "offsets": offsets[:50], "bytes_changed": len(offsets)}


# -- volumes ---------------------------------------------------------------------------------


class FileSelection(FaultParams):
    fraction: float = Field(default=0.5, gt=0, le=1, description="Share of files hit (ignored if `count` is set).")
    count: int | None = Field(default=None, ge=1, description="Exact number of files hit.")


class DeleteFiles(Fault):
    name: ClassVar[str] = "delete_files"
    targets: ClassVar[frozenset[str]] = frozenset({VolumesComponent.name})
    Params: ClassVar[type[FaultParams]] = FileSelection
    description: ClassVar[str] = "Delete a share of the files in the volume."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, FileSelection)
        root = _dir(ctx)
        victims = _pick(ctx, _regular_files(root), p.fraction, p.count)
        for f in victims:
            f.unlink()
        return {"files_deleted": len(victims), "examples": [v.relative_to(root).as_posix() for v in victims[:10]]}


class EncryptParams(FileSelection):
    fraction: float = Field(default=1.0, gt=0, le=1, description="Share of files encrypted.")


class EncryptFiles(Fault):
    name: ClassVar[str] = "encrypt_files"
    targets: ClassVar[frozenset[str]] = frozenset({VolumesComponent.name})
    Params: ClassVar[type[FaultParams]] = EncryptParams
    description: ClassVar[str] = "Ransomware: overwrite files in place with random bytes of the same length."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, EncryptParams)
        root = _dir(ctx)
        victims = _pick(ctx, _regular_files(root), p.fraction, p.count)
        total = 0
        for f in victims:
            size = f.stat().st_size
            with open(f, "r+b") as fh:
                fh.write(os.urandom(size))
                fh.flush()
                os.fsync(fh.fileno())
            total += size
        return {
            "files_encrypted": len(victims),
            "bytes_overwritten": total,
            "examples": [v.relative_to(root).as_posix() for v in victims[:10]],
        }


# -- configuration --------------------------------------------------------------------------


class ConfigFileParams(FaultParams):
    file: str | None = Field(default=None, description="File to hit, relative to the component; default: all.")


class DeleteConfig(Fault):
    name: ClassVar[str] = "delete"
    targets: ClassVar[frozenset[str]] = frozenset({ConfigurationComponent.name})
    Params: ClassVar[type[FaultParams]] = ConfigFileParams
    description: ClassVar[str] = "Delete one configuration file, or all of them."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ConfigFileParams)
        root = _dir(ctx)
        files = _regular_files(root) if p.file is None else [_named(root, p.file, "delete")]
        for f in files:
            if not f.is_file():
                raise FaultError(f"delete: configuration file {p.file!r} does not exist")
            f.unlink()
        if not files:
            raise FaultError("delete: the component has no files to delete")
        return {"files_deleted": [f.relative_to(root.resolve()).as_posix() for f in files]}


class ModifyParams(ConfigFileParams):
    file: str | None = Field(default="app.yaml", description="File to change, relative to the component.")
    append: str = Field(
        default="log_level: debug  # hand edit during an incident\n",
        description="Text appended to the file: a drift nobody put in version control.",
    )


class ModifyConfig(Fault):
    name: ClassVar[str] = "modify"
    targets: ClassVar[frozenset[str]] = frozenset({ConfigurationComponent.name})
    Params: ClassVar[type[FaultParams]] = ModifyParams
    description: ClassVar[str] = "Configuration drift: append an unreviewed change to a file."

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, ModifyParams)
        root = _dir(ctx)
        target = _inside(root, p.file or "app.yaml", "modify")
        if not target.is_file():
            raise FaultError(f"modify: configuration file {p.file!r} does not exist")
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(p.append)
        return {"file": target.relative_to(root.resolve()).as_posix(), "bytes_appended": len(p.append.encode())}
