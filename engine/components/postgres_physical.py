"""PostgreSQL, backed up physically: a base backup plus the WAL archived since.

A logical dump restores to the moment of the dump and nothing later. A base backup
with continuous WAL restores the whole cluster to any moment the WAL covers: the
point-in-time recovery an operator needs after a bad migration or a dropped table.

Each backup set holds ``base.tar`` (``pg_basebackup`` in tar format, with the WAL needed
to make it consistent and the server's own ``backup_manifest``) and ``wal.tar``: every
segment the server archived since the previous physical backup of this component in
the same repository. The sets thereby form an unbroken WAL history, which each set
records (``wal_continues``), so a point-in-time restore can prove it has every segment
between a base backup and its target before it touches the live cluster.

Seed data, fingerprints and health checks are the logical component's: the two differ
only in how bytes get into and out of the repository, so a drill can compare them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from engine import pitr
from engine.components.base import ArtifactSource, SeedParams, copy_into
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.tarsniff import TarSniffer
from engine.components.tools import stream_out
from engine.components.untar import TreeWriter, extract_into
from engine.diskspace import SpaceGuard, require_all
from engine.errors import ComponentError, DrproofError, InsufficientSpace, IntegrityError, PointInTimeUnreachable
from engine.fingerprint import Fingerprint
from engine.lazy import lazy
from engine.manifest import ComponentRecord
from engine.privatedir import make_private
from engine.repository.base import BackupSetWriter
from engine.runtime.base import PHYSICAL_ACCESS, PhysicalAccess

if TYPE_CHECKING:
    import psycopg2
else:
    psycopg2 = lazy("psycopg2")

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")


def wal_names(archive: Path, after: str | None, first: str, through: str) -> list[str]:
    """Archived WAL files a backup must carry, and every timeline history file.

    Segments run from just after ``after`` (the previous backup's last one) or, with no
    previous backup, from ``first``, up to ``through``. Names sort by timeline, then
    position, so these are string comparisons. History files are tiny and needed by any
    recovery that crosses a timeline.
    """
    names = []
    for path in archive.iterdir():
        name = path.name
        if SEGMENT.match(name):
            if (name > after if after is not None else name >= first) and name <= through:
                names.append(name)
        elif HISTORY.match(name):
            names.append(name)
    return sorted(names)


def wal_gap(after: str | None, names: list[str], segment_size: int) -> str | None:
    """The first missing segment in ``names`` (continuing ``after``), or None if unbroken.

    Only segments of one timeline follow each other by number; where the timeline
    changes (after a restore) the new one starts at its fork point, so no gap is judged.
    """
    per_id = 0x1_0000_0000 // segment_size

    def number(name: str) -> tuple[str, int]:
        return name[:8], int(name[8:16], 16) * per_id + int(name[16:24], 16)

    previous = number(after) if after else None
    for name in (n for n in names if SEGMENT.match(n)):
        current = number(name)
        if previous is not None and previous[0] == current[0] and current[1] != previous[1] + 1:
            missing = previous[1] + 1
            return f"{current[0]}{missing // per_id:08X}{missing % per_id:08X}"
        previous = current
    return None


def _extract(stream: IO[bytes], target: Path, what: str) -> None:
    """Unpack into ``target``, a directory the restore just created (no swap needed).

    Its filesystem's free space is watched while unpacking (``engine.diskspace``): a disk
    another process fills meanwhile stops the restore above empty, which then puts the
    live cluster back, instead of leaving it no room for its WAL.
    """
    try:
        with TreeWriter(target) as writer:
            extract_into(SpaceGuard(target, what).reading(stream), writer)
            writer.finish()
    except (tarfile.TarError, OSError) as exc:
        raise ComponentError(f"{what}: cannot unpack: {exc}") from exc


class PostgresPhysicalComponent(PostgresComponent):
    name: ClassVar[str] = "postgres-physical"
    needs: ClassVar[frozenset[str]] = frozenset({PHYSICAL_ACCESS})
    Params: ClassVar[type[SeedParams]] = PostgresParams
    description: ClassVar[str] = (
        "A PostgreSQL cluster backed up with pg_basebackup plus its WAL archive; restores to the end of "
        "a backup or to any point in time the archived WAL covers."
    )
    wants_history: ClassVar[bool] = True
    proves_while_staging: ClassVar[bool] = False  # its restore is not the side database's
    supports_point_in_time: ClassVar[bool] = True

    @classmethod
    def restorability(cls, details: dict[str, Any], tools: dict[str, str]) -> list[str]:
        return []  # no dump: the cluster's own files, started by the target's own server

    @classmethod
    def limits(cls, details: dict[str, Any]) -> list[str]:
        gap = details.get("wal_gap")
        if not gap:
            return []
        after = details.get("wal_gap_after")
        since = f"backup {after}" if after else "the previous physical backup"
        return [
            f"{gap}: point-in-time recovery between {since} and this backup ({details.get('backup_id')}) is "
            "impossible; this set restores to its own end and starts a new WAL history"
        ]

    dumps_in_snapshot: ClassVar[bool] = False  # files, not a dump: fingerprinted, then copied

    def provision(self) -> None:
        super().provision()
        if not isinstance(self.service, PhysicalAccess):
            raise ComponentError(
                f"{self.instance!r}: physical backups need the server's data directory and WAL archive, which "
                "this runtime does not give drproof; use the local runtime, declare `physical:` (data directory, "
                "WAL archive, stop and start commands) for an existing server, or use kind `postgres` (pg_dump)"
            )
        self.physical: PhysicalAccess = self.service
        self.previous: ComponentRecord | None = None

    def backup_history(self, previous: ComponentRecord | None) -> None:
        self.previous = previous

    def _query(self, sql: str) -> Any:
        conn = self.connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
                return row[0] if row else None
        finally:
            conn.close()

    # -- backup ---------------------------------------------------------------------------
    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        return self._backup(writer, None)

    supports_incremental: ClassVar[bool] = True

    def backup_incremental(
        self, writer: BackupSetWriter, parent: Fingerprint, parent_source: ArtifactSource
    ) -> dict[str, Any]:
        """Only blocks changed since the parent (PostgreSQL 17+, ``summarize_wal``).

        The server decides what changed from its WAL summaries, given the parent's own
        ``backup_manifest``; restore rebuilds a full data directory with pg_combinebackup.
        """
        if "backup_manifest" not in parent_source.artifacts:
            raise ComponentError(f"{self.instance!r}: the parent backup has no backup_manifest to build on")
        with tempfile.TemporaryDirectory(prefix="drproof-incr-") as tmp:
            manifest = Path(tmp) / "parent_backup_manifest"
            with parent_source.open("backup_manifest") as stream, manifest.open("wb") as out:
                copy_into(stream, out)
            return self._backup(writer, manifest)

    def _refuse_tablespaces(self) -> None:
        """A cluster with tablespaces cannot be backed up as one stream: say so, and what to do.

        pg_basebackup writes every tablespace as a tar of its own and refuses to put more
        than one on stdout, which drproof streams into the repository; its own message
        ("can only write single tablespace to stdout, database has 2") named neither the
        tablespace nor a way out (found while adding tablespaces to the fingerprint).
        """
        spaces = self._query(
            "SELECT string_agg(quote_ident(spcname), ', ' ORDER BY spcname) FROM pg_tablespace WHERE spcname !~ '^pg_'"
        )
        if spaces:
            raise ComponentError(
                f"postgres-physical {self.instance!r}: the cluster has tablespace(s) {spaces}; drproof streams "
                "pg_basebackup as one tar, which cannot hold a tablespace. Back the database up with the logical "
                "postgres kind (pg_dump keeps which tablespace each table is in), or move its relations into "
                "pg_default (ALTER TABLE ... SET TABLESPACE pg_default) and drop the tablespaces"
            )

    def _backup(self, writer: BackupSetWriter, parent_manifest: Path | None) -> dict[str, Any]:
        self._refuse_tablespaces()
        system_id = str(self._query("SELECT system_identifier FROM pg_control_system()"))
        start_segment = self._query("SELECT pg_walfile_name(pg_current_wal_lsn())")
        env = self.service.tool_env()
        argv = [
            *self.service.tool("pg_basebackup"),
            "--pgdata=-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--manifest-checksums=SHA256",
            "--no-sync",  # the stream goes to the repository, which fsyncs what it stores
            "-d",
            self.service.tool_dsn("postgres"),
        ]
        if parent_manifest is not None:
            argv.append(f"--incremental={parent_manifest}")
        with writer.artifact(self.instance, "base.tar") as sink:
            sniffer = TarSniffer(sink, "backup_manifest")
            size = stream_out(argv, env, sniffer, f"pg_basebackup of {self.instance!r}")  # type: ignore[arg-type]
        if sniffer.captured is None:
            raise ComponentError(f"pg_basebackup of {self.instance!r} wrote no backup_manifest")
        with writer.artifact(self.instance, "backup_manifest") as sink:
            sink.write(sniffer.captured)
        backup_end = self._query("SELECT now()")
        wal_through, through_time = self._close_segment()
        previous = self.previous
        continues = after = None
        if previous is not None and previous.details.get("system_identifier") == system_id:
            continues = previous.details.get("backup_id")
            after = previous.details.get("wal_through")
        names = wal_names(self.physical.wal_archive(), after, start_segment, wal_through)
        segment_size = int(self._query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"))
        gap = wal_gap(after, names, segment_size)
        gap_after = continues if gap is not None else None
        if gap is not None:
            # The base backup itself is whole and restorable; only replay across the gap is
            # impossible. The set says so (``limits``: the backup exits 1 and verify names
            # it), and starts a new history instead of pretending.
            continues = None
        with writer.artifact(self.instance, "wal.tar") as sink, tarfile.open(fileobj=sink, mode="w|") as tar:
            for name in names:
                tar.add(self.physical.wal_archive() / name, arcname=name, recursive=False)
        segments = [n for n in names if SEGMENT.match(n)]
        return {
            "method": "pg_basebackup (tar, WAL fetched"
            + (", incremental" if parent_manifest else "")
            + ") + archived WAL segments",
            "database": self.db,
            "server_version": self.service.version(),
            "system_identifier": system_id,
            "backup_id": writer.id,
            "incremental": parent_manifest is not None,
            "base_bytes": size,
            # What the cluster's databases took: bounds the cluster a chain combines into.
            "cluster_bytes": int(self._query("SELECT sum(pg_database_size(oid))::bigint FROM pg_database")),
            "backup_end": backup_end.isoformat(),
            "wal_from": segments[0] if segments else None,
            "wal_through": wal_through,
            "wal_through_time": through_time.isoformat(),
            "wal_segments": len(segments),
            "wal_continues": continues,
            "wal_gap": f"segment {gap} is missing from the WAL archive" if gap else None,
            "wal_gap_after": gap_after,  # the backup the lost window starts at (limits() names it)
        }

    def _close_segment(self) -> tuple[str, datetime]:
        """End the current WAL segment and wait until the archiver has copied it.

        The commit first forces a transaction id, so the archived WAL ends with a commit
        record stamped after ``through_time``: recovery to any moment up to then finds a
        record beyond its target and stops there, instead of running out of WAL.
        """
        through_time: datetime = self._query("SELECT clock_timestamp()")
        self._query("SELECT pg_current_xact_id()")
        segment = str(self._query("SELECT pg_walfile_name(pg_switch_wal())"))
        from engine.runtime import processes

        def archived() -> bool:
            last = self._query("SELECT last_archived_wal FROM pg_stat_archiver")
            return last is not None and str(last) >= segment

        if not processes.wait_until(archived, timeout=120, interval=0.05, progress=f"WAL segment {segment} to be archived"):
            failed = self._query("SELECT last_failed_wal FROM pg_stat_archiver")
            raise ComponentError(
                f"{self.instance!r}: WAL segment {segment} was not archived within 120 s"
                + (f" (archiving of {failed} failed; see the server log)" if failed else "")
            )
        return segment, through_time

    # -- restore --------------------------------------------------------------------------
    # The end of a base backup lies on the timeline it was taken on. "latest" would follow
    # a newer timeline from the archive, and one that forked before this backup (an
    # older backup restored since) makes PostgreSQL refuse to start: found by
    # bench/postgres_pgbench.py restoring an older base backup, then a newer one.
    _END_OF_BACKUP: ClassVar[dict[str, str]] = {"recovery_target": "immediate", "recovery_target_timeline": "current"}

    def restore(self, source: ArtifactSource) -> None:
        """Back to the end of the base backup: consistent, nothing later replayed."""
        self._recover([source], [source], self._END_OF_BACKUP)

    def restore_chain(self, sources: list[ArtifactSource]) -> None:
        """A full base backup and its incrementals, combined, then recovered to the last."""
        self._recover(sources, [sources[-1]], self._END_OF_BACKUP)

    def restore_to_time(
        self,
        bases: list[ArtifactSource],
        wal: list[ArtifactSource],
        target: datetime | None,
        live_after: str | None = None,
    ) -> None:
        """A base backup (``bases``: full first, then incrementals) replayed up to ``target``.

        ``target`` None replays every segment there is. ``live_after`` adds the segments
        the server archived after that one and that no backup holds yet.
        """
        settings = {"recovery_target_time": target.isoformat(), "recovery_target_inclusive": "false"} if target else {}
        if live_after is not None:
            # A server that still runs (a bad migration, not a lost disk) holds its
            # newest WAL in a segment not yet archived: archive it before stopping, or
            # the replay could not reach the moment just before the damage.
            failed = self._archive_now() if self.service.is_running() else None
            self._refuse_live_gap(live_after)
            if target is not None:
                self._refuse_short_archive(target, live_after, failed)
        self._recover(bases, wal, settings, live_after)

    def base_judge(self) -> Callable[[ArtifactSource], str | None] | None:
        """Why a set cannot start a replay on the timeline recovery will follow (None: it can).

        None when the archive holds no timeline history (no restore ever forked one). A
        set whose last archived segment is on that timeline qualifies without reading it;
        any other is judged by where its ``backup_manifest`` says the backup ended.
        """
        line = pitr.lineage(self.physical.wal_archive())
        if line is None:
            return None

        def judge(source: ArtifactSource) -> str | None:
            through = str(source.details.get("wal_through") or "")
            if pitr.SEGMENT.match(through) and int(through[:8], 16) == line.timeline:
                return None
            try:
                with source.open("backup_manifest") as stream:
                    timeline, end = pitr.backup_end(stream.read())
            except (DrproofError, OSError, ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(
                    f"refusing to restore {self.instance!r} (nothing was changed): the backup_manifest of backup "
                    f"{source.details.get('backup_id')} cannot be read to tell its timeline: {exc}"
                ) from exc
            return line.why_not(timeline, end)

        return judge

    def _archive_now(self) -> str | None:
        """Archive the live WAL up to now (a commit stamped now ends it); None, or why it was not.

        Unlike a backup, a restore does not wait out an archiver that fails: once
        PostgreSQL's archiver has spent its three tries after the switch, the archive is
        what it is, and the proof that it reaches the target decides (review finding 5:
        120 s of waiting, then production was stopped for a recovery that could not
        succeed).
        """
        from engine.runtime import processes

        state = "SELECT json_build_array(last_archived_wal, failed_count, last_failed_wal) FROM pg_stat_archiver"
        try:
            failures = int(self._query(state)[1])
            self._query("SELECT pg_current_xact_id()")
            segment = str(self._query("SELECT pg_walfile_name(pg_switch_wal())"))
        except (DrproofError, psycopg2.Error) as exc:
            return f"the server's newest WAL could not be switched out for archiving: {exc}"
        seen: list[Any] = []

        def settled() -> bool:
            seen[:] = self._query(state)
            return (seen[0] is not None and str(seen[0]) >= segment) or int(seen[1]) - failures >= 3

        try:
            done = processes.wait_until(settled, timeout=120, interval=0.05, progress=f"WAL segment {segment} to be archived")
        except (DrproofError, psycopg2.Error) as exc:
            return f"the server's archiver could not be asked how far it got: {exc}"
        if done and seen[0] is not None and str(seen[0]) >= segment:
            return None
        if not done:
            return f"segment {segment} was not archived within 120 s (last archived: {seen[0] if seen else None})"
        return f"archiving of {seen[2] or segment} failed (see the server log)"

    def _refuse_short_archive(self, target: datetime, after: str, failed: str | None) -> None:
        """Refuse, before anything live is touched, a target the archived WAL does not reach.

        Recovery stops at the first commit or abort stamped at or after the target; the
        live archive (after the newest set's last segment ``after``) must hold one.
        """
        live = self.physical.wal_archive()
        found = pitr.newest_decision(live, after, self.service.tool("pg_waldump"), pitr.lineage(live))
        if found is not None and found[0] >= target:
            return
        reach = f"its newest commit is at {found[0].isoformat()} (in {found[1]})" if found else "it holds no commit"
        raise PointInTimeUnreachable(
            f"refusing to restore {self.instance!r} to {target.isoformat()} (nothing was changed): the WAL archived "
            f"in {live} after the newest backup's last segment ({after}) ends before that moment: {reach}"
            + (f"; the server's newest WAL is not archived: {failed}" if failed else "")
            + ". Recovery would run out of WAL before the target. Fix the archiving and try again, or give an "
            "earlier moment"
        )

    def _refuse_live_gap(self, after: str) -> None:
        """Refuse, before anything live is touched, a replay of the live archive that has a hole.

        Found by review: with one segment of four moved aside, recovery stopped at the gap
        and the transactions after it were lost, while drproof said it had replayed the
        live archive. A segment's file size is the cluster's segment size.
        """
        live = self.physical.wal_archive()
        names = [n for n in wal_names(live, after, after, "~") if SEGMENT.match(n)]
        if not names:
            return
        size = (live / names[0]).stat().st_size
        gap = wal_gap(after, names, size if size >= 1 << 20 and size & (size - 1) == 0 else 16 << 20)
        if gap is not None:
            raise IntegrityError(
                f"refusing to restore {self.instance!r} (nothing was changed): the live WAL archive {live} lacks "
                f"segment {gap}, between the newest backup's last ({after}) and {names[-1]}; a replay to the end "
                "would stop at the gap and lose every transaction after it. Put the segment back, or restore to a "
                "moment before it (--point-in-time)"
            )

    def _histories(self, archive: Path) -> None:
        """Every timeline history the server ever archived, into the restore's WAL.

        A second restore from the same base must pick a timeline no earlier restore
        used; PostgreSQL chooses it from the histories it can see, and the one written by
        the first restore is in the live archive, not in any backup set before it.
        """
        live = self.physical.wal_archive()
        if live.is_dir():
            for path in live.iterdir():
                if HISTORY.match(path.name) and not (archive / path.name).exists():
                    shutil.copy2(path, archive / path.name)

    def _recover(
        self,
        bases: list[ArtifactSource],
        wal: list[ArtifactSource],
        target: dict[str, str],
        live_after: str | None = None,
    ) -> None:
        self._require_room(bases, wal)
        # A directory of drproof's own, made for this restore: fixed names beside the WAL
        # archive ("restore-wal", "restore-staging") were emptied before and removed after
        # every restore, with whatever an operator kept there (found by review).
        private = Path(tempfile.mkdtemp(prefix=".drproof-restore-", dir=self.physical.wal_archive().parent))
        make_private(private)  # the WAL and staged bases in it inherit nothing from a shared parent
        owner = self.physical.server_file_owner()
        if owner is not None:
            os.chown(private, *owner)  # the server reads the WAL in it (restore_command)
        archive = private / "wal"
        staging = private / "staging"

        def populate(data: Path) -> None:
            if len(bases) == 1:
                with bases[0].open("base.tar") as stream:
                    _extract(stream, data, f"base backup of {self.instance!r}")
            else:
                self._combine(bases, staging, data)
            _reset_dir(archive)
            for src in wal:
                with src.open("wal.tar") as stream:
                    _extract(stream, archive, f"archived WAL of {self.instance!r}")
            self._histories(archive)
            if live_after is not None:
                live = self.physical.wal_archive()
                for name in wal_names(live, live_after, live_after, "~"):
                    shutil.copy2(live / name, archive / name)
            owner = self.physical.server_file_owner()
            if owner is not None:
                for path in [archive, *archive.iterdir()]:
                    os.lchown(path, *owner)

        settings = {
            "restore_command": f"cp '{archive}/%f' '%p'",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "latest",
            **target,
        }
        through = wal[-1].details.get("wal_through")
        if self.physical.restores_foreign_backups and "recovery_target_timeline" not in target and through:
            # The target's own archive holds its own timelines (an earlier restore there
            # forked one and archived its writes on it): "latest" followed that one and
            # replayed the target's writes as the backups' (found by review). The
            # backups' timeline is the one their WAL ends on; the target's history files
            # still keep the new timeline's number clear of its own.
            settings["recovery_target_timeline"] = str(int(str(through)[:8], 16))
        try:
            self.replay_seconds = self.physical.replace_cluster(populate, settings)
        except InsufficientSpace:
            raise  # says itself what was kept and what to do
        except DrproofError as exc:
            raise ComponentError(f"physical restore of {self.instance!r} failed: {exc}") from exc
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def _require_room(self, bases: list[ArtifactSource], wal: list[ArtifactSource]) -> None:
        """Refuse, before the server is stopped, a restore whose files do not fit (``engine.diskspace``).

        Counted from the manifests: the new cluster, built beside the live one (which stays
        until the new one has promoted), takes at most its base archives' ``raw_size``
        (PostgreSQL's files are whole 8 KiB pages, which take on disk what they take in the
        archive; 1 % more for the directories and small files that are not). The restore's
        WAL, and for a chain every base unpacked for pg_combinebackup, go to a scratch
        directory beside the WAL archive; where both are one filesystem, they add up.
        """
        unpacked = sum(_on_disk(s.record("base.tar").raw_size) for s in bases)
        cluster = combined_bound(bases, unpacked)
        scratch = sum(s.record("wal.tar").raw_size for s in wal) + (unpacked if len(bases) > 1 else 0)
        needs = [(self.physical.wal_archive().parent, scratch)]
        data = self.physical.cluster_directory()
        if data is not None:
            needs.append((data.parent, cluster))
        require_all(needs, f"the restored cluster of {self.instance!r}")

    def _combine(self, bases: list[ArtifactSource], staging: Path, data: Path) -> None:
        _reset_dir(staging)
        dirs = []
        try:
            for i, src in enumerate(bases):
                target = staging / f"{i:04d}"
                target.mkdir(mode=0o700)
                with src.open("base.tar") as stream:
                    _extract(stream, target, f"base backup {i + 1} of {len(bases)} of {self.instance!r}")
                dirs.append(str(target))
            returncode, stderr = _combine_watched(
                [*self.service.tool("pg_combinebackup"), *dirs, "-o", str(data)],
                SpaceGuard(data, f"the cluster pg_combinebackup combines for {self.instance!r}"),
            )
            if returncode != 0:
                raise ComponentError(f"pg_combinebackup for {self.instance!r} failed: {stderr.strip()[-2000:]}")
        finally:
            _reset_dir(staging, recreate=False)


def _combine_watched(command: list[str], guard: SpaceGuard) -> tuple[int, str]:
    """Run pg_combinebackup, stopped (``InsufficientSpace``) once its output's filesystem falls below the reserve.

    Why: the room check counts the combined cluster from the newest set's ``cluster_bytes``;
    a wrong record (a manifest's ``true``, a database dropped between the backup and its
    measure) let pg_combinebackup, which nothing watched, write the disk to its last byte
    (found by review: it failed with "could not write to file ... wrote 16384 of 409600",
    every other writer on that filesystem starved meanwhile). The extracts are watched
    as they pass; this write is another process's, so its filesystem is looked at every
    ``COMBINE_POLL_SECONDS``.
    """
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                _, stderr = proc.communicate(timeout=COMBINE_POLL_SECONDS)
                return proc.returncode, stderr
            except subprocess.TimeoutExpired:
                try:
                    guard.check()
                except InsufficientSpace:
                    proc.kill()
                    proc.communicate()
                    raise


def combined_bound(bases: list[ArtifactSource], unpacked: int) -> int:
    """The most a chain's combined cluster takes: its newest set's databases and base archive, if recorded.

    Why not the sum of the chain's archives (``unpacked``): pg_combinebackup writes one
    cluster as of the newest backup, so a full backup and six incrementals of a few
    changed blocks "needed" seven clusters' room, a false refusal on the day the restore
    is needed. The newest set records its databases' size (``cluster_bytes``); its own
    archive bounds the rest (the WAL fetched, configuration, the non-database files). A
    set without the record (older drproof) keeps the sum.
    """
    if len(bases) < 2:
        return unpacked
    newest = bases[-1]
    recorded = newest.details.get("cluster_bytes")
    if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 0:
        return unpacked  # a manifest's ``true`` is 1 to isinstance: it bounded the cluster at its archive
    return min(unpacked, _on_disk(recorded + newest.record("base.tar").raw_size))


COMBINE_POLL_SECONDS = 0.01  # statvfs is cheap; a fast disk writes a small reserve in tens of milliseconds


def _on_disk(archived: int) -> int:
    """What a base backup's archive of ``archived`` bytes takes at most once unpacked."""
    return archived + archived // 100


def _reset_dir(path: Path, recreate: bool = True) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    if recreate:
        path.mkdir(mode=0o700)
