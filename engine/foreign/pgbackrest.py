"""A pgBackRest backup in the team's own pgBackRest repository (``repo1-path``), by stanza.

``path`` is the repository (a local directory, as ``repo1-path``), ``stanza`` the stanza,
``set`` a backup label (default: the newest). What it says about itself comes from
``pgbackrest info --output=json``: when the backup started and stopped, its type, the
WAL it needs, and the PostgreSQL major of its cluster (the sandbox's).

pgBackRest runs with a private, empty configuration, log and lock directory: nothing of
the host's /etc/pgbackrest applies, and the repository is only read (``info``,
``restore``, ``archive-get``). An encrypted repository's passphrase is taken from
``PGBACKREST_REPO1_CIPHER_PASS`` (and ``..._TYPE``) in drproof's environment, as
pgBackRest itself would.

``pgbackrest restore --type=none`` writes the cluster's files into the sandbox's fresh
data directory (it checks each file against its checksum as it goes); the WAL segments
from the backup's start through its stop are fetched with ``archive-get`` into
``pg_wal``; the recovery is then the one every foreign base backup gets
(``engine.foreign.pg_cluster``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from engine.childenv import tool_environment
from engine.components.base import Component
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.pg_cluster import ClusterParams, cluster_component, restore_cluster, sandbox_params
from engine.foreign.stamps import file_time
from engine.scratch import owned_dir

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_TIMEOUT = 6 * 3600


class PgBackRestParams(ClusterParams):
    path: str = Field(
        description="The pgBackRest repository (its repo1-path): a local directory, relative to the scenario or "
        "absolute. pgBackRest reads it itself, so an S3 repository is not supported here yet."
    )
    stanza: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="The pgBackRest stanza.")
    set: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z_-]+$",
        description="The backup label to restore (as `pgbackrest info` lists it); default: the newest backup.",
    )

    @field_validator("path")
    @classmethod
    def _local(cls, value: str) -> str:
        if value.startswith("s3://"):
            raise ValueError(
                "pgBackRest reads its repository itself: give the local repo1-path (repositories in S3 are not "
                "supported here yet)"
            )
        return value


class PgBackRest(ForeignFormat):
    name: ClassVar[str] = "pgbackrest"
    kinds: ClassVar[tuple[str, ...]] = ("postgres-physical", "postgres")
    server: ClassVar[str | None] = "postgres"
    Params: ClassVar[type[ForeignParams]] = PgBackRestParams
    description: ClassVar[str] = (
        "A backup in a pgBackRest repository: `path` is the repository (repo1-path), `stanza` its stanza, `set` a "
        "backup label (default: the newest); restored with pgbackrest restore and its archived WAL."
    )

    params: PgBackRestParams

    def inspect(self, local: Path) -> ForeignFacts:
        if not local.is_dir():
            raise ComponentError(f"{local}: not a directory; `path` is the pgBackRest repository (repo1-path)")
        with _private() as home:
            stanza = self._stanza(local, home)
        record, db = self._pick(stanza)
        stopped = record.get("timestamp", {}).get("stop")
        taken, taken_from = file_time(local), "the repository's modification time"
        if isinstance(stopped, int):
            taken, taken_from = datetime.fromtimestamp(stopped, UTC), "pgBackRest's record of when the backup stopped"
        version = str(db.get("version", ""))
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else None
        return ForeignFacts(
            taken_at=taken,
            taken_at_from=taken_from,
            server_version=f"PostgreSQL {version}" if major else None,
            server_major=major,
            size_bytes=int(record.get("info", {}).get("repository", {}).get("size", 0)),
            details={
                "stanza": self.params.stanza,
                "set": record["label"],
                "type": record.get("type"),
                "prior": record.get("prior"),
                "wal_start": record.get("archive", {}).get("start"),
                "wal_stop": record.get("archive", {}).get("stop"),
                "timeline": int(str(record.get("archive", {}).get("start", "1"))[:8], 16),
                "cluster_bytes": record.get("info", {}).get("size"),
                "database": self.params.database,
            },
        )

    def _stanza(self, repo: Path, home: Path) -> dict[str, Any]:
        out = _pgbackrest(repo, home, self.params.stanza, ["info", "--output=json"], "info")
        try:
            stanzas: list[dict[str, Any]] = json.loads(out)
            stanza = next(s for s in stanzas if s.get("name") == self.params.stanza)
        except (ValueError, StopIteration, AttributeError):
            raise ComponentError(f"{repo}: pgbackrest info names no stanza {self.params.stanza!r}") from None
        status = stanza.get("status", {})
        if status.get("code") not in (0, None):
            raise ComponentError(
                f"{repo}: pgBackRest stanza {self.params.stanza!r}: {status.get('message', 'not usable')} "
                f"(status {status.get('code')})"
            )
        return stanza

    def _pick(self, stanza: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        backups = stanza.get("backup") or []
        labels = [str(b.get("label")) for b in backups]
        if not backups:
            raise ComponentError(f"pgBackRest stanza {self.params.stanza!r} holds no backup")
        if self.params.set is None:
            record = backups[-1]
        elif self.params.set in labels:
            record = backups[labels.index(self.params.set)]
        else:
            raise ComponentError(
                f"pgBackRest stanza {self.params.stanza!r} has no backup {self.params.set!r} (it has: {', '.join(labels)})"
            )
        if record.get("error"):
            raise ComponentError(f"pgBackRest backup {record['label']} is marked as having errors (page checksums)")
        db_id = record.get("database", {}).get("id")
        db: dict[str, Any] = next((d for d in stanza.get("db", []) if d.get("id") == db_id), {})
        return record, db

    def component_params(self, kind: type[Component], facts: ForeignFacts) -> Any:
        return sandbox_params(self.params.database)

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        comp, physical = cluster_component(component, f"the pgBackRest backup {facts.details['set']}")
        label = str(facts.details["set"])
        fetched: dict[str, Any] = {}

        def fill(data: Path) -> dict[str, Any]:
            with _private() as home:
                argv = ["restore", f"--set={label}", "--type=none", f"--pg1-path={data}", "--process-max=2"]
                _pgbackrest(local, home, self.params.stanza, argv, f"restore --set={label}")
                fetched["wal_segments_fetched"] = self._fetch_wal(local, home, data, facts, comp)
            return {"set": label}

        done = restore_cluster(comp, physical, fill, self.params.database)
        return {**fetched, **done}

    def _fetch_wal(self, repo: Path, home: Path, data: Path, facts: ForeignFacts, comp: Any) -> int:
        """archive-get every segment from the backup's start through its stop into ``pg_wal``."""
        start, stop = str(facts.details["wal_start"]), str(facts.details["wal_stop"])
        if not (_SEGMENT.match(start) and _SEGMENT.match(stop)):
            raise ComponentError(f"pgBackRest backup {facts.details['set']}: no WAL range recorded ({start}-{stop})")
        size = _segment_size(comp, data)
        names = list(_segments(start, stop, size))
        timeline = int(facts.details["timeline"])
        if timeline > 1:
            names.append(f"{timeline:08X}.history")
        for name in names:
            target = data / "pg_wal" / name
            if not target.exists():
                _pgbackrest(
                    repo,
                    home,
                    self.params.stanza,
                    ["archive-get", f"--pg1-path={data}", name, str(target)],
                    f"archive-get {name}",
                    missing=f"WAL file {name}, which backup {facts.details['set']} needs, is not in the repository's "
                    "archive: the backup cannot be made consistent",
                )
        return len(names)


