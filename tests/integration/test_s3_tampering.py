"""A writer of the bucket without the signing key, against a signed S3 repository on a real SeaweedFS.

What it may do there: delete a set's manifest (on a versioned or Object Lock bucket
that only adds a delete marker), delete a whole set, write junk where drproof keeps
records. None of it may make "latest" silently fall back to an older set, or end in a
traceback; and a store that keeps a shorter Object Lock than asked is refused before
any set claims that lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.manifest import VERIFIED_NAME, Manifest
from engine.repository import S3Repository
from engine.repository.objectlock import ObjectLock
from engine.repository.s3 import ObjectLockUnsupported
from engine.signing import SIGNATURE_NAME, RepositoryTrust
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]

MakeBucket = Callable[..., str]


@pytest.fixture
def make_bucket(s3_server: SeaweedFS, request: pytest.FixtureRequest) -> MakeBucket:
    def make(lock: bool = False, versioned: bool = False) -> str:
        name = bucket_name("tamper-" + request.node.name)
        client: Any = s3_server.client()
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        if versioned and not lock:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    return make


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
