"""A ``pg_basebackup`` of a whole cluster: tar format (``-Ft``) or a plain directory (``-Fp``).

What it says about itself: ``PG_VERSION`` (the major the sandbox server must be),
``backup_label`` (when the backup started, and the first WAL segment recovery needs) and,
when pg_basebackup wrote one, ``backup_manifest`` with a checksum of every file. The
backup is restored into the sandbox's data directory through the runtime's
``replace_cluster`` and recovered: with the WAL it carries (``-X stream`` or ``fetch``,
the default), or with the segments from its start through its end (from its ``.backup``
file or manifest) copied out of a WAL archive (``wal:``) when it was taken with
``-X none``.

Before anything is restored, a backup with a manifest is checked against it with
``pg_verifybackup`` (the newest one here, which reads both formats; WAL is proven by the
recovery itself): a damaged file fails the restore naming the file, where it might
otherwise load and go unnoticed, since no fingerprint was taken when the backup was made.
A backup without a manifest cannot be proven: it is refused unless the scenario says
``unverified: true``, and then the restore is marked unverified and the run cannot pass.
Where the cluster has page checksums, ``pg_checksums --check`` runs on the recovered
data directory before the server starts (it catches overwritten bytes, not a cut file).

Not restored: tablespaces (archives other than base and pg_wal, or links in
``pg_tblspc``) and a WAL directory kept outside the data directory: a sandbox must not
write where they point.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.childenv import tool_environment
from engine.components.base import Component
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.pg_cluster import ClusterParams, cluster_component, copy_wal, restore_cluster, sandbox_params
from engine.foreign.stamps import file_time, pg_time
from engine.foreign.trees import compression, copy_tree, read_members, unpack

_START = re.compile(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", re.MULTILINE)
_STOP = re.compile(r"^STOP WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", re.MULTILINE)
_FIELDS = {
    "start_time": re.compile(r"^START TIME: (.+)$", re.MULTILINE),
    "timeline": re.compile(r"^START TIMELINE: (\d+)$", re.MULTILINE),
    "label": re.compile(r"^LABEL: (.*)$", re.MULTILINE),
    "backup_from": re.compile(r"^BACKUP FROM: (\S+)$", re.MULTILINE),
}
_TAR_NAMES = re.compile(r"^(?P<name>[^.]+)\.tar(?:\.(?P<ext>gz|zst|lz4|bz2|xz))?$")
_VERIFY_TIMEOUT = 6 * 3600


NO_MANIFEST = "the backup has no backup_manifest"


class PgBaseBackupParams(ClusterParams):
    unverified: bool = Field(
        default=False,
        description="Restore a base backup that has no `backup_manifest` (taken with `--no-manifest`, or by "
        "PostgreSQL 12 or older). Nothing can then prove its files are the ones pg_basebackup read, so the "
        "restore is marked unverified and the test's verdict can never be pass (at best error, exit 2); a "
        "failing check still fails it. Without it such a backup is refused before anything starts.",
    )
    wal: str | None = Field(
        default=None,
        description="A WAL archive directory (the files archive_command copied) for a backup taken without its "
        "WAL (`-X none`): an absolute path, or relative to the backup's directory. Only the segments recovery "
        "needs are copied into the sandbox.",
    )


@dataclass
class Layout:
    """Where the parts of one base backup are."""

    shape: str  # "tar" | "plain"
    base: Path  # base.tar[.gz|.zst|...] or the plain data directory
    wal_tar: Path | None = None  # pg_wal.tar of -Ft -X stream
    manifest: Path | None = None


def layout(local: Path) -> Layout:
    """The backup's parts, or a refusal naming what is missing or not restored."""
    if local.is_file():
        return Layout("tar", local)
    if not local.is_dir():
        raise ComponentError(f"{local}: neither a file nor a directory")
    manifest = local / "backup_manifest" if (local / "backup_manifest").is_file() else None
    if (local / "PG_VERSION").is_file():
        return Layout("plain", local, None, manifest)
    tars: dict[str, Path] = {}
    for path in local.iterdir():
        m = _TAR_NAMES.match(path.name)
        if m:
            if m.group("ext") == "lz4":
                raise ComponentError(f"{path}: lz4-compressed archives are not read here (gzip, zstd, bzip2, xz are)")
            tars[m.group("name")] = path
    if "base" not in tars:
        raise ComponentError(f"{local}: no base.tar and no PG_VERSION: not a pg_basebackup")
    others = sorted(p.name for n, p in tars.items() if n not in ("base", "pg_wal"))
    if others:
        raise ComponentError(f"{local}: tablespace archives ({', '.join(others)}) are not restored into a sandbox")
    return Layout("tar", tars["base"], tars.get("pg_wal"), manifest)


