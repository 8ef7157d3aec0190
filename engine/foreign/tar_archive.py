"""A tar archive of a directory tree (a volume, configuration files), as another tool wrote it.

GNU tar, bsdtar, Python's tarfile and most backup scripts write these, plain or
compressed (gzip, zstd, bzip2, xz: recognised by the first bytes). Every member header
is read, and hostile names refused, while inspecting, before any sandbox exists; the
restore then unpacks through drproof's own safe writer (``engine.foreign.trees``).

An archive records no time of its own. The moment it was taken lies between the newest
modification time of its files and links (data older than the backup; a directory's time
is left out, as a copy resets it) and the archive file's
own modification time (written then, or later by a copy that did not keep it). By
default the earlier of the two is used: ``freshness`` then never passes on a time the
backup cannot be sure of. Trees that rarely change make that conservative; say
``taken_at: file`` to use the archive file's time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from engine.components.base import Component
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import file_time
from engine.foreign.tree_target import TREE_KINDS, empty_target
from engine.foreign.trees import compression, scan, unpack


class TarParams(ForeignParams):
    strip_components: int = Field(
        default=0, ge=0, le=64, description="Leading path components to remove from member names, as GNU tar's option."
    )
    taken_at: Literal["newest", "file"] = Field(
        default="newest",
        description="When the backup was taken: `newest` is the earlier of the newest file's modification time "
        "and the archive file's; `file` is the archive file's modification time.",
    )


class TarArchive(ForeignFormat):
    name: ClassVar[str] = "tar"
    kinds: ClassVar[tuple[str, ...]] = TREE_KINDS
    Params: ClassVar[type[ForeignParams]] = TarParams
    description: ClassVar[str] = (
        "A tar archive of a directory tree (plain, gzip, zstd, bzip2 or xz), unpacked with hostile members refused."
    )

    params: TarParams

    def inspect(self, local: Path) -> ForeignFacts:
        if local.is_dir():
            raise ComponentError(f"{local}: a directory, not a tar archive (use format `directory`)")
        stats = scan(local, self.params.strip_components)
        written = file_time(local)
        newest = stats.newest_time()
        if self.params.taken_at == "file" or newest is None:
            taken, taken_from = written, "the archive file's modification time"
        elif newest <= written:
            taken, taken_from = newest, "the newest modification time of a file in it"
        else:
            taken, taken_from = written, "the archive file's modification time (a member is newer than the file)"
        return ForeignFacts(
            taken_at=taken,
            taken_at_from=taken_from,
            size_bytes=local.stat().st_size,
            details={
                "compression": compression(local),
                "entries": stats.entries,
                "files": stats.files,
                "content_bytes": stats.bytes,
            },
        )

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        target = empty_target(component, f"the tar archive {local.name}")
        stats = unpack(local, target, self.params.strip_components)
        return {"entries": stats.entries, "files": stats.files, "bytes": stats.bytes, "skipped": stats.skipped}
