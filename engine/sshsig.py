"""OpenSSH signatures (``ssh-keygen -Y sign`` format) made with drproof's Ed25519 keys.

Why: evidence is checked by auditors, who should not need drproof (or to trust it) to
check it. ``ssh-keygen -Y verify`` ships with every OpenSSH client, so a signature in the
format it reads (PROTOCOL.sshsig in the OpenSSH sources) is one anybody can verify with a
tool they already have. The key is the same Ed25519 key drproof signs with; the
``cryptography`` library encodes its public half in OpenSSH form, and the few fields of
the envelope around the signature are written here.

The namespace binds a signature to its purpose: a signature made for ``drproof-evidence``
does not verify as, say, a git commit signature (``git``) or a file signature (``file``).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported where used (engine.evidence says why)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["NAMESPACE", "SshsigError", "allowed_signers_line", "openssh_public_key", "sign", "verify"]

NAMESPACE = "drproof-evidence"
_MAGIC = b"SSHSIG"
_VERSION = 1
_HASH = "sha512"
_KEY_TYPE = b"ssh-ed25519"
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_LINE = 70  # what ssh-keygen writes; any width reads back


class SshsigError(ValueError):
    """The signature is malformed, for another key or namespace, or does not verify."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _key_blob(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(_KEY_TYPE) + _string(raw)


def openssh_public_key(key: Ed25519PublicKey) -> str:
    """``ssh-ed25519 AAAA…``: the public key as OpenSSH writes it, from ``cryptography``."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def allowed_signers_line(key: Ed25519PublicKey, principal: str = "drproof") -> str:
    """One line of an ``allowed_signers`` file that trusts ``key`` for drproof evidence only."""
    if not principal or any(c.isspace() or c in ',"' for c in principal):
        raise ValueError("a principal is one word without commas or quotes")
    return f'{principal} namespaces="{NAMESPACE}" {openssh_public_key(key)}'


def _signed_blob(message: bytes, namespace: str) -> bytes:
    return (
        _MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(_HASH.encode())
        + _string(hashlib.sha512(message).digest())
    )


def sign(message: bytes, key: Ed25519PrivateKey, namespace: str = NAMESPACE) -> str:
    """The armored signature ``ssh-keygen -Y sign -n NAMESPACE`` would write for ``message``."""
    signature = key.sign(_signed_blob(message, namespace))
    blob = (
        _MAGIC
        + struct.pack(">I", _VERSION)
        + _string(_key_blob(key.public_key()))
        + _string(namespace.encode())
        + _string(b"")
        + _string(_HASH.encode())
        + _string(_string(_KEY_TYPE) + _string(signature))
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + _LINE] for i in range(0, len(text), _LINE)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise SshsigError("truncated SSH signature")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def string(self) -> bytes:
        (length,) = struct.unpack(">I", self.take(4))
        return self.take(length)


def verify(armored: str | bytes, message: bytes, key: Ed25519PublicKey, namespace: str = NAMESPACE) -> None:
    """Check an armored SSH signature of ``message`` by ``key`` in ``namespace``; raise SshsigError if not."""
    from cryptography.exceptions import InvalidSignature

    text = armored.decode("ascii", "replace") if isinstance(armored, bytes) else armored
    body = text.strip()
    if not (body.startswith(_BEGIN) and body.endswith(_END)):
        raise SshsigError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(body[len(_BEGIN) : -len(_END)].split()), validate=True)
    except ValueError:
        raise SshsigError("the SSH signature is not valid base64") from None
    r = _Reader(blob)
    if r.take(6) != _MAGIC or struct.unpack(">I", r.take(4))[0] != _VERSION:
        raise SshsigError("not an SSHSIG version 1 signature")
    if r.string() != _key_blob(key):
        raise SshsigError("the SSH signature names another public key")
    if r.string() != namespace.encode():
        raise SshsigError(f"the SSH signature is not for namespace {namespace}")
    r.string()  # reserved
    if r.string() != _HASH.encode():
        raise SshsigError(f"the SSH signature does not use {_HASH}")
    inner = _Reader(r.string())
    if inner.string() != _KEY_TYPE:
        raise SshsigError("the SSH signature is not an Ed25519 signature")
    try:
        key.verify(inner.string(), _signed_blob(message, namespace))
    except InvalidSignature:
        raise SshsigError("the SSH signature does not verify: the signed file was changed") from None