def _segment_size(comp: Any, data: Path) -> int:
    out = subprocess.run(
        [*comp.service.tool("pg_controldata"), str(data)],
        capture_output=True,
        text=True,
        env=tool_environment(),
        timeout=60,
    )
    m = re.search(r"^Bytes per WAL segment:\s+(\d+)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or m is None:
        raise ComponentError(f"pg_controldata cannot read the restored cluster: {out.stderr.strip()[-500:]}")
    return int(m.group(1))


def _segments(start: str, stop: str, size: int) -> Iterator[str]:
    """WAL segment names from ``start`` through ``stop`` on one timeline."""
    per_log = 0x1_0000_0000 // size
    timeline = start[:8]
    first = int(start[8:16], 16) * per_log + int(start[16:], 16)
    last = int(stop[8:16], 16) * per_log + int(stop[16:], 16)
    if stop[:8] != timeline or last < first or last - first > 1_000_000:
        raise ComponentError(f"pgBackRest records the WAL range {start} to {stop}, which drproof cannot follow")
    for number in range(first, last + 1):
        yield f"{timeline}{number // per_log:08X}{number % per_log:08X}"


@contextlib.contextmanager
def _private() -> Iterator[Path]:
    """A private home for one pgBackRest run: an empty configuration, its log and lock directories."""
    home = owned_dir("drproof-pgbackrest-")
    try:
        for sub in ("conf.d", "log", "lock"):
            (home / sub).mkdir(mode=0o700)
        (home / "pgbackrest.conf").write_text("", encoding="utf-8")
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _pgbackrest(repo: Path, home: Path, stanza: str, args: list[str], what: str, missing: str | None = None) -> str:
    """Run pgBackRest on the repository with the private ``home``; its output, or a ComponentError.

    ``missing`` is the message for exit code 1 of ``archive-get``: the file is not in the archive.
    """
    executable = shutil.which("pgbackrest")
    if executable is None:
        raise ComponentError("pgBackRest is not installed (no `pgbackrest` on PATH); apt-get install pgbackrest")
    argv = [
        executable,
        f"--config={home / 'pgbackrest.conf'}",
        f"--config-include-path={home / 'conf.d'}",
        f"--log-path={home / 'log'}",
        f"--lock-path={home / 'lock'}",
        "--log-level-console=off",
        "--log-level-file=off",
        "--log-level-stderr=warn",
        f"--repo1-path={repo}",
        f"--stanza={stanza}",
        *args,
    ]
    env = tool_environment(prefixes=("PGBACKREST_REPO1_CIPHER_",))
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", env=env, cwd=home, timeout=_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ComponentError(f"pgbackrest {what} could not run: {exc}") from exc
    if result.returncode == 1 and missing is not None:
        raise ComponentError(f"pgbackrest {what}: {missing}")
    if result.returncode != 0:
        text = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise ComponentError(f"pgbackrest {what} failed (exit {result.returncode}): {text or 'no output'}")
    return result.stdout
