"""Tamper-evident evidence: a signed manifest of every file in a report directory.

Why: a drill report is only worth something to an auditor if nobody could have edited it
after the drill ran. ``sign_directory`` lists every file with its size and SHA-256 in
``evidence.json`` and signs the exact bytes of that file with Ed25519 (``evidence.sig``).
Whoever holds only the public key can then tell whether any byte was changed, or any file
added or removed, since signing.

Why Ed25519: small keys, deterministic signatures (no nonce to get wrong) and one obvious
way to use it in ``cryptography``, which drproof already depends on for backup encryption.

Why here and not in :mod:`drills`: nothing in this module knows about scenarios or
drills. It signs and verifies a directory, so the standalone engine can use it too.

Key handling: the private key is read from a file or from the environment variable
``DRPROOF_SIGNING_KEY`` holding the PEM text (what CI secret stores provide); it may be
encrypted with the passphrase in ``DRPROOF_SIGNING_KEY_PASSPHRASE``. Keys are never put
in argv, logs or error messages: only paths, variable names and fingerprints are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from engine import __version__, sshsig
from engine.errors import ConfigError, DrproofError

if TYPE_CHECKING:
    # cryptography is imported where used: `drproof validate` and `--help` sign nothing, and it was
    # a tenth of their start-up (every repository module imports this one through engine.signing).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "EVIDENCE_FILE",
    "FORMAT",
    "KEY_ENV",
    "PASSPHRASE_ENV",
    "REVIEWS_DIR",
    "SIGNATURE_FILE",
    "SSH_SIGNATURE_FILE",
    "EvidenceReport",
    "KeyPair",
    "fingerprint",
    "init_keys",
    "load_private_key",
    "load_public_key",
    "sign_directory",
    "signer_of",
    "verify_directory",
]

EVIDENCE_FILE = "evidence.json"
SIGNATURE_FILE = "evidence.sig"
SSH_SIGNATURE_FILE = "evidence.sshsig"  # the same signature in OpenSSH's format (ssh-keygen -Y verify)
REVIEWS_DIR = "reviews"  # sign-off records, each signed on its own (engine/signoff.py)
FORMAT = "drproof-evidence-v1"
KEY_ENV = "DRPROOF_SIGNING_KEY"
PASSPHRASE_ENV = "DRPROOF_SIGNING_KEY_PASSPHRASE"
_OWN_FILES = frozenset({EVIDENCE_FILE, SIGNATURE_FILE, SSH_SIGNATURE_FILE})
_BLOCK = 1 << 20


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Names a key pair without revealing anything: SHA-256 of the raw public key, first 16 bytes in hex."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16].hex()


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """Where a new key pair was written, and its fingerprint (never the key itself)."""

    private_path: Path
    public_path: Path
    fingerprint: str
    encrypted: bool


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with exactly ``mode``; fail if it exists, so no key is ever overwritten.

    ``O_EXCL`` makes the existence check and the creation one step: no race in which another
    process creates the file in between. A file left half-written by a failed write is
    removed so a later ``keys init`` does not meet a broken key it refuses to replace.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we promise (0644 for the public key)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def init_keys(private_path: Path, public_path: Path, passphrase_env: str = PASSPHRASE_ENV) -> KeyPair:
    """Generate an Ed25519 key pair: private key PEM (PKCS8) mode 0600, public key PEM 0644.

    The private key is encrypted when the environment variable ``passphrase_env`` is set,
    so a key at rest on a laptop is not usable by whoever copies the file. Existing files
    are never replaced: losing a signing key silently would orphan every signed report.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path} already exists; refusing to overwrite a key (move it away first)")
    if private_path.resolve() == public_path.resolve():
        raise ConfigError("the private and public key paths must differ")
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(passphrase_env)
    protection: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _create_exclusive(private_path, private_pem, 0o600)
    except FileExistsError:
        raise ConfigError(f"{private_path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigError(f"cannot create private key {private_path}: {exc.strerror}") from None
    try:
        _create_exclusive(public_path, public_pem, 0o644)
    except OSError as exc:
        private_path.unlink(missing_ok=True)  # half a key pair is no use to anyone
        if isinstance(exc, FileExistsError):
            raise ConfigError(f"{public_path} already exists; refusing to overwrite a key") from None
        raise ConfigError(f"cannot create public key {public_path}: {exc.strerror}") from None
    return KeyPair(private_path, public_path, fingerprint(key.public_key()), encrypted=bool(passphrase))


def load_private_key(
    path: Path | None = None, *, env: str = KEY_ENV, passphrase_env: str = PASSPHRASE_ENV
) -> Ed25519PrivateKey:
    """The signing key from ``path``, else from the PEM text in the environment variable ``env``.

    Error messages name where the key came from, never what it contains.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path is not None:
        where = f"signing key file {path}"
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    else:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"no signing key: pass --sign-key FILE or set {env} to the private key PEM")
        where = f"environment variable {env}"
        pem = value.encode()
    passphrase = os.environ.get(passphrase_env)
    try:
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
        except TypeError:
            # cryptography's way of saying the key is encrypted and no passphrase was given,
            # or a passphrase was given for a key that is not encrypted.
            if not passphrase:
                raise ConfigError(
                    f"{where}: the private key is encrypted; set {passphrase_env} to its passphrase"
                ) from None
            key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{where}: not a usable PEM private key (or wrong passphrase in {passphrase_env}); "
            "create one with `drproof keys init`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: not an Ed25519 key; create one with `drproof keys init`")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The verification key: a public key PEM as written by ``init_keys``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{path}: not a PEM public key (verify with the .pub file from `drproof keys init`)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return key


# --- signing -----------------------------------------------------------------------------


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _present_entries(directory: Path) -> dict[str, str]:
    """Every entry under ``directory`` that is not a plain directory, by relative POSIX path, with
    what it is (``file``, ``symbolic link``, ``named pipe``, ...), minus the evidence itself.

    Why not ``rglob`` and ``is_file``: they skip a symbolic link to a directory (so a link
    to a tree of forged files was never reported) and anything that is not a regular file
    (a FIFO added to the directory went unseen). The walk does not follow links; a link,
    whatever it points to, is an entry of its own. Sign-off records (``reviews/``) are left
    out: they come after the signature and are signed, and checked, on their own.
    """
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue  # walked into next
            rel = path.relative_to(directory).as_posix()
            if rel in _OWN_FILES or rel.startswith(REVIEWS_DIR + "/"):
                continue
            found[rel] = _KINDS.get(stat.S_IFMT(mode), "special file")
    return dict(sorted(found.items()))


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symbolic link",
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
}


def _present_files(directory: Path) -> list[str]:
    """The regular files to sign; anything else in a report directory is refused (see sign_directory)."""
    return [rel for rel, kind in _present_entries(directory).items() if kind == "file"]


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn evidence file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sign_directory(directory: Path, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Write ``evidence.json`` (every file, its size and SHA-256) and ``evidence.sig`` over its exact bytes.

    The signature covers the bytes as written rather than a re-serialisation, so verifying
    never depends on JSON formatting being reproduced exactly. Returns the manifest.
    """
    if not directory.is_dir():
        raise ConfigError(f"cannot sign {directory}: not a directory")
    odd = {rel: kind for rel, kind in _present_entries(directory).items() if kind != "file"}
    if odd:
        shown = ", ".join(f"{rel} ({kind})" for rel, kind in list(odd.items())[:5])
        raise ConfigError(f"cannot sign {directory}: it holds entries that are not regular files: {shown}")
    try:
        files = []
        for rel in _present_files(directory):
            size, sha = _hash_file(directory / rel)
            files.append({"path": rel, "size": size, "sha256": sha})
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "algorithm": "ed25519",
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "drproof_version": __version__,
            "key_fingerprint": fingerprint(private_key.public_key()),
            "files": files,
        }
        data = (json.dumps(manifest, indent=2) + "\n").encode()
        signature = base64.b64encode(private_key.sign(data)) + b"\n"
        _atomic_write(directory / EVIDENCE_FILE, data)
        _atomic_write(directory / SIGNATURE_FILE, signature)
        _atomic_write(directory / SSH_SIGNATURE_FILE, sshsig.sign(data, private_key).encode())
    except OSError as exc:
        raise DrproofError(f"cannot sign {directory}: {exc.strerror or exc} ({exc.filename or directory})") from None
    return manifest


