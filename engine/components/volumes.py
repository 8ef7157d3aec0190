"""Volumes: directory trees of files of any content, like uploads or a shared disk.

Backed up as a streamed tar (per-file digests live in the fingerprint, so a mismatch
names the file; a volume of more than a few thousand files keeps them in an artifact of
its own, see :mod:`engine.partstream`). Restores extract into a staging directory and
swap it in, so files a ransomware-style fault encrypted in place are replaced, not merged.
"""

from __future__ import annotations

import functools
import json
import os
import random
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import ByteSize, Field

from engine.components.base import WORKLOAD_MARK, ArtifactSource, Component, Health, SeedParams
from engine.components.files import (
    DIR,
    FILE,
    FLAGS_NOT_RECORDED,
    LINKS_NOT_RECORDED,
    OWNERS_NOT_RECORDED,
    ROOT_NOT_RECORDED,
    ROOT_PART,
    Check,
    LinkGroups,
    count_entries,
    expected_root_part,
    extract_layers,
    flagged_root_details,
    give_root_flags,
    room_for,
    root_part,
    tree_parts_into,
    walk_files,
    write_tar,
)
from engine.components.livechanges import LiveChanges, with_changes
from engine.errors import ComponentError, IntegrityError
from engine.fingerprint import LEGACY_SCHEME, Fingerprint, Part
from engine.partmerge import walk
from engine.partstream import PartSpool
from engine.repository.base import BackupSetWriter

# The file the drill workload writes in its directory when it starts
# (``drills/workload/files.py``), with this text: the recorded fact scheme 6 leaves the
# directory out on. Schemes 1 to 5 left out a top-level ``drproof_workload/`` in every
# volume, even where no workload ran (found by review). The file travels with the
# directory into a backup and out of a restore; the backup records whether it left the
# directory out (``WORKLOAD_DETAIL``), so its restore's staged copy is proven alike.
WORKLOAD_MARKER_FILE = ".drproof-workload"
WORKLOAD_MARKER = b"drproof drill workload: files here are judged by the recovery point, not by fingerprints\n"
WORKLOAD_DETAIL = "workload_dir_left_out"
WORKLOAD_DIR_UNSEEN = (
    "left out a top-level directory drproof_workload/ as the drill workload's, even where no workload ran: "
    "a restore that lost or changed what the volume itself kept there is not seen"
)


