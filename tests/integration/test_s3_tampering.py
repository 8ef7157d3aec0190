"""A writer of the bucket without the signing key, against a signed S3 repository on a real SeaweedFS.

What it may do there: delete a set's manifest (on a versioned or Object Lock bucket
that only adds a delete marker), delete a whole set, write junk where drproof keeps
records. None of it may make "latest" silently fall back to an older set, or end in a
traceback; and a store that keeps a shorter Object Lock than asked is refused before
any set claims that lock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import selection
from engine.errors import ChainBroken, RepositoryError
from engine.manifest import MANIFEST_NAME, VERIFIED_NAME, Manifest
from engine.repository import S3Repository
from engine.repository.objectlock import ObjectLock
from engine.repository.readonly import ReadOnlyRepository
from engine.repository.s3 import ObjectLockUnsupported
from engine.signing import SIGNATURE_NAME, RepositoryTrust
from tests.integration.seaweedfs import MakeBucket, SeaweedFS

pytestmark = [pytest.mark.integration]



def _repo(s3_server: SeaweedFS, bucket: str, trust: RepositoryTrust, **kwargs: Any) -> S3Repository:
    return S3Repository(bucket, prefix="prod", endpoint_url=s3_server.endpoint, trust=trust, **kwargs)


def _write(repo: S3Repository, payload: bytes = b"x" * 1000) -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return writer.commit([], {}, {})


def _kinds(repo: S3Repository) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in repo.chain_audit().findings:
        out.setdefault(f.backup_id, set()).add(f.kind)
    return out


@pytest.mark.parametrize("versioned", [False, True])
def test_the_newest_sets_deleted_manifest_is_named_and_latest_refused(
    s3_server: SeaweedFS, make_bucket: MakeBucket, versioned: bool
) -> None:
    trust = RepositoryTrust.generated()
    bucket = make_bucket(versioned=versioned)
    repo = _repo(s3_server, bucket, trust)
    older = _write(repo)
    newest = _write(repo)
    assert selection.latest(repo).manifest.id == newest.id  # the quiet control: nothing to say
    assert _kinds(repo) == {} and repo.chain_audit().notes == []

    repo.client.delete_object(Bucket=bucket, Key=repo.key(newest.id, MANIFEST_NAME))

    assert _kinds(repo) == {newest.id: {"manifest-missing"}}
    with pytest.raises(ChainBroken, match=f"{newest.id}: its signature and artifacts are stored but its manifest"):
        selection.latest(repo)
    assert selection.by_id(repo, older.id).manifest.id == older.id  # named, the older set still restores


def test_a_set_deleted_whole_under_object_lock_is_named(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    """The rollback Object Lock is for: a writer deletes the newest set; the store keeps it under delete markers."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket(lock=True)
    repo = _repo(s3_server, bucket, trust, object_lock=ObjectLock("GOVERNANCE", timedelta(days=1)))
    _write(repo)
    newest = _write(repo)
    for obj in repo.client.list_objects_v2(Bucket=bucket, Prefix=repo.key(newest.id, ""))["Contents"]:
        repo.client.delete_object(Bucket=bucket, Key=obj["Key"])  # a delete marker each: the versions are locked

    reader = _repo(s3_server, bucket, trust)
    assert _kinds(reader) == {newest.id: {"manifest-missing"}}
    with pytest.raises(ChainBroken, match=f"{newest.id}: its manifest was deleted: a delete marker hides it"):
        selection.latest(reader)