# --- verifying ---------------------------------------------------------------------------


@dataclass
class EvidenceReport:
    """The verdict on one directory. Tampering is recorded here, never raised."""

    directory: str
    key_fingerprint: str
    signature_ok: bool = False
    signature_problem: str | None = None
    signed_fingerprint: str | None = None
    created_at: str | None = None
    checked: int = 0
    changed: dict[str, str] = field(default_factory=dict)  # path → what differs
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # "verified", "absent" (evidence of a drproof before issue 19) or what is wrong with it.
    ssh_signature: str = "not checked"
    reviews: list[Any] = field(default_factory=list)  # engine.signoff.ReviewCheck, oldest first

    @property
    def ssh_ok(self) -> bool:
        return self.ssh_signature in ("verified", "absent")

    @property
    def ok(self) -> bool:
        intact = self.signature_ok and self.ssh_ok and not (self.changed or self.added or self.removed)
        return intact and all(r.ok for r in self.reviews)

    def problems(self) -> list[str]:
        """One line per problem, the signature first because without it nothing else is trustworthy."""
        lines = []
        if not self.signature_ok:
            lines.append(f"signature: {self.signature_problem}")
        elif not self.ssh_ok:
            lines.append(f"signature: {SSH_SIGNATURE_FILE}: {self.ssh_signature}")
        lines += [f"changed: {path} ({why})" for path, why in sorted(self.changed.items())]
        lines += [f"added: {path} (not in {EVIDENCE_FILE})" for path in self.added]
        lines += [f"removed: {path} (listed in {EVIDENCE_FILE} but missing)" for path in self.removed]
        lines += [f"review: {r.path}: {r.problem}" for r in self.reviews if not r.ok]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "ok": self.ok,
            "key_fingerprint": self.key_fingerprint,
            "signed_fingerprint": self.signed_fingerprint,
            "created_at": self.created_at,
            "signature_ok": self.signature_ok,
            "signature_problem": self.signature_problem,
            "checked": self.checked,
            "changed": dict(sorted(self.changed.items())),
            "added": self.added,
            "removed": self.removed,
            "ssh_signature": self.ssh_signature,
            "reviews": [r.as_dict() for r in self.reviews],
            "problems": self.problems(),
        }


