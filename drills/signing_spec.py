"""``signing:`` in backup-config.yaml and in a scenario's ``repository``: the keys that sign manifests.

Its own module because both the standalone configuration and the scenario schema use it,
and neither should import the other for it. The keys themselves are read by
:mod:`engine.signing`; this only says where they are (never the key itself).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from drills.strict import Strict
from engine.signing import RepositoryTrust


class SigningSpec(Strict):
    """Ed25519 keys (from `drproof keys init`): every new set's manifest is signed, every read one checked."""

    key_file: Path | None = Field(
        default=None,
        description="Private key PEM that signs every new set (relative to this file; keep it mode 0600).",
    )
    key_env: str | None = Field(
        default=None, description="Instead of `key_file`: environment variable holding the private key PEM."
    )
    passphrase_env: str | None = Field(
        default=None, description="Environment variable with the private key's passphrase, if it is encrypted."
    )
    public_keys: list[Path] = Field(
        default_factory=list,
        description="Public key PEMs whose signatures are accepted (several while a key is rotated); default: the "
        "private key's own. A host that only restores needs these alone.",
    )

    @model_validator(mode="after")
    def _some_key(self) -> SigningSpec:
        if self.key_file is not None and self.key_env is not None:
            raise ValueError("give key_file or key_env, not both")
        if self.key_file is None and self.key_env is None and not self.public_keys:
            raise ValueError("give a private key (key_file or key_env) or at least one of public_keys")
        return self

    def resolve_paths(self, base: Path) -> None:
        """Paths in the file are relative to the file."""
        if self.key_file is not None:
            self.key_file = base / self.key_file
        self.public_keys = [base / p for p in self.public_keys]

    def trust(self, require_signer: bool = False) -> RepositoryTrust:
        """The loaded keys; ``require_signer`` for commands that write sets (a ConfigError without a private key)."""
        return RepositoryTrust.from_settings(
            key_file=self.key_file,
            key_env=self.key_env,
            passphrase_env=self.passphrase_env,
            public_keys=self.public_keys,
            require_signer=require_signer,
        )

    def secret_variables(self) -> list[str]:
        return [n for n in (self.key_env, self.passphrase_env) if n]
