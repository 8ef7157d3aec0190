"""The chain of backup sets: their order, and everything missing, replayed or out of place.

Why: "latest", an incremental's parent and retention followed each set's wall-clock
``created_at``, so one backup taken while the clock ran a year ahead made retention
delete the newest real backup, and a plain restore brought back the stale one. Each set
now carries its place: a ``sequence`` number and the SHA-256 of its predecessor's stored
manifest (``previous_id``, ``previous_sha256``), chosen when it is published, under the
repository's publishing lock. Order comes from the chain alone; dates are reported when
they disagree, never trusted for ordering.

What the audit names, by set: a signature that is missing, by another key or does not
match (on a repository that verifies); a set the chain says existed that is neither here
nor deleted by retention (a *tombstone*, signed like a manifest, records each set
retention deletes); a set directory with artifacts but no manifest (its manifest
deleted); two sets claiming one place (a fork or a replay); a set whose recorded
predecessor is another than the one here (altered or replaced); a set retention deleted
that is back (replayed); a date in the future or before the predecessor's. Sets written
before chaining (no ``sequence``) are an unchained legacy prefix, ordered by date as
before and reported as such; the first chained set follows the newest of them.

What the sets cannot show: the newest set deleted whole, artifacts and all, leaves no
trace among the other sets. Witnesses outside the sets show it: the signed head record
each backup rewrites (:func:`head_bytes`; unless the writer deletes it too, or puts back
an older copy), the audit log on the backup host (:func:`missing_from_record`), a copy
kept elsewhere (the offsite repository, compared by :func:`missing_against`) or storage
that keeps what was deleted (a versioned S3 bucket, S3 Object Lock: the S3 backend names
a manifest hidden behind a delete marker).
A set copied in from another repository signed with the same key (two prefixes of one
bucket, two directories of one backup host) has a valid signature and only a ``missing``
predecessor, as offsite copies legitimately have; what tells it apart is its origin:
each set names, inside the signed manifest, the identity (``repository_id``) of the
repository it was first written in, made with that repository's first set and kept by
its verbatim offsite copies. A set naming another identity than the repository's is
``foreign`` and never used. The repository's identity comes from the signed sets
themselves, never from anything unsigned: the one identity its sets name, or, when they
name several, the identity record (``repository.json``, :func:`identity_bytes`) signed
and bound to the repository's location, so a record copied from the other repository,
forged or deleted cannot make a foreign set this repository's (without a valid record,
sets of several identities are all refused). Sets written before identities were kept
carry none; that they come from this repository is said to be not proven.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from engine.manifest import Manifest, ManifestSummary

if TYPE_CHECKING:  # annotations only: engine.signing brings cryptography, which validating a scenario does not need
    from engine.signing import SignatureCheck, TrustedKeys

# A clock this far ahead of the checking host is still "now": hosts drift by seconds,
# NTP steps by less; a year is not drift.
FUTURE_TOLERANCE = timedelta(minutes=10)
TOMBSTONE_FORMAT = "drproof-tombstone-v1"
IDENTITY_FORMAT = "drproof-repository-v1"
HEAD_FORMAT = "drproof-head-v1"
# Said wherever a repository that does not verify signatures is reported on.
NOT_PROVEN = (
    "NOT proven against anyone who can write the repository: its manifests are not signed (configure signing), "
    "so an artifact rewritten together with its digest, a replayed set or a deleted one would go unnoticed"
)

FindingKind = Literal[
    "unsigned",
    "unknown-key",
    "altered",
    "malformed-signature",
    "unreadable",
    "manifest-missing",
    "missing",
    "forked",
    "reordered",
    "replayed",
    "future-dated",
    "before-predecessor",
    "legacy",
    "foreign",
    "unproven-origin",
]
# Findings that make a set unusable: it is left out of every order and refused for restore and copy.
UNTRUSTING: frozenset[FindingKind] = frozenset(
    {
        "unsigned",
        "unknown-key",
        "altered",
        "malformed-signature",
        "unreadable",
        "manifest-missing",
        "replayed",
        "foreign",
    }
)
# Findings that leave every set usable and the order decided: said, but not a failure of `list`.
QUIET_KINDS: frozenset[FindingKind] = frozenset({"legacy", "future-dated", "before-predecessor", "unproven-origin"})
_SIGNATURE_KIND: dict[str, FindingKind] = {
    "unsigned": "unsigned",
    "unknown-key": "unknown-key",
    "invalid": "altered",
    "malformed": "malformed-signature",
}


def chain_key(m: Manifest | ManifestSummary) -> tuple[bool, int, datetime, str]:
    """Oldest first: the unchained legacy prefix by date, then the chain by sequence."""
    return (m.sequence is not None, m.sequence or 0, m.created_at, m.id)


def chain_order(sets: Iterable[ManifestSummary]) -> list[ManifestSummary]:
    return sorted(sets, key=chain_key)


@dataclass(frozen=True)
class Finding:
    backup_id: str
    kind: FindingKind
    detail: str

    def __str__(self) -> str:
        return f"{self.backup_id}: {self.detail}"


@dataclass(frozen=True)
class StoredSet:
    """One set as stored: manifest bytes (None: absent or unreadable) and signature bytes."""

    backup_id: str
    manifest: bytes | None
    signature: bytes | None
    problem: str | None = None  # why the manifest could not be read, or that it is absent
    # The manifest was there and is gone (``problem`` says how the store shows it): "manifest-missing".
    deleted: bool = False


@dataclass(frozen=True)
class Tombstone:
    """A set retention deleted, as its signed record says."""

    backup_id: str
    sequence: int | None
    manifest_sha256: str
    previous_id: str | None
    deleted_at: str
    trusted: bool
    detail: str = ""
    created_at: str = ""
    # The repository that wrote it (its identity, role and location); None: written before tombstones named it.
    repository_id: str | None = None
    role: str | None = None
    location: str | None = None


# A repository's role: where its identity was made (the primary) or a copy of it (the offsite).
Role = Literal["origin", "copy"]
ROLE_NAMES: dict[str, str] = {"origin": "the primary repository", "copy": "an offsite copy"}


def tombstone_bytes(
    manifest: Manifest | ManifestSummary,
    manifest_sha256: str,
    reason: str,
    role: Role = "origin",
    location: str | None = None,
) -> bytes:
    """The record written (and signed) before retention deletes a set.

    It names the repository that deleted the set: the set's repository (``repository_id``,
    which a primary and its offsite copy share), the ``role`` of the one that pruned
    (``origin``: the primary; ``copy``: the offsite) and its ``location``. Why: the offsite
    holds the same sets under the same key and prunes them on its own; without the role its
    tombstone, copied into the primary's ``pruned/``, made a set a writer deleted there look
    deleted by retention (:func:`read_tombstone` refuses it now).
    """
    body = {
        "format": TOMBSTONE_FORMAT,
        "id": manifest.id,
        "sequence": manifest.sequence,
        "manifest_sha256": manifest_sha256,
        "previous_id": manifest.previous_id,
        "created_at": manifest.created_at.isoformat(),
        "deleted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": reason,
        "repository_id": manifest.repository_id,
        "role": role,
        "location": location,
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def read_tombstone(
    backup_id: str,
    data: bytes,
    signature: bytes | None,
    keys: TrustedKeys | None,
    role: Role = "origin",
    identity: str | None = None,
) -> Tombstone | None:
    """A stored tombstone, trusted only if validly signed and written by this repository.

    ``role``: this repository's (``origin`` or ``copy``); ``identity``: its identity when
    known (pinned or recorded). A tombstone written by a repository in the other role (the
    offsite's, copied into the primary, or the primary's into the offsite) or by another
    repository is not trusted: the set it names is then ``missing``, and the finding says
    whose tombstone it is. Tombstones written before they named their repository (no
    ``role``) are taken as before: nothing in them says where they were written.
    """
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("format") != TOMBSTONE_FORMAT or body.get("id") != backup_id:
        return None
    check = keys.check(data, signature) if keys is not None else None
    sequence = body.get("sequence")
    written = {k: body.get(k) if isinstance(body.get(k), str) else None for k in ("repository_id", "role", "location")}
    detail = "" if check is None or check.ok else check.detail
    if not detail:
        detail = _foreign_tombstone(written, role, identity)
    return Tombstone(
        backup_id,
        sequence if isinstance(sequence, int) else None,
        str(body.get("manifest_sha256", "")),
        body.get("previous_id") if isinstance(body.get("previous_id"), str) else None,
        str(body.get("deleted_at", "")),
        trusted=not detail,
        detail=detail,
        created_at=str(body.get("created_at", "")),
        **written,
    )


def _foreign_tombstone(written: dict[str, str | None], role: Role, identity: str | None) -> str:
    """Why a validly signed tombstone is not this repository's, or "" if it is (or cannot be told)."""
    where = f" at {written['location']}" if written["location"] else ""
    if identity is not None and written["repository_id"] not in (None, identity):
        return (
            f"its tombstone in pruned/ was written by repository {written['repository_id']}{where}, not by this one "
            f"({identity}): a tombstone copied in from another repository excuses nothing here"
        )
    if written["role"] is not None and written["role"] != role:
        return (
            f"its tombstone in pruned/ was written by {ROLE_NAMES.get(written['role'], repr(written['role']))}{where}, "
            f"not by this repository ({ROLE_NAMES[role]}): a tombstone copied in from the other copy of the chain "
            "excuses nothing here (each repository prunes, and records its own deletions, on its own)"
        )
    return ""


