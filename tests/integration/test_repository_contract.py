"""One contract, every registered repository backend: local, S3 (SeaweedFS), S3 with Object Lock.

Each backend is opened the way drills and the standalone engine open it: from its
settings model through the registry (``open_repository``). A backend registered without
a way to open it here fails ``test_every_registered_backend_is_under_contract``, so a new
backend cannot skip the suite.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.crypto import Encryption
from engine.errors import BackupNotFound, IntegrityError
from engine.repository import LocalRepository, OpenContext, Repository, open_repository, repositories
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]

KEY = Encryption(key=bytes(range(32)), source="test")
Opener = Callable[[Encryption | None], Repository]


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    settings = repositories.get("local").Settings.model_validate({"path": str(tmp_path / "repo")})
    return lambda enc: open_repository(settings, OpenContext(encryption=enc))


def _s3(lock: bool) -> Callable[[Path, pytest.FixtureRequest], Opener]:
    def make(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
        server: SeaweedFS = request.getfixturevalue("s3_server")
        bucket = bucket_name("contract-" + request.node.name)
        client: Any = server.client()
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=lock)
        request.getfixturevalue("monkeypatch").setenv("CONTRACT_S3_ENDPOINT", server.endpoint)
        raw: dict[str, Any] = {"bucket": bucket, "prefix": "team/app", "endpoint_url_env": "CONTRACT_S3_ENDPOINT"}
        if lock:
            raw["object_lock"] = {"mode": "GOVERNANCE", "days": 1}
        settings = repositories.get("s3").Settings.model_validate(raw)
        return lambda enc: open_repository(settings, OpenContext(encryption=enc))

    return make


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Opener]] = {
    "local": _local,
    "s3": _s3(lock=False),
    "s3-object-lock": _s3(lock=True),
}


def test_every_registered_backend_is_under_contract() -> None:
    assert set(repositories.names()) <= {name.split("-", 1)[0] for name in BACKENDS}


@pytest.fixture(params=list(BACKENDS))
def open_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](tmp_path, request)


def _write(repo: Repository, payloads: dict[str, bytes]) -> Any:
    writer = repo.begin("contract")
    for name, data in payloads.items():
        with writer.artifact("comp", name) as fh:
            fh.write(data)
    return writer.commit([], {"tool": "1"}, {"type": "full"})


def test_a_set_round_trips_encrypted_and_verifies(open_repo: Opener) -> None:
    repo = open_repo(KEY)
    data = {"a": os.urandom(300_000), "empty": b""}
    manifest = _write(repo, data)
    assert [m.id for m in repo.list()] == [manifest.id] == [s.id for s in repo.summaries()]
    assert repo.get(manifest.id) == manifest
    report = repo.verify(manifest.id)
    assert report.ok and all(c.content_proven for c in report.checks)
    for artifact in manifest.artifacts:
        with repo.open_artifact(manifest, artifact) as fh:
            assert fh.read() == data[artifact.name]
    assert repo.describe()["type"] in repositories.names()


def test_a_crashed_writer_leaves_no_set(open_repo: Opener) -> None:
    repo = open_repo(None)
    writer = repo.begin("crash")
    with pytest.raises(RuntimeError), writer.artifact("comp", "a") as fh:
        fh.write(b"partial")
        raise RuntimeError("killed")
    writer.abort()
    assert repo.list() == []


def test_damage_is_named_and_refused(open_repo: Opener) -> None:
    repo = open_repo(None)
    manifest = _write(repo, {"a": os.urandom(50_000)})
    artifact = manifest.artifacts[0]
    byte = repo.read_stored(manifest, artifact, 10, 1)
    repo.overwrite_stored(manifest, artifact, 10, bytes([byte[0] ^ 0xFF]))
    assert repo.verify(manifest.id).damaged == ["comp/a"]
    with pytest.raises(IntegrityError), repo.open_artifact(manifest, artifact):
        pass


def test_verification_is_recorded_and_delete_unlists(open_repo: Opener) -> None:
    repo = open_repo(None)
    old, new = _write(repo, {"a": b"old"}), _write(repo, {"a": b"new"})
    repo.record_verification(repo.verify(new.id))
    assert repo.verified_ids() == {new.id}
    holds = repo.holds(old.id)
    if holds:  # Object Lock: the store keeps the set, and delete refuses it whole
        assert all(h.backup_id == old.id for h in holds)
        return
    with repo.lock(exclusive=True):
        repo.delete(old.id)
    assert repo.left_after_delete(old.id) == []
    assert [m.id for m in repo.list()] == [new.id]
    with pytest.raises(BackupNotFound):
        repo.get(old.id)


def test_a_copy_into_and_out_of_the_backend_keeps_every_digest(open_repo: Opener, tmp_path: Path) -> None:
    local = LocalRepository(tmp_path / "other", KEY)
    manifest = _write(local, {"a": os.urandom(100_000)})
    repo = open_repo(KEY)
    with repo.lock(exclusive=False):
        repo.import_set(manifest, local)
    assert repo.get(manifest.id).artifacts == manifest.artifacts and repo.verify(manifest.id).ok
    back = LocalRepository(tmp_path / "back", KEY)
    back.import_set(repo.get(manifest.id), repo)
    assert back.verify(manifest.id).ok