def workload_marked(root: Path) -> bool:
    """Whether ``root/drproof_workload/`` holds the workload's marker: a regular file (never a link) of that text."""
    try:
        fd = os.open(root / WORKLOAD_MARK / WORKLOAD_MARKER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(WORKLOAD_MARKER) + 1) == WORKLOAD_MARKER
    finally:
        os.close(fd)


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

    # Scheme 7 adds the volume's directory itself (``dir .``: its owner and inode flags).
    # Scheme 6 leaves out the top-level directory ``drproof_workload/`` only where the
    # drill workload marked it (``WORKLOAD_MARKER``), not in every volume. Scheme 5 adds inode flags (chattr +i, +a, ...: engine.components.fflags); scheme 4
    # which names share a file (hard links); scheme 3 each entry's owner; scheme 2 a part
    # per directory (empty ones and modes); scheme 1 had files only.
    fingerprint_scheme: ClassVar[str] = "volumes/7"
    legacy_blind_spots: ClassVar[dict[str, str]] = {
        LEGACY_SCHEME: "the backup's fingerprint (scheme 1, from an earlier drproof) recorded files only: empty "
        "directories, directory modes, owners, extended attributes (ACLs, capabilities, user.*) and hard links "
        "are not compared; " + WORKLOAD_DIR_UNSEEN + "; " + ROOT_NOT_RECORDED,
        "volumes/2": f"{OWNERS_NOT_RECORDED}; {WORKLOAD_DIR_UNSEEN}; {ROOT_NOT_RECORDED}",
        "volumes/3": f"{LINKS_NOT_RECORDED}; {WORKLOAD_DIR_UNSEEN}; {ROOT_NOT_RECORDED}",
        "volumes/4": f"{FLAGS_NOT_RECORDED}; {WORKLOAD_DIR_UNSEEN}; {ROOT_NOT_RECORDED}",
        "volumes/5": "the backup's fingerprint (scheme 5, from an earlier drproof) "
        + WORKLOAD_DIR_UNSEEN
        + "; "
        + ROOT_NOT_RECORDED,
        "volumes/6": ROOT_NOT_RECORDED,
    }

    def _spool(self, scheme: str | None = None, marked: bool = False) -> PartSpool:
        """Where the parts of the fingerprint in ``scheme`` go: the live workload's files left out.

        In schemes 6 and 7, only where ``marked`` (the workload's directory holds its
        marker); older schemes, by their own rule, in every volume.
        A spool, not a dict: a volume of a million files has a million parts, kept sorted
        in a temporary file and, once backed up, in an artifact of their own.
        """
        scheme = scheme or self.fingerprint_scheme
        workload = marked or scheme not in _MARKED_SCHEMES
        exclude = _WORKLOAD if workload else ()
        owners = scheme not in (LEGACY_SCHEME, "volumes/2")
        links = scheme in ("volumes/4", "volumes/5", *_MARKED_SCHEMES)
        return PartSpool(
            exclude=(*exclude, DIR) if scheme == LEGACY_SCHEME else exclude,
            owners=owners,
            links=links,
            fflags=scheme in ("volumes/5", *_MARKED_SCHEMES),
            exclude_exact=_WORKLOAD_DIR if workload else frozenset(),
        )

    def _marked(self) -> bool:
        """Whether a drill workload marked its directory here (``WORKLOAD_MARKER``)."""
        return workload_marked(self.path)

    def _taken(self, spool: PartSpool, scheme: str | None = None) -> Fingerprint:
        return spool.fingerprint(self.instance, self.name, scheme or self.fingerprint_scheme)

    def _with_root(self, spool: PartSpool) -> PartSpool:
        """``spool`` with the part of the volume's directory itself (scheme 7), as it is now."""
        spool[ROOT_PART] = root_part(self.path)
        return spool

    def fingerprint(self) -> Fingerprint:
        spool = self._with_root(self._spool(marked=self._marked()))
        tree_parts_into(self.path, spool)
        return self._taken(spool)

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        if scheme not in self.legacy_blind_spots:
            return None
        spool = self._spool(scheme, marked=scheme in _MARKED_SCHEMES and self._marked())
        tree_parts_into(self.path, spool)
        return self._taken(spool, scheme)

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        return self._write_full(writer, None, self._marked())

    def _write_full(self, writer: BackupSetWriter, parts: PartSpool | None, marked: bool) -> dict[str, Any]:
        changes = LiveChanges()
        with writer.artifact(self.instance, "files.tar") as sink:
            entries = write_tar(self.path, sink, parts=parts, changes=changes)
        root = flagged_root_details(self.path, changes)  # its flags given after the swap (``give_root_flags``)
        details = {"entries": entries, "method": "streamed tar", "root": root, WORKLOAD_DETAIL: marked}
        return with_changes(details, changes)

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """One read of the tree: each file is digested as it is archived."""
        if incremental is not None:
            return self._incremental(writer, incremental[0])
        marked = self._marked()
        spool = self._with_root(self._spool(marked=marked))
        details = self._write_full(writer, spool, marked)
        return details, self._taken(spool)

    # A canary is a file at the root (engine.canary): part of the tree, so it is backed up,
    # fingerprinted and restored like any other file.
    supports_canary: ClassVar[bool] = True

    def plant_canary(self, value: str) -> str:
        from engine.canary import plant_file

        return plant_file(self.path, value)

    def read_canary(self) -> str | None:
        from engine.canary import read_file

        return read_file(self.path)

    proves_while_staging: ClassVar[bool] = True

    def restore(self, source: ArtifactSource) -> None:
        self.restore_chain([source])

    def _prover(self, source: ArtifactSource, spool: PartSpool) -> Check:
        """The staged tree, digested as it was written into ``spool``, against the fingerprint of ``source``."""

        def check(staging: Path) -> None:
            recorded = expected_root_part(source.fingerprint)
            if recorded is not None:  # given after the swap (``give_root_flags``): the fidelity check reads it
                spool[ROOT_PART] = recorded
            self.prove_restored(source.fingerprint, self._taken(spool, _scheme(source)), f"staged in {staging}")

        return check

    supports_incremental: ClassVar[bool] = True

    def backup_incremental(
        self, writer: BackupSetWriter, parent: Fingerprint, parent_source: ArtifactSource
    ) -> dict[str, Any]:
        """Archive only files new or changed since ``parent``; list what to remove first.

        The parent's per-file digests come from its backup set, so deciding what changed
        costs one read of the tree, which is also this backup's fingerprint.
        """
        return self._incremental(writer, parent)[0]

    def _incremental(self, writer: BackupSetWriter, parent: Fingerprint) -> tuple[dict[str, Any], Fingerprint]:
        marked = self._marked()
        spool, workload, changes = self._with_root(self._spool(marked=marked)), _PathList(), LiveChanges()
        groups: LinkGroups = {}  # the names of files with more than one link
        # The walk sees every entry (the archive only the changed ones): it says which
        # symbolic links and FIFOs have more than one name, for the whole tree.
        tree_parts_into(self.path, _Routed(spool, workload, marked), groups, changes)
        current = self._taken(spool)
        archived = self._spool(marked=marked)
        with workload:
            details = self._write_changes(writer, parent, current, workload, archived, changes, groups)
        details[WORKLOAD_DETAIL] = marked
        settled = self._as_archived(current, self._taken(archived), changes, marked)
        return with_changes(details, changes), settled

    def _as_archived(
        self, current: Fingerprint, archived: Fingerprint, changes: LiveChanges, marked: bool
    ) -> Fingerprint:
        """``current`` with the parts of what was archived, where a live file changed in between.

        An incremental backup fingerprints the tree first (to find what changed) and then
        archives the changes: a file written in between is stored as it was when archived,
        so the set's fingerprint must say that, or its own restore would be refused. One
        pass compares the two sorted streams; a second rebuilds only when something differs.
        """
        vanished = {FILE + rel for rel in changes.vanished} | {DIR + rel for rel in changes.vanished}
        differ = 0
        for name, ours, theirs in _merged(current, archived):
            if name in vanished or (ours is not None and theirs is not None and ours != theirs):
                differ += 1
                if name not in vanished:
                    rel = name.split(" ", 1)[1]
                    changes.note(rel, "changed between the fingerprint and the archive; the archived content is recorded")
        if not differ:
            return current
        spool = self._spool(marked=marked)
        for name, ours, theirs in _merged(current, archived):
            part = theirs if theirs is not None else ours
            if name not in vanished and part is not None:
                spool[name] = part
        return self._taken(spool)

    def _write_changes(
        self,
        writer: BackupSetWriter,
        parent: Fingerprint,
        current: Fingerprint,
        workload: _PathList,
        archived: PartSpool,
        changes: LiveChanges,
        groups: LinkGroups,
    ) -> dict[str, Any]:
        """The removal list and the archive of changes, found by one merge of the two fingerprints.

        The live workload's entries are not in either fingerprint: they are archived
        every time (as before fingerprints left them out). Every name of a hard-linked
        file one of whose names changed is archived, the first in order of names first:
        tar then records the others as links to it, and the restore links them again
        (found by review: ``ln a b`` after a full backup came back as two files).
        """
        linked = {rel: key for key, names in groups.items() if len(names) > 1 for rel in names}
        touched: set[tuple[int, int]] = set()
        with _PathList() as changed, _PathList() as removals:
            gone = 0

            def found(name: str, change: str, _e: object, _a: object) -> None:
                nonlocal gone
                if name == ROOT_PART or not name.startswith((FILE, DIR)):  # the root: no member, its details
                    return
                rel = name.split(" ", 1)[1]
                if change == "missing":
                    gone += 1
                    removals.add(rel)
                    return
                # A changed file is removed before extraction too, so a file that became a
                # link (or the reverse) is replaced, not merged. A changed directory (its
                # mode) is archived again on its own, never removed: its files stay.
                if change == "changed" and name.startswith(FILE):
                    removals.add(rel)
                key = linked.get(rel) if name.startswith(FILE) else None
                if key is not None:
                    touched.add(key)  # archived below, with every other name of its file
                else:
                    changed.add(rel)

            with parent.open_batches() as theirs, current.open_batches() as ours:
                walk(theirs, ours, found)
            for rel in workload:
                changed.add(rel)
            for key in sorted(touched, key=lambda k: groups[k][0]):
                for rel in groups[key]:  # in order of names: the first is archived first
                    if not (workload.count and rel.startswith(_WORKLOAD_FILES)):  # archived above
                        changed.add(rel)
            with writer.artifact(self.instance, "changes.json") as sink:
                _write_changes_json(sink, {"remove": removals, "changed": changed})
            with writer.artifact(self.instance, "files.tar") as sink:
                write_tar(self.path, sink, only=iter(changed), parts=archived, changes=changes)
            return {
                "method": "incremental tar",
                "changed": changed.count,
                "removed": gone,
                "root": flagged_root_details(self.path, changes),
            }

    def restore_chain(self, sources: list[ArtifactSource]) -> None:
        layers = []
        for source in sources:
            removals: list[str] = []
            if "changes.json" in source.artifacts:
                removals = _removals(source)
            layers.append((functools.partial(source.open, "files.tar"), removals))
        # Left out of the staged copy's fingerprint as the backup left it out (its details).
        spool = self._spool(_scheme(sources[-1]), bool(sources[-1].details.get(WORKLOAD_DETAIL)))
        root = sources[-1].details.get("root")
        room = room_for(sources, "files.tar", tree_bytes=True)
        extract_layers(layers, self.path, self._prover(sources[-1], spool), spool, root, room)
        give_root_flags(self.path, root, f"volume {self.instance!r}")

    def health_at_backup(self, details: dict[str, Any]) -> Health:
        """Healthy: the backup just walked and archived the whole tree, all ``health`` asks of it.

        Why not ``health``: it lists the tree again, a second pass over a million entries
        for an answer the backup already gave (one that cannot walk it fails).
        """
        return Health(ok=True, detail="the backup walked and archived the whole tree")

    def health(self) -> Health:
        """The tree is there and can be walked; its content is the fingerprint's to judge.

        Why no file is opened: this ran before every fidelity check, which reads every
        byte of every file anyway and names an unreadable one as a differing part. Opening
        each file here first cost a second pass over the tree (issue 14: a tenth of a
        millisecond per file, more than tar spends on it).
        """
        if not self.path.is_dir():
            return Health(ok=False, detail=f"{self.path} is not a directory")
        try:
            count = count_entries(str(self.path))
        except ComponentError as exc:  # a directory that cannot be listed: not healthy, and why
            return Health(ok=False, detail=str(exc))
        return Health(ok=True, detail=f"{count} entries listed")


