"""Sign-off: a reviewer's signed decision on a drill's signed evidence.

Why a record of its own: an auditor accepts evidence only with a named reviewer, a
decision and, when something must change, a ticket for it. The drill's signature says
what the drill wrote; a review says who looked at exactly that and what they decided. So
a review names the SHA-256 of the ``evidence.json`` it reviewed (which lists every file
by digest) and is signed on its own, possibly with another key than the drill's: editing
a review, or any file after it, is detected, and so is a review of other evidence.

Reviews live in ``reviews/`` inside the report directory, one JSON file per decision,
each with a raw Ed25519 signature (``.sig``, like ``evidence.sig``) and an OpenSSH one
(``.sshsig``, namespace ``drproof-evidence``) beside it. They are appended, never edited:
a changed mind is a new review, and the newest one is the standing decision.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine import __version__, sshsig
from engine.errors import ConfigError, DrproofError
from engine.evidence import EVIDENCE_FILE, REVIEWS_DIR, fingerprint, signer_of
from engine.redaction import redact

__all__ = ["DECISIONS", "REVIEW_FORMAT", "ReviewCheck", "check_reviews", "read_reviews", "sign_off"]

REVIEW_FORMAT = "drproof-review-v1"
Decision = Literal["accepted", "rejected", "action-required"]
DECISIONS: tuple[Decision, ...] = ("accepted", "rejected", "action-required")
MAX_TEXT = 4000  # a note is a paragraph, not an attachment


@dataclass
class ReviewCheck:
    """One review as read (and, with keys, verified). ``problem`` None means it verified."""

    path: str
    ok: bool
    problem: str | None = None
    verified: bool = False  # False: what the file claims, not checked against a key
    reviewer: str | None = None
    decision: str | None = None
    note: str | None = None
    ticket: str | None = None
    reviewed_at: str | None = None
    key_fingerprint: str | None = None
    ssh_signature: str = "not checked"
    signed_by: Mapping[str, Any] | None = None  # the reviewer's environment: user, host, CI job

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    text = redact(text.strip())
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{what} is {len(text)} characters; keep it under {MAX_TEXT} (link a ticket instead)")
    return text or None


def _unique_stem(reviews: Path, stamp: str, decision: str) -> Path:
    for n in range(1, 1000):  # numbered so that names sort in the order the reviews were made
        stem = reviews / f"{stamp}-{n:03d}-{decision}"
        if not any(stem.with_suffix(s).exists() for s in (".json", ".sig", ".sshsig")):
            return stem
    raise DrproofError(f"{reviews}: too many reviews in one second")


def _create(path: Path, data: bytes) -> None:
    """Write a new file, never replacing one: reviews are appended, not edited."""
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sign_off(
    directory: Path,
    key: Ed25519PrivateKey,
    *,
    reviewer: str,
    decision: Decision,
    note: str | None = None,
    ticket: str | None = None,
    signed_by: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Append a signed review of the evidence in ``directory``; the caller has verified that evidence."""
    if decision not in DECISIONS:
        raise ConfigError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    name = _clean(reviewer, "--reviewer")
    if not name:
        raise ConfigError("--reviewer must name who reviewed the evidence")
    try:
        evidence = (directory / EVIDENCE_FILE).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{directory} has no {EVIDENCE_FILE}: sign-off is a decision on signed evidence (drproof run --sign-key)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {directory / EVIDENCE_FILE}: {exc.strerror}") from None
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "format": REVIEW_FORMAT,
        "reviewer": name,
        "decision": decision,
        "note": _clean(note, "--note"),
        "ticket": _clean(ticket, "--ticket"),
        "reviewed_at": now.isoformat().replace("+00:00", "Z"),
        "evidence_sha256": hashlib.sha256(evidence).hexdigest(),
        "evidence_key_fingerprint": _claimed(evidence, "key_fingerprint"),
        "key_fingerprint": fingerprint(key.public_key()),
        "signed_by": dict(signed_by or {}),
        "drproof_version": __version__,
    }
    data = (json.dumps(record, indent=2) + "\n").encode()
    reviews = directory / REVIEWS_DIR
    try:
        reviews.mkdir(exist_ok=True)
        stem = _unique_stem(reviews, now.strftime("%Y%m%dT%H%M%SZ"), decision)
        _create(stem.with_suffix(".json"), data)
        _create(stem.with_suffix(".sig"), base64.b64encode(key.sign(data)) + b"\n")
        _create(stem.with_suffix(".sshsig"), sshsig.sign(data, key).encode())
    except OSError as exc:
        raise DrproofError(f"cannot write the review into {reviews}: {exc.strerror or exc}") from None
    return stem.with_suffix(".json"), record