def identity_bytes(repository_id: str, location: str, role: str) -> bytes:
    """The identity record of a repository (signed like a manifest): whose sets it holds, and where.

    ``location`` binds the record to the repository it was written in (``s3://bucket/prefix``,
    a local directory's resolved path), so the record of another repository signed with the
    same key, copied here, is not this repository's. ``role``: ``origin`` where the identity
    was made, ``copy`` in an offsite repository holding the origin's copies.
    """
    body = {
        "format": IDENTITY_FORMAT,
        "repository_id": repository_id,
        "location": location,
        "role": role,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def read_identity(data: bytes, signature: bytes | None, keys: TrustedKeys | None, location: str) -> str | None:
    """The repository identity a stored record vouches for here; None if it vouches for none.

    None when the record is malformed, not validly signed (on a repository that verifies),
    or was written for another location (copied from another repository, or the repository
    moved): the sets themselves then decide, and several identities among them are refused.
    """
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("format") != IDENTITY_FORMAT or body.get("location") != location:
        return None
    rid = body.get("repository_id")
    if not isinstance(rid, str):
        return None
    if keys is not None and not keys.check(data, signature).ok:
        return None
    return rid


def head_bytes(backup_id: str, sequence: int, manifest_sha256: str, location: str) -> bytes:
    """The head record (signed like a manifest): the newest set published here, and its place.

    Why: the newest set deleted whole leaves no trace among the sets (the module's
    account). Each backup rewrites this record after publishing, so a record naming a set
    that is gone, at a place no set here reaches, shows that deletion to anyone who left
    the record in place. A writer who deletes the record too, or puts back an older copy
    they kept, is not seen by it: the audit log and the offsite copy are the other witnesses.
    """
    body = {
        "format": HEAD_FORMAT,
        "id": backup_id,
        "sequence": sequence,
        "manifest_sha256": manifest_sha256,
        "location": location,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def read_head(
    data: bytes, signature: bytes | None, keys: TrustedKeys | None, location: str
) -> tuple[str, int, str] | None:
    """(set id, place, manifest SHA-256) a stored head record vouches for here; None if malformed, unsigned or elsewhere."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("format") != HEAD_FORMAT or body.get("location") != location:
        return None
    backup_id, sequence, sha = body.get("id"), body.get("sequence"), body.get("manifest_sha256")
    if not isinstance(backup_id, str) or not isinstance(sha, str) or type(sequence) is not int:
        return None
    if keys is not None and not keys.check(data, signature).ok:
        return None
    return backup_id, sequence, sha


@dataclass
class SetState:
    summary: ManifestSummary
    sha256: str
    signature: SignatureCheck | None  # None: the repository does not verify


@dataclass
class ChainAudit:
    """What the chain says about every set, and the order of the usable ones."""

    verifies: bool
    sets: dict[str, SetState] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # usable sets, oldest first
    legacy: list[str] = field(default_factory=list)
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what is normal but worth saying (the chain's start)
    # The repository's identity (see the module's account); None: no set names one, or the
    # sets name several and no valid identity record says which (``ambiguous``).
    identity: str | None = None
    ambiguous: bool = False
    # The set the head record names as the newest, gone without a tombstone and at a place no set here reaches.
    head_lost: Finding | None = None
    lost_head: tuple[str, int, str] | None = None  # (id, place, manifest SHA-256) of that set, as its record names it

    def findings_for(self, backup_id: str) -> list[Finding]:
        return [f for f in self.findings if f.backup_id == backup_id]

    def untrusted(self) -> set[str]:
        return {f.backup_id for f in self.findings if f.kind in UNTRUSTING}

    @property
    def clean(self) -> bool:
        return not [f for f in self.findings if f.kind not in ("legacy", "unproven-origin")]

    def head(self) -> str | None:
        return self.order[-1] if self.order else None

    def doubts_about_latest(self) -> list[Finding]:
        """Findings that leave it open which set is really the newest.

        A set whose manifest is gone, unreadable or fails its signature might have been
        the newest (whatever place it claims), a fork at the head has two newest, and a
        head whose place contradicts its predecessor's (a sequence number edited upwards in
        an unsigned repository) is newest only by that claim: "latest" is then not decided
        by drproof. A set missing from the middle, or a
        validly signed older set, leaves the head alone.
        """
        head = self.sets[self.order[-1]].summary if self.order else None
        doubts = [self.head_lost] if self.head_lost is not None else []
        for f in self.findings:
            if f.kind == "forked" and head is not None and f.backup_id in self.sets:
                if self.sets[f.backup_id].summary.sequence == head.sequence:
                    doubts.append(f)
            elif f.kind in UNTRUSTING and _could_be_newer(f.backup_id, self.sets.get(f.backup_id), head):
                doubts.append(f)
            elif f.kind == "reordered" and head is not None and f.backup_id == head.id:
                doubts.append(f)  # the newest only by a place its predecessor contradicts (an edited sequence)
        return doubts


def _could_be_newer(backup_id: str, state: SetState | None, head: ManifestSummary | None) -> bool:
    """Whether a set the chain cannot use might have been the newest.

    Only a place its valid signature vouches for rules that out: a forged or altered
    manifest may claim any place, and one that is gone or unreadable claims none. A
    validly signed manifest of *another* set in this set's place vouches for nothing
    about this one: its own manifest is gone (an older set's manifest copied over the
    newest one's made "latest" the set before it, exit 0).
    """
    if head is None or state is None or state.summary.sequence is None or state.summary.id != backup_id:
        return True
    if state.signature is None or not state.signature.ok:
        return True
    return head.sequence is None or state.summary.sequence >= head.sequence


def audit(
    stored: Iterable[StoredSet],
    tombstones: Sequence[Tombstone],
    keys: TrustedKeys | None,
    now: datetime | None = None,
    recorded_identity: str | None = None,
    recorded_head: tuple[str, int, str] | None = None,
    witnessed_head: Sequence[tuple[str, tuple[str, int, str]]] = (),
    witness_file: str | None = None,
) -> ChainAudit:
    """Check every stored set and the links between them (see the module's account).

    ``recorded_identity``: what the repository's identity record vouches for (read_identity);
    ``recorded_head``: the newest set its head record vouches for (read_head);
    ``witnessed_head``: (repository identity, newest set) this host's own records name for
    this place (engine/witness.py), the last written last; held against the chain only for
    its identity (``_witnessed_for``);
    ``witness_file``: where that record is kept, named with the way out of a deliberate rollback.
    """
    result = ChainAudit(verifies=keys is not None, tombstones={t.backup_id: t for t in tombstones})
    for s in stored:
        _admit(result, s, keys)
    _check_origins(result, recorded_identity)
    _check_dates(result, now or datetime.now(UTC))
    usable = [st.summary for i, st in result.sets.items() if i not in result.untrusted()]
    _check_links(result, usable)
    untrusted = result.untrusted()
    ordered = chain_order(st.summary for i, st in result.sets.items() if i not in untrusted)
    result.order = [m.id for m in ordered]
    result.legacy = [m.id for m in ordered if m.sequence is None]
    if recorded_head is not None:
        _check_head(result, recorded_head, "the repository's signed head record names")
    witnessed = _witnessed_for(result, witnessed_head)
    if witnessed is not None and result.head_lost is None:
        _check_head(
            result,
            witnessed,
            "this host's own record of the newest set it saw here names",
            f"if the repository was put back from a snapshot or an older copy on purpose, delete that record, "
            f"{witness_file}, before the next backup"
            if witness_file
            else "",
        )
    if result.legacy:
        result.findings.append(
            Finding(
                result.legacy[-1],
                "legacy",
                f"{len(result.legacy)} set(s) written before sets were chained ({', '.join(result.legacy[:5])}"
                f"{', ...' if len(result.legacy) > 5 else ''}): ordered by their dates, which nothing proves",
            )
        )
    return result


def _admit(result: ChainAudit, s: StoredSet, keys: TrustedKeys | None) -> None:
    if s.manifest is None:
        gone = result.tombstones.get(s.backup_id)
        if s.deleted and gone is not None and gone.trusted:
            return  # what retention's delete left (a version the store kept, a delete cut short)
        kind: FindingKind = "manifest-missing" if s.problem is None or s.deleted else "unreadable"
        detail = s.problem or "its artifacts are stored but its manifest is gone (deleted, or a copy cut off)"
        result.findings.append(Finding(s.backup_id, kind, detail))
        return
    try:
        summary = ManifestSummary.model_validate_json(s.manifest)
    except ValidationError as exc:
        result.findings.append(
            Finding(s.backup_id, "unreadable", f"its manifest is malformed ({exc.error_count()} errors)")
        )
        return
    check = keys.check(s.manifest, s.signature) if keys is not None else None
    result.sets[s.backup_id] = SetState(summary, hashlib.sha256(s.manifest).hexdigest(), check)
    if summary.id != s.backup_id:
        result.findings.append(Finding(s.backup_id, "altered", f"its manifest says it is set {summary.id}"))
    if check is not None and not check.ok:
        result.findings.append(Finding(s.backup_id, _SIGNATURE_KIND[check.status], check.detail))
    gone = result.tombstones.get(s.backup_id)
    if gone is not None and gone.trusted:
        result.findings.append(
            Finding(
                s.backup_id,
                "replayed",
                # Found by review: a prune killed between recording a deletion and deleting the
                # set leaves exactly this too; the finding named only the attack.
                f"retention deleted this set at {gone.deleted_at}, yet it is here again (put back by someone, or "
                "a prune was interrupted before it removed the set: if no one put it back, `drproof recovery "
                "prune` finishes the deletion)",
            )
        )


def _check_origins(result: ChainAudit, recorded: str | None) -> None:
    """Name every set written in another repository than this one (``foreign``), before any link is read.

    Before the links: a foreign set's predecessor is the other repository's, and calling it
    ``missing`` here would send the operator after a set this repository never had.
    """
    untrusted = result.untrusted()
    usable = [st.summary for i, st in result.sets.items() if i not in untrusted]
    named: dict[str, list[str]] = {}
    for m in usable:
        if m.repository_id is not None:
            named.setdefault(m.repository_id, []).append(m.id)
    own = recorded if recorded is not None else (next(iter(named)) if len(named) == 1 else None)
    result.identity = own
    if own is None and len(named) > 1:
        result.ambiguous = True
        listing = "; ".join(f"{rid}: {', '.join(sorted(ids)[:5])}" for rid, ids in sorted(named.items()))
        for ids in named.values():
            for backup_id in ids:
                result.findings.append(
                    Finding(
                        backup_id,
                        "foreign",
                        f"the repository holds sets of {len(named)} repositories ({listing}) and no valid identity "
                        "record (repository.json) says which is this one: none of them is used until the sets copied "
                        "in from the other repository are removed",
                    )
                )
    elif own is not None:
        for rid, ids in named.items():
            for backup_id in ids if rid != own else []:
                result.findings.append(
                    Finding(
                        backup_id,
                        "foreign",
                        f"it was written in repository {rid}, not in this one ({own}): a set copied in from another "
                        "repository signed with the same key; it is never restored, copied or chained as this "
                        "repository's",
                    )
                )
    late = _unnamed_after_origin(result, usable, own)
    unproven = [m.id for m in chain_order(usable) if m.repository_id is None and m.id not in late]
    if unproven and result.verifies:
        result.findings.append(
            Finding(
                unproven[-1],
                "unproven-origin",
                f"{len(unproven)} set(s) name no repository ({', '.join(unproven[-5:])}"
                f"{', ...' if len(unproven) > 5 else ''}; written before sets named their repository): that they "
                "were written here and not copied in from another repository signed with the same key is not proven",
            )
        )


def _unnamed_after_origin(result: ChainAudit, usable: list[ManifestSummary], own: str | None) -> set[str]:
    """Sets naming no repository at a later place than this repository's first set that names it: ``foreign``.

    Why: since that set, drproof has named the repository in every set it published here,
    so a set without a name placed after it was written elsewhere (another repository's
    set from before it named its own, copied in). A set without a name placed before it is
    one of this repository's older sets, or indistinguishable from one: only its origin is
    said to be unproven.
    """
    places = [m.sequence for m in usable if m.repository_id == own and m.sequence is not None]
    if own is None or not places:
        return set()
    first = min(places)
    late = {m.id for m in usable if m.repository_id is None and m.sequence is not None and m.sequence > first}
    for backup_id in sorted(late):
        result.findings.append(
            Finding(
                backup_id,
                "foreign",
                f"it names no repository, yet claims place {result.sets[backup_id].summary.sequence} in the chain, "
                f"after place {first}, since which every set written here names this repository ({own}): a set "
                "copied in from another repository signed with the same key",
            )
        )
    return late


def _witnessed_for(
    result: ChainAudit, witnessed: Sequence[tuple[str, tuple[str, int, str]]]
) -> tuple[str, int, str] | None:
    """The newest set this host's record names for this chain's repository, if its record is held against it.

    The record kept for this chain's identity; when the chain names no repository at all
    but still holds sets (only sets an older drproof wrote are left, every newer one
    deleted with the identity record, which otherwise took the record out of play: a
    rollback to before the upgrade, exit 0), the record written last. A place emptied and
    started again has no set left, or names a new identity: not held to the old history.
    """
    if result.identity is not None:
        return next((head for rid, head in reversed(witnessed) if rid == result.identity), None)
    if result.ambiguous or not result.sets or not witnessed:
        return None
    return witnessed[-1][1]


def _check_head(result: ChainAudit, head: tuple[str, int, str], source: str, way_out: str = "") -> None:
    """Name the set a head record says is the newest when it is gone and nothing here reaches its place.

    A tombstone does not excuse it: retention never deletes the newest set (every policy
    keeps the newest of its newest period), so a set the head record still names as the
    newest, with no set after it, was not pruned, whatever a tombstone in pruned/ says
    (one copied in, or written when someone deleted the newest set by other means).
    """
    backup_id, sequence, sha = head
    st = result.sets.get(backup_id)
    if st is not None and st.sha256 == sha:
        return  # the set it names is here, as it named it (whatever else is wrong with it is a finding of its own)
    if st is None and any(f.backup_id == backup_id and f.kind != "missing" for f in result.findings):
        return  # here, but its manifest is gone or unreadable: a finding that already leaves "latest" open
    top = max((s.summary.sequence or 0 for s in result.sets.values()), default=0)
    if top >= sequence:
        return  # a later backup took its place since: the record is only older than the chain
    gone = result.tombstones.get(backup_id)
    if st is not None:
        why = "the manifest stored in its place is not the one the record names (another set's, or altered)"
    elif gone is not None and gone.trusted:
        why = (
            f"a tombstone in pruned/ says retention deleted it at {gone.deleted_at}, but retention never deletes the "
            "newest set"
        )
    else:
        why = "it is neither here nor deleted by retention" + (f" ({gone.detail})" if gone is not None else "")
    result.head_lost = Finding(
        backup_id,
        "missing",
        f"{source} it as the newest set (place {sequence} of the chain), yet {why}, "
        f"and no set here reaches place {sequence}: the newest set was deleted whole (a rollback), so \"latest\" would "
        "be an older set" + (f" ({way_out})" if way_out else ""),
    )
    result.lost_head = head
    result.findings.append(result.head_lost)


def _check_dates(result: ChainAudit, now: datetime) -> None:
    for backup_id, st in result.sets.items():
        if st.summary.created_at > now + FUTURE_TOLERANCE:
            ahead = st.summary.created_at - now
            result.findings.append(
                Finding(
                    backup_id,
                    "future-dated",
                    f"dated {st.summary.created_at.isoformat()}, {_span(ahead)} in the future (the clock of the "
                    "host that took it was wrong): its date is not trusted for ordering",
                )
            )


def _check_links(result: ChainAudit, usable: list[ManifestSummary]) -> None:
    """Every chained set's predecessor: present and the same, or deleted by retention, or the chain's start."""
    by_id = {m.id: m for m in usable}
    chained = [m for m in usable if m.sequence is not None]
    _check_forks(result, chained)
    oldest = min((m.sequence or 0 for m in chained), default=0)
    for m in chained:
        if m.previous_id is None:
            if m.sequence != 1 and m.sequence != oldest:
                result.findings.append(
                    Finding(m.id, "reordered", f"it claims place {m.sequence} in the chain but names no predecessor")
                )
            continue
        prev = by_id.get(m.previous_id)
        if prev is not None:
            _check_predecessor(result, m, prev)
            continue
        gone = result.tombstones.get(m.previous_id)
        if gone is not None and gone.trusted:
            continue
        if m.sequence == oldest:
            result.notes.append(
                f"the chain here starts at {m.id} (place {m.sequence}); its predecessor {m.previous_id} is not in "
                "this repository (deleted before tombstones were kept, or never copied here)"
            )
            continue
        why = f" ({gone.detail})" if gone is not None else ""
        result.findings.append(
            Finding(
                m.previous_id,
                "missing",
                f"the set at place {(m.sequence or 1) - 1} of the chain is missing: {m.id} follows it, and no "
                f"trusted record says retention deleted it{why}",
            )
        )


def _check_forks(result: ChainAudit, chained: list[ManifestSummary]) -> None:
    by_place: dict[int, list[str]] = {}
    for m in chained:
        by_place.setdefault(m.sequence or 0, []).append(m.id)
    for place, ids in sorted(by_place.items()):
        if len(ids) > 1:
            for i in ids:
                others = ", ".join(x for x in ids if x != i)
                result.findings.append(
                    Finding(i, "forked", f"it claims place {place} in the chain, as {others} does (a fork or a replay)")
                )


def _check_predecessor(result: ChainAudit, m: ManifestSummary, prev: ManifestSummary) -> None:
    actual = result.sets[prev.id].sha256
    if m.previous_sha256 != actual:
        result.findings.append(
            Finding(
                prev.id,
                "altered",
                f"its manifest is not the one {m.id} was chained to (SHA-256 {actual[:16]}…, recorded "
                f"{(m.previous_sha256 or 'none')[:16]}…): altered or replaced",
            )
        )
    if prev.sequence is not None and m.sequence != prev.sequence + 1:
        result.findings.append(
            Finding(m.id, "reordered", f"it claims place {m.sequence} but follows {prev.id} at place {prev.sequence}")
        )
    later_than_parent = prev.created_at - FUTURE_TOLERANCE <= m.created_at
    if not later_than_parent and not _is_future(result, prev.id):
        result.findings.append(
            Finding(
                m.id,
                "before-predecessor",
                f"dated {m.created_at.isoformat()}, before its predecessor {prev.id} "
                f"({prev.created_at.isoformat()}): one of the two clocks was wrong; the chain decides their order",
            )
        )


def _is_future(result: ChainAudit, backup_id: str) -> bool:
    return any(f.kind == "future-dated" for f in result.findings_for(backup_id))


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"


def effective_times(
    newest_first: Sequence[ManifestSummary | Manifest], now: datetime | None = None
) -> dict[str, datetime]:
    """Dates retention may bucket by: each set's own, never later than its successor's (or ``now``).

    A set dated in the future then counts as taken no later than the set after it, so
    one wrong clock cannot make it the newest of its day, week or month.
    """
    out: dict[str, datetime] = {}
    ceiling = now
    for m in newest_first:
        when = m.created_at if ceiling is None else min(m.created_at, ceiling)
        out[m.id] = when
        ceiling = when
    return out


@dataclass(frozen=True)
class PublishedRecord:
    """The sets a record kept apart from the chain names as published in the repository, oldest first.

    The audit log (``engine.audit.AuditLog.published``): ``source`` says which, for messages.
    """

    source: str
    backup_ids: tuple[str, ...]


def missing_from_record(here: ChainAudit, record: PublishedRecord) -> list[Finding]:
    """Sets the record names as published after every set here, and that are gone without a tombstone.

    Why after every set here: a set missing from the middle is named by its successor's
    link already, and leaves "latest" alone; one published after the newest set here is
    the newest set deleted whole, which the other sets do not show (the module's
    account), and a restore of "latest" would roll live data back to the set before it.
    A set still here in any state (unreadable, its manifest deleted) is named by the
    audit already.
    """
    present = set(here.sets) | {f.backup_id for f in here.findings if f.kind != "missing"}
    last = max((i for i, b in enumerate(record.backup_ids) if b in present), default=-1)
    out = []
    named = {f.backup_id for f in here.findings}  # the head record may have named it already
    for backup_id in record.backup_ids[last + 1 :]:
        gone = here.tombstones.get(backup_id)
        if (gone is not None and gone.trusted) or backup_id in named:
            continue
        out.append(
            Finding(
                backup_id,
                "missing",
                f"{record.source} records that it was backed up into this repository after every set here, yet it is "
                "neither here nor deleted by retention: the newest set was deleted whole (a rollback), so \"latest\" "
                "would be an older set",
            )
        )
    return out


def missing_against(here: ChainAudit, reference: ChainAudit) -> list[Finding]:
    """Sets the reference copy (the offsite repository) holds at a later place than anything here.

    The only way to see the newest set deleted whole: a copy elsewhere still has it.
    """
    places = [st.summary.sequence for i, st in here.sets.items() if st.summary.sequence is not None]
    top = max(places, default=0)
    out = []
    for backup_id in reference.order:
        st = reference.sets[backup_id]
        seq = st.summary.sequence
        if seq is None or seq <= top or backup_id in here.sets:
            continue
        gone = here.tombstones.get(backup_id)
        if gone is not None and gone.trusted:
            continue
        out.append(
            Finding(
                backup_id,
                "missing",
                f"the other repository holds it at place {seq} of the chain, after the newest set here: "
                "it was deleted here (or never published here)",
            )
        )
    return out