class PgBaseBackup(ForeignFormat):
    name: ClassVar[str] = "pg_basebackup"
    kinds: ClassVar[tuple[str, ...]] = ("postgres-physical", "postgres")
    server: ClassVar[str | None] = "postgres"
    Params: ClassVar[type[ForeignParams]] = PgBaseBackupParams
    description: ClassVar[str] = (
        "A pg_basebackup of a whole cluster: a -Ft directory (base.tar, pg_wal.tar, plain or compressed), a single "
        "base tar, or a -Fp directory; verified with pg_verifybackup where it has a manifest, recovered to its end."
    )

    params: PgBaseBackupParams

    def inspect(self, local: Path) -> ForeignFacts:
        parts = layout(local)
        label, version, tablespaces = self._control_files(parts)
        start = _START.search(label)
        if not version.strip().isdigit() or start is None:
            raise ComponentError(f"{local}: no readable PG_VERSION and backup_label: not a pg_basebackup")
        if tablespaces.strip():
            raise ComponentError(f"{local}: the cluster has tablespaces (tablespace_map), which are not restored")
        found = {k: (m.group(1).strip() if (m := rx.search(label)) else None) for k, rx in _FIELDS.items()}
        taken, taken_from = pg_time(found["start_time"]), "backup_label's START TIME"
        if taken is None:
            taken, taken_from = file_time(parts.base), "the backup file's modification time"
        major = int(version.strip())
        has_manifest = parts.manifest is not None or _embedded_manifest(parts) is not None
        if not has_manifest and not self.params.unverified:
            raise ComponentError(
                f"{local}: {NO_MANIFEST}, so nothing can prove its files are the ones pg_basebackup read (a cut or "
                "overwritten relation file restores, starts and answers queries). Take it with a manifest (the "
                "default since PostgreSQL 13: drop --no-manifest), or set `unverified: true` on this backup to "
                "restore it anyway: the test then cannot pass on it"
            )
        wal = self._wal_archive(local)
        if wal is not None and not wal.is_dir():
            raise ComponentError(f"{self.params.wal}: the WAL archive {wal} is not a directory")
        return ForeignFacts(
            taken_at=taken,
            taken_at_from=taken_from,
            server_version=f"PostgreSQL {major}",
            server_major=major,
            size_bytes=_size(parts),
            details={
                "layout": parts.shape,
                "compression": compression(parts.base) if parts.shape == "tar" else None,
                "start_wal": start.group(1),
                "timeline": found["timeline"],
                "backup_from": found["backup_from"],
                "label": found["label"],
                "manifest": has_manifest,
                **({"unverified": f"{NO_MANIFEST} (unverified: true)"} if not has_manifest else {}),
                "wal_archive": str(wal) if wal else None,
                "database": self.params.database,
            },
        )

    def _control_files(self, parts: Layout) -> tuple[str, str, str]:
        names = {"backup_label", "PG_VERSION", "tablespace_map"}
        if parts.shape == "plain":
            read = {n: (parts.base / n).read_bytes() for n in names if (parts.base / n).is_file()}
        else:
            read = read_members(parts.base, names)
        text = {n: read.get(n, b"").decode("utf-8", "replace") for n in names}
        return text["backup_label"], text["PG_VERSION"], text["tablespace_map"]

    def _wal_archive(self, local: Path) -> Path | None:
        if self.params.wal is None:
            return None
        wal = Path(self.params.wal)
        return wal if wal.is_absolute() else (local if local.is_dir() else local.parent) / wal

    def component_params(self, kind: type[Component], facts: ForeignFacts) -> Any:
        return sandbox_params(self.params.database)

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        comp, physical = cluster_component(component, f"the pg_basebackup {local}")
        parts = layout(local)
        embedded = _embedded_manifest(parts) if parts.manifest is None else None
        verified = _verify_embedded(parts, embedded) if embedded is not None else _verify(parts)
        archive = self._wal_archive(local)
        copied: dict[str, Any] = {}

        def fill(data: Path) -> dict[str, Any]:
            if parts.shape == "plain":
                stats = copy_tree(parts.base, data, skip=frozenset({"backup_manifest"}))
            else:
                stats = unpack(parts.base, data)
                if parts.wal_tar is not None:
                    (data / "pg_wal").mkdir(mode=0o700, exist_ok=True)
                    unpack(parts.wal_tar, data / "pg_wal")
            if archive is not None:
                first = str(facts.details["start_wal"])
                last = _stop_segment(archive, first, parts.manifest)
                copied["wal_segments_copied"] = copy_wal(archive, data / "pg_wal", first, last)
                copied["wal_replayed_through"] = last or "the end of the archive (the backup's end is not recorded)"
            return {"files": stats.files, "bytes": stats.bytes}

        done = restore_cluster(comp, physical, fill, self.params.database, page_checksums=True)
        unverified = {"unverified": f"{NO_MANIFEST} (unverified: true)"} if verified.startswith("not verified") else {}
        return {"layout": parts.shape, "verified": verified, **copied, **done, **unverified}