def test_a_set_retention_deleted_leaves_no_finding_on_a_versioned_bucket(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """The control: a delete marker over a manifest whose set has a signed tombstone is retention's, not a writer's."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket(versioned=True)
    repo = _repo(s3_server, bucket, trust)
    pruned, cut_short = _write(repo), _write(repo)
    newest = _write(repo)
    repo.record_deletion(pruned.id, "retention")
    repo.delete(pruned.id)  # every version freed
    repo.record_deletion(cut_short.id, "retention")
    repo.client.delete_object(Bucket=bucket, Key=repo.key(cut_short.id, MANIFEST_NAME))  # then interrupted
    assert _kinds(repo) == {}
    assert selection.latest(repo).manifest.id == newest.id


def test_a_backup_in_progress_is_a_note_not_a_refusal(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    """Artifacts uploaded, neither signature nor manifest yet: a restore of the latest set meanwhile goes ahead."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket(versioned=True)
    repo = _repo(s3_server, bucket, trust)
    newest = _write(repo)
    writer = repo.begin("in progress")
    with writer.artifact("comp", "data") as fh:
        fh.write(b"y" * 1000)

    found = repo.chain_audit()
    assert _kinds(repo) == {}
    assert any(writer.id in note and "in progress" in note for note in found.notes)
    assert ReadOnlyRepository(repo).chain_audit().notes == found.notes  # a restore test is told too
    assert selection.latest(repo).manifest.id == newest.id
    writer.commit([], {}, {})
    assert selection.latest(repo).manifest.id == writer.id


@pytest.mark.parametrize("record", [b"[1, 2]", b"not json", b'"ok"'])
def test_a_junk_verification_record_is_not_verified(
    s3_server: SeaweedFS, make_bucket: MakeBucket, record: bytes
) -> None:
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    junk, good = _write(repo), _write(repo)
    repo.record_verification(repo.verify(good.id))
    repo.client.put_object(Bucket=bucket, Key=repo.key(junk.id, VERIFIED_NAME), Body=record)
    assert repo.verified_ids() == {good.id}


def _cap_retention(repo: S3Repository, cap: timedelta) -> None:
    """A store (or a proxy in front of it) that keeps the mode but cuts the retain-until date short."""

    def shorten(params: dict[str, Any], **_: Any) -> None:
        if "ObjectLockRetainUntilDate" in params:
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + cap

    for operation in ("PutObject", "CreateMultipartUpload"):
        repo.client.meta.events.register(f"provide-client-params.s3.{operation}", shorten)


def test_a_shorter_retention_than_configured_is_refused(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    trust = RepositoryTrust.generated()
    bucket = make_bucket(lock=True)
    repo = _repo(s3_server, bucket, trust, object_lock=ObjectLock("COMPLIANCE", timedelta(days=30)))
    _cap_retention(repo, timedelta(seconds=30))
    with pytest.raises(ObjectLockUnsupported, match=r"does not keep that lock \(mode 'COMPLIANCE', retain until"):
        _write(repo)
    assert repo.list() == []  # nothing was published under a lock it does not have

    control = _repo(s3_server, bucket, trust, object_lock=ObjectLock("COMPLIANCE", timedelta(days=30)))
    _cap_retention(control, timedelta(days=31))  # longer than asked: more than was asked is kept
    manifest = _write(control)
    head = control.client.head_object(Bucket=bucket, Key=control.key(manifest.id, SIGNATURE_NAME))
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=30)


@pytest.mark.parametrize(
    "planted",
    [
        {"pruned/20200101T000000Z-000000.json": b"x" * 5000},  # over the size of any record drproof writes
        {"pruned/20200101T000000Z-000000.json": b"{}", "pruned/20200101T000000Z-000000.sig": b"x" * 5000},
        {"pruned/nested/20200101T000000Z-000000.json": b"{}"},  # no set's id
    ],
)
def test_junk_in_pruned_does_not_stop_the_repository(
    s3_server: SeaweedFS, make_bucket: MakeBucket, planted: dict[str, bytes]
) -> None:
    """Tombstones only excuse a gap: one planted too large or under a path no id has is ignored, not fatal."""
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    _write(repo)
    for key, body in planted.items():
        repo.client.put_object(Bucket=bucket, Key=f"prod/{key}", Body=body)
    repo.client.put_object(Bucket=bucket, Key=repo.key(_write(repo).id, VERIFIED_NAME), Body=b" " * (2 << 20))

    assert _kinds(repo) == {}
    newest = _write(repo)  # a backup takes its place in the chain, which reads the tombstones
    assert selection.latest(repo).manifest.id == newest.id
    assert repo.verified_ids() == set()


def test_a_repository_fault_on_a_vanished_artifact_is_a_domain_error(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """The drills' repository faults read and rewrite stored bytes: a store error there is a RepositoryError."""
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, RepositoryTrust.generated())
    manifest = _write(repo)
    artifact = manifest.artifacts[0]
    assert repo.stored_size(manifest, artifact) == artifact.size  # the control
    repo.client.delete_object(Bucket=bucket, Key=repo.key(manifest.id, artifact.path))
    for damage in (
        lambda: repo.stored_size(manifest, artifact),
        lambda: repo.read_stored(manifest, artifact, 0, 10),
        lambda: repo.truncate_stored(manifest, artifact, 10),
        lambda: repo.overwrite_stored(manifest, artifact, 0, b"x"),
    ):
        with pytest.raises(RepositoryError, match=r"^S3: .* failed \(s3://"):
            damage()


def test_a_backup_that_fails_publishing_its_manifest_leaves_no_signature_alone(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """The signature goes first; when the manifest then cannot be written, it goes too: no set looks deleted."""
    from botocore.exceptions import EndpointConnectionError

    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    before = _write(repo)

    def refuse_manifest(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith("/" + MANIFEST_NAME):
            raise EndpointConnectionError(endpoint_url=s3_server.endpoint)

    repo.client.meta.events.register("provide-client-params.s3.PutObject", refuse_manifest)
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(b"z" * 1000)
    with pytest.raises(RepositoryError, match="nothing was published"):
        writer.commit([], {}, {})
    repo.client.meta.events.unregister("provide-client-params.s3.PutObject", refuse_manifest)

    assert repo.stored_signature(writer.id) is None
    assert _kinds(repo) == {}
    assert selection.latest(repo).manifest.id == before.id


@pytest.mark.parametrize("note", [b'{"ttl_seconds": "soon"}', b"[1]", b'{"ttl_seconds": 1e308}', b'{"ttl_seconds": NaN}'])
def test_a_planted_lease_note_is_a_busy_lock_not_a_traceback(
    s3_server: SeaweedFS, make_bucket: MakeBucket, note: bytes
) -> None:
    """Anyone who can write locks/ can plant a lease; whatever its note says, the waiter gets a RepositoryError."""
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, RepositoryTrust.generated())
    with repo.lock(exclusive=False, operation="restore", timeout=1):
        pass  # the control: nobody holds it
    repo.client.put_object(Bucket=bucket, Key=repo.lock_key("exclusive.json"), Body=note)
    with pytest.raises(RepositoryError, match="is locked by"), repo.lock(exclusive=False, operation="restore", timeout=1):
        pass


def test_a_signature_the_store_fails_to_return_is_not_called_missing(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """A store error (throttling past the retries, a refused key) is "could not check", never "it has no signature"."""
    from botocore.exceptions import EndpointConnectionError

    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    repo = _repo(s3_server, bucket, trust)
    newest = _write(repo)
    assert selection.latest(repo).manifest.id == newest.id  # the control

    def fail_signature(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith("/" + SIGNATURE_NAME):
            raise EndpointConnectionError(endpoint_url=s3_server.endpoint)

    repo.client.meta.events.register("provide-client-params.s3.GetObject", fail_signature)
    with pytest.raises(RepositoryError) as refused:
        selection.latest(repo)
    assert f"reading prod/sets/{newest.id}/{SIGNATURE_NAME} failed" in str(refused.value)
    assert "no signature" not in str(refused.value)


def test_an_older_set_hidden_by_a_delete_marker_is_missing_but_latest_still_stands(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    """A set deleted with plain deletes before tombstones (or by a writer) from the middle: named, not a doubt.

    Its kept manifest version proves, by its signature, a place before the newest set, so
    it is "missing" as a set deleted from the middle is; the newest set is still "latest".
    """
    trust = RepositoryTrust.generated()
    bucket = make_bucket(versioned=True)
    repo = _repo(s3_server, bucket, trust)
    oldest, middle = _write(repo), _write(repo)
    newest = _write(repo)
    for gone in (oldest, middle):
        for obj in repo.client.list_objects_v2(Bucket=bucket, Prefix=repo.key(gone.id, ""))["Contents"]:
            repo.client.delete_object(Bucket=bucket, Key=obj["Key"])

    assert _kinds(repo) == {oldest.id: {"missing"}, middle.id: {"missing"}}
    assert selection.latest(repo).manifest.id == newest.id

    # The newest hidden as well: nothing is left to vouch for a place, every hidden set is a doubt.
    for obj in repo.client.list_objects_v2(Bucket=bucket, Prefix=repo.key(newest.id, ""))["Contents"]:
        repo.client.delete_object(Bucket=bucket, Key=obj["Key"])
    with pytest.raises(ChainBroken, match=f"{newest.id}: its manifest was deleted"):
        selection.latest(repo)
