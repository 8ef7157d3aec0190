"""The S3 repository against a real S3-compatible server (SeaweedFS, on loopback)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from engine.crypto import Encryption
from engine.errors import IntegrityError, RepositoryError
from engine.repository import LocalRepository, S3Repository
from engine.runtime.processes import free_port
from tests.integration.seaweedfs import bucket_name

pytestmark = [pytest.mark.integration]


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    import boto3

    name = bucket_name("drproof-" + request.node.name)
    boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _write(repo: Any, payloads: dict[str, bytes]) -> Any:
    writer = repo.begin("t")
    for name, data in payloads.items():
        with writer.artifact("comp", name) as fh:
            for i in range(0, len(data), 1 << 20):
                fh.write(data[i : i + (1 << 20)])
    return writer.commit([], {}, {})


def test_round_trip_with_multipart_upload(s3_endpoint: str, bucket: str) -> None:
    repo = S3Repository(bucket, prefix="team/app", endpoint_url=s3_endpoint)
    big = os.urandom(20 << 20)  # incompressible: several 8 MiB parts
    manifest = _write(repo, {"big": big, "small": b"hello"})
    assert [m.id for m in repo.list()] == [manifest.id]
    assert repo.verify(manifest.id).ok
    for artifact, expected in zip(manifest.artifacts, (big, b"hello"), strict=True):
        with repo.open_artifact(manifest, artifact) as fh:
            assert fh.read() == expected
    assert repo.describe()["endpoint_url"] == s3_endpoint


def test_crashed_backup_is_never_listed_and_leaves_no_upload(s3_endpoint: str, bucket: str) -> None:
    repo = S3Repository(bucket, endpoint_url=s3_endpoint)
    writer = repo.begin("crash")
    with pytest.raises(RuntimeError), writer.artifact("comp", "a") as fh:
        fh.write(os.urandom(12 << 20))
        raise RuntimeError("killed mid-upload")
    assert repo.list() == []
    assert repo.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_damage_is_detected_and_restore_refused(s3_endpoint: str, bucket: str) -> None:
    repo = S3Repository(bucket, endpoint_url=s3_endpoint)
    manifest = _write(repo, {"a": os.urandom(50_000)})
    artifact = manifest.artifacts[0]
    byte = repo.read_stored(manifest, artifact, 100, 1)
    repo.overwrite_stored(manifest, artifact, 100, bytes([byte[0] ^ 0xFF]))
    report = repo.verify(manifest.id)
    assert not report.ok and report.damaged == ["comp/a"]
    with pytest.raises(IntegrityError), repo.open_artifact(manifest, artifact):
        pass


def test_offsite_copy_both_ways_keeps_digests_and_encryption(s3_endpoint: str, bucket: str) -> None:
    key = Encryption(key=os.urandom(32), source="test")
    with tempfile.TemporaryDirectory() as d:
        local = LocalRepository(Path(d) / "local", key)
        data = os.urandom(300_000)
        manifest = _write(local, {"a": data})
        s3 = S3Repository(bucket, prefix="offsite", endpoint_url=s3_endpoint, encryption=key)
        s3.import_set(manifest, local)
        copied = s3.get(manifest.id)
        assert copied.artifacts == manifest.artifacts and s3.verify(manifest.id).ok
        with s3.open_artifact(copied, copied.artifacts[0]) as fh:
            assert fh.read() == data
        # Lose every local backup, then bring the set back from offsite.
        local.delete(manifest.id)
        assert local.list() == []
        local.import_set(copied, s3)
        with local.open_artifact(manifest, manifest.artifacts[0]) as fh:
            assert fh.read() == data


def test_copy_refuses_a_damaged_source(s3_endpoint: str, bucket: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        local = LocalRepository(Path(d))
        manifest = _write(local, {"a": os.urandom(10_000)})
        local.overwrite_stored(manifest, manifest.artifacts[0], 5, b"\x00\x01")
        s3 = S3Repository(bucket, endpoint_url=s3_endpoint)
        with pytest.raises(IntegrityError, match="damaged in the source"):
            s3.import_set(manifest, local)
        assert s3.list() == []


def test_delete_unlists_and_verification_is_recorded(s3_endpoint: str, bucket: str) -> None:
    repo = S3Repository(bucket, endpoint_url=s3_endpoint)
    first, second = _write(repo, {"a": b"1"}), _write(repo, {"a": b"2"})
    repo.record_verification(repo.verify(first.id))
    assert repo.verified_ids() == {first.id}
    repo.delete(first.id)
    assert [m.id for m in repo.list()] == [second.id]


def test_unreachable_store_is_a_clear_error() -> None:
    repo = S3Repository("nobucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    repo.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(RepositoryError, match="S3: listing"):
        repo.list()


def test_summaries_list_what_list_lists_and_name_a_set_they_cannot_read(s3_endpoint: str, bucket: str) -> None:
    from engine.manifest import ManifestSummary

    repo = S3Repository(bucket, prefix="inv", endpoint_url=s3_endpoint)
    first = _write(repo, {"a": b"1"})
    second = _write(repo, {"b": b"22"})
    assert repo.summaries() == [ManifestSummary.of(m) for m in repo.list()]
    key = repo.key(second.id, "manifest.json")
    repo.client.put_object(Bucket=bucket, Key=key, Body=b'{"id": "' + second.id.encode() + b'"}')
    assert [s.id for s in repo.summaries()] == [first.id]
    assert list(repo.broken) == [second.id]
