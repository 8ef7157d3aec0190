"""Each S3 repository resolves its own credentials, never boto3's process-wide cached ones (review finding 13).

boto3's default session resolves the credentials chain once and keeps the answer: a
repository opened after the environment changed (another configuration's keys, a
second store in one process) signed with the first keys and failed with
InvalidAccessKeyId. Found as an order-dependent CI failure: ``test_restore_tests.py``
(placeholder keys, an unreachable store) before ``test_s3_object_lock.py`` failed six
tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import RepositoryError
from engine.repository import S3Repository
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]


def test_a_repository_opened_after_the_keys_changed_uses_the_new_keys(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    bucket = bucket_name("credentials")
    client: Any = s3_server.client()
    client.create_bucket(Bucket=bucket)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # as in a fresh process
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # another configuration's (here: wrong) keys
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    first = S3Repository(bucket, "a", s3_server.endpoint)
    with pytest.raises(RepositoryError, match="InvalidAccessKeyId"):
        first.list()

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    second = S3Repository(bucket, "b", s3_server.endpoint)
    assert second.list() == []  # before: InvalidAccessKeyId, the first keys kept by boto3's default session
    writer = second.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(b"x")
    published = writer.commit([], {}, {})
    assert [m.id for m in second.list()] == [published.id]
    with pytest.raises(RepositoryError, match="InvalidAccessKeyId"):
        first.list()  # and the first keeps the keys it was opened with
