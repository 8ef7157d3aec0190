"""What changed in a live tree while it was being archived.

A backup of a running system reads files that are being written, rotated and deleted:
a log truncated by ``copytruncate`` shrinks under the reader, a temporary file vanishes
between the listing and the open. tar warns and carries on; drproof did neither (a
traceback in 3 of 4 runs of a shrinking file). Now the archive stays consistent (a
shrunk file is stored zero-filled to the size its header announced, as GNU tar does),
the fingerprint describes the bytes actually stored, and each such entry is recorded
here, so the manifest and the report say which files were not captured as one
consistent state.
"""

from __future__ import annotations

import os
import stat
from typing import Any

MAX_LISTED = 50  # entries named in the manifest; the count covers all


class LiveChanges:
    """Entries that changed, shrank, grew or vanished while being archived."""

    def __init__(self) -> None:
        self.count = 0
        self.listed: list[str] = []
        # Every entry listed but gone when opened, in full: an incremental backup must take
        # them out of a fingerprint made before it archived (rare, so a list is enough).
        self.vanished: list[str] = []
        # Symbolic links and FIFOs with more than one name (``shared_inode``): the first
        # name met of each, by (device, inode), and every further name, said once each.
        self._first_names: dict[tuple[int, int], str] = {}
        self.unlinked: dict[str, str] = {}
        # Entries whose inode flags their file system could not say (``flags_unreadable``).
        self.flagless: dict[str, None] = {}

    def note(self, rel: str, what: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(f"{rel}: {what}")

    def gone(self, rel: str) -> None:
        """``rel`` was listed but had vanished when it was opened: nothing of it is stored."""
        self.vanished.append(rel)
        self.note(rel, "vanished while archived; not stored")

    def after_read(self, rel: str, fd: int, before: os.stat_result, stored: int) -> None:
        """Note the file if it is no longer what it was when its reading began."""
        now = os.fstat(fd)
        if now.st_size != before.st_size:
            verb = "grew" if now.st_size > before.st_size else "shrank"
            self.note(rel, f"{verb} from {before.st_size} to {now.st_size} bytes while archived; {stored} bytes stored")
        elif now.st_mtime_ns != before.st_mtime_ns:
            self.note(rel, "changed while archived (its modification time moved); stored as read")

    def shared_inode(self, rel: str, st: os.stat_result) -> None:
        """Note a symbolic link or FIFO that has more than one name (a hard link of one).

        tar (and drproof's fingerprint scheme 4) links again only regular files: each
        further name of such an entry is archived, restored and compared as an entry of
        its own. It is rare and harmless for a symbolic link; two names of one FIFO are
        one pipe to the processes that use them. The set says so (``HARD_LINKS_NOT_KEPT``)
        rather than a restore turning them into copies silently.
        """
        key = (st.st_dev, st.st_ino)
        first = self._first_names.setdefault(key, rel)
        if first != rel and rel not in self.unlinked:
            what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "FIFO"
            self.unlinked[rel] = f"{rel}: a {what} hard-linked to '{first}'; restored as a {what} of its own"

    def flags_unreadable(self, rel: str) -> None:
        """Note an entry whose inode flags could not be read (``engine.components.fflags``: NFS, FUSE).

        Its part says "?" (never "none"), and the set says so (``FLAGS_NOT_READABLE``): a
        comparison of "?" with "?" is no check of the flags, so the verdict carries the note.
        """
        self.flagless[rel] = None

    def summary(self) -> dict[str, Any] | None:
        """For a component's details in the manifest; None when nothing changed."""
        if not self.count:
            return None
        return {"count": self.count, "entries": self.listed}


def with_changes(details: dict[str, Any], changes: LiveChanges) -> dict[str, Any]:
    """A backup's details, with what changed while it was archived when anything did.

    And the symbolic links and FIFOs whose hard links the set does not keep (``shared_inode``).
    """
    summary = changes.summary()
    out = {**details, "changed_while_archived": summary} if summary is not None else dict(details)
    if changes.unlinked:
        entries = list(changes.unlinked.values())
        out[HARD_LINKS_KEY] = {"count": len(entries), "entries": entries[:MAX_LISTED]}
    if changes.flagless:
        names = list(changes.flagless)
        out[FLAGS_KEY] = {"count": len(names), "entries": names[:MAX_LISTED]}
    return out


FLAGS_KEY = "inode_flags_not_readable"
FLAGS_NOT_READABLE = (
    "inode flags (chattr +i, +a ...) could not be read on {count} entr(y/ies) of this set (its file system does "
    "not say, e.g. NFS or FUSE; e.g. {first}): they are recorded as not readable, so whether they were immutable "
    "or append-only is not compared"
)


def flags_note(details: dict[str, Any]) -> str | None:
    """The named note a comparison with this set carries when it could not read some inode flags."""
    found = details.get(FLAGS_KEY)
    if not isinstance(found, dict) or not found.get("count"):
        return None
    entries = [str(e) for e in found.get("entries", [])]
    return FLAGS_NOT_READABLE.format(count=int(found["count"]), first=repr(entries[0]) if entries else "?")


HARD_LINKS_KEY = "hard_links_not_kept"
HARD_LINKS_NOT_KEPT = (
    "hard links between symbolic links or FIFOs are not kept: {count} such name(s) are backed up, restored and "
    "compared as entries of their own, so which of them share one inode is not compared (e.g. {first})"
)


def links_note(details: dict[str, Any]) -> str | None:
    """The named note a comparison with this set carries when it holds such names (``HARD_LINKS_NOT_KEPT``)."""
    found = details.get(HARD_LINKS_KEY)
    if not isinstance(found, dict) or not found.get("count"):
        return None
    entries = [str(e) for e in found.get("entries", [])]
    return HARD_LINKS_NOT_KEPT.format(count=int(found["count"]), first=entries[0] if entries else "?")


def describe(details: dict[str, Any]) -> list[str]:
    """The lines a report shows for one component's ``changed_while_archived`` details."""
    changed = details.get("changed_while_archived")
    if not isinstance(changed, dict):
        return []
    entries = [str(e) for e in changed.get("entries", [])]
    rest = int(changed.get("count", len(entries))) - len(entries)
    return entries + ([f"... and {rest} more"] if rest > 0 else [])