# The live workload's directory and what is under it; not every name that starts like it
# (found by review: ``dir drproof_workload`` as a prefix left ``drproof_workload_old/`` out),
# and (scheme 6) only where the workload left its marker in it.
_WORKLOAD = (f"{FILE}{WORKLOAD_MARK}/", f"{DIR}{WORKLOAD_MARK}/")
_WORKLOAD_DIR = frozenset({f"{DIR}{WORKLOAD_MARK}"})
_WORKLOAD_FILES = f"{WORKLOAD_MARK}/"
_MARKED_SCHEMES = ("volumes/6", "volumes/7")  # the workload left out only where it marked its directory


def _scheme(source: ArtifactSource) -> str | None:
    return source.fingerprint.scheme if source.fingerprint is not None else None


def _merged(current: Fingerprint, archived: Fingerprint) -> Iterator[tuple[str, Part | None, Part | None]]:
    """(name, part in ``current``, part in ``archived``) over both sorted streams, by name."""
    with current.open_parts() as ours, archived.open_parts() as theirs:
        a, b = next(ours, None), next(theirs, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                assert a is not None
                yield a[0], a[1], None
                a = next(ours, None)
            elif a is None or b[0] < a[0]:
                yield b[0], None, b[1]
                b = next(theirs, None)
            else:
                yield a[0], a[1], b[1]
                a, b = next(ours, None), next(theirs, None)


class _PathList:
    """Relative paths kept in an anonymous temporary file, read back in the order added.

    An incremental backup's lists of changed and removed paths: a million of them must
    not be a million strings in memory.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="drproof-paths-")  # noqa: SIM115 - closed by __exit__
        self._pending: list[str] = []
        self._size = 0
        self.count = 0

    def __enter__(self) -> _PathList:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def add(self, rel: str) -> None:
        self._pending.append(rel)
        self.count += 1
        if len(self._pending) >= 10_000:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = "".join(f"{p}\0" for p in self._pending).encode("utf-8", "surrogatepass")
            os.pwrite(self._file.fileno(), data, self._size)
            self._size += len(data)
            self._pending = []

    def __iter__(self) -> Iterator[str]:
        self._flush()
        pos, rest = 0, b""
        while pos < self._size:
            chunk = os.pread(self._file.fileno(), min(1 << 20, self._size - pos), pos)
            pos += len(chunk)
            data = rest + chunk
            cut = data.rfind(b"\0") + 1
            rest = data[cut:]
            yield from data[:cut].decode("utf-8", "surrogatepass").split("\0")[:-1]


class _Routed:
    """A part sink that sends the live workload's entries to a list of paths, the rest on."""

    def __init__(self, parts: PartSpool, workload: _PathList, marked: bool) -> None:
        self._parts = parts
        self._workload = workload
        self._marked = marked
        self.owners = parts.owners
        self.links = parts.links
        self.fflags = parts.fflags

    def __setitem__(self, name: str, part: Part) -> None:
        if self._marked and (name.startswith(_WORKLOAD) or name in _WORKLOAD_DIR):
            self._workload.add(name.split(" ", 1)[1])
        else:
            self._parts[name] = part


def _write_changes_json(sink: IO[bytes], lists: dict[str, _PathList]) -> None:
    """``{"remove": [...], "changed": [...]}`` written a piece at a time (the format restores read)."""
    sink.write(b"{")
    for n, (key, paths) in enumerate(lists.items()):
        sink.write(f"{', ' if n else ''}{json.dumps(key)}: [".encode())
        sep, batch = "", []
        for rel in paths:
            batch.append(json.dumps(rel))
            if len(batch) >= 10_000:
                sink.write((sep + ", ".join(batch)).encode())
                sep, batch = ", ", []
        if batch:
            sink.write((sep + ", ".join(batch)).encode())
        sink.write(b"]")
    sink.write(b"}\n")


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
