"""This host's record of each S3 repository's newest set (engine/witness.py), on real SeaweedFS servers.

A primary and its offsite on two S3 stores commonly carry the same bucket and prefix
(the same configuration shape, another endpoint). The record was kept per
``s3://bucket/prefix`` alone, so the primary's newest place was held against the offsite,
which by design lags it: "latest" from the offsite was refused on the day the primary is
lost, blamed on a rollback that never happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import selection, witness
from engine.backup import copy_set
from engine.manifest import Manifest
from engine.repository import S3Repository
from engine.repository.s3 import Credentials
from engine.signing import RepositoryTrust
from tests.integration.seaweedfs import MakeBucket, SeaweedFS, seaweedfs

pytestmark = [pytest.mark.integration]


def _write(repo: S3Repository, payload: bytes) -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return writer.commit([], {}, {})


def test_an_offsite_with_the_same_bucket_and_prefix_on_another_store_is_not_held_to_the_primarys_record(
    s3_server: SeaweedFS, make_bucket: MakeBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path / "state"))
    trust = RepositoryTrust.generated()
    bucket = make_bucket()
    primary = S3Repository(bucket, prefix="prod", endpoint_url=s3_server.endpoint, trust=trust)
    primary.role = "origin"
    sets = [_write(primary, f"v{i}".encode() * 100) for i in range(3)]
    with seaweedfs(tmp_path / "other-store") as other:
        other.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        keys = Credentials(other.access_key, other.secret_key)
        offsite = S3Repository(bucket, prefix="prod", endpoint_url=other.endpoint, trust=trust, credentials=keys)
        offsite.role = "copy"
        for manifest in sets[:2]:  # the offsite copy runs behind the backups: the newest is not there yet
            copy_set(primary, offsite, manifest)
        assert selection.latest(offsite).manifest.id == sets[1].id
        copy_set(primary, offsite, sets[2])
        assert selection.latest(offsite).manifest.id == sets[2].id
    # The control: the primary's own record still names a rollback there.
    newest = sets[-1]
    listing = primary.client.list_objects_v2(Bucket=bucket, Prefix=f"prod/sets/{newest.id}/")
    for obj in listing.get("Contents", []):
        primary.client.delete_object(Bucket=bucket, Key=obj["Key"])
    for suffix in (".json", ".sig"):
        primary.client.delete_object(Bucket=bucket, Key=primary._head_key(suffix))
    with pytest.raises(Exception, match="this host's own record"):
        selection.latest(primary)
