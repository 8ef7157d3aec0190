"""Signed manifests: who wrote a backup set, checked with nothing but a public key.

Why: a set was trusted because its manifest said so, and whoever could write the
repository could rewrite an artifact together with its digest in the manifest, or plant
an older set under a newer id, and a restore came out green. A manifest signed with an
Ed25519 key the repository writer does not hold cannot be changed, replaced or made up
without the change being named.

What is signed: the manifest's bytes exactly as stored (``manifest.json``), nothing
re-serialized, so a third party can check a set with the public key and a few lines of
Python or ``openssl pkeyutl -verify -rawin`` (docs/security.md). The signature sits
beside the manifest in ``manifest.sig``, a small JSON document::

    {"format": "drproof-manifest-signature-v1", "algorithm": "ed25519",
     "key_fingerprint": "<16 bytes hex>", "manifest_sha256": "<hex>", "signature": "<base64>"}

``manifest_sha256`` and ``key_fingerprint`` only say which manifest and key were meant;
neither is trusted: the signature over the manifest's bytes is what is checked.

Keys are the same Ed25519 PEM files ``drproof keys init`` makes for evidence (the
private key from a file or an environment variable holding the PEM text, maybe
encrypted with a passphrase from another variable). Several public keys may be trusted
at once, so a key can be rotated without making older sets unverifiable. Secrets never
appear in messages: only paths, variable names and fingerprints do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.errors import ConfigError
from engine.evidence import fingerprint, load_private_key, load_public_key

if TYPE_CHECKING:  # cryptography is imported where used (engine.evidence says why)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_NAME = "manifest.sig"
SIGNATURE_FORMAT = "drproof-manifest-signature-v1"
MAX_SIGNATURE_BYTES = 4096  # a signature document is about 250 bytes; anything larger was not written by drproof

SignatureStatus = Literal["valid", "unsigned", "unknown-key", "invalid", "malformed"]


@dataclass(frozen=True)
class SignatureCheck:
    """What checking one manifest's signature found; ``detail`` names the problem in words."""

    status: SignatureStatus
    key_fingerprint: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "valid"


class ManifestSigner:
    """Signs manifests with one private key; never shows the key, only its fingerprint."""

    def __init__(self, key: Ed25519PrivateKey, source: str) -> None:
        self._key = key
        self.source = source  # "key file PATH" or "environment variable NAME", for messages
        self.public_key = key.public_key()
        self.fingerprint = fingerprint(self.public_key)

    def sign(self, manifest_bytes: bytes) -> bytes:
        """The signature document for these exact manifest bytes."""
        body = {
            "format": SIGNATURE_FORMAT,
            "algorithm": "ed25519",
            "key_fingerprint": self.fingerprint,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "signature": base64.b64encode(self._key.sign(manifest_bytes)).decode("ascii"),
        }
        return (json.dumps(body, indent=2) + "\n").encode("utf-8")


class TrustedKeys:
    """The public keys whose signatures a repository accepts (several, for rotation)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {fingerprint(k): k for k in keys}
        if not self.keys:
            raise ConfigError("signing: no public key to verify manifests with")

    @property
    def fingerprints(self) -> list[str]:
        return sorted(self.keys)

    def check(self, manifest_bytes: bytes, signature: bytes | None) -> SignatureCheck:
        """Whether ``signature`` is a valid signature of ``manifest_bytes`` by a trusted key."""
        if signature is None:
            return SignatureCheck("unsigned", detail="it has no signature (manifest.sig is missing)")
        parsed = _parse(signature)
        if isinstance(parsed, str):
            return SignatureCheck("malformed", detail=f"its signature file is unreadable ({parsed})")
        claimed, raw = parsed
        key = self.keys.get(claimed)
        if key is None:
            for fp, candidate in self.keys.items():  # a document naming the wrong key is still checked
                if _valid(candidate, raw, manifest_bytes):
                    return SignatureCheck("valid", fp)
            trusted = ", ".join(self.fingerprints)
            return SignatureCheck(
                "unknown-key", claimed, f"it is signed by key {claimed}, which is not trusted here (trusted: {trusted})"
            )
        if not _valid(key, raw, manifest_bytes):
            return SignatureCheck(
                "invalid",
                claimed,
                f"its manifest was altered after signing (the signature of key {claimed} does not match its bytes)",
            )
        return SignatureCheck("valid", claimed)


def _valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _parse(document: bytes) -> tuple[str, bytes] | str:
    """(key fingerprint, raw signature) from a signature document, or why it cannot be read."""
    if len(document) > MAX_SIGNATURE_BYTES:
        return f"{len(document)} bytes, over {MAX_SIGNATURE_BYTES}"
    try:
        body = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(body, dict) or body.get("format") != SIGNATURE_FORMAT:
        return f"not a {SIGNATURE_FORMAT} document"
    claimed, text = body.get("key_fingerprint"), body.get("signature")
    if not isinstance(claimed, str) or not isinstance(text, str):
        return "key_fingerprint or signature missing"
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "signature is not base64"
    if len(raw) != 64:
        return f"signature is {len(raw)} bytes, not 64"
    return claimed, raw


@dataclass
class RepositoryTrust:
    """How a repository signs what it writes and which signatures it accepts.

    ``signer`` None: this host cannot write signed sets (a restore-only host holding only
    public keys). ``keys`` None: nothing is verified, and integrity against whoever can
    write the repository is not proven; everything that reports on the repository says so.
    """

    signer: ManifestSigner | None = None
    keys: TrustedKeys | None = None

    @property
    def verifies(self) -> bool:
        return self.keys is not None

    def describe(self) -> str:
        if self.keys is None:
            return "unsigned"
        return "ed25519, trusted key(s) " + ", ".join(self.keys.fingerprints)

    @classmethod
    def generated(cls) -> RepositoryTrust:
        """A fresh key pair kept only in memory: a drill's own repository."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        return cls(ManifestSigner(key, "the drill's in-memory key"), TrustedKeys([key.public_key()]))

    @classmethod
    def from_settings(
        cls,
        *,
        key_file: Path | None,
        key_env: str | None,
        passphrase_env: str | None,
        public_keys: Iterable[Path],
        require_signer: bool = False,
    ) -> RepositoryTrust:
        """Keys as a configuration names them; with no public key given, the private key's own is trusted."""
        signer = None
        if key_file is not None or key_env is not None:
            signer = _signer(key_file, key_env, passphrase_env)
        elif require_signer:
            raise ConfigError(
                "signing: this command writes backup sets, so it needs the private key (key_file or key_env); "
                "public_keys alone only verify"
            )
        publics = [load_public_key(p) for p in public_keys]
        if not publics and signer is not None:
            publics = [signer.public_key]
        return cls(signer, TrustedKeys(publics))


def _signer(key_file: Path | None, key_env: str | None, passphrase_env: str | None) -> ManifestSigner:
    kwargs = {"passphrase_env": passphrase_env} if passphrase_env else {}
    if key_file is not None:
        return ManifestSigner(load_private_key(key_file, **kwargs), f"key file {key_file}")
    assert key_env is not None
    if not os.environ.get(key_env):
        raise ConfigError(
            f"signing: environment variable {key_env} (key_env) is not set or empty; it must hold the private key PEM"
        )
    return ManifestSigner(load_private_key(None, env=key_env, **kwargs), f"environment variable {key_env}")
