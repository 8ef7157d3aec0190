"""A writer of the bucket without the signing key, against a signed S3 repository on a real SeaweedFS.

What it may do there: delete a set's manifest (on a versioned or Object Lock bucket
that only adds a delete marker), delete a whole set, write junk where drproof keeps
records. None of it may make "latest" silently fall back to an older set, or end in a
traceback; and a store that keeps a shorter Object Lock than asked is refused before
any set claims that lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.manifest import VERIFIED_NAME, Manifest
from engine.repository import S3Repository
from engine.signing import RepositoryTrust
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
