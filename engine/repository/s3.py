"""A backup repository in an S3 bucket (or any S3-compatible store via ``endpoint_url``).

Layout mirrors the local repository under a prefix: ``sets/<id>/<component>/<name>.zst``
and ``sets/<id>/manifest.json``. S3 has no rename, so completeness rests on order: every
artifact is uploaded (multipart, streamed in 8 MiB parts, never whole in memory) before
the manifest, and a set is listed only if its manifest exists. A crashed backup leaves
unlisted objects (and aborted multipart uploads); it never looks complete. drproof does not
remove them (``delete`` starts from the manifest): the chain audit notes them. Credentials come from boto3's usual chain (environment, profile, instance
role), never from drproof's configuration files, resolved by each repository in a boto3
session of its own (``_session``: never boto3's default session, which keeps the first
credentials it found for the whole process).

Every request is retried with exponential backoff (botocore's "standard" mode) on
throttling, 5xx answers, timeouts and dropped connections, and bounded by connect and
read timeouts, so a dead or hung store fails the backup in bounded time. Three
environment variables tune this (defaults in brackets): ``DRPROOF_S3_MAX_ATTEMPTS``
[9, counting the first try], ``DRPROOF_S3_CONNECT_TIMEOUT`` [10 s] and
``DRPROOF_S3_READ_TIMEOUT`` [60 s]. A request that still fails is reported with how many
attempts were made.
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.chain import ChainAudit, Finding, StoredSet
from engine.crypto import Encryption
from engine.errors import BackupNotFound, ConfigError, IntegrityError, RepositoryError
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
from engine.repository.base import (
    BackupSetWriter,
    EncodingSetWriter,
    Repository,
    StoredArtifactMissing,
    VerifyReport,
    safe_segment,
    verbatim_manifest,
)
from engine.repository.objectlock import Hold, ObjectLock, ObjectLocked
from engine.repository.s3lease import DEFAULT_TTL, Lease, held
from engine.repository.settings import BackendSettings, OpenContext
from engine.signing import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, RepositoryTrust
from engine.streams import CHUNK, HashingWriter

PART = 8 << 20  # S3 needs parts of at least 5 MiB (except the last)
# A retain-until date read back may lose sub-second precision; a day cut off is no rounding.
LOCK_DATE_SLACK = timedelta(seconds=2)


MAX_ATTEMPTS_ENV, CONNECT_TIMEOUT_ENV, READ_TIMEOUT_ENV = (
    "DRPROOF_S3_MAX_ATTEMPTS",
    "DRPROOF_S3_CONNECT_TIMEOUT",
    "DRPROOF_S3_READ_TIMEOUT",
)


def _env_number(name: str, default: float, minimum: float) -> float:
    """A tuning value from the environment; a bad one is refused, not silently ignored."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class Credentials:
    """Keys read from the environment variables a configuration names (never from the file itself)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "Credentials(***)"


class ObjectLockUnsupported(ConfigError, RepositoryError):
    """Object Lock is configured but the bucket or the store cannot keep it."""


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None  # botocore's loader of service models, shared by every repository's own session


def _session() -> Any:
    """A boto3 session of the repository's own, never boto3's cached default one.

    Why: ``boto3.client`` uses one process-wide default session, which resolves the
    credentials chain (environment, profile, instance role) once and keeps the answer, so
    a second repository opened after the environment changed (another configuration's
    keys, a second store in one process, a test's second server) signed its requests with
    the first one's keys and failed with InvalidAccessKeyId. Each repository resolves its
    own credentials now; the service models (the slow part, about 150 ms) are loaded once
    and shared, so a session costs about as much as a client did.
    """
    global _LOADER
    import boto3
    import botocore.session

    core = botocore.session.Session()
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _client(endpoint_url: str | None, region: str | None, credentials: Credentials | None = None) -> Any:
    from botocore.config import Config

    # Standard retry mode: exponential backoff with jitter on throttling, 5xx errors,
    # timeouts and dropped connections. The timeouts bound each attempt, so a store that
    # accepts connections but never answers fails the backup instead of hanging it.
    # total_max_attempts counts the first try (botocore's max_attempts counts only retries):
    # 9 keeps the 8 retries drproof has always made.
    attempts = _env_number(MAX_ATTEMPTS_ENV, 9, 1)
    if not attempts.is_integer():
        raise ConfigError(f"{MAX_ATTEMPTS_ENV}={os.environ[MAX_ATTEMPTS_ENV]!r}: expected a whole number")
    config = Config(
        retries={"total_max_attempts": int(attempts), "mode": "standard"},
        connect_timeout=_env_number(CONNECT_TIMEOUT_ENV, 10, 0.1),
        read_timeout=_env_number(READ_TIMEOUT_ENV, 60, 0.1),
    )
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    return _session().client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", config=config, **keys)


class MultipartWriter(io.RawIOBase):
    """Uploads a stream as an S3 multipart upload, one bounded part at a time.

    With ``translate``, a part that fails (after botocore's retries) is raised as the
    RepositoryError it returns, and every later write raises that same error at once:
    writers above (tar, zstd) write again while they unwind, and each of those writes
    would otherwise go through the whole retry cycle again and bury the first error.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        translate: Callable[[Exception], RepositoryError] | None = None,
        write_args: dict[str, Any] | None = None,
    ) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._write_args = write_args or {}  # Object Lock retention, the same on every part
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._translate = translate
        self._failed: RepositoryError | None = None

    def writable(self) -> bool:
        return True

    @property
    def write_args(self) -> dict[str, Any]:
        """What every request of this upload asked for (the Object Lock retention): read back after it."""
        return self._write_args

    def write(self, data: Any) -> int:
        if self._failed is not None:
            raise self._failed
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= PART:
            self._send_checked(bytes(self._buffer[:PART]))
            del self._buffer[:PART]
        return len(view)

    def _send_checked(self, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._send(data)
        except (BotoCoreError, ClientError) as exc:
            if self._translate is None:
                raise
            self._failed = self._translate(exc)
            raise self._failed from exc

    def _send(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, **self._write_args
            )["UploadId"]
        number = len(self._parts) + 1
        etag = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
        )["ETag"]
        self._parts.append({"PartNumber": number, "ETag": etag})

    def finish(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._upload_id is None:  # small object: one plain PUT
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), **self._write_args)
        else:
            if self._buffer:
                self._send_checked(bytes(self._buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._buffer.clear()

    def abort(self) -> None:
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        self._buffer.clear()


class _S3SetWriter(EncodingSetWriter):
    def __init__(self, repo: S3Repository, label: str | None, backup_id: str | None = None) -> None:
        super().__init__(repo.encryption, label, backup_id, now=repo.clock())
        self._repo = repo

    @contextmanager
    def _sink(self, rel: str) -> Iterator[IO[bytes]]:
        what = f"uploading {rel} of {self.id}"
        key = self._repo.key(self.id, rel)
        upload = MultipartWriter(
            self._repo.client,
            self._repo.bucket,
            key,
            lambda exc: self._repo.error(exc, what, "nothing was published"),
            self._repo.write_args(),
        )
        try:
            with self._repo.guard(what, "nothing was published"):
                yield upload  # type: ignore[misc]
                upload.finish()
                self._repo.prove_locked(key, upload.write_args)
        except BaseException:
            with suppress(Exception):  # the store may be unreachable; the set stays unlisted anyway
                upload.abort()
            raise

    def commit(self, components: list[ComponentRecord], tools: dict[str, str], labels: dict[str, str]) -> Manifest:
        manifest = self._manifest(components, tools, labels)
        with self._repo.publishing(f"publishing backup {self.id}"):
            manifest = manifest.model_copy(update=self._repo.chain_link())
            data = manifest.to_json().encode()
            signature = self._repo.sign(data)
            if signature is not None:  # before the manifest: a listed set is never unsigned
                self._repo.put(self.id, SIGNATURE_NAME, signature, "nothing was published")
            # Last: this publishes the set. If it fails, the set was not published.
            try:
                self._repo.put(self.id, MANIFEST_NAME, data, "nothing was published")
            except BaseException:
                if signature is not None:
                    self._repo.withdraw_signature(self.id)
                raise
            self._repo.record_head(manifest, data)
        return manifest

    def abort(self) -> None:
        """Remove the artifacts uploaded so far; they are unlisted without a manifest anyway.

        Stops at the first failed delete: when the store is what failed the backup, every
        further delete would wait out the whole retry cycle again for nothing.
        """
        for r in self.records:
            try:
                self._repo.client.delete_object(Bucket=self._repo.bucket, Key=self._repo.key(self.id, r.path))
            except Exception:
                break


class ObjectLockSettings(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        description="COMPLIANCE: nobody can delete or shorten the lock, not even the bucket's owner. GOVERNANCE: "
        "only a principal allowed s3:BypassGovernanceRetention can (drproof never asks to)."
    )
    days: int = Field(ge=1, le=36500, description="How long each object is kept after it is written.")


def _env_name(description: str) -> Any:
    return Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=description)


class S3Settings(BackendSettings):
    bucket: str = Field(min_length=3, description="Bucket name.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    endpoint_url: str | None = Field(default=None, description="For S3-compatible stores (MinIO, Ceph, SeaweedFS, ...).")
    endpoint_url_env: str | None = _env_name(
        "Environment variable holding the endpoint URL instead (a drill in CI against a store started for it)."
    )
    region: str | None = Field(default=None, description="Region of the bucket; default us-east-1.")
    access_key_id_env: str | None = _env_name(
        "Environment variable holding the access key id; default: boto3's own chain (AWS_* variables, profile, "
        "instance role). Keys are never written in the file."
    )
    secret_access_key_env: str | None = _env_name("Environment variable holding the secret access key.")
    session_token_env: str | None = _env_name("Environment variable holding a session token (temporary keys).")
    object_lock: ObjectLockSettings | None = Field(
        default=None,
        description="S3 Object Lock on every object drproof writes; the bucket must have Object Lock enabled "
        "(else a configuration error before anything is written).",
    )
    lock_lease_seconds: int = Field(
        default=int(DEFAULT_TTL.total_seconds()),
        ge=5,
        description="Lifetime of the repository lock's lease object unless renewed (renewed every third of it); "
        "a holder that died blocks others for at most this long.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> S3Settings:
        if self.endpoint_url and self.endpoint_url_env:
            raise ValueError("give endpoint_url or endpoint_url_env, not both")
        if self.endpoint_url and "@" in self.endpoint_url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("endpoint_url must not hold credentials; name variables in access_key_id_env/...")
        if bool(self.access_key_id_env) != bool(self.secret_access_key_env):
            raise ValueError("give access_key_id_env and secret_access_key_env together")
        return self

    def describe(self) -> dict[str, str]:
        facts = {"type": "s3", "bucket": self.bucket, "prefix": self.prefix}
        if self.endpoint_url:
            facts["endpoint_url"] = self.endpoint_url
        elif self.endpoint_url_env:
            facts["endpoint_url"] = f"${self.endpoint_url_env}"
        return facts

    def secret_variables(self) -> list[str]:
        return [n for n in (self.access_key_id_env, self.secret_access_key_env, self.session_token_env) if n]

    def endpoint(self) -> str | None:
        if self.endpoint_url_env is None:
            return self.endpoint_url
        return _required_env(self.endpoint_url_env, "repository.endpoint_url_env")

    def credentials(self) -> Credentials | None:
        if self.access_key_id_env is None or self.secret_access_key_env is None:
            return None
        token = self.session_token_env
        return Credentials(
            _required_env(self.access_key_id_env, "repository.access_key_id_env"),
            _required_env(self.secret_access_key_env, "repository.secret_access_key_env"),
            _required_env(token, "repository.session_token_env") if token else None,
        )

    def lock(self) -> ObjectLock | None:
        if self.object_lock is None:
            return None
        return ObjectLock(self.object_lock.mode, timedelta(days=self.object_lock.days))


def _required_env(name: str, key: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(f"{key}: the environment variable {name} is not set (or empty)")
    return value


class S3Repository(Repository):
    name: ClassVar[str] = "s3"
    Settings: ClassVar[type[BackendSettings]] = S3Settings

    @classmethod
    def open(cls, settings: Any, ctx: OpenContext) -> S3Repository:
        """A drill's run (``ctx.run_name``) keeps its sets under ``<prefix>/<run name>``."""
        assert isinstance(settings, S3Settings)
        prefix = settings.prefix
        if ctx.run_name is not None:
            prefix = "/".join(p for p in (prefix.strip("/"), ctx.run_name) if p)
        return cls(
            settings.bucket,
            prefix,
            settings.endpoint(),
            settings.region,
            ctx.encryption,
            credentials=settings.credentials(),
            object_lock=settings.lock(),
            lease_ttl=timedelta(seconds=settings.lock_lease_seconds),
            trust=ctx.trust,
        )

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        encryption: Encryption | None = None,
        *,
        credentials: Credentials | None = None,
        object_lock: ObjectLock | None = None,
        lease_ttl: timedelta = DEFAULT_TTL,
        lock_wait: timedelta | None = None,
        trust: RepositoryTrust | None = None,
    ) -> None:
        """``object_lock``: the retention every object written gets (see engine.repository.objectlock).
        ``lease_ttl``/``lock_wait``: how long a repository lock lives unrenewed, and how long an
        operation waits for another holder's (default: twice the ttl, so a dead holder's lease
        expires while a new operation waits)."""
        self.bucket = bucket
        self.trust = trust
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.encryption = encryption
        self.object_lock = object_lock
        self.lease_ttl = lease_ttl
        self.lock_wait = lock_wait if lock_wait is not None else 2 * lease_ttl
        self.client = _client(endpoint_url, region, credentials)
        self.broken: dict[str, str] = {}
        self.without_manifest: builtins.list[str] = []  # set prefixes the last listing found no manifest in
        self._chain_notes: builtins.list[str] = []
        self._hidden_versions: dict[str, tuple[str, str | None]] = {}  # hidden set: (manifest, signature) versions
        self.versioned: bool | None = None  # learnt from the bucket before the first write or delete
        self.bucket_locks: bool | None = None  # whether the bucket has Object Lock enabled
        self._lock_proven = False
        self._lease: Lease | None = None
        # Attempts of the API call in progress (one call = the first try and its retries),
        # so an error can say how hard it was tried. Handlers must return None.
        self.attempts = 0
        self.client.meta.events.register("before-call.s3", self._new_call)
        self.client.meta.events.register("before-send.s3", self._new_attempt)

    def _new_call(self, **_: Any) -> None:
        self.attempts = 0

    def _new_attempt(self, **_: Any) -> None:
        self.attempts += 1

    def where(self) -> str:
        """The bucket, prefix and endpoint, for messages (never credentials)."""
        place = f"s3://{self.bucket}/{self.prefix}"
        return place + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def error(self, exc: Exception, what: str, consequence: str | None = None) -> RepositoryError:
        """An S3/botocore failure told as a RepositoryError: what, where, how often tried."""
        tried = ""
        if self.attempts > 1:
            retries = self.attempts - 1
            tried = (
                f" after {self.attempts} attempts (retried {retries} time{'s' if retries != 1 else ''} with backoff)"
            )
        tail = f"; {consequence}" if consequence else ""
        return RepositoryError(f"S3: {what} failed{tried} ({self.where()}): {exc}{tail}")

    @contextmanager
    def guard(self, what: str, consequence: str | None = None) -> Iterator[None]:
        """Every S3/botocore failure becomes a RepositoryError saying what was being done."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self.error(exc, what, consequence) from exc

    def key(self, backup_id: str, rel: str) -> str:
        parts = [p for p in (self.prefix, "sets", safe_segment(backup_id), rel) if p]
        return "/".join(parts)

    def lock_key(self, name: str) -> str:
        return "/".join(p for p in (self.prefix, "locks", name) if p)

    # -- Object Lock and versioning ---------------------------------------------------------
    def check_bucket(self) -> None:
        """Learn once whether the bucket is versioned and locks objects; refuse a lock it cannot keep.

        Called before the first write (and delete): a configured Object Lock on a bucket
        without it is a configuration error here, never a write that silently is not locked.
        """
        if self.versioned is not None:
            return
        with self.guard(f"reading the versioning of bucket {self.bucket}"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        self.bucket_locks = self._bucket_lock_enabled()
        self.versioned = status in ("Enabled", "Suspended") or self.bucket_locks
        if self.object_lock is not None and not self.bucket_locks:
            raise ObjectLockUnsupported(
                f"S3 bucket {self.bucket} ({self.where()}) does not have Object Lock enabled, but the configuration "
                f"asks for object_lock ({self.object_lock.describe()}); nothing was written. Object Lock can only be "
                "turned on when a bucket is created (aws s3api create-bucket --object-lock-enabled-for-bucket): "
                "use such a bucket, or remove object_lock from the configuration"
            )

    def _bucket_lock_enabled(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            with self.guard(f"reading the Object Lock configuration of bucket {self.bucket}"):
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except RepositoryError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "ObjectLockConfigurationNotFoundError",
                "ObjectLockConfigurationNotFound",
                "NotImplemented",
                "MethodNotAllowed",
            ):
                return False
            raise
        return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def write_args(self) -> dict[str, Any]:
        """Arguments every PUT (or multipart upload start) carries: the Object Lock retention, if configured."""
        self.check_bucket()
        return self.object_lock.headers(datetime.now(UTC)) if self.object_lock is not None else {}

    def prove_locked(self, key: str, asked: dict[str, Any]) -> None:
        """After the first locked write, read the lock back: a store that does not keep what was asked is refused.

        ``asked``: the write's arguments (``write_args``). Why the date too: a store (or a
        proxy in front of it) that kept the mode but a shorter retain-until than asked
        (a cap, a bucket default winning) would have had every set reported under a lock
        of the configured length that the store does not hold.
        """
        if self.object_lock is None or self._lock_proven:
            return
        with self.guard(f"reading back the Object Lock of {key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        wanted = asked.get("ObjectLockRetainUntilDate")
        short = isinstance(until, datetime) and isinstance(wanted, datetime) and until < wanted - LOCK_DATE_SLACK
        if mode != self.object_lock.mode or not until or short:
            kept_until = until.isoformat() if isinstance(until, datetime) else repr(until)
            kept = f"mode {mode!r}, retain until {kept_until}"
            asked_for = f", asked until {wanted.isoformat()}" if isinstance(wanted, datetime) else ""
            raise ObjectLockUnsupported(
                f"S3 store {self.where()} accepted {key} with Object Lock {self.object_lock.describe()} but does not "
                f"keep that lock ({kept}{asked_for}); the set is not written. Use a store that keeps the configured "
                "mode and retention, or change object_lock in the configuration to what it keeps"
            )
        self._lock_proven = True

    def put(self, backup_id: str, rel: str, body: bytes, consequence: str | None = None) -> None:
        key = self.key(backup_id, rel)
        try:
            args = self.write_args()
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **args)
        except ObjectLockUnsupported:
            raise
        except Exception as exc:
            raise self.error(exc, f"writing {rel} of {backup_id}", consequence) from exc
        self.prove_locked(key, args)

    def withdraw_signature(self, backup_id: str) -> None:
        """Remove the signature of a set whose manifest could not be written, if the manifest is surely absent.

        Why: a signature stored without its manifest is what deleting a published set's
        manifest leaves, and the chain audit names it (``stored_sets``); a backup that
        failed while publishing must not look like that. Only a store that answers "no
        such key" for the manifest proves it absent: a manifest written although its
        answer was lost keeps its signature.
        """
        with suppress(Exception):
            if self._get_bytes(self.key(backup_id, MANIFEST_NAME), MAX_MANIFEST_BYTES) is None:
                self.client.delete_object(Bucket=self.bucket, Key=self.key(backup_id, SIGNATURE_NAME))

    def _get_bytes(self, key: str, limit: int) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.error(exc, f"reading {key}") from exc
        except BotoCoreError as exc:
            raise self.error(exc, f"reading {key}") from exc
        if obj["ContentLength"] > limit:
            raise RepositoryError(f"S3 object {key} is {obj['ContentLength']} bytes, over the {limit} limit")
        return bytes(obj["Body"].read())

    def _get_small(self, key: str, limit: int) -> bytes | None:
        """A record only drproof writes small (tombstone, verification): None if absent or over ``limit``.

        Why not an error when too large: anyone who can write the bucket can plant one,
        and a record that only excuses or protects is safely ignored, where an error
        stopped every audit, backup and prune of the repository (the local backend
        ignores such files too). Failures of the store itself still raise.
        """
        try:
            return self._get_bytes(key, limit)
        except RepositoryError as exc:
            if exc.__cause__ is None:  # over the limit: not a failure of the store
                return None
            raise

    def begin(self, label: str | None = None) -> BackupSetWriter:
        return _S3SetWriter(self, label)

    def _set_ids(self) -> list[str]:
        prefix = "/".join(p for p in (self.prefix, "sets") if p) + "/"
        ids: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            ):
                ids += [cp["Prefix"][len(prefix) :].strip("/") for cp in page.get("CommonPrefixes", [])]
        except Exception as exc:
            raise self.error(exc, f"listing s3://{self.bucket}/{prefix}") from exc
        return ids

    def _manifest(self, backup_id: str) -> Manifest | None:
        return self._read_manifest(backup_id, Manifest)

    def _read_manifest(self, backup_id: str, model: type[ManifestModel]) -> ManifestModel | None:
        data = self._get_bytes(self.key(backup_id, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        if data is None:
            return None
        self._admit(backup_id, data)
        try:
            manifest = model.model_validate_json(data)
        except ValueError as exc:
            raise IntegrityError(f"S3 backup {backup_id}: malformed manifest ({exc})") from exc
        if manifest.id != backup_id:
            raise IntegrityError(f"S3 backup {backup_id}: its manifest says it is set {manifest.id}")
        return manifest

    def summaries(self) -> builtins.list[ManifestSummary]:
        """As ``list``, without reading fingerprints: one manifest's bytes at a time."""
        return self._read_all(ManifestSummary)

    def _read_all(self, model: type[ManifestModel]) -> builtins.list[ManifestModel]:
        out, self.broken, self.without_manifest = [], {}, []
        for backup_id in self._set_ids():
            try:
                m = self._read_manifest(backup_id, model)
            except RepositoryError as exc:
                self.broken[backup_id] = str(exc)
                continue
            if m is not None:
                out.append(m)
            else:
                self.without_manifest.append(backup_id)
        return sorted(out, key=lambda m: (m.created_at, m.id))

    def stored_manifest_bytes(self, backup_id: str) -> bytes | None:
        try:
            return self._get_bytes(self.key(backup_id, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        except RepositoryError:
            return None

    def stored_signature(self, backup_id: str) -> bytes | None:
        """The signature document; None when there is none (or none drproof could have written).

        A store that fails to answer raises: "it has no signature" would tell the operator
        a set was tampered with when the store was only throttling or refusing the keys.
        """
        if not self._plain_id(backup_id):
            return None
        return self._get_small(self.key(backup_id, SIGNATURE_NAME), MAX_SIGNATURE_BYTES)

    def stored_sets(self) -> Iterator[StoredSet]:
        """Every listed set, and every set whose manifest the store shows was deleted.

        Why: a set was found only through its manifest, so deleting the newest set's
        ``manifest.json`` (on a versioned bucket, or under Object Lock, hiding it behind
        a delete marker, all a writer can do there) made the set vanish without a word,
        and "latest" restored the set before it, green. A set is now ``manifest-missing``
        when its signature is stored without its manifest (it is written just before the
        manifest, so only a deletion leaves it alone) or when the bucket keeps a version
        of its manifest under a delete marker; a trusted tombstone (retention deleted
        it) excuses both (``engine.chain``). Objects with neither manifest nor signature
        are also what a backup in progress or killed leaves, so they are a note.
        """
        self._chain_notes = []
        listed: set[str] = set()
        for stored in super().stored_sets():  # lists the sets, which fills without_manifest
            listed.add(stored.backup_id)
            yield stored
        quiet: builtins.list[str] = []
        for backup_id in self.without_manifest:
            found = self._set_without_manifest(backup_id)
            if found is None:
                quiet.append(backup_id)
            else:
                listed.add(backup_id)
                yield found
        hidden, notes = self._hidden_manifests(listed)
        yield from hidden
        hidden_ids = {h.backup_id for h in hidden}
        quiet = [i for i in quiet if i not in hidden_ids]
        if quiet:
            notes.append(
                f"{len(quiet)} set(s) hold objects but neither manifest nor signature ({', '.join(quiet[:5])}"
                f"{', ...' if len(quiet) > 5 else ''}): a backup in progress, or one killed, whose objects drproof "
                "does not remove (delete them once no backup runs); or a set whose manifest and signature were "
                "both deleted, which a bucket without versioning cannot tell apart"
            )
        self._chain_notes = notes

    def _set_without_manifest(self, backup_id: str) -> StoredSet | None:
        """The set as stored when its signature is there without its manifest; None if neither is."""
        signature = self.stored_signature(backup_id)
        if signature is None:
            return None
        data = self.stored_manifest_bytes(backup_id)  # published since the listing read it?
        if data is not None:
            return StoredSet(backup_id, data, self.stored_signature(backup_id))
        return StoredSet(
            backup_id,
            None,
            signature,
            "its signature and artifacts are stored but its manifest is gone (deleted, or lost as it was written)",
            deleted=True,
        )

    def _hidden_manifests(self, listed: set[str]) -> tuple[builtins.list[StoredSet], builtins.list[str]]:
        """Sets whose manifest has stored versions but no current one: deleted on a versioned bucket."""
        from botocore.exceptions import ClientError

        prefix = "/".join(p for p in (self.prefix, "sets") if p) + "/"
        counts: dict[str, int] = {}
        newest: dict[tuple[str, str], dict[str, Any]] = {}  # (id, name): the newest data version
        self._hidden_versions = {}
        try:
            with self.guard(f"listing the object versions under {prefix}"):
                for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                        backup_id, _, rel = v["Key"][len(prefix) :].partition("/")
                        if rel not in (MANIFEST_NAME, SIGNATURE_NAME) or backup_id in listed:
                            continue
                        if rel == MANIFEST_NAME:
                            counts[backup_id] = counts.get(backup_id, 0) + (0 if "Size" not in v else 1)
                        seen = newest.get((backup_id, rel))
                        if "Size" in v and (seen is None or v["LastModified"] > seen["LastModified"]):
                            newest[(backup_id, rel)] = v
        except RepositoryError as exc:
            if not isinstance(exc.__cause__, ClientError):
                raise
            code = exc.__cause__.response.get("Error", {}).get("Code")
            return [], [
                f"the store did not list object versions ({code}): a manifest hidden behind a delete marker "
                "could not be looked for"
            ]
        out = []
        for backup_id, versions in sorted(counts.items()):
            if self.stored_manifest_bytes(backup_id) is not None:
                continue  # published since the listing
            kept = (
                f"a delete marker hides it and the bucket keeps {versions} earlier version(s) of it"
                if versions
                else "only the delete marker over it is left"
            )
            why = f"its manifest was deleted: {kept}, yet no trusted record says retention deleted this set"
            out.append(StoredSet(backup_id, None, None, why, deleted=True))
            manifest = newest.get((backup_id, MANIFEST_NAME))
            if manifest is not None:
                signature = newest.get((backup_id, SIGNATURE_NAME))
                self._hidden_versions[backup_id] = (
                    manifest["VersionId"],
                    signature["VersionId"] if signature is not None else None,
                )
        return out, []

    def chain_audit(self, now: datetime | None = None) -> ChainAudit:
        """The chain as stored, with what only S3 shows: notes, and the place of a set hidden by a delete marker.

        A hidden set whose kept manifest proves (by a valid signature, on a repository
        that verifies) a place before the newest set's is a set deleted from the middle
        of the chain, ``missing`` as the chain names one, not a doubt about the newest:
        so a versioned bucket pruned by a drproof that left delete markers (or before
        tombstones were kept) does not refuse "latest" forever.
        """
        found = super().chain_audit(now)
        found.notes += self._chain_notes
        head_id = found.head()
        if head_id is None:
            return found
        head = found.sets[head_id].summary
        for backup_id, (manifest_version, signature_version) in sorted(self._hidden_versions.items()):
            place = self._hidden_place(backup_id, manifest_version, signature_version, head)
            if place is None:
                continue
            found.findings = [
                f for f in found.findings if not (f.backup_id == backup_id and f.kind == "manifest-missing")
            ]
            if not any(f.backup_id == backup_id and f.kind == "missing" for f in found.findings):
                found.findings.append(
                    Finding(
                        backup_id,
                        "missing",
                        f"its manifest was deleted (a delete marker hides it; it held {place}, before the newest set "
                        f"{head.id}), yet no trusted record says retention deleted it",
                    )
                )
        return found

    def _hidden_place(
        self, backup_id: str, manifest_version: str, signature_version: str | None, head: ManifestSummary
    ) -> str | None:
        """The place a hidden manifest's kept version proves before ``head``; None if it proves none."""
        try:
            data = self._get_version(self.key(backup_id, MANIFEST_NAME), manifest_version, MAX_MANIFEST_BYTES)
            summary = ManifestSummary.model_validate_json(data)
            keys = self.trust.keys if self.trust is not None else None
            if keys is not None:
                sig = None
                if signature_version is not None:
                    sig = self._get_version(self.key(backup_id, SIGNATURE_NAME), signature_version, MAX_SIGNATURE_BYTES)
                if not keys.check(data, sig).ok:
                    return None
        except (RepositoryError, ValueError):
            return None
        if summary.id != backup_id:
            return None
        if summary.sequence is not None and head.sequence is not None and summary.sequence < head.sequence:
            return f"place {summary.sequence}"
        if summary.sequence is None and (head.sequence is not None or summary.created_at < head.created_at):
            return f"an unchained set of {summary.created_at.isoformat()}"
        return None

    def _get_version(self, key: str, version_id: str, limit: int) -> bytes:
        with self.guard(f"reading version {version_id} of {key}"):
            obj = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            if obj["ContentLength"] > limit:
                raise RepositoryError(f"S3 object {key} version {version_id} is over the {limit} bytes limit")
            return bytes(obj["Body"].read())

    @staticmethod
    def _plain_id(name: str) -> bool:
        """Whether a name found in a listing can be a set's id (a planted ``pruned/a/b.json`` cannot)."""
        try:
            safe_segment(name)
        except RepositoryError:
            return False
        return True

    def _pruned_key(self, backup_id: str, suffix: str) -> str:
        return "/".join(p for p in (self.prefix, "pruned", safe_segment(backup_id) + suffix) if p)

    def stored_tombstones(self) -> builtins.list[tuple[str, bytes, bytes | None]]:
        prefix = "/".join(p for p in (self.prefix, "pruned") if p) + "/"
        out = []
        with self.guard(f"listing s3://{self.bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    backup_id = name.removesuffix(".json")
                    if backup_id != name and self._plain_id(backup_id):
                        data = self._get_small(obj["Key"], MAX_SIGNATURE_BYTES)
                        if data is not None:
                            sig = self._get_small(self._pruned_key(backup_id, ".sig"), MAX_SIGNATURE_BYTES)
                            out.append((backup_id, data, sig))
        return out

    def _identity_key(self, suffix: str) -> str:
        return "/".join(p for p in (self.prefix, "repository" + suffix) if p)

    def identity_location(self) -> str | None:
        return f"s3://{self.bucket}/{self.prefix}"

    def witness_place(self) -> str | None:
        """The location and the store: the same bucket and prefix on another endpoint is another repository here."""
        if not self.keeps_witness:
            return None
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def stored_identity(self) -> tuple[bytes, bytes | None] | None:
        data = self._get_small(self._identity_key(".json"), MAX_SIGNATURE_BYTES)
        if data is None:
            return None
        return data, self._get_small(self._identity_key(".sig"), MAX_SIGNATURE_BYTES)

    def write_identity(self, record: bytes, signature: bytes | None) -> None:
        with self.guard("recording the repository's identity (repository.json)", "nothing was published"):
            if signature is not None:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._identity_key(".sig"), Body=signature, **self.write_args()
                )
            self.client.put_object(
                Bucket=self.bucket, Key=self._identity_key(".json"), Body=record, **self.write_args()
            )

    def stored_head(self) -> tuple[bytes, bytes | None] | None:
        data = self._get_small(self._head_key(".json"), MAX_SIGNATURE_BYTES)
        if data is None:
            return None
        return data, self._get_small(self._head_key(".sig"), MAX_SIGNATURE_BYTES)

    def write_head(self, record: bytes, signature: bytes | None) -> None:
        with self.guard("recording the newest set (head.json)", "the set is published all the same"):
            self.client.put_object(Bucket=self.bucket, Key=self._head_key(".json"), Body=record, **self.write_args())
            if signature is not None:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._head_key(".sig"), Body=signature, **self.write_args()
                )

    def _head_key(self, suffix: str) -> str:
        return "/".join(p for p in (self.prefix, "head" + suffix) if p)

    def write_tombstone(self, backup_id: str, record: bytes, signature: bytes | None) -> None:
        with self.guard(f"recording the deletion of {backup_id}", f"set {backup_id} was not deleted"):
            # Locked like every object drproof writes: a tombstone nobody can delete keeps its gap accounted for.
            if signature is not None:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._pruned_key(backup_id, ".sig"), Body=signature, **self.write_args()
                )
            self.client.put_object(
                Bucket=self.bucket, Key=self._pruned_key(backup_id, ".json"), Body=record, **self.write_args()
            )

    def list(self) -> list[Manifest]:
        return self._read_all(Manifest)

    def get(self, backup_id: str) -> Manifest:
        m = self._manifest(backup_id)
        if m is None:
            raise BackupNotFound(f"no complete backup set {backup_id!r} in s3://{self.bucket}/{self.prefix}")
        return m

    @contextmanager
    def open_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> Iterator[IO[bytes]]:
        from botocore.exceptions import ClientError

        with self.guard(f"reading {artifact.key} of {manifest.id}"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.key(manifest.id, artifact.path))["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise StoredArtifactMissing(f"backup {manifest.id}: {artifact.key} is missing") from exc
                raise
        try:
            with self.guard(f"reading {artifact.key} of {manifest.id}"):
                yield body
        finally:
            body.close()

    def describe(self) -> dict[str, str]:
        facts = {"type": self.name, "bucket": self.bucket, "prefix": self.prefix}
        if self.endpoint_url:
            facts["endpoint_url"] = self.endpoint_url
        if self.object_lock is not None:
            facts["object_lock"] = self.object_lock.describe()
        if self.trust is not None and self.trust.verifies:
            facts["signing"] = self.trust.describe()
        return facts

    def stored_size(self, manifest: Manifest, artifact: ArtifactRecord) -> int:
        key = self.key(manifest.id, artifact.path)
        with self.guard(f"reading the size of {key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return int(head["ContentLength"])

    def read_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, length: int) -> bytes:
        key = self.key(manifest.id, artifact.path)
        with self.guard(f"reading {length} bytes of {key}"):
            obj = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
            return bytes(obj["Body"].read())

    def truncate_stored(self, manifest: Manifest, artifact: ArtifactRecord, length: int) -> None:
        body = self.read_stored(manifest, artifact, 0, length) if length else b""
        key = self.key(manifest.id, artifact.path)
        with self.guard(f"truncating {key}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **self.write_args())

    def delete_stored(self, manifest: Manifest, artifact: ArtifactRecord) -> None:
        """Destroy the artifact: on a versioned bucket every version, not only a delete marker.

        A store that refuses (Object Lock, a legal hold) raises :class:`ObjectLocked`
        naming each version it kept; what could be deleted before that is gone.
        """
        key = self.key(manifest.id, artifact.path)
        self.check_bucket()
        if not self.versioned:
            with self.guard(f"deleting {key}"):
                self.client.delete_object(Bucket=self.bucket, Key=key)
            return
        refused = self._delete_versions([v for v in self._versions(key) if v["Key"] == key])
        if refused:
            raise ObjectLocked(
                f"S3 store {self.where()} refused to delete {len(refused)} version(s) of {key}: "
                + "; ".join(f"{v['VersionId']}: {why}" for v, why in refused),
                [self._hold(manifest.id, v) for v, _ in refused],
            )

    def overwrite_stored(self, manifest: Manifest, artifact: ArtifactRecord, offset: int, data: bytes) -> None:
        key = self.key(manifest.id, artifact.path)
        with self.guard(f"overwriting {len(data)} bytes of {key}"):
            body = bytearray(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            body[offset : offset + len(data)] = data
            self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(body), **self.write_args())

    # -- versions and holds -----------------------------------------------------------------
    def _versions(self, prefix: str) -> builtins.list[dict[str, Any]]:
        """Every version and delete marker under ``prefix`` (markers have ``IsDeleteMarker``)."""
        found: builtins.list[dict[str, Any]] = []
        with self.guard(f"listing the versions under {prefix}"):
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [{**v, "IsDeleteMarker": False} for v in page.get("Versions", [])]
                found += [{**m, "IsDeleteMarker": True} for m in page.get("DeleteMarkers", [])]
        return found

    def _delete_versions(
        self, versions: builtins.list[dict[str, Any]]
    ) -> builtins.list[tuple[dict[str, Any], str]]:
        """Delete each version by id, data before markers; the ones the store refused, and why.

        Data first, and the manifest's before the artifacts': removing a delete marker
        while a version under it is left would make that version current again, and a
        manifest made current again would bring a deleted set back into the listing.
        """
        from botocore.exceptions import ClientError

        def order(v: dict[str, Any]) -> tuple[bool, bool]:
            return (v["IsDeleteMarker"], not v["Key"].endswith("/" + MANIFEST_NAME))

        refused: builtins.list[tuple[dict[str, Any], str]] = []
        for v in sorted(versions, key=order):
            if v["IsDeleteMarker"] and refused:
                break  # a version under it is kept: the marker keeps it hidden
            try:
                with self.guard(f"deleting version {v['VersionId']} of {v['Key']}"):
                    self.client.delete_object(Bucket=self.bucket, Key=v["Key"], VersionId=v["VersionId"])
            except RepositoryError as exc:
                cause = exc.__cause__
                if not isinstance(cause, ClientError):
                    raise
                refused.append((v, cause.response.get("Error", {}).get("Code") or str(cause)))
        return refused

    def _hold(self, backup_id: str, version: dict[str, Any]) -> Hold:
        """What the store says locks one version."""
        with self.guard(f"reading the retention of {version['Key']}"):
            head = self.client.head_object(Bucket=self.bucket, Key=version["Key"], VersionId=version["VersionId"])
        until = head.get("ObjectLockRetainUntilDate")
        return Hold(
            backup_id=backup_id,
            key=version["Key"],
            version_id=version["VersionId"],
            mode=head.get("ObjectLockMode"),
            until=until.astimezone(UTC) if until else None,
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def holds(self, backup_id: str) -> builtins.list[Hold]:
        """The versions of a set the store will not delete yet (Object Lock or a legal hold)."""
        self.check_bucket()
        if not self.bucket_locks:
            return []
        now = datetime.now(UTC)
        found = []
        for version in self._versions(self.key(backup_id, "")):
            if version["IsDeleteMarker"]:
                continue
            hold = self._hold(backup_id, version)
            if hold.legal_hold or (hold.until is not None and hold.until > now):
                found.append(hold)
        return found

    def left_after_delete(self, backup_id: str) -> builtins.list[str]:
        """Versions and delete markers still stored under a deleted set: storage not freed."""
        self.check_bucket()
        if not self.versioned:
            return []
        return [
            f"{v['Key']} ({'delete marker' if v['IsDeleteMarker'] else 'version'} {v['VersionId']})"
            for v in self._versions(self.key(backup_id, ""))
        ]

    def record_verification(self, report: VerifyReport) -> None:
        data, signature = self.verification_record(report)  # an older mark's signature never fits these bytes
        self.put(report.backup_id, VERIFIED_NAME, data)
        if signature is not None:
            self.put(report.backup_id, VERIFIED_SIGNATURE, signature)

    def verified_ids(self) -> set[str]:
        out = set()
        for backup_id in self._set_ids():
            # Anyone who can write the bucket can write this record: only what trusts_verification accepts counts.
            data = self._get_small(self.key(backup_id, VERIFIED_NAME), 1 << 20)
            signature = self._get_small(self.key(backup_id, VERIFIED_SIGNATURE), MAX_SIGNATURE_BYTES)
            if self.trusts_verification(backup_id, data, signature):
                out.add(backup_id)
        return out

    def delete(self, backup_id: str) -> None:
        """Unlist the set (manifest first), then remove every object; on a versioned bucket every version.

        A set the store still holds (Object Lock, legal hold) is refused whole before
        anything is deleted: deleting its manifest would only add a delete marker, hiding
        a set whose data the store keeps anyway.
        """
        if self._lease is not None:
            self._lease.check()
        manifest = self.get(backup_id)
        holds = self.holds(backup_id)
        if holds:
            more = f" (and {len(holds) - 1} more)" if len(holds) > 1 else ""
            raise ObjectLocked(f"S3 backup {backup_id} not deleted: {holds[0].reason()}{more}", holds)
        keys = [self.key(backup_id, MANIFEST_NAME)]  # first: the set stops being listed
        keys += [self.key(backup_id, a.path) for a in manifest.artifacts]
        keys += [self.key(backup_id, n) for n in (VERIFIED_NAME, VERIFIED_SIGNATURE, SIGNATURE_NAME)]
        for key in keys:
            with self.guard(f"deleting {key}"):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        if self.versioned:
            refused = self._delete_versions(self._versions(self.key(backup_id, "")))
            if refused:
                raise ObjectLocked(
                    f"S3 backup {backup_id} is unlisted but its storage was not freed: the store kept "
                    f"{len(refused)} version(s) ({refused[0][0]['Key']}: {refused[0][1]})",
                    [self._hold(backup_id, v) for v, _ in refused],
                )

    @contextmanager
    def acquire_lock(self, exclusive: bool, operation: str | None = None, timeout: float | None = None) -> Iterator[None]:
        """A lease object under ``locks/`` (engine.repository.s3lease), renewed while the block runs.

        Shared for backups, copies and restores, exclusive for pruning; a holder that
        waits longer than ``lock_wait`` (or ``timeout`` seconds, when given) gets an error
        naming who holds it.
        """
        what = operation or ("prune" if exclusive else "backup or restore")
        wait = self.lock_wait if timeout is None else timedelta(seconds=timeout)
        with held(self, exclusive, what, self.lease_ttl, wait, self.guard) as lease:
            outer, self._lease = self._lease, lease
            try:
                yield
            finally:
                self._lease = outer

    def import_set(self, manifest: Manifest, source: Repository) -> None:
        """Copy a set's stored bytes verbatim (same digests, same signed manifest), manifest last."""
        data, signature = verbatim_manifest(manifest, source)
        self._admit_copy(manifest.id, data, signature)
        done: list[str] = []
        try:
            for artifact in manifest.artifacts:
                key = self.key(manifest.id, artifact.path)
                upload = MultipartWriter(self.client, self.bucket, key, write_args=self.write_args())
                check = HashingWriter(upload)  # type: ignore[arg-type]
                try:
                    with self.guard(f"copying {artifact.key} of {manifest.id}"):
                        with source.open_stored(manifest, artifact) as body:
                            while chunk := body.read(CHUNK):
                                check.write(chunk)
                        if check.hexdigest() != artifact.sha256 or check.size != artifact.size:
                            raise IntegrityError(
                                f"backup {manifest.id}: {artifact.key} is damaged in the source; not copied"
                            )
                        upload.finish()
                    self.prove_locked(key, upload.write_args)
                except BaseException:
                    with suppress(Exception):  # the store may be unreachable; nothing is listed anyway
                        upload.abort()
                    raise
                done.append(key)
            if signature is not None:
                self.put(manifest.id, SIGNATURE_NAME, signature)
                done.append(self.key(manifest.id, SIGNATURE_NAME))
            self.put(manifest.id, MANIFEST_NAME, data)
        except BaseException:
            for key in done:
                with suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            raise
