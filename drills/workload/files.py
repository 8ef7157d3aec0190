"""Workload files in a directory of the volume, each written whole, synced, then renamed.

Rename after fsync makes a record appear complete or not at all, so a backup taken
while the workload runs never holds half a record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from drills.workload.base import WORKLOAD_MARK, Writer
from engine.components.volumes import WORKLOAD_MARKER, WORKLOAD_MARKER_FILE, VolumesComponent, workload_marked
from engine.errors import ComponentError


class VolumeWriter(Writer):
    name: ClassVar[str] = "volumes"

    def open(self) -> None:
        assert isinstance(self.component, VolumesComponent)
        self.root = self.component.path / WORKLOAD_MARK
        self.root.mkdir(exist_ok=True)
        # The recorded fact that this directory is the workload's: fingerprints leave it
        # out only where this file is (a volume's own drproof_workload/ is compared).
        marker = self.root / WORKLOAD_MARKER_FILE
        if not workload_marked(self.component.path):
            tmp = self.root / f".{WORKLOAD_MARKER_FILE}.tmp"
            tmp.write_bytes(WORKLOAD_MARKER)
            os.rename(tmp, marker)

    def write(self, seq: int) -> None:
        tmp = self.root / f".{seq}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{seq}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.root / f"{seq:010d}")

    def survivors(self) -> set[int]:
        assert isinstance(self.component, VolumesComponent)
        root: Path = self.component.path / WORKLOAD_MARK
        try:
            return {int(p.name) for p in root.iterdir() if p.name.isdigit()}
        except FileNotFoundError:
            return set()  # the workload's directory is not there: none of its files came back
        except OSError as exc:
            raise ComponentError(f"{root}: cannot list the workload's files: {exc.strerror}") from None