def _size(parts: Layout) -> int:
    if parts.shape == "plain":
        return sum(p.stat().st_size for p in parts.base.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in (parts.base, parts.wal_tar) if p is not None)


def _stop_segment(archive: Path, first: str, manifest: Path | None) -> str | None:
    """The backup's last WAL segment: from its ``.backup`` file in the archive, else its manifest."""
    for path in sorted(archive.glob(f"{first}.*.backup")):
        m = _STOP.search(path.read_text(encoding="utf-8", errors="replace"))
        if m:
            return m.group(1)
    segment = archive / first
    if manifest is None or not segment.is_file():
        return None
    try:
        ranges = json.loads(manifest.read_text(encoding="utf-8"))["WAL-Ranges"]
        end = ranges[-1]["End-LSN"]
        timeline = int(ranges[-1]["Timeline"])
        high, low = (int(x, 16) for x in end.split("/"))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    size = segment.stat().st_size  # every segment of a cluster has its size
    if size <= 0 or size & (size - 1):
        return None
    number = ((high << 32) + low) // size
    per_log = 0x1_0000_0000 // size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def _embedded_manifest(parts: Layout) -> bytes | None:
    """The ``backup_manifest`` a single tar (``pg_basebackup -D - -Ft``) carries as its last member, if any."""
    if parts.shape != "tar" or not parts.base.is_file() or parts.base.parent.joinpath("backup_manifest").is_file():
        return None
    if _TAR_NAMES.match(parts.base.name) and parts.base.name.startswith("base.tar") and parts.wal_tar is not None:
        return None  # a -Ft directory: its manifest is a file next to the tars
    return read_members(parts.base, {"backup_manifest"}, limit=1 << 30).get("backup_manifest")


def _verify_embedded(parts: Layout, manifest: bytes) -> str:
    """``pg_verifybackup`` of a single tar against the manifest inside it, from a directory made for it."""
    with tempfile.TemporaryDirectory(prefix="drproof-verifybackup-") as tmp:
        suffix = {"gzip": ".gz", "zstd": ".zst", "bzip2": ".bz2", "xz": ".xz"}.get(compression(parts.base), "")
        (Path(tmp) / f"base.tar{suffix}").symlink_to(parts.base.resolve())
        (Path(tmp) / "backup_manifest").write_bytes(manifest)
        return _verify(Layout("tar", Path(tmp) / f"base.tar{suffix}", None, Path(tmp) / "backup_manifest"))


def _verify(parts: Layout) -> str:
    """``pg_verifybackup`` against the backup's manifest; a ComponentError names what it found."""
    if parts.manifest is None:  # only with ``unverified: true`` (inspect refuses it otherwise)
        return f"not verified: {NO_MANIFEST}"
    from engine.runtime.local import postgres_bin_dir

    directory = parts.manifest.parent
    argv = [str(postgres_bin_dir() / "pg_verifybackup"), "--no-parse-wal", "--quiet", f"--format={parts.shape[0]}"]
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*argv, str(directory)],
            capture_output=True,
            text=True,
            errors="replace",
            env=tool_environment(),
            timeout=_VERIFY_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ComponentError(f"pg_verifybackup could not run: {exc}") from exc
    if result.returncode != 0:
        problems = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise ComponentError(
            f"the base backup in {directory} does not match its backup_manifest (pg_verifybackup): "
            + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        )
    return f"pg_verifybackup: every file matches backup_manifest ({time.monotonic() - started:.1f} s)"
