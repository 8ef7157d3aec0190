"""S3 Object Lock and versioned buckets, against a real SeaweedFS on loopback.

Every object drproof writes into a bucket with Object Lock carries the configured mode and
retain-until date; a lock the bucket cannot keep is refused before anything is written;
retention keeps a set the store still holds (naming object and date) and frees every
version of one whose lock expired; on a versioned bucket a delete leaves no version
behind and never brings a deleted set back; a locked artifact survives a writer's delete.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.manifest import MANIFEST_NAME
from engine.repository import S3Repository
from engine.repository.objectlock import ObjectLock, ObjectLocked
from engine.repository.s3 import ObjectLockUnsupported
from engine.retention import Policy, plan
from tests.integration.helpers import run_cli
from tests.integration.seaweedfs import MakeBucket, SeaweedFS

pytestmark = [pytest.mark.integration]



def _write(repo: S3Repository, payload: bytes = b"x" * 1000) -> Any:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return writer.commit([], {}, {})


def _repo(s3_server: SeaweedFS, bucket: str, **kwargs: Any) -> S3Repository:
    return S3Repository(bucket, prefix="prod", endpoint_url=s3_server.endpoint, **kwargs)


def test_every_object_written_carries_the_lock(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    bucket = make_bucket(lock=True)
    repo = _repo(s3_server, bucket, object_lock=ObjectLock("GOVERNANCE", timedelta(days=2)))
    before = datetime.now(UTC)
    big = os.urandom(9 << 20)  # a multipart upload: the lock is asked for when it starts
    writer = repo.begin("t")
    with writer.artifact("comp", "big") as fh:
        fh.write(big)
    with writer.artifact("comp", "small") as fh:
        fh.write(b"hello")
    manifest = writer.commit([], {}, {})
    repo.record_verification(repo.verify(manifest.id))
    with repo.lock(exclusive=False, operation="backup"):
        leases = [o["Key"] for o in repo.client.list_objects_v2(Bucket=bucket, Prefix="prod/locks/")["Contents"]]
    keys = [o["Key"] for o in repo.client.list_objects_v2(Bucket=bucket, Prefix="prod/sets/")["Contents"]]
    assert len(keys) == 4 and len(leases) == 1  # two artifacts, manifest, verification record; one lease
    for key in keys + leases:
        versions = repo.client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
        for version in versions:
            head = repo.client.head_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
            assert head["ObjectLockMode"] == "GOVERNANCE", key
            until = head["ObjectLockRetainUntilDate"]
            assert before + timedelta(days=2) - timedelta(minutes=1) < until < datetime.now(UTC) + timedelta(days=2)
    assert repo.describe()["object_lock"] == "GOVERNANCE for 2 days"


def test_a_lock_the_bucket_cannot_keep_is_refused_before_anything_is_written(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    bucket = make_bucket(lock=False, versioned=True)
    repo = _repo(s3_server, bucket, object_lock=ObjectLock("COMPLIANCE", timedelta(days=30)))
    writer = repo.begin("t")
    with pytest.raises(ObjectLockUnsupported) as caught, writer.artifact("comp", "data") as fh:
        fh.write(b"data")
    message = str(caught.value)
    assert f"bucket {bucket}" in message and "does not have Object Lock enabled" in message
    assert "--object-lock-enabled-for-bucket" in message and "COMPLIANCE for 30 days" in message
    assert repo.client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    # Quiet control: the same bucket without a lock configured takes the backup.
    plain = _repo(s3_server, bucket)
    assert plain.verify(_write(plain).id).ok


def test_retention_keeps_locked_sets_naming_object_and_date_then_frees_them_once_expired(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    bucket = make_bucket(lock=True)
    repo = _repo(s3_server, bucket, object_lock=ObjectLock("GOVERNANCE", timedelta(seconds=6)))
    for _ in range(3):
        _write(repo)
    sets = repo.summaries()
    ids = [m.id for m in sets]  # oldest first, as retention orders them
    first = plan(sets, Policy(keep_last=1), set())
    assert sorted(d.backup_id for d in first if not d.keep) == sorted(ids[:2])
    held = {d.backup_id: repo.holds(d.backup_id) for d in first if not d.keep}
    for backup_id in ids[:2]:
        objects = {h.key.rsplit("/", 1)[-1] for h in held[backup_id]}
        assert objects == {"data.zst", MANIFEST_NAME}, held[backup_id]
        assert all(h.until is not None and h.until > datetime.now(UTC) for h in held[backup_id])
    decisions = plan(sets, Policy(keep_last=1), set(), {i: [h.reason() for h in hs] for i, hs in held.items()})
    assert all(d.keep for d in decisions)
    reason = next(d for d in decisions if d.backup_id == ids[0]).reasons[0]
    assert reason.startswith(f"object lock: prod/sets/{ids[0]}/") and "locked (GOVERNANCE) until 20" in reason
    # Trying anyway is refused whole, before anything is deleted.
    with pytest.raises(ObjectLocked, match=f"S3 backup {ids[0]} not deleted: object lock"):
        repo.delete(ids[0])
    assert [m.id for m in repo.list()] == ids

    latest_until = max(h.until for hs in held.values() for h in hs if h.until is not None)
    time.sleep(max(0.0, (latest_until - datetime.now(UTC)).total_seconds()) + 1.5)
    assert all(repo.holds(i) == [] for i in ids[:2])
    for backup_id in ids[:2]:
        repo.delete(backup_id)
        assert repo.left_after_delete(backup_id) == []  # every version gone: the storage is freed
    assert [m.id for m in repo.list()] == ids[2:]


def test_a_prune_tombstone_is_locked_like_every_other_object(s3_server: SeaweedFS, make_bucket: MakeBucket) -> None:
    """The signed record of a deleted set must outlive a writer too: else deleting it turns "pruned" into "missing"."""
    from engine import retention
    from engine.signing import RepositoryTrust

    bucket = make_bucket(lock=True)
    repo = _repo(
        s3_server, bucket, object_lock=ObjectLock("GOVERNANCE", timedelta(seconds=3)), trust=RepositoryTrust.generated()
    )
    old, _ = _write(repo), _write(repo)
    time.sleep(3.5)  # the sets' locks expire; the tombstone written now gets a fresh one
    before = datetime.now(UTC)
    pruned = retention.prune(repo, Policy(keep_last=1))
    assert [d.backup_id for d in pruned.decisions if not d.keep] == [old.id]
    keys = [o["Key"] for o in repo.client.list_objects_v2(Bucket=bucket, Prefix="prod/pruned/")["Contents"]]
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == [f"{old.id}.json", f"{old.id}.sig"]
    for key in keys:
        head = repo.client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        assert head["ObjectLockRetainUntilDate"] > before, key
    assert repo.chain_audit().findings == []


def test_versioned_bucket_delete_frees_every_version_and_never_resurrects_a_set(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    bucket = make_bucket(versioned=True)
    repo = _repo(s3_server, bucket)
    old, kept = _write(repo), _write(repo, b"y" * 2000)
    # Versions pile up under a set: its verification is recorded twice, its manifest rewritten as is.
    repo.record_verification(repo.verify(kept.id))
    repo.record_verification(repo.verify(kept.id))
    repo.put(kept.id, MANIFEST_NAME, kept.to_json().encode())
    assert [m.id for m in repo.list()] == [old.id, kept.id]  # one entry per set, whatever its versions
    assert repo.get(kept.id) == kept and repo.verified_ids() == {kept.id}

    repo.delete(old.id)
    assert repo.left_after_delete(old.id) == []
    assert [m.id for m in repo.list()] == [kept.id]
    assert repo.client.list_object_versions(Bucket=bucket, Prefix=f"prod/sets/{old.id}/").get("Versions") is None

    # A delete that only adds markers (what `aws s3 rm` does) is storage not freed, and says so.
    repo.client.delete_object(Bucket=bucket, Key=repo.key(kept.id, MANIFEST_NAME))
    assert repo.list() == []
    left = repo.left_after_delete(kept.id)
    assert any("delete marker" in entry for entry in left) and any("version" in entry for entry in left)


def test_a_writer_cannot_delete_a_locked_artifact_and_the_set_still_verifies(
    s3_server: SeaweedFS, make_bucket: MakeBucket
) -> None:
    bucket = make_bucket(lock=True)
    repo = _repo(s3_server, bucket, object_lock=ObjectLock("COMPLIANCE", timedelta(days=1)))
    manifest = _write(repo)
    with pytest.raises(ObjectLocked) as refused:
        repo.delete_stored(manifest, manifest.artifacts[0])
    assert "refused to delete 1 version(s)" in str(refused.value) and "AccessDenied" in str(refused.value)
    assert [h.mode for h in refused.value.holds] == ["COMPLIANCE"]
    assert repo.verify(manifest.id).ok

    # Negative control: the same delete on a bucket without the lock destroys the artifact.
    loose = _repo(s3_server, make_bucket(versioned=True))
    gone = _write(loose)
    loose.delete_stored(gone, gone.artifacts[0])
    report = loose.verify(gone.id)
    assert not report.ok and report.checks[0].problem == "missing"


def _config(tmp_path: Path, bucket: str, endpoint: str, lock: bool) -> Path:
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "a.txt").write_text("a" * 5000)
    repository: dict[str, Any] = {
        "type": "s3",
        "bucket": bucket,
        "prefix": "prod",
        "endpoint_url": endpoint,
        "access_key_id_env": "BACKUP_S3_KEY_ID",
        "secret_access_key_env": "BACKUP_S3_SECRET",
    }
    if lock:
        repository["object_lock"] = {"mode": "GOVERNANCE", "days": 1}
    config = {
        "repository": repository,
        "retention": {"keep_last": 1},
        "components": {"files": {"kind": "volumes", "path": str(files)}},
    }
    path = tmp_path / f"config-{bucket}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_backup_config_object_lock_from_dry_run_to_prune(
    s3_server: SeaweedFS,
    make_bucket: MakeBucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """backup-config.yaml end to end: keys from the named variables, the lock checked by the
    dry run, every backup locked, and prune keeping the locked set with its object and date."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # only the variables the configuration names
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("BACKUP_S3_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("BACKUP_S3_SECRET", s3_server.secret_key)
    unlocked = _config(tmp_path, make_bucket(versioned=True), s3_server.endpoint, lock=True)
    assert run_cli(["backup", "--config", str(unlocked), "--dry-run", "--json"]) == 2
    repo_check = next(c for c in json.loads(capsys.readouterr().out) if c["what"].startswith("repository"))
    assert not repo_check["ok"] and "does not have Object Lock enabled" in repo_check["detail"]
    assert run_cli(["backup", "--config", str(unlocked)]) == 2
    assert "does not have Object Lock enabled" in capsys.readouterr().err

    cfg = str(_config(tmp_path, make_bucket(lock=True), s3_server.endpoint, lock=True))
    assert run_cli(["backup", "--config", cfg, "--dry-run", "--json"]) == 0
    repo_check = next(c for c in json.loads(capsys.readouterr().out) if c["what"].startswith("repository"))
    assert "Object Lock GOVERNANCE for 1 day (enabled on the bucket)" in repo_check["detail"], repo_check
    ids = []
    for _ in range(2):
        assert run_cli(["backup", "--config", cfg, "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    assert run_cli(["recovery", "prune", "--config", cfg, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["deleted"] == [] and sorted(k["id"] for k in result["kept"]) == sorted(ids)
    older = next(k for k in result["kept"] if "keep_last" not in k["reasons"])
    assert older["reasons"][0].startswith("object lock: prod/sets/") and "(GOVERNANCE) until" in older["reasons"][0]
    assert {h["mode"] for h in older["locked"]} == {"GOVERNANCE"} and all(h["until"] for h in older["locked"])
    assert s3_server.secret_key not in json.dumps(result)
