"""A backup repository in a local directory.

Layout::

    <root>/sets/<id>/manifest.json          present only for complete sets
    <root>/sets/<id>/manifest.sig           its signature, in a signed repository (engine/signing.py)
    <root>/sets/<id>/<component>/<name>.zst
    <root>/pruned/<id>.json (and .sig)      the record of each set retention deleted (engine/chain.py)
    <root>/repository.json (and .sig)       the identity record: whose sets these are, and where (engine/chain.py)
    <root>/.lock, <root>/.publish.lock      the repository lock and the publishing lock, each with
                                            ``.holders/`` notes naming who holds it (locking.py)
    <root>/.staging/<id>/...                in-progress sets; never listed
    <root>/.staging/<id>.owner              who writes it (host, pid): a dead owner's set is removed

A set is assembled in ``.staging`` and renamed into ``sets`` after its manifest has been
written and fsynced, so a crash at any point leaves either a complete set or an
unlisted staging directory, never a half set that looks whole.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import Field, ValidationError

from engine.chain import StoredSet
from engine.crypto import Encryption
from engine.errors import BackupNotFound, IntegrityError, RepositoryError
from engine.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    VERIFIED_NAME,
    VERIFIED_SIGNATURE,
    ArtifactRecord,
    ComponentRecord,
    Manifest,
    ManifestModel,
    ManifestSummary,
)
from engine.repository import staging as owners
from engine.repository.base import (
    BackupSetWriter,
    EncodingSetWriter,
    Repository,
    StoredArtifactMissing,
    VerifyReport,
    safe_segment,
    verbatim_manifest,
)
from engine.repository.locking import file_lock, open_lock_file
from engine.repository.settings import BackendSettings, OpenContext
from engine.signing import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, RepositoryTrust
from engine.smallfiles import create_private as _create
from engine.smallfiles import replace_with as _write_new
from engine.streams import CHUNK, HashingWriter

PRUNED_DIR = "pruned"
IDENTITY_NAME = "repository.json"  # the identity record (engine/chain.py), signed beside it in repository.sig
IDENTITY_SIGNATURE = "repository.sig"
HEAD_NAME = "head.json"  # the newest set published here (engine/chain.py head_bytes), signed in head.sig
HEAD_SIGNATURE = "head.sig"

# Backups hold everything a stack holds (rows, role password verifiers in globals.sql,
# configuration secrets), encrypted or not: nobody but the repository's owner reads them
# (files are created 0600 by engine/smallfiles.py).
DIR_MODE = 0o700


def _private_dirs(path: Path, upto: Path | None = None) -> None:
    """Create ``path`` (and missing parents below ``upto``) as directories only the owner can enter."""
    missing = []
    p = path
    while not p.exists() and p != upto and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
        d.chmod(DIR_MODE)  # mkdir's mode passes through the umask


def _write_synced(path: Path, data: bytes) -> None:
    """A new file of the repository with ``data``, on disk before this returns."""
    with _create(path) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_small(path: Path, limit: int) -> bytes | None:
    """A small file of the repository, or None if it is absent, unreadable or too large."""
    try:
        with _open_regular(path) as fh:  # a FIFO planted here must not block the reader
            if os.fstat(fh.fileno()).st_size > limit:
                return None
            return fh.read()
    except (OSError, _NotRegular):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(
    root: Path, exc: OSError, what: str, consequence: str = "nothing was published", full_advice: str | None = None
) -> RepositoryError:
    """A failed write into the repository, told as what to do rather than as ``OSError``.

    A full disk (ENOSPC) or quota (EDQUOT) is the common case on the worst day, and the
    operator needs to know which repository filled up and that nothing half-written was
    kept, not a traceback out of tarfile or zstd.
    """
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        head = f"repository {root} is full ({reason})"
        advice = full_advice or "free space in the repository (or prune old sets) and run again"
    else:
        head = f"cannot write to repository {root} ({reason})"
        advice = "fix the repository's storage and run again"
    return RepositoryError(f"{head} while {what}; {consequence}; {advice}")


@contextmanager
def _writing(
    root: Path, what: str, consequence: str = "nothing was published", full_advice: str | None = None
) -> Iterator[None]:
    """Turn an ``OSError`` from repository I/O inside the block into a :func:`_write_error`."""
    try:
        yield
    except OSError as exc:
        raise _write_error(root, exc, what, consequence, full_advice) from exc


class _StoredFile(io.RawIOBase):
    """The file an artifact's stored bytes go to, whose write errors name the repository.

    Only this object's own writes are translated: an ``OSError`` a component meets while
    reading its source passes through untouched, so it is never blamed on the repository.
    """

    def __init__(self, fh: IO[bytes], root: Path, what: str) -> None:
        self._fh, self._root, self._what = fh, root, what

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with _writing(self._root, self._what):
            return self._fh.write(data)

    def flush(self) -> None:
        if not self._fh.closed:
            with _writing(self._root, self._what):
                self._fh.flush()


class _LocalSetWriter(EncodingSetWriter):
    def __init__(self, repo: LocalRepository, label: str | None) -> None:
        super().__init__(repo.encryption, label, now=repo.clock())
        self._repo = repo
        self.staging = repo.root / ".staging" / self.id
        owners.clean(repo.root)  # sets a killed backup left half-written (no live owner)
        try:
            with _writing(repo.root, f"starting set {self.id}"):
                self.staging.mkdir(mode=DIR_MODE)
                self.staging.chmod(DIR_MODE)
                owners.write_owner(self.staging)
        except BaseException:
            # Found by review: on a full disk the directory was made and its owner note cut
            # short; no writer was returned to abort, and a note that does not parse is
            # "not ours to judge", so neither the next backup nor ``drproof clean`` removed them.
            self.abort()
            raise

    @contextmanager
    def _sink(self, rel: str) -> Iterator[IO[bytes]]:
        target = self.staging / rel
        what = f"writing {rel} of set {self.id}"
        with _writing(self._repo.root, what):
            _private_dirs(target.parent, self.staging)
            fh = _create(target)
        try:
            yield _StoredFile(fh, self._repo.root, what)  # type: ignore[misc]
            with _writing(self._repo.root, what):
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            # After a successful flush and fsync nothing is left to write; after a failed
            # write, closing would retry the buffered bytes and raise again, hiding the
            # first (already translated) error.
            with suppress(OSError):
                fh.close()

    def commit(self, components: list[ComponentRecord], tools: dict[str, str], labels: dict[str, str]) -> Manifest:
        """Publish: take the next place in the chain, sign, and rename the set into ``sets/``.

        The place is chosen and the set renamed under the publishing lock, so two backups
        never claim one place; the manifest and its signature are in the set before the
        rename makes it visible, so a listed set is never unsigned in a signed repository.
        """
        manifest = self._manifest(components, tools, labels)
        repo = self._repo
        with repo.publishing(f"publishing backup {self.id}"):
            manifest = manifest.model_copy(update=repo.chain_link())
            data = manifest.to_json().encode("utf-8")
            signature = repo.sign(data)
            with _writing(repo.root, f"writing the manifest of set {self.id}"):
                _write_synced(self.staging / MANIFEST_NAME, data)
                if signature is not None:
                    _write_synced(self.staging / SIGNATURE_NAME, signature)
                _fsync_dir(self.staging)
                final = repo.root / "sets" / self.id
                os.rename(self.staging, final)
            _fsync_dir(final.parent)
            repo.record_head(manifest, data)
        owners.remove_owner(self.staging)
        return manifest

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        owners.remove_owner(self.staging)


class LocalSettings(BackendSettings):
    path: Path | None = Field(
        default=None,
        description="Directory of the repository (relative to the file). Required in backup-config.yaml; in a "
        "drill the default is a private directory in the run's work directory, removed afterwards.",
    )

    def describe(self) -> dict[str, str]:
        return {"type": "local", "path": str(self.path)}

    def resolve_paths(self, base: Path) -> None:
        if self.path is not None:
            self.path = base / self.path


class LocalRepository(Repository):
    name: ClassVar[str] = "local"
    Settings: ClassVar[type[BackendSettings]] = LocalSettings

    @classmethod
    def open(cls, settings: Any, ctx: OpenContext) -> LocalRepository:
        assert isinstance(settings, LocalSettings)
        root = settings.path if settings.path is not None else ctx.run_dir
        if root is None:
            raise RepositoryError("a local repository needs a path (repository.path)")
        return cls(root, ctx.encryption, create=ctx.create, trust=ctx.trust)

    def __init__(
        self,
        root: Path,
        encryption: Encryption | None = None,
        create: bool = True,
        trust: RepositoryTrust | None = None,
    ) -> None:
        """Open (with ``create``, make) the repository at ``root``.

        ``create=False`` is for readers that must not write (a restore test, a dry run):
        a directory without the repository's layout is an error, and nothing is made.
        ``trust``: how sets are signed and which signatures are accepted (None: unsigned).
        """
        self.root = root
        self.encryption = encryption
        self.trust = trust
        if root.exists() and not root.is_dir():
            raise RepositoryError(f"the repository path {root} is a file, not a directory; name a directory")
        if not create:
            if not (root / "sets").is_dir():
                raise RepositoryError(f"no repository at {root} (it has no sets/ directory); nothing was created")
            return
        try:
            _private_dirs(root / "sets")
            _private_dirs(root / ".staging")
        except OSError as exc:
            raise RepositoryError(f"cannot create repository at {root}: {exc.strerror}") from exc

    def begin(self, label: str | None = None) -> BackupSetWriter:
        return _LocalSetWriter(self, label)

    def _set_dir(self, backup_id: str) -> Path:
        return self.root / "sets" / safe_segment(backup_id)

    def _set_entries(self) -> builtins.list[Path]:
        """The entries of ``sets/``, sorted; a ``sets`` that cannot be listed is the repository's fault.

        Why: a ``sets`` replaced by a file (or made unreadable) escaped as a traceback out of
        every command, ``list`` included, instead of naming the repository.
        """
        where = self.root / "sets"
        try:
            return sorted(where.iterdir())
        except OSError as exc:
            raise RepositoryError(
                f"cannot list the backup sets in {where} ({exc.strerror or exc}): the repository is damaged or "
                "not a drproof repository; nothing was read or changed"
            ) from exc

    def list(self) -> list[Manifest]:
        """Complete sets, oldest first; sets whose manifest cannot be read go to ``broken``."""
        return self._read_all(Manifest)

    def summaries(self) -> builtins.list[ManifestSummary]:
        """As ``list``, one manifest at a time and without its fingerprints: memory stays flat."""
        return self._read_all(ManifestSummary)

    def _read_all(self, model: type[ManifestModel]) -> builtins.list[ManifestModel]:
        out = []
        self.broken: dict[str, str] = {}
        for entry in self._set_entries():
            if (entry / MANIFEST_NAME).is_file():
                try:
                    out.append(self._read(entry.name, model))
                except RepositoryError as exc:
                    self.broken[entry.name] = str(exc)
        return sorted(out, key=lambda m: (m.created_at, m.id))

    def stored_manifest_bytes(self, backup_id: str) -> bytes | None:
        return _read_small(self._set_dir(backup_id) / MANIFEST_NAME, MAX_MANIFEST_BYTES)

    def stored_signature(self, backup_id: str) -> bytes | None:
        return _read_small(self._set_dir(backup_id) / SIGNATURE_NAME, MAX_SIGNATURE_BYTES)

    def get(self, backup_id: str) -> Manifest:
        return self._read(backup_id, Manifest)

    def _read(self, backup_id: str, model: type[ManifestModel]) -> ManifestModel:
        """Parse the manifest from the very bytes whose signature was checked (no second read)."""
        path = self._set_dir(backup_id) / MANIFEST_NAME
        if not path.is_file():
            raise BackupNotFound(f"no complete backup set {backup_id!r} in {self.root}")
        data = _load_bytes(path)
        self._admit(backup_id, data)
        manifest = _parse(path, data, model)
        if manifest.id != backup_id:
            raise IntegrityError(f"{path}: the manifest in set {backup_id} says it is set {manifest.id}")
        return manifest

    def stored_sets(self) -> Iterator[StoredSet]:
        """Every set directory: with its manifest, or holding files but no manifest (its manifest deleted)."""
        for entry in self._set_entries():
            if entry.is_symlink():
                # drproof never links a set in: one planted here would be skipped unseen and
                # "latest" would silently fall back to an older set.
                yield StoredSet(entry.name, None, None, "it is a symbolic link, not a set directory drproof wrote")
                continue
            if not entry.is_dir():
                continue
            path = entry / MANIFEST_NAME
            if path.is_file():
                try:
                    data: bytes | None = _load_bytes(path)
                    problem = None
                except RepositoryError as exc:
                    data, problem = None, str(exc)
                yield StoredSet(entry.name, data, self.stored_signature(entry.name), problem)
            elif any(entry.iterdir()):
                yield StoredSet(entry.name, None, self.stored_signature(entry.name))

    def stored_tombstones(self) -> builtins.list[tuple[str, bytes, bytes | None]]:
        directory = self.root / PRUNED_DIR
        if not directory.is_dir():
            return []
        out = []
        for path in sorted(directory.glob("*.json")):
            data = _read_small(path, MAX_SIGNATURE_BYTES)
            if data is not None:
                out.append((path.stem, data, _read_small(path.with_suffix(".sig"), MAX_SIGNATURE_BYTES)))
        return out

    def identity_location(self) -> str | None:
        return str(self.root.resolve())

    def stored_identity(self) -> tuple[bytes, bytes | None] | None:
        data = _read_small(self.root / IDENTITY_NAME, MAX_SIGNATURE_BYTES)
        if data is None:
            return None
        return data, _read_small(self.root / IDENTITY_SIGNATURE, MAX_SIGNATURE_BYTES)

    def write_identity(self, record: bytes, signature: bytes | None) -> None:
        with _writing(self.root, "recording the repository's identity"):
            if signature is not None:
                _write_new(self.root / IDENTITY_SIGNATURE, signature.decode("utf-8"))
            _write_new(self.root / IDENTITY_NAME, record.decode("utf-8"))

    def stored_head(self) -> tuple[bytes, bytes | None] | None:
        data = _read_small(self.root / HEAD_NAME, MAX_SIGNATURE_BYTES)
        if data is None:
            return None
        return data, _read_small(self.root / HEAD_SIGNATURE, MAX_SIGNATURE_BYTES)

    def write_head(self, record: bytes, signature: bytes | None) -> None:
        with _writing(self.root, "recording the newest set (head.json)", "the set is published all the same"):
            (self.root / HEAD_SIGNATURE).unlink(missing_ok=True)
            _write_new(self.root / HEAD_NAME, record.decode("utf-8"))
            if signature is not None:
                _write_new(self.root / HEAD_SIGNATURE, signature.decode("utf-8"))

    def write_tombstone(self, backup_id: str, record: bytes, signature: bytes | None) -> None:
        directory = self.root / PRUNED_DIR
        consequence = f"set {backup_id} was not deleted"
        # Found by review: "prune old sets" was the advice when pruning itself found the disk full.
        advice = (
            "each deletion is recorded (a few KiB) before the set is deleted: free a little space on the "
            "repository's disk outside its sets and run the prune again"
        )
        owners.empty_trash(self.root)  # sets a killed prune deleted only in part: space to record this
        with _writing(self.root, f"recording the deletion of {backup_id}", consequence, advice):
            _private_dirs(directory)
            if signature is not None:
                _write_new(directory / f"{safe_segment(backup_id)}.sig", signature.decode("utf-8"))
            _write_new(directory / f"{safe_segment(backup_id)}.json", record.decode("utf-8"))

    @contextmanager
    def publishing(self, operation: str) -> Iterator[None]:
        """The short exclusive lock under which a set takes its place in the chain."""
        with self._file_lock(".publish.lock", "the publishing lock of", True, operation):
            yield

    def overwrite_manifest(self, backup_id: str, data: bytes) -> None:
        path = self._set_dir(backup_id) / MANIFEST_NAME
        with open(path, "r+b") as fh:
            fh.truncate(0)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def delete_manifest(self, backup_id: str) -> None:
        (self._set_dir(backup_id) / MANIFEST_NAME).unlink()

    def plant_set(self, source_id: str, new_id: str, manifest_bytes: bytes, signature: bytes | None) -> None:
        target = self._set_dir(new_id)
        shutil.copytree(self._set_dir(source_id), target, symlinks=True)
        for leftover in (VERIFIED_NAME, VERIFIED_SIGNATURE, SIGNATURE_NAME):
            (target / leftover).unlink(missing_ok=True)
        (target / MANIFEST_NAME).write_bytes(manifest_bytes)
        if signature is not None:
            (target / SIGNATURE_NAME).write_bytes(signature)

    def _stored_path(self, manifest: Manifest, artifact: ArtifactRecord) -> Path:
        base = self._set_dir(manifest.id).resolve()
        path = (base / artifact.path).resolve()
        if not path.is_relative_to(base):
            raise IntegrityError(f"backup {manifest.id}: artifact path {artifact.path!r} escapes the set")
        return path

    @contextmanager
    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> Iterator[IO[bytes]]:
        try:
            fh = _open_regular(self._stored_path(manifest, artifact))
        except FileNotFoundError as exc:
            raise StoredArtifactMissing(f"backup {manifest.id}: {artifact.key} is missing") from exc
        except _NotRegular as exc:
            raise IntegrityError(
                f"backup {manifest.id}: {artifact.key} is stored as {exc}, not a file: drproof wrote no such thing"
            ) from None
        except OSError as exc:
            raise RepositoryError(f"backup {manifest.id}: cannot read {artifact.key}: {exc.strerror}") from exc
        with fh:
            yield fh

    def import_set(self, manifest: Manifest, source: Repository) -> None:
        """Copy a set verbatim: every artifact read from the source, checked, then renamed into place.

        Paths come from the manifest, which the source controls: each must be drproof's own
        ``<component>/<name>.zst`` (the manifest model refuses anything else), is created
        only inside a fresh private staging directory that nothing else can have linked
        into, with ``O_EXCL | O_NOFOLLOW``, under a temporary name renamed after the
        source was read to its end and matched its digest. A refused copy leaves nothing.
        """
        if (self.root / "sets" / safe_segment(manifest.id) / MANIFEST_NAME).exists():
            raise RepositoryError(f"backup {manifest.id} is already in {self.root}")
        data, signature = verbatim_manifest(manifest, source)
        self._admit_copy(manifest.id, data, signature)
        staging = self.root / ".staging" / f"{manifest.id}.copy-{secrets.token_hex(4)}"
        what = f"copying set {manifest.id}"
        with _writing(self.root, what):
            staging.mkdir(mode=DIR_MODE)
            staging.chmod(DIR_MODE)
            owners.write_owner(staging)
        try:
            for artifact in manifest.artifacts:
                self._import_artifact(manifest, artifact, source, staging, what)
            with _writing(self.root, what):
                _write_synced(staging / MANIFEST_NAME, data)
                if signature is not None:
                    _write_synced(staging / SIGNATURE_NAME, signature)
                _fsync_dir(staging)
                os.rename(staging, self.root / "sets" / manifest.id)
            _fsync_dir(self.root / "sets")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            owners.remove_owner(staging)

    def _import_artifact(
        self, manifest: Manifest, artifact: ArtifactRecord, source: Repository, staging: Path, what: str
    ) -> None:
        component, name = artifact.path.split("/")  # the model allows exactly this shape
        directory = staging / component
        part = directory / f".{name}.part"
        # The source is opened (and raises RepositoryError, not OSError) before anything is created.
        with source.open_stored(manifest, artifact) as body:
            with _writing(self.root, what):
                _private_dirs(directory, staging)
                out = _create(part)
            with _writing(self.root, what), out:
                check = HashingWriter(out)
                while chunk := body.read(CHUNK):
                    check.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if check.hexdigest() != artifact.sha256 or check.size != artifact.size:
            raise IntegrityError(f"backup {manifest.id}: {artifact.key} is damaged in the source; not copied")
        os.rename(part, directory / name)

    def record_verification(self, report: VerifyReport) -> None:
        """Remember the outcome of a full verification; retention protects verified sets."""
        directory = self._set_dir(report.backup_id)
        data, signature = self.verification_record(report)  # an older mark's signature never fits these bytes
        consequence = f"set {report.backup_id} is stored but its verification was not recorded"
        with _writing(self.root, f"recording the verification of {report.backup_id}", consequence):
            _write_new(directory / VERIFIED_NAME, data.decode("utf-8"))
            if signature is not None:
                _write_new(directory / VERIFIED_SIGNATURE, signature.decode("utf-8"))

    def verified_ids(self) -> set[str]:
        out = set()
        for entry in self._set_entries():
            data = _read_small(entry / VERIFIED_NAME, MAX_MANIFEST_BYTES)
            signature = _read_small(entry / VERIFIED_SIGNATURE, MAX_SIGNATURE_BYTES)
            if self.trusts_verification(entry.name, data, signature):
                out.add(entry.name)
        return out

    def delete(self, backup_id: str) -> None:
        """Unlist the set first (rename out of sets/), then remove its files."""
        source = self._set_dir(backup_id)
        if not (source / MANIFEST_NAME).is_file():
            raise BackupNotFound(f"no complete backup set {backup_id!r} in {self.root}")
        trash = self.root / ".trash"
        owners.empty_trash(self.root)
        _private_dirs(trash)
        target = trash / f"{backup_id}-{secrets.token_hex(3)}"
        os.rename(source, target)
        _fsync_dir(self.root / "sets")
        shutil.rmtree(target, ignore_errors=True)

    @contextmanager
    def acquire_lock(
        self, exclusive: bool, operation: str | None = None, timeout: float | None = None
    ) -> Iterator[None]:
        """Shared for backups, copies and restores, exclusive for pruning: nothing read is deleted under a reader."""
        what = operation or ("prune" if exclusive else "an operation")
        with self._file_lock(".lock", "the lock of repository", exclusive, what, timeout):
            yield

    @contextmanager
    def _file_lock(
        self, name: str, what: str, exclusive: bool, operation: str, timeout: float | None = None
    ) -> Iterator[None]:
        path = self.root / name
        try:
            fh = open_lock_file(path)
        except OSError as exc:  # a read-only or full repository: say which, not a traceback
            raise _write_error(self.root, exc, "opening its lock file", "nothing was done") from exc
        with file_lock(fh, path, exclusive=exclusive, operation=operation, what=f"{what} {self.root}", timeout=timeout):
            yield

    def describe(self) -> dict[str, str]:
        facts = {"type": self.name, "path": str(self.root)}
        if self.encryption is not None:
            facts["encryption"] = f"aes-256-gcm, key from {self.encryption.source}"
        if self.trust is not None and self.trust.verifies:
            facts["signing"] = self.trust.describe()
        return facts

    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int:
        return self._stored_path(manifest, artifact).stat().st_size

    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes:
        with open(self._stored_path(manifest, artifact), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def truncate_stored(self, manifest: Manifest, artifact: ArtifactRecord, length: int) -> None:
        path = self._stored_path(manifest, artifact)
        os.truncate(path, length)
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())

    def delete_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> None:
        self._stored_path(manifest, artifact).unlink()

    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None:
        with open(self._stored_path(manifest, artifact), "r+b") as fh:
            fh.seek(offset)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


class _NotRegular(Exception):
    """An artifact path that names a FIFO, a directory or a device: its kind is the message."""


def _open_regular(path: Path) -> IO[bytes]:
    """Open a stored artifact for reading only if it is a regular file.

    Why: ``open`` on a FIFO planted in place of an artifact blocks until someone writes to
    it, so ``verify`` and ``restore`` hung for ever. ``O_NONBLOCK`` makes the open return at
    once whatever the path is, and the kind is checked on the descriptor itself.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
            raise _NotRegular(kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _load_bytes(path: Path) -> bytes:
    try:
        with _open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                raise RepositoryError(f"{path}: manifest is {size} bytes, over the {MAX_MANIFEST_BYTES} limit")
            return fh.read()
    except _NotRegular as exc:
        raise RepositoryError(f"{path}: the manifest is {exc}, not a file drproof wrote") from None
    except OSError as exc:
        raise RepositoryError(f"{path}: cannot read manifest: {exc.strerror}") from exc


def _parse(path: Path, data: bytes, model: type[ManifestModel]) -> ManifestModel:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{path}: malformed manifest ({loc}: {first['msg']})") from exc
