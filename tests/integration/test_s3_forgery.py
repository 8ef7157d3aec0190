"""A writer of a signed S3 repository (no private key) on a real SeaweedFS: planted verification marks, and the
newest set deleted whole while the backup host's audit log still names it (review "an unforgeable repository")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import retention, selection, witness
from engine.audit import AuditLog, describe_repository
from engine.backup import copy_set
from engine.errors import ChainBroken
from engine.manifest import MANIFEST_NAME, VERIFIED_NAME, VERIFIED_SIGNATURE, Manifest
from engine.repository import S3Repository
from engine.signing import SIGNATURE_NAME, RepositoryTrust
from tests.integration.seaweedfs import MakeBucket, SeaweedFS

pytestmark = [pytest.mark.integration]


def _repo(s3_server: SeaweedFS, bucket: str, trust: RepositoryTrust) -> S3Repository:
    return S3Repository(bucket, prefix="prod", endpoint_url=s3_server.endpoint, trust=trust)


def _write(repo: S3Repository, payload: bytes = b"x" * 1000) -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return writer.commit([], {}, {})


def _delete_newest(repo: S3Repository, bucket: str, sets: list[Manifest], head_record: bool) -> Manifest:
    """What a writer of the bucket does: the newest set deleted whole (and the head record with it)."""
    newest = sets[-1]
    _delete_set(repo, bucket, newest)
    for suffix in (".json", ".sig") if head_record else ():
        repo.client.delete_object(Bucket=bucket, Key=repo._head_key(suffix))
    return newest


def test_a_planted_or_copied_verification_mark_is_not_verified(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    failed, good = _write(repo), _write(repo)
    repo.record_verification(repo.verify(good.id))
    assert repo.verified_ids() == {good.id}  # the quiet control
    record = json.dumps({"ok": True, "at": "2099-01-01T00:00:00+00:00", "damaged": []}).encode()
    repo.client.put_object(Bucket=bucket, Key=repo.key(failed.id, VERIFIED_NAME), Body=record)
    assert repo.verified_ids() == {good.id}
    for name in (VERIFIED_NAME, VERIFIED_SIGNATURE):  # the sound set's signed mark, copied
        body = repo.client.get_object(Bucket=bucket, Key=repo.key(good.id, name))["Body"].read()
        repo.client.put_object(Bucket=bucket, Key=repo.key(failed.id, name), Body=body)
    assert repo.verified_ids() == {good.id}


def test_the_newest_set_deleted_whole_is_named_by_the_hosts_audit_log(
    s3_server: SeaweedFS, make_bucket: MakeBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(witness.STATE_ENV, "")  # the audit log alone; this host's own record is tested below
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    where = describe_repository(repo.describe())
    log = AuditLog(tmp_path / "audit.jsonl")
    sets = []
    for _ in range(3):
        with log.operation("backup", where) as op:
            sets.append(_write(repo))
            op.backup_ids = [sets[-1].id]
    assert selection.latest(repo, published=log.published(where)).manifest.id == sets[-1].id  # quiet control
    newest = _delete_newest(repo, bucket, sets, head_record=True)  # a writer who knows the head record
    assert selection.latest(repo).manifest.id == sets[1].id  # what the repository alone shows: a rollback
    with pytest.raises(ChainBroken, match=f"{newest.id}: the audit log"):
        selection.latest(repo, published=log.published(where))


def test_the_newest_set_deleted_whole_is_named_by_the_signed_head_record(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """No audit log (an S3 repository has none unless configured): the head record beside the sets names the loss."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    sets = [_write(repo) for _ in range(3)]
    assert selection.latest(repo).manifest.id == sets[-1].id and repo.chain_audit().findings == []  # quiet control
    newest = _delete_newest(repo, bucket, sets, head_record=False)
    with pytest.raises(ChainBroken, match=f"{newest.id}: the repository's signed head record"):
        selection.latest(repo)
    after = _write(repo)  # the next backup follows the lost set: its link keeps naming it
    assert after.previous_id == newest.id and after.sequence == 4
    assert selection.latest(repo).manifest.id == after.id
    assert [(f.backup_id, f.kind) for f in repo.chain_audit().findings] == [(newest.id, "missing")]


def test_the_newest_set_deleted_with_its_head_record_is_named_by_this_hosts_record(
    s3_server: SeaweedFS, make_bucket: MakeBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No audit log, the head record deleted too: the host that wrote the newest set remembers it (engine/witness.py)."""
    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path / "state"))
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    sets = [_write(repo) for _ in range(3)]
    assert selection.latest(repo).manifest.id == sets[-1].id and repo.chain_audit().findings == []  # quiet control
    newest = _delete_newest(repo, bucket, sets, head_record=True)
    with pytest.raises(ChainBroken, match=f"{newest.id}: this host's own record"):
        selection.latest(repo)


def _delete_set(repo: S3Repository, bucket: str, m: Manifest) -> None:
    for rel in [MANIFEST_NAME, SIGNATURE_NAME] + [a.path for a in m.artifacts]:
        repo.client.delete_object(Bucket=bucket, Key=repo.key(m.id, rel))


def _copy_tombstone(source: S3Repository, target: S3Repository, bucket: str, backup_id: str) -> None:
    for suffix in (".json", ".sig"):
        body = source.client.get_object(Bucket=bucket, Key=source._pruned_key(backup_id, suffix))["Body"].read()
        target.client.put_object(Bucket=bucket, Key=target._pruned_key(backup_id, suffix), Body=body)


def test_a_tombstone_copied_between_the_primary_and_its_offsite_excuses_nothing(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """Two prefixes of one bucket, one key: each prunes on its own (quiet); the offsite's tombstone does not count in the primary."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    primary = _repo(s3_server, bucket, trust)
    offsite = S3Repository(bucket, prefix="offsite", endpoint_url=s3_server.endpoint, trust=trust)
    primary.role, offsite.role = "origin", "copy"  # as `repository:` and `offsite:` of a configuration open them
    sets = []
    for _ in range(4):
        sets.append(_write(primary))
        copy_set(primary, offsite, sets[-1])
    retention.prune(offsite, retention.Policy(keep_last=1))  # the offsite keeps only the newest
    retention.prune(primary, retention.Policy(keep_last=3))  # the primary keeps three
    assert [m.id for m in offsite.summaries()] == [sets[-1].id]
    assert offsite.chain_audit().findings == [] and primary.chain_audit().findings == []  # quiet controls
    _delete_set(primary, bucket, sets[2])  # from the middle of the primary
    _copy_tombstone(offsite, primary, bucket, sets[2].id)
    found = primary.chain_audit()
    assert [(f.backup_id, f.kind) for f in found.findings] == [(sets[2].id, "missing")]
    assert "written by an offsite copy at s3://" in found.findings[0].detail
