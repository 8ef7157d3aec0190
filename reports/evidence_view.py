"""What a report says about its own signature and sign-off.

A report cannot vouch for itself: the signature is made after it is written, and checking
it needs the signer's public key. So the report states exactly how much is known when it
is rendered, in four honest degrees:

- **pending**: rendered by the run that will sign it; names the key it will be signed
  with and how to check it;
- **claimed**: re-rendered beside signed evidence without a key; repeats what
  ``evidence.json`` and the reviews *claim*, marked as not verified;
- **verified** / **not intact**: re-rendered with ``--public-key``; the result of
  :func:`engine.evidence.verify_directory`, reviews included;
- **unsigned**: there is no signature to speak of.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engine.evidence import EVIDENCE_FILE, SSH_SIGNATURE_FILE, verify_directory
from engine.signoff import ReviewCheck, read_reviews

__all__ = ["EvidenceView", "ReviewView", "claimed", "from_directory", "pending", "verified"]

State = Literal["pending", "claimed", "verified", "not-intact", "unsigned"]
DECISION_WORDS = {"accepted": "accepted", "rejected": "rejected", "action-required": "action required"}


@dataclass(frozen=True)
class ReviewView:
    reviewer: str
    decision: str  # accepted | rejected | action-required | unknown
    reviewed_at: str
    note: str | None
    ticket: str | None
    key_fingerprint: str | None
    status: str  # "verified", "not verified", or what is wrong with it

    @property
    def decision_words(self) -> str:
        return DECISION_WORDS.get(self.decision, self.decision)

    @property
    def tone(self) -> str:
        """The badge colour: green only for an acceptance whose signature verified.

        Found by review: the badge was coloured by the decision alone, so a review whose
        signature did not verify (edited, or signed by an unknown key) showed a green
        "accepted" on the summary page and in the report, beside the words saying it was forged.
        """
        if self.status not in ("verified", "not verified") or self.decision == "rejected":
            return "fail"
        if self.decision == "accepted":
            return "pass" if self.status == "verified" else "neutral"
        return "error"


@dataclass(frozen=True)
class EvidenceView:
    state: State
    summary: str  # one sentence for the executive summary
    key_fingerprint: str | None = None
    signed_at: str | None = None
    problems: list[str] = field(default_factory=list)
    reviews: list[ReviewView] = field(default_factory=list)
    # False when verification showed that results.json is not the file that was signed (or
    # the signature itself failed): the verdict it records is then unproven. None: not checked.
    results_intact: bool | None = None

    @property
    def latest(self) -> ReviewView | None:
        """The newest review: reviews are appended, so it is the decision that stands (if it verifies)."""
        return self.reviews[-1] if self.reviews else None


HOW_TO_CHECK = (
    f"check with `drproof evidence verify DIR --public-key KEY.pub`, or without drproof with "
    f"`ssh-keygen -Y verify -f allowed_signers -I drproof -n drproof-evidence -s {SSH_SIGNATURE_FILE} < {EVIDENCE_FILE}`"
)


def pending(key_fingerprint: str) -> EvidenceView:
    """For the report a signing run writes before it signs the directory."""
    return EvidenceView(
        state="pending",
        summary=(
            f"signed by key {key_fingerprint} when the run finished writing its reports (unless evidence.json "
            f"and its signatures are missing beside this file: then signing failed); {HOW_TO_CHECK}"
        ),
        key_fingerprint=key_fingerprint,
    )


def _review(check: ReviewCheck) -> ReviewView:
    if check.ok:
        status = "verified"
    elif not check.verified and check.problem == "not verified":
        status = "not verified"
    else:
        status = check.problem or "not verified"
    return ReviewView(
        reviewer=check.reviewer or "unknown",
        decision=check.decision or "unknown",
        reviewed_at=check.reviewed_at or "unknown",
        note=check.note,
        ticket=check.ticket,
        key_fingerprint=check.key_fingerprint,
        status=status,
    )


def claimed(directory: Path) -> EvidenceView:
    """What the signed evidence in ``directory`` says of itself, unverified (no key was given)."""
    try:
        manifest: Any = json.loads((directory / EVIDENCE_FILE).read_bytes())
    except FileNotFoundError:
        return EvidenceView(state="unsigned", summary="not signed (drproof run --sign-key signs a run's reports)")
    except (OSError, ValueError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    fp, at = manifest.get("key_fingerprint"), manifest.get("created_at")
    return EvidenceView(
        state="claimed",
        summary=f"claims to be signed by key {fp} at {at}; NOT verified when this page was rendered; {HOW_TO_CHECK}",
        key_fingerprint=fp if isinstance(fp, str) else None,
        signed_at=at if isinstance(at, str) else None,
        reviews=[_review(r) for r in read_reviews(directory)],
    )


def verified(directory: Path, keys: Sequence[Ed25519PublicKey]) -> EvidenceView:
    """The verdict of ``evidence verify`` with the given keys, as the report shows it."""
    if not (directory / EVIDENCE_FILE).is_file():
        return EvidenceView(state="unsigned", summary="not signed (drproof run --sign-key signs a run's reports)")
    report = verify_directory(directory, keys[0], other_keys=keys[1:])
    reviews = [_review(r) for r in report.reviews]
    if report.ok:
        kinds = "Ed25519 and OpenSSH signatures" if report.ssh_signature == "verified" else "Ed25519 signature"
        summary = (
            f"verified when this page was rendered: {kinds} by key {report.key_fingerprint}, "
            f"made {report.created_at}; all {report.checked} files intact"
        )
        return EvidenceView(
            "verified", summary, report.key_fingerprint, report.created_at, [], reviews, results_intact=True
        )
    problems = report.problems()
    summary = f"NOT intact when this page was rendered: {len(problems)} problem(s), listed under Sign-off"
    # A forged review leaves the drill's own record intact; a changed results.json does not.
    results_json = "results.json"  # reports.writers.FILENAMES["json"]; writers imports this module
    intact = report.signature_ok and report.ssh_ok and results_json not in report.changed
    intact = intact and results_json not in report.removed
    return EvidenceView(
        "not-intact", summary, report.key_fingerprint, report.created_at, problems, reviews, results_intact=intact
    )


def from_directory(directory: Path, keys: Sequence[Ed25519PublicKey] = ()) -> EvidenceView:
    """Verified when keys are given, else claimed; unsigned when there is no evidence.json."""
    return verified(directory, keys) if keys else claimed(directory)
