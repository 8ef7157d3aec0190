"""backup-config.yaml: what the standalone engine backs up, from where, and into where.

Components name *existing* servers and directories. Secrets are never inline: a password
or key is given as the name of an environment variable or the path of a file, so the
configuration can be committed, printed and attached to an audit without leaking
anything. A URL with a password in it is refused for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from drills import yamlsource
from drills.scenario import Name, Strict
from drills.validation import model_problems
from engine.errors import ConfigError, Problem, ValidationFailed
from engine.runtime.external import PostgresTarget, RedisTarget


class SecretRef(Strict):
    """Where a secret comes from: an environment variable or a file, never the YAML."""

    password_env: str | None = Field(default=None, description="Environment variable holding the password.")
    password_file: Path | None = Field(default=None, description="File whose first line is the password.")

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def resolve_password(self, what: str) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"{what}: environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ConfigError(f"{what}: cannot read password_file {self.password_file}: {exc}") from None
        return None


def _no_inline_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        raise ValueError("passwords may not be written in the URL; use password_env or password_file")
    return url


class PhysicalSpec(Strict):
    """What a physical restore of an existing server needs; every command is the operator's."""

    data_directory: Path = Field(description="The server's data directory (relative to the config file).")
    wal_archive: Path = Field(
        description="Directory the server's archive_command copies WAL segments into "
        "(e.g. archive_command = 'test ! -f /srv/wal/%f && cp %p /srv/wal/%f')."
    )
    stop: list[str] = Field(min_length=1, description="argv that stops the server, e.g. [systemctl, stop, postgresql].")
    start: list[str] = Field(min_length=1, description="argv that starts it again.")


class PostgresTargetSpec(SecretRef):
    kind: Literal["postgres", "postgres-physical"]
    url: str = Field(description="postgresql://USER@HOST:PORT/DATABASE (no password).")
    physical: PhysicalSpec | None = Field(
        default=None, description="Required for kind postgres-physical: data directory, WAL archive, stop/start."
    )
    jobs: int = Field(
        default=1, ge=1, le=64, description="kind postgres: parallel pg_dump/pg_restore jobs (directory format)."
    )

    @model_validator(mode="after")
    def _physical_matches_kind(self) -> PostgresTargetSpec:
        if self.kind == "postgres-physical" and self.physical is None:
            raise ValueError("kind postgres-physical needs `physical:` (data_directory, wal_archive, stop, start)")
        if self.kind == "postgres" and self.physical is not None:
            raise ValueError("`physical:` is only for kind postgres-physical (kind postgres uses pg_dump)")
        return self

    _check_url = field_validator("url")(_no_inline_password)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected postgresql://USER@HOST:PORT/DATABASE")
        return url

    def target(self, name: str) -> PostgresTarget:
        p = urlsplit(self.url)
        return PostgresTarget(
            host=p.hostname or "127.0.0.1",
            port=p.port or 5432,
            user=unquote(p.username or "postgres"),
            dbname=unquote(p.path.strip("/")),
            password=self.resolve_password(name),
        )


class RedisTargetSpec(SecretRef):
    kind: Literal["redis"]
    url: str = Field(description="redis://HOST:PORT (no password); every logical database is backed up.")

    _check_url = field_validator("url")(_no_inline_password)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError("expected redis://HOST:PORT")
        return url

    def target(self, name: str) -> RedisTarget:
        p = urlsplit(self.url)
        db = int(p.path.strip("/") or 0)
        return RedisTarget(
            host=p.hostname or "127.0.0.1", port=p.port or 6379, db=db, password=self.resolve_password(name)
        )


class DirectorySpec(Strict):
    kind: Literal["volumes", "configuration"]
    path: Path = Field(description="The directory to back up and restore (relative to the config file).")


class VectorstoreSpec(Strict):
    kind: Literal["vectorstore"]
    path: Path = Field(description="The store's directory (index.faiss, ids.jsonl, metadata.json).")
    model: str | None = Field(default=None, description="Embedding model a restored store must have been built with.")
    dimension: int | None = Field(default=None, ge=1, description="Dimension a restored store must have.")
    metric: Literal["l2", "inner_product"] | None = Field(default=None, description="Metric a restored store must use.")


if TYPE_CHECKING:
    TargetSpec = Any
else:
    TargetSpec = Annotated[
        Union[PostgresTargetSpec, RedisTargetSpec, VectorstoreSpec, DirectorySpec],  # noqa: UP007
        Field(discriminator="kind"),
    ]


class LocalRepositorySpec(Strict):
    type: Literal["local"] = "local"
    path: Path = Field(description="Directory of the repository (relative to the config file).")