def _claimed_fingerprint(data: bytes) -> str | None:
    """The fingerprint an unverified evidence.json claims; used only to explain a failure."""
    try:
        value = json.loads(data).get("key_fingerprint")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _safe_relative(path: object) -> str | None:
    """A listed path that stays inside the directory, or None (absolute or ``..`` paths are refused)."""
    if not isinstance(path, str) or not path:
        return None
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        return None
    return path


def signer_of(
    data: bytes, signature: bytes, keys: Sequence[Ed25519PublicKey]
) -> Ed25519PublicKey | None:
    """The first of ``keys`` whose signature ``signature`` is over ``data``, or None."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    for key in keys:
        try:
            key.verify(raw, data)
            return key
        except InvalidSignature:
            continue
    return None


def _check_ssh_signature(directory: Path, data: bytes, key: Ed25519PublicKey) -> str:
    try:
        armored = (directory / SSH_SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    try:
        sshsig.verify(armored, data, key)
    except sshsig.SshsigError as exc:
        return str(exc)
    return "verified"


def verify_directory(
    directory: Path, public_key: Ed25519PublicKey, *, other_keys: Sequence[Ed25519PublicKey] = ()
) -> EvidenceReport:
    """Check the signature, then every listed file, then look for files nobody listed, then the reviews.

    The manifest is parsed only after its signature verifies: an unauthenticated listing
    says nothing, so a signature failure ends the check with that one verdict.
    ``other_keys`` are further keys trusted to have signed (a reviewer's, a rotated
    one): the evidence may be signed by any of the keys, each review too.
    Raises :class:`ConfigError` only when there is nothing to verify (no evidence.json).
    """
    keys = [public_key, *other_keys]
    report = EvidenceReport(directory=str(directory), key_fingerprint=fingerprint(public_key))
    evidence = directory / EVIDENCE_FILE
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    try:
        data = evidence.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{directory} has no {EVIDENCE_FILE}: it was never signed (drproof run --sign-key)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {evidence}: {exc.strerror}") from None

    try:
        encoded = (directory / SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        report.signature_problem = f"{SIGNATURE_FILE} is missing"
        return report
    except OSError as exc:
        raise ConfigError(f"cannot read {directory / SIGNATURE_FILE}: {exc.strerror}") from None
    signer = signer_of(data, encoded, keys)
    if signer is None:
        claimed = _claimed_fingerprint(data)
        given = ", ".join(fingerprint(k) for k in keys)
        which = f"this public key {given}" if len(keys) == 1 else f"any of the public keys {given}"
        if claimed and claimed not in given:
            report.signature_problem = (
                f"{EVIDENCE_FILE} claims to be signed by key {claimed}, not by {which}: wrong key or forged evidence"
            )
        else:
            report.signature_problem = (
                f"{SIGNATURE_FILE} does not verify {EVIDENCE_FILE} with key {given}: "
                f"{EVIDENCE_FILE} was modified, or it was signed with another key"
            )
        return report
    report.signature_ok = True
    report.key_fingerprint = fingerprint(signer)
    report.ssh_signature = _check_ssh_signature(directory, data, signer)

    try:
        manifest = json.loads(data)
        listed = manifest["files"]
        report.signed_fingerprint = manifest.get("key_fingerprint")
        report.created_at = manifest.get("created_at")
        if manifest.get("format") != FORMAT or not isinstance(listed, list):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{evidence}: validly signed but not a {FORMAT} manifest (newer drproof?)") from None

    seen: set[str] = set()
    for entry in listed:
        rel = _safe_relative(entry.get("path") if isinstance(entry, dict) else None)
        if rel is None:
            report.changed[str(entry)] = "unsafe or malformed entry in the signed listing"
            continue
        seen.add(rel)
        path = directory / rel
        if path.is_symlink():
            report.changed[rel] = "is a symbolic link now, not the file that was signed"
            continue
        if not path.is_file():
            report.removed.append(rel)
            continue
        try:
            size, sha = _hash_file(path)
        except OSError as exc:
            report.changed[rel] = f"unreadable: {exc.strerror}"
            continue
        report.checked += 1
        if size != entry.get("size"):
            report.changed[rel] = f"size {size} bytes, signed {entry.get('size')}"
        elif sha != entry.get("sha256"):
            report.changed[rel] = "SHA-256 differs from the signed value"
    report.added = [
        rel if kind == "file" else f"{rel} ({kind})"
        for rel, kind in _present_entries(directory).items()
        if rel not in seen
    ]
    report.removed.sort()
    from engine.signoff import check_reviews  # signoff builds on this module's helpers

    report.reviews = check_reviews(directory, data, keys)
    return report