def _claimed(data: bytes, key: str) -> Any:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) else None


def _fill(check: ReviewCheck, record: Any) -> None:
    if isinstance(record, dict):
        for name in ("reviewer", "decision", "note", "ticket", "reviewed_at", "key_fingerprint", "signed_by"):
            value = record.get(name)
            if name == "signed_by":
                check.signed_by = value if isinstance(value, dict) else None
            elif isinstance(value, str):
                setattr(check, name, value)


def _review_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The review records, oldest first, and files in ``reviews/`` that belong to no record."""
    folder = directory / REVIEWS_DIR
    if not folder.is_dir():
        return [], []
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    records = [p for p in files if p.suffix == ".json" and p.parent == folder]
    known = {p.with_suffix(s) for p in records for s in (".json", ".sig", ".sshsig")}
    strays = [p.relative_to(directory).as_posix() for p in files if p not in known]
    return records, strays


def read_reviews(directory: Path) -> list[ReviewCheck]:
    """What the reviews in ``directory`` claim, unverified: for pages rendered without a key."""
    records, _ = _review_files(directory)
    out = []
    for path in records:
        check = ReviewCheck(path=path.relative_to(directory).as_posix(), ok=False, problem="not verified")
        try:
            _fill(check, json.loads(path.read_bytes()))
        except (OSError, ValueError):
            check.problem = "unreadable"
        out.append(check)
    return out


def _check_one(path: Path, rel: str, evidence: bytes, keys: Sequence[Ed25519PublicKey]) -> ReviewCheck:
    check = ReviewCheck(path=rel, ok=False)
    try:
        data = path.read_bytes()
        signature = path.with_suffix(".sig").read_bytes()
    except FileNotFoundError:
        _fill(check, _claimed_record(path))
        check.problem = "unsigned: the review has no .sig beside it"
        return check
    except OSError as exc:
        check.problem = f"unreadable: {exc.strerror}"
        return check
    signer = signer_of(data, signature, keys)
    if signer is None:
        _fill(check, _claimed_record(path))
        check.problem = "its signature does not verify with the given keys: the review was edited, or signed by another key"
        return check
    record = json.loads(data)
    _fill(check, record)
    check.verified = True
    check.key_fingerprint = fingerprint(signer)
    check.ssh_signature = _ssh_check(path.with_suffix(".sshsig"), data, signer)
    if not isinstance(record, dict) or record.get("format") != REVIEW_FORMAT:
        check.problem = f"validly signed but not a {REVIEW_FORMAT} record (newer drproof?)"
    elif record.get("evidence_sha256") != hashlib.sha256(evidence).hexdigest():
        check.problem = f"it reviewed other evidence: {EVIDENCE_FILE} changed since this review was signed"
    elif check.ssh_signature not in ("verified", "absent"):
        check.problem = f"{path.with_suffix('.sshsig').name}: {check.ssh_signature}"
    else:
        check.ok = True
    return check


def _claimed_record(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _ssh_check(path: Path, data: bytes, key: Ed25519PublicKey) -> str:
    try:
        sshsig.verify(path.read_bytes(), data, key)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    except sshsig.SshsigError as exc:
        return str(exc)
    return "verified"


def check_reviews(directory: Path, evidence: bytes, keys: Sequence[Ed25519PublicKey]) -> list[ReviewCheck]:
    """Verify every review against ``keys`` and the current evidence; a stray file is a problem too."""
    records, strays = _review_files(directory)
    checks = [_check_one(p, p.relative_to(directory).as_posix(), evidence, keys) for p in records]
    checks += [ReviewCheck(path=rel, ok=False, problem="a file in reviews/ that belongs to no review") for rel in strays]
    return checks
