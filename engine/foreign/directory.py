"""A directory tree another tool left as the backup (an rsync target, a snapshot's mount).

It is copied entry by entry through drproof's safe writer (``engine.foreign.trees``):
links are copied as links and never followed, so a link in the backup pointing at
``/etc`` cannot make the copy read or write there; a device node refuses the copy.

A tree records no time of its own: the newest modification time of a file or link in it
is the latest moment its data can be from, so that is when the backup was taken at the
earliest, and what ``freshness`` judges. Directories' times are left out: creating them
(a copy, an S3 download) resets them, and with them the backup's apparent age.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from engine.components.base import Component
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import file_time
from engine.foreign.tree_target import TREE_KINDS, empty_target
from engine.foreign.trees import copy_tree, newest_in_tree


class DirectoryTree(ForeignFormat):
    name: ClassVar[str] = "directory"
    kinds: ClassVar[tuple[str, ...]] = TREE_KINDS
    Params: ClassVar[type[ForeignParams]] = ForeignParams
    description: ClassVar[str] = (
        "A directory tree (an rsync copy, a mounted snapshot; an S3 prefix ending in `/`), copied with links kept "
        "as links and never followed."
    )

    def inspect(self, local: Path) -> ForeignFacts:
        if not local.is_dir() or local.is_symlink():
            raise ComponentError(f"{local}: not a directory (a tar archive is format `tar`)")
        stats = newest_in_tree(local)
        taken = stats.newest_time()
        return ForeignFacts(
            taken_at=taken or file_time(local),
            taken_at_from="the newest modification time of a file or link in it"
            if taken
            else "the directory's modification time",
            size_bytes=stats.bytes,
            details={"entries": stats.entries, "files": stats.files, "content_bytes": stats.bytes},
        )

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        target = empty_target(component, f"the directory {local}")
        stats = copy_tree(local, target)
        return {"entries": stats.entries, "files": stats.files, "bytes": stats.bytes, "skipped": stats.skipped}
