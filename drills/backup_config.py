"""backup-config.yaml: what the standalone engine backs up, from where, and into where.

Components name *existing* servers and directories. Secrets are never inline: a password
or key is given as the name of an environment variable or the path of a file, so the
configuration can be committed, printed and attached to an audit without leaking
anything. A URL with a password in it is refused for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from drills import yamlsource
from drills.crosscheck import suggest
from drills.repository_spec import backend_models, union
from drills.scenario import Name, Strict
from drills.signing_spec import SigningSpec
from drills.targets import target_kinds
from drills.validation import model_problems
from engine.errors import Problem, ValidationFailed

if TYPE_CHECKING:
    TargetSpec = Any
else:
    # Built from the registry: a kind registered in drills.targets is valid here.
    TargetSpec = Annotated[Union[tuple(target_kinds)], Field(discriminator="kind")]  # noqa: UP007


class PinnedRepository(Strict):
    """What backup-config.yaml adds to every backend's ``repository:`` (and ``offsite:``) keys."""

    repository_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="Pin the repository's identity (32 lowercase hex digits, as `recovery list --json` shows it as "
        "`repository_id`): a repository whose signed identity record or sets name another identity is refused by "
        "every command, from the first use; an empty repository takes it with its first set. For `offsite:`, the "
        "identity of the repository whose copies it holds (the primary's). Default: the sets decide.",
    )


# One model per registered backend (engine.repository); a local one must name its directory here.
REPOSITORY_MODELS = backend_models(
    "RepositorySpec",
    common=PinnedRepository,
    overrides={"local": {"path": (Path, Field(description="Directory of the repository (relative to the config file)."))}},
)
LocalRepositorySpec: Any = REPOSITORY_MODELS["local"]
S3RepositorySpec: Any = REPOSITORY_MODELS["s3"]

if TYPE_CHECKING:
    RepositorySpec = Any
else:
    RepositorySpec = union(REPOSITORY_MODELS)


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
    repository: RepositorySpec
    offsite: RepositorySpec | None = Field(
        default=None, description="A second repository every backup is copied to (e.g. S3)."
    )
    compression_level: int = Field(default=3, ge=1, le=19, description="zstd level.")
    encryption: EncryptionSpec | None = None
    signing: SigningSpec | None = Field(
        default=None,
        description="Sign every manifest and check every signature (Ed25519, see docs/security.md); without it, "
        "integrity against anyone who can write the repository is not proven.",
    )
    retention: RetentionSpec | None = None
    hooks: HooksSpec = Field(default_factory=HooksSpec)
    notifications: NotificationsSpec | None = None
    metrics: MetricsSpec | None = None
    audit_log: Path | None = Field(
        default=None,
        description="JSON-lines audit log (relative to the config file); default: audit.jsonl in a local repository.",
    )
    components: dict[Name, TargetSpec] = Field(min_length=1)


class RestoreTargets(BackupConfig):
    """A configuration naming where a restore goes instead: ``recovery restore --to FILE``.

    Same format as backup-config.yaml, so a sandbox's servers and directories are written
    the way production's are; its ``repository`` is not needed (backups are read from the
    ``--config`` one) and its ``hooks`` are the sandbox's own.
    """

    repository: RepositorySpec | None = None


def load_config(path: Path, model_type: type[BackupConfig] = BackupConfig) -> BackupConfig:
    doc = yamlsource.load(path)
    model, problems = model_problems(doc, model_type)
    if problems or model is None:
        raise ValidationFailed(problems)
    assert isinstance(model, BackupConfig)
    base = path.resolve().parent
    # Relative paths in the file are relative to the file, as in scenarios.
    for repo in (model.repository, model.offsite):
        if repo is not None:
            repo.resolve_paths(base)
    for spec in model.components.values():
        spec.resolve_paths(base)
    if model.metrics is not None:
        model.metrics.textfile = base / model.metrics.textfile
    if model.audit_log is not None:
        model.audit_log = base / model.audit_log
    if model.encryption and model.encryption.key_file:
        model.encryption.key_file = base / model.encryption.key_file
    if model.signing is not None:
        model.signing.resolve_paths(base)
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
                    f"unknown component {n!r}; {suggest(n, list(config.components))}"
                    f"(configured: {', '.join(config.components)})".replace("; (", " ("),
                )
                for n in missing
            ]
        )


def secret_variables(*configs: BackupConfig | None) -> list[str]:
    """Names of the environment variables these configurations keep secrets in.

    Child processes that run the operator's own commands get the environment without
    them (``engine.childenv.operator_environment``).
    """
    names: list[str] = []
    for config in configs:
        if config is None:
            continue
        for spec in config.components.values():
            name = getattr(spec, "password_env", None)
            if name:
                names.append(name)
        if config.encryption is not None:
            names += [n for n in (config.encryption.key_env, config.encryption.passphrase_env) if n]
        if config.signing is not None:
            names += config.signing.secret_variables()
        if config.notifications is not None:
            names.append(config.notifications.webhook_url_env)
        for repo in (config.repository, config.offsite):
            if repo is not None:
                names += repo.secret_variables()
    return names
