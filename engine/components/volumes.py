"""Volumes: directory trees of files of any content, like uploads or a shared disk.

Backed up as a streamed tar (per-file digests live in the fingerprint, so a mismatch
names the file). Restores extract into a staging directory and swap it in, so files a
ransomware-style fault encrypted in place are replaced, not merged.
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ByteSize, Field

from engine.components.base import WORKLOAD_MARK, ArtifactSource, Component, Health, SeedParams
from engine.components.files import (
    DIR,
    FILE,
    Check,
    extract_layers,
    extract_tar,
    tree_parts,
    walk_files,
    without_directories,
    write_tar,
)
from engine.errors import IntegrityError
from engine.fingerprint import LEGACY_SCHEME, Fingerprint, Part
from engine.repository.base import BackupSetWriter


class VolumesParams(SeedParams):
    files: int = Field(default=40, ge=0, le=10_000_000, description="Number of files to create.")
    file_size: ByteSize = Field(default=ByteSize(4096), description="Size of each file, e.g. 4KiB or 1MB.")
    directories: int = Field(default=4, ge=1, le=100_000, description="Sub-directories the files spread over.")
    symlinks: bool = Field(default=True, description="Also create a relative symlink inside the tree.")


class VolumesComponent(Component):
    name: ClassVar[str] = "volumes"
    server: ClassVar[str | None] = "directory"
    Params: ClassVar[type[SeedParams]] = VolumesParams
    description: ClassVar[str] = "A directory tree of files, backed up as a streamed tar."

    params: VolumesParams
    path: Path

    def provision(self) -> None:
        self.path = self.runtime.directory(self.instance)

    def seed(self) -> dict[str, Any]:
        p = self.params
        rng = random.Random(p.random_seed)
        total = 0
        for i in range(p.files):
            d = self.path / f"dir{i % p.directories:03d}"
            d.mkdir(exist_ok=True)
            size = int(p.file_size)
            with open(d / f"file{i:06d}.bin", "wb") as fh:
                remaining = size
                while remaining:
                    n = min(remaining, 1 << 20)
                    fh.write(rng.randbytes(n))
                    remaining -= n
            total += size
        if p.symlinks and p.files:
            os.symlink("dir000/file000000.bin", self.path / "latest.bin")
        return {"files": p.files, "bytes": total}

    def files(self) -> list[Path]:
        return [f for f in walk_files(self.path) if f.is_file() and not f.is_symlink()]

    def fingerprint(self) -> Fingerprint:
        return self._stable(tree_parts(self.path))

    # Scheme 2 adds a part per directory (empty ones and modes); scheme 1 had files only.
    fingerprint_scheme: ClassVar[str] = "volumes/2"
    legacy_blind_spots: ClassVar[dict[str, str]] = {
        LEGACY_SCHEME: "the backup's fingerprint (scheme 1, from an earlier drproof) recorded files only: empty "
        "directories and directory modes are not compared"
    }

    def _stable(self, parts: dict[str, Part], scheme: str | None = None) -> Fingerprint:
        """The fingerprint of the seed data: the live workload's files are left out."""
        workload = (f"{FILE}{WORKLOAD_MARK}/", f"{DIR}{WORKLOAD_MARK}")
        kept = {k: v for k, v in parts.items() if not k.startswith(workload)}
        if scheme == LEGACY_SCHEME:
            return self._fp(without_directories(kept), scheme)
        return self._fp(kept)

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        return self._stable(tree_parts(self.path), scheme) if scheme == LEGACY_SCHEME else None

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        return self._write_full(writer, None)

    def _write_full(self, writer: BackupSetWriter, parts: dict[str, Part] | None) -> dict[str, Any]:
        with writer.artifact(self.instance, "files.tar") as sink:
            entries = write_tar(self.path, sink, parts=parts)
        return {"entries": entries, "method": "streamed tar"}

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """One read of the tree: each file is digested as it is archived."""
        if incremental is not None:
            current = tree_parts(self.path)
            return self._write_changes(writer, incremental[0], current), self._stable(current)
        parts: dict[str, Part] = {}
        details = self._write_full(writer, parts)
        return details, self._stable(parts)

    proves_while_staging: ClassVar[bool] = True

    def restore(self, source: ArtifactSource) -> None:
        extract_tar(functools.partial(source.open, "files.tar"), self.path, self._prover(source))

    def _prover(self, source: ArtifactSource) -> Check:
        """The staged tree, digested as it was written, against the fingerprint of ``source``."""

        def check(staging: Path, parts: dict[str, Part]) -> None:
            scheme = source.fingerprint.scheme if source.fingerprint is not None else None
            self.prove_restored(source.fingerprint, self._stable(parts, scheme), f"staged in {staging}")

        return check

    supports_incremental: ClassVar[bool] = True

    def backup_incremental(
        self, writer: BackupSetWriter, parent: Fingerprint, parent_source: ArtifactSource
    ) -> dict[str, Any]:
        """Archive only files new or changed since ``parent``; list what to remove first.

        The parent's per-file digests come from its manifest, so deciding what changed
        costs one read of the tree, which is also this backup's fingerprint.
        """
        return self._write_changes(writer, parent, tree_parts(self.path))

    def _write_changes(self, writer: BackupSetWriter, parent: Fingerprint, current: dict[str, Part]) -> dict[str, Any]:
        def rel(name: str) -> str:
            return name.split(" ", 1)[1]

        entries = [n for n in current if n.startswith((FILE, DIR))]
        changed = sorted(
            rel(n) for n in entries if n not in parent.parts or parent.parts[n].digest != current[n].digest
        )
        gone = sorted(rel(n) for n in parent.parts if n.startswith((FILE, DIR)) and n not in current)
        # Changed files are removed before extraction too, so a file that became a link
        # (or the reverse) is replaced, not merged. A changed directory (its mode) is
        # archived again on its own, never removed: its files stay.
        removals = sorted(set(gone) | {r for r in changed if FILE + r in parent.parts})
        with writer.artifact(self.instance, "changes.json") as sink:
            sink.write(json.dumps({"remove": removals, "changed": changed}, indent=1).encode())
        with writer.artifact(self.instance, "files.tar") as sink:
            write_tar(self.path, sink, only=changed)
        return {"method": "incremental tar", "changed": len(changed), "removed": len(gone)}

    def restore_chain(self, sources: list[ArtifactSource]) -> None:
        layers = []
        for source in sources:
            removals: list[str] = []
            if "changes.json" in source.artifacts:
                removals = _removals(source)
            layers.append((functools.partial(source.open, "files.tar"), removals))
        extract_layers(layers, self.path, self._prover(sources[-1]))

    def health(self) -> Health:
        """The tree is there and can be walked; its content is the fingerprint's to judge.

        Why no file is opened: this ran before every fidelity check, which reads every
        byte of every file anyway and names an unreadable one as a differing part. Opening
        each file here first cost a second pass over the tree (issue 14: a tenth of a
        millisecond per file, more than tar spends on it).
        """
        if not self.path.is_dir():
            return Health(ok=False, detail=f"{self.path} is not a directory")
        count = sum(1 for _ in walk_files(self.path))
        return Health(ok=True, detail=f"{count} entries listed")


MAX_CHANGES = 256 * 1024 * 1024  # a list of changed paths: ~50 bytes a path, millions of paths


def _removals(source: ArtifactSource) -> list[str]:
    """An incremental layer's removal list, refused if it is not one (a bomb, a forgery)."""
    data = source.read_small("changes.json", MAX_CHANGES)
    try:
        doc = json.loads(data.decode("utf-8"))
        removals = doc["remove"]
        if not isinstance(removals, list) or not all(isinstance(r, str) for r in removals):
            raise TypeError("remove is not a list of paths")
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"changes.json of an incremental backup is not a removal list ({exc})") from None
    return removals
