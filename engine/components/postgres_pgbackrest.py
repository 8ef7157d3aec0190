"""PostgreSQL whose backups pgBackRest takes: drproof delegates, then drills the result.

Teams that already run pgBackRest should not have to trust a second copy made by another
tool; they need proof that *their* backups restore. For large databases pgBackRest's own
differential backups (only changed files, compressed in parallel) are also the reason to
use it. So this kind hands the bulk data to pgBackRest: the cluster's files and its WAL
live in pgBackRest's repository, and the drproof backup set holds only
``pgbackrest-info.json`` (``pgbackrest info --output=json --set=<label>``: which backup it
delegates to, its type, WAL range and sizes). A drproof set is therefore a claim about
pgBackRest's repository, checked with ``pgbackrest verify`` when it is written and again
before a restore touches the live cluster.

pgBackRest runs as the server's OS user (the ``drproof`` system user when drproof runs as
root) with a private configuration, log and lock directory, and connects over the
server's Unix socket with peer authentication: no password exists for it to leak. Peer
authentication needs a database role named like that OS user, so provisioning creates
one that may log in and run backups, and nothing more.

The server's ``archive_command`` (the runtime's) keeps copying WAL into its archive
directory; drproof pushes those segments into pgBackRest's repository with ``pgbackrest
archive-push`` around each backup instead of replacing the runtime's command, which other
kinds and faults rely on. pgBackRest's own check that the archive command is pgBackRest
therefore cannot pass and is switched off; instead drproof waits for the backup's last
WAL segment, pushes it, and lists pgBackRest's archive for the backup's whole WAL range.

Seed data, fingerprints and health checks are the logical component's, so a drill can
compare this kind with ``postgres`` and ``postgres-physical``.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from engine.childenv import tool_environment
from engine.components.base import ArtifactSource, SeedParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.errors import ComponentError, DrproofError, IntegrityError
from engine.repository.base import BackupSetWriter
from engine.runtime import processes
from engine.runtime.base import OWNED_PROCESSES, PHYSICAL_ACCESS, PhysicalAccess

INFO_ARTIFACT = "pgbackrest-info.json"
INSTALL_HINT = (
    "install it with `apt-get install pgbackrest`; Debian bookworm's pgBackRest 2.45 supports PostgreSQL up to "
    "15, so the server must be PostgreSQL <= 15 (with the local runtime: `apt-get install postgresql-15` and "
    "stack.images.postgres: /usr/lib/postgresql/15/bin)"
)
# pgBackRest up to this release (bookworm's) knows PostgreSQL up to 15; refusing a newer
# server up front gives the install hint instead of pgBackRest's bare error. Later releases
# are left to say so themselves: stanza-create reports a version it does not support.
_LAST_PG15_RELEASE = (2, 45)
_WAL_FILE = re.compile(r"^[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")
_STANZA = re.compile(r"[^A-Za-z0-9_-]")
_REPO_SEGMENT = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(?:\.\w+)?$")  # name-checksum[.compression]
# A verify line reporting damage: a backup not valid, or a non-zero problem counter.
_VERIFY_BAD = re.compile(r"status: (?!ok\b|valid\b)\S+|(?:missing|checksum invalid|size invalid|other): [1-9]")


def pgbackrest_version(executable: str) -> tuple[int, int]:
    """(major, minor) of the installed pgBackRest, from ``pgbackrest version``."""
    try:
        out = subprocess.run(
            [executable, "version"], capture_output=True, text=True, timeout=30, check=True, env=tool_environment()
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ComponentError(f"`{executable} version` failed ({exc}); {INSTALL_HINT}") from exc
    match = re.search(r"pgBackRest (\d+)\.(\d+)", out)
    if match is None:
        raise ComponentError(f"cannot read the pgBackRest version from {out.strip()!r}; {INSTALL_HINT}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ExistingStanza:
    """A pgBackRest stanza the operator runs already: drproof uses it as it is.

    In a drill drproof sets pgBackRest up itself (a private configuration and repository,
    WAL handed over with ``archive-push``). Against a production server the team's own
    pgBackRest is the point: its configuration, its repository, its ``archive_command``;
    drproof only runs ``backup``, ``info``, ``verify`` and ``restore`` with them.
    """

    stanza: str
    config: Path | None = None  # the operator's pgbackrest.conf; None: pgBackRest's default
    user: str | None = None  # the OS user to run pgbackrest as; None: the data directory's owner


class PostgresPgBackRestComponent(PostgresComponent):
    name: ClassVar[str] = "postgres-pgbackrest"
    # pgBackRest is set up by drproof for a server it started: its configuration, its
    # archive_command and the files it restores into.
    needs: ClassVar[frozenset[str]] = frozenset({PHYSICAL_ACCESS, OWNED_PROCESSES})
    Params: ClassVar[type[SeedParams]] = PostgresParams
    proves_while_staging: ClassVar[bool] = False  # its restore is not the side database's
    description: ClassVar[str] = (
        "A PostgreSQL cluster backed up by pgBackRest into its own repository (full, then differential); the "
        "drproof set records and verifies that backup, and restores delegate to `pgbackrest restore`."
    )

    @classmethod
    def restorability(cls, details: dict[str, Any], tools: dict[str, str]) -> list[str]:
        return []  # no dump: the cluster's own files, started by the target's own server

    @classmethod
    def limits(cls, details: dict[str, Any]) -> list[str]:
        """A cluster with tablespaces: pgBackRest's set is sound, drproof cannot restore it.

        Why a limit and not silence: the backup is good for ``pgbackrest restore`` by hand,
        but a drill or ``recovery restore`` of it is refused (:func:`_tablespace_refusal`),
        so the team must hear it on the day of the backup, not on the day of the restore.
        """
        spaces = details.get("tablespaces")
        return [_tablespace_refusal(details.get("pgbackrest_label", "?"), spaces)] if spaces else []

    dumps_in_snapshot: ClassVar[bool] = False  # files, not a dump: fingerprinted, then copied

    def provision(self) -> None:
        super().provision()
        if not isinstance(self.service, PhysicalAccess):
            raise ComponentError(
                f"{self.instance!r}: pgBackRest needs the server's data directory and WAL archive, which this "
                "runtime does not give drproof; use the local runtime, or kind `postgres` (pg_dump)"
            )
        self.physical: PhysicalAccess = self.service
        executable = shutil.which("pgbackrest")
        if executable is None:
            raise ComponentError(
                f"{self.instance!r}: pgBackRest is not installed (no `pgbackrest` on PATH); {INSTALL_HINT}"
            )
        self.executable = executable
        version = pgbackrest_version(executable)
        self.pgbackrest_release = f"{version[0]}.{version[1]}"
        server_num = int(self._setting("server_version_num"))
        if version <= _LAST_PG15_RELEASE and server_num >= 160000:
            raise ComponentError(
                f"{self.instance!r}: pgBackRest {self.pgbackrest_release} supports PostgreSQL up to 15, but the "
                f"server is PostgreSQL {server_num // 10000}; {INSTALL_HINT}"
            )
        owner = self.physical.server_file_owner()
        self.os_user = pwd.getpwuid(owner[0] if owner else os.geteuid()).pw_name
        # run_as wants a name, and None means "as we are": the same user, without a switch.
        self.run_user = self.os_user if owner is not None else None
        self._pushed: set[str] = set()
        if self.existing is not None:
            self._adopt(self.existing)
            return
        self.stanza = _STANZA.sub("_", self.instance)
        self.home = self.physical.wal_archive().parent / "pgbackrest"
        self.repo: Path | str = self.home / "repo"
        self._grant_backup_role(server_num)
        self._write_config()
        out = self._run(["stanza-create"], "stanza-create", check=False)
        if out.returncode != 0:
            hint = f"; {INSTALL_HINT}" if "VersionNotSupported" in out.stderr + out.stdout else ""
            raise ComponentError(f"{self.instance!r}: pgbackrest stanza-create failed: {_problem(out)}{hint}")

    # Set by the standalone engine (backup-config's ``pgbackrest:``) before provisioning.
    existing: ExistingStanza | None = None

    def _adopt(self, existing: ExistingStanza) -> None:
        """Use the operator's stanza: no configuration, role or stanza of drproof's own."""
        self.stanza = existing.stanza
        if existing.user is not None:
            self.os_user = self.run_user = existing.user
        self.repo = f"stanza {existing.stanza} ({existing.config or 'pgBackRest default configuration'})"
        out = self._run(["info", "--output=json"], "info", check=False)
        if out.returncode != 0:
            raise ComponentError(
                f"{self.instance!r}: pgbackrest cannot read stanza {existing.stanza!r} "
                f"({existing.config or 'its default configuration'}): {_problem(out)}. Check `stanza` and `config`, "
                "and that pgBackRest works for this server as the user running drproof"
            )

    # -- set-up ---------------------------------------------------------------------------
    def _setting(self, name: str) -> str:
        return self._query_one("SELECT current_setting(%s)", name)

    def _query_one(self, sql: str, *args: str) -> str:
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                row = cur.fetchone()
                return str(row[0]) if row else ""
        finally:
            conn.close()

    def _grant_backup_role(self, server_num: int) -> None:
        """The role peer authentication maps pgBackRest's OS user to: backup rights only."""
        role = '"' + self.os_user.replace('"', '""') + '"'
        if server_num >= 150000:
            rights = [
                "GRANT pg_checkpoint TO {r}",
                "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO {r}",
                "GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO {r}",
            ]
        else:
            rights = [
                "GRANT EXECUTE ON FUNCTION pg_start_backup(text, boolean, boolean) TO {r}",
                "GRANT EXECUTE ON FUNCTION pg_stop_backup(boolean, boolean) TO {r}",
            ]
        rights += [
            "GRANT pg_read_all_settings TO {r}",
            "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {r}",
            "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO {r}",
        ]
        conn = self.connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.os_user,))
                if cur.fetchone() is not None:
                    return  # an existing role (e.g. the superuser itself) keeps its rights
                cur.execute(f"CREATE ROLE {role} LOGIN")
                for grant in rights:
                    cur.execute(grant.format(r=role))
        finally:
            conn.close()

    def _write_config(self) -> None:
        """A private pgbackrest.conf: nothing of the host's /etc/pgbackrest applies."""
        sockets = self._setting("unix_socket_directories").split(",")[0].strip()
        if not sockets:
            raise ComponentError(f"{self.instance!r}: the server has no Unix socket for pgBackRest's peer login")
        for sub in ("", "repo", "log", "lock", "spool", "conf.d"):
            (self.home / sub).mkdir(mode=0o700, exist_ok=True)
        config = (
            "[global]\n"
            f"repo1-path={self.repo}\n"
            # drproof never expires pgBackRest backups: its sets point at them by label.
            "repo1-retention-full=9999999\n"
            "compress-type=zst\n"
            "start-fast=y\n"
            f"process-max={max(1, min(4, os.cpu_count() or 1))}\n"
            f"log-path={self.home / 'log'}\n"
            f"lock-path={self.home / 'lock'}\n"
            f"spool-path={self.home / 'spool'}\n"
            "log-level-console=off\n"
            "log-level-stderr=warn\n"
            "log-level-file=info\n"
            f"\n[{self.stanza}]\n"
            f"pg1-path={self._setting('data_directory')}\n"
            f"pg1-port={self._setting('port')}\n"
            f"pg1-socket-path={sockets}\n"
            f"pg1-user={self.os_user}\n"
        )
        conf = self.home / "pgbackrest.conf"
        conf.write_text(config, encoding="utf-8")
        conf.chmod(0o600)
        owner = self.physical.server_file_owner()
        if owner is not None:
            for path in [self.home, *self.home.iterdir()]:
                os.lchown(path, *owner)

    def _argv(self, args: list[str]) -> list[str]:
        if self.existing is not None:
            config = [f"--config={self.existing.config}"] if self.existing.config else []
            return [self.executable, *config, f"--stanza={self.stanza}", *args]
        return [
            self.executable,
            f"--config={self.home / 'pgbackrest.conf'}",
            f"--config-include-path={self.home / 'conf.d'}",
            f"--stanza={self.stanza}",
            *args,
        ]

    def _run(self, args: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Environment options (PGBACKREST_*) and libpq variables (PG*) of the caller would
        # override the private configuration; the run must depend on nothing outside it.
        # An operator's pgBackRest may be configured by its own PGBACKREST_* variables too.
        env = tool_environment(prefixes=("PGBACKREST_",) if self.existing is not None else ())
        try:
            result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
                self._argv(args),
                capture_output=True,
                text=True,
                env=env,
                cwd=self.home if self.existing is None else "/",
                timeout=6 * 3600,
                **processes.run_as(self.run_user),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ComponentError(f"{self.instance!r}: pgbackrest {what} could not run: {exc}") from exc
        if check and result.returncode != 0:
            raise ComponentError(f"{self.instance!r}: pgbackrest {what} failed: {_problem(result)}")
        return result

    def _info(self, label: str | None = None) -> dict[str, Any]:
        args = ["info", "--output=json"] + ([f"--set={label}"] if label else [])
        out = self._run(args, "info")
        try:
            stanzas: list[dict[str, Any]] = json.loads(out.stdout)
            return next(s for s in stanzas if s.get("name") == self.stanza)
        except (ValueError, StopIteration) as exc:
            raise ComponentError(f"{self.instance!r}: pgbackrest info gave no stanza {self.stanza!r}") from exc

    # -- backup ---------------------------------------------------------------------------
    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        before = {b["label"] for b in self._info().get("backup", [])}
        has_full = any(label.endswith("F") for label in before)
        kind = "diff" if has_full else "full"
        if self.existing is None:
            self._push_wal()
            self._run(["backup", f"--type={kind}", "--no-archive-check"], f"backup --type={kind}")
        else:  # the server's own archive_command hands WAL to pgBackRest, which checks it
            self._run(["backup", f"--type={kind}"], f"backup --type={kind}")
        new = [b for b in self._info().get("backup", []) if b["label"] not in before]
        if len(new) != 1:
            raise ComponentError(
                f"{self.instance!r}: expected one new pgBackRest backup, found {[b['label'] for b in new]}"
            )
        label = str(new[0]["label"])
        if self.existing is None:
            self._wait_and_push(str(new[0]["archive"]["stop"]))
        verified = self.check(label)
        info = self._info(label)
        [record] = [b for b in info.get("backup", []) if b["label"] == label]
        with writer.artifact(self.instance, INFO_ARTIFACT) as sink:
            sink.write(json.dumps([info], indent=2, sort_keys=True).encode())
        return {
            "method": "pgBackRest (delegated): backup in pgBackRest's repository, verified with pgbackrest verify",
            "database": self.db,
            "server_version": self.service.version(),
            "pgbackrest_stanza": self.stanza,
            "pgbackrest_label": label,
            "pgbackrest_type": record["type"],
            "pgbackrest_prior": record.get("prior"),
            "pgbackrest_repository": str(self.repo),
            "wal_start": record["archive"]["start"],
            "wal_stop": record["archive"]["stop"],
            "database_bytes": record["info"]["size"],
            "repository_bytes": record["info"]["repository"]["delta"],
            "verify": verified,
            "tablespaces": _tablespaces(record),
        }

    def _push_wal(self) -> int:
        """Hand every archived WAL file not yet pushed to pgBackRest; return how many."""
        archive = self.physical.wal_archive()
        names = sorted(n for n in os.listdir(archive) if _WAL_FILE.match(n) and n not in self._pushed)
        for name in names:
            # A file pushed before (same name and content) is accepted again, so a new
            # component object on an old repository does not need to know what was pushed.
            self._run(["archive-push", str(archive / name)], f"archive-push of {name}")
            self._pushed.add(name)
        return len(names)

    def _wait_and_push(self, stop_segment: str) -> None:
        """The backup is consistent only with WAL through its stop segment: wait for it."""
        archive = self.physical.wal_archive()
        if not processes.wait_until(lambda: (archive / stop_segment).exists(), timeout=120, interval=0.05):
            raise ComponentError(
                f"{self.instance!r}: WAL segment {stop_segment}, which the pgBackRest backup needs, was not "
                "archived within 120 s; see the server log"
            )
        self._push_wal()

    def check(self, label: str) -> str:
        """Prove that pgBackRest can restore ``label``; raise an IntegrityError if it cannot.

        An IntegrityError, like damage to drproof's own artifacts: the restore is refused
        (exit 1), not failed (found by review: the same damage exited 2 here, 1 elsewhere).

        ``pgbackrest verify`` (2.45) checks the files that are there: a backup whose
        directory is gone is simply not listed, and the WAL a backup needs is not compared
        with what the archive holds. So drproof also names the backups it needs (the label
        and those it references) and lists the archive for the backup's WAL range.
        """
        info = self._info()
        records = {str(b["label"]): b for b in info.get("backup", [])}
        if label not in records:
            raise IntegrityError(
                f"{self.instance!r}: pgBackRest backup {label} is no longer in pgBackRest's repository at "
                f"{self.repo} (it holds: {', '.join(sorted(records)) or 'no backups'}); it was expired or deleted, "
                "or the repository was replaced, so it cannot be restored"
            )
        record = records[label]
        summary = self.verify([label, *(record.get("reference") or [])])
        self._check_wal(info, record)
        return summary

    def verify(self, needed: list[str] | None = None) -> str:
        """``pgbackrest verify`` of the whole repository; raise if anything in it is invalid.

        Conservative on purpose: damage anywhere in the repository refuses every restore,
        because a drill that restores past known damage proves nothing. ``needed`` labels
        must be listed as valid, which catches a backup whose directory was deleted.
        """
        out = self._run(["verify", "--output=text", "--verbose"], "verify", check=False)
        text = out.stdout
        statuses = dict(re.findall(r"^\s*backup: (\S+), status: (\S+?),", text, re.MULTILINE))
        # A backup that was interrupted (a crash, a full disk, a killed pgbackrest) stays in
        # the repository as in-progress until the next backup resumes or removes it. It is
        # no backup anyone can restore, so no damage to one: refusing every restore for it
        # (found by review) blocked the restore of intact backups right after a crash during
        # the nightly backup. A needed label must still be valid (below).
        aborted = sorted(n for n, status in statuses.items() if status == "in-progress" and n not in (needed or []))
        problems = [
            line.strip()
            for line in (text + "\n" + out.stderr).splitlines()
            if (_VERIFY_BAD.search(line) or re.search(r"\b(?:ERROR|WARN)\b", line))
            and not any(line.strip().startswith(f"backup: {name}, status: in-progress,") for name in aborted)
        ]
        problems += [
            f"backup {name} is {statuses.get(name, 'missing (its directory is gone)')}"
            for name in needed or []
            if statuses.get(name) != "valid"
        ]
        if out.returncode != 0 or problems or not re.search(r"^status: ok$", text, re.MULTILINE):
            raise IntegrityError(
                f"{self.instance!r}: pgbackrest verify found pgBackRest's repository at {self.repo} damaged: "
                + ("; ".join(problems) or _problem(out))
            )
        wal = sum(int(n) for n in re.findall(r"total valid WAL: (\d+)", text))
        left = f"; interrupted backup(s) {', '.join(aborted)} left by pgBackRest, not restorable" if aborted else ""
        return f"ok: {len(statuses) - len(aborted)} backups and {wal} WAL files valid{left}"

    def _check_wal(self, info: dict[str, Any], record: dict[str, Any]) -> None:
        """Every WAL segment from the backup's start to its stop must be in the archive."""
        start, stop = str(record["archive"]["start"]), str(record["archive"]["stop"])
        archive_ids = [a["id"] for a in info.get("archive", []) if a["database"] == record["database"]]
        listing: dict[str, Any] = {}
        for archive_id in archive_ids:
            out = self._run(["repo-ls", "--recurse", "--output=json", f"archive/{self.stanza}/{archive_id}"], "repo-ls")
            listing.update(json.loads(out.stdout or "{}"))
        present = sorted(
            {
                m.group(1)
                for key in listing
                if (m := _REPO_SEGMENT.match(Path(key).name)) and start <= m.group(1) <= stop
            }
        )
        missing = [name for name in dict.fromkeys((start, stop)) if name not in present]
        missing += [f"between {a} and {b}" for a, b in itertools.pairwise(present) if not _follows(a, b)]
        if missing:
            raise IntegrityError(
                f"{self.instance!r}: pgBackRest backup {record['label']} needs WAL {start} to {stop}, but the "
                f"archive in {self.repo} lacks {', '.join(missing)}; the backup cannot be made consistent"
            )

    # -- restore --------------------------------------------------------------------------
    def restore(self, source: ArtifactSource) -> None:
        """Back to the end of the pgBackRest backup the set names, after proving it intact.

        ``check`` runs before the server is stopped: a damaged, deleted or expired backup
        is refused while the live cluster is still untouched.
        """
        label = self._label_of(source)
        spaces = self._tablespaces_of(source)
        if spaces:  # refused before anything is checked, stopped or written
            raise ComponentError(f"{self.instance!r}: {_tablespace_refusal(label, spaces)}")
        self.check(label)
        owner = self.physical.server_file_owner()

        def populate(data: Path) -> None:
            if owner is not None:
                os.chown(data, *owner)  # pgBackRest writes into it as the server's user
            self._run(
                [
                    "restore",
                    f"--set={label}",
                    "--type=immediate",
                    "--target-action=promote",
                    f"--pg1-path={data}",
                ],
                f"restore --set={label}",
            )

        # pgBackRest writes restore_command (its archive-get), recovery_target = 'immediate',
        # recovery_target_action = 'promote' and recovery_target_timeline = 'current' into
        # postgresql.auto.conf and creates recovery.signal; replace_cluster adds nothing.
        try:
            self.replay_seconds = self.physical.replace_cluster(populate, {})
        except DrproofError as exc:
            raise ComponentError(f"pgBackRest restore of {self.instance!r} failed: {exc}") from exc
        if self.existing is None:
            self._push_new_timeline()

    def _push_new_timeline(self) -> None:
        """Hand the history file of the timeline the restore created to pgBackRest at once.

        A later restore picks its new timeline by asking pgBackRest's archive which ones
        exist. Without this file there it would reuse this timeline's number, and the
        server could then never archive its own, different history file of that name.
        """
        timeline = int(self._query_one("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
        history = self.physical.wal_archive() / f"{timeline:08X}.history"
        if timeline > 1 and not processes.wait_until(history.exists, timeout=60, interval=0.05):
            raise ComponentError(
                f"{self.instance!r}: restored, but the server did not archive {history.name} within 60 s; "
                "see the server log before the next backup or restore"
            )
        self._push_wal()

    def _label_of(self, source: ArtifactSource) -> str:
        if INFO_ARTIFACT not in source.names():
            raise ComponentError(f"{self.instance!r}: the backup set has no {INFO_ARTIFACT}")
        with source.open(INFO_ARTIFACT) as stream:
            try:
                [stanza] = json.loads(stream.read())
                [record] = stanza["backup"]
                label = str(record["label"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ComponentError(f"{self.instance!r}: {INFO_ARTIFACT} names no single pgBackRest backup") from exc
        if stanza.get("name") != self.stanza:
            raise ComponentError(
                f"{self.instance!r}: the backup set is of pgBackRest stanza {stanza.get('name')!r}, not {self.stanza!r}"
            )
        return label

    def _tablespaces_of(self, source: ArtifactSource) -> list[str]:
        """The tablespaces the set's pgBackRest backup holds, from its info record (any set's)."""
        with source.open(INFO_ARTIFACT) as stream:
            [stanza] = json.loads(stream.read())  # _label_of has proved the shape
        return _tablespaces(stanza["backup"][0])

    def tool_versions(self) -> dict[str, str]:
        return {"postgres server": self.service.version(), "pgbackrest": self.pgbackrest_release}


def _tablespaces(record: dict[str, Any]) -> list[str]:
    """``name (oid N) at /path`` for each tablespace a pgBackRest backup record lists.

    pgBackRest restores a tablespace to where its link pointed, which is the live
    tablespace's directory, outside the fresh data directory drproof restores into: a
    restore there would write into (or be refused by) live data.
    """
    spaces = record.get("tablespace") or []
    if not isinstance(spaces, list):
        raise ComponentError(f"pgBackRest's backup record lists tablespaces as {type(spaces).__name__}, not a list")
    return [f"{t.get('name')} (oid {t.get('oid')}) at {t.get('destination')}" for t in spaces if isinstance(t, dict)]


def _tablespace_refusal(label: str, spaces: list[str]) -> str:
    return (
        f"pgBackRest backup {label} holds tablespace(s) {'; '.join(spaces)}; drproof restores a pgBackRest backup "
        "into a fresh data directory and cannot restore tablespaces, whose files pgBackRest puts back at their "
        "live location. Restore this cluster by hand with `pgbackrest restore --set="
        f"{label} --tablespace-map=<name>=<empty directory>` on a spare host, or move the tables into pg_default"
    )


def _follows(a: str, b: str) -> bool:
    """Whether WAL segment ``b`` comes right after ``a`` on one timeline.

    Within a log file the segment number grows by one; the next log file starts at 0.
    The segment size is unknown here, so the end of a log file is not checked.
    """
    log_a, seg_a, log_b, seg_b = int(a[8:16], 16), int(a[16:], 16), int(b[8:16], 16), int(b[16:], 16)
    return a[:8] == b[:8] and ((log_b == log_a and seg_b == seg_a + 1) or (log_b == log_a + 1 and seg_b == 0))


def _problem(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr.strip() or result.stdout.strip())[-2000:]
    return f"exit {result.returncode}: {text or '(no output)'}"