class S3RepositorySpec(Strict):
    type: Literal["s3"]
    bucket: str = Field(min_length=3, description="Bucket name.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    endpoint_url: str | None = Field(default=None, description="For S3-compatible stores (MinIO, Ceph, ...).")
    region: str | None = None


if TYPE_CHECKING:
    RepositorySpec = Any
else:
    RepositorySpec = Annotated[
        Union[LocalRepositorySpec, S3RepositorySpec],  # noqa: UP007
        Field(discriminator="type"),
    ]


def _default_type(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value:
        return {**value, "type": "local"}
    return value


class EncryptionSpec(Strict):
    key_env: str | None = Field(default=None, description="Environment variable with a 32-byte key (hex or base64).")
    key_file: Path | None = Field(default=None, description="File with a 32-byte key (raw, hex or base64).")
    passphrase_env: str | None = Field(default=None, description="Environment variable with a passphrase (scrypt).")

    @model_validator(mode="after")
    def _exactly_one(self) -> EncryptionSpec:
        given = [x for x in (self.key_env, self.key_file, self.passphrase_env) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of key_env, key_file, passphrase_env")
        return self


class RetentionSpec(Strict):
    keep_last: int = Field(default=0, ge=0, description="Always keep the newest N backups.")
    daily: int = Field(default=0, ge=0, description="Keep the newest backup of each of the last N days with backups.")
    weekly: int = Field(default=0, ge=0, description="... of each of the last N ISO weeks with backups.")
    monthly: int = Field(default=0, ge=0, description="... of each of the last N months with backups.")

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionSpec:
        if not any((self.keep_last, self.daily, self.weekly, self.monthly)):
            raise ValueError("a retention policy that keeps nothing would delete every backup; set at least one count")
        return self


class HooksSpec(Strict):
    before_restore: list[list[str]] = Field(default_factory=list, description="Commands (argv lists) run first.")
    after_restore: list[list[str]] = Field(default_factory=list, description="Commands run after a restore.")


Outcome = Literal["success", "failure"]
_OUTCOMES: tuple[Outcome, ...] = ("success", "failure")


class NotificationsSpec(Strict):
    webhook_url_env: str = Field(description="Environment variable holding the webhook URL (it may carry a token).")
    events: list[Outcome] = Field(default_factory=lambda: list(_OUTCOMES), description="Which outcomes to report.")


class MetricsSpec(Strict):
    textfile: Path = Field(description="Prometheus textfile-collector file to write after every backup run.")


class BackupConfig(Strict):
    """The standalone engine's configuration."""

    version: Literal[1] = 1
    repository: Annotated[RepositorySpec, BeforeValidator(_default_type)]
    offsite: Annotated[RepositorySpec, BeforeValidator(_default_type)] | None = Field(
        default=None, description="A second repository every backup is copied to (e.g. S3)."
    )
    compression_level: int = Field(default=3, ge=1, le=19, description="zstd level.")
    encryption: EncryptionSpec | None = None
    retention: RetentionSpec | None = None
    hooks: HooksSpec = Field(default_factory=HooksSpec)
    notifications: NotificationsSpec | None = None
    metrics: MetricsSpec | None = None
    audit_log: Path | None = Field(
        default=None,
        description="JSON-lines audit log (relative to the config file); default: audit.jsonl in a local repository.",
    )
    components: dict[Name, TargetSpec] = Field(min_length=1)


def load_config(path: Path) -> BackupConfig:
    doc = yamlsource.load(path)
    model, problems = model_problems(doc, BackupConfig)
    if problems or model is None:
        raise ValidationFailed(problems)
    assert isinstance(model, BackupConfig)
    base = path.resolve().parent
    # Relative paths in the file are relative to the file, as in scenarios.
    for repo in (model.repository, model.offsite):
        if isinstance(repo, LocalRepositorySpec):
            repo.path = base / repo.path
    for spec in model.components.values():
        if isinstance(spec, DirectorySpec | VectorstoreSpec):
            spec.path = base / spec.path
        if isinstance(spec, PostgresTargetSpec) and spec.physical is not None:
            spec.physical.data_directory = base / spec.physical.data_directory
            spec.physical.wal_archive = base / spec.physical.wal_archive
    if model.metrics is not None:
        model.metrics.textfile = base / model.metrics.textfile
    if model.audit_log is not None:
        model.audit_log = base / model.audit_log
    if model.encryption and model.encryption.key_file:
        model.encryption.key_file = base / model.encryption.key_file
    return model


def unknown_components(config: BackupConfig, names: list[str], file: str) -> None:
    missing = [n for n in names if n not in config.components]
    if missing:
        raise ValidationFailed(
            [
                Problem(
                    file,
                    None,
                    None,
                    "--components",
                    f"unknown component {n!r} (configured: {', '.join(config.components)})",
                )
                for n in missing
            ]
        )
