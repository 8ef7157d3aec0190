"""A set copied in from another repository signed with the same key, on a real SeaweedFS (review finding 8).

Two prefixes of one bucket (``db1``, ``db2``), one backup host's key. A writer of the
bucket copies db2's newest set, object for object, under db1: valid signature, id
matching its path, only its predecessor missing (as in any offsite copy). Before, it
became db1's "latest" and db2's data were restored as db1's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.cli import main
from engine import selection
from engine.backup import copy_set
from engine.errors import ChainBroken
from engine.manifest import MANIFEST_NAME, Manifest
from engine.repository import S3Repository
from engine.signing import RepositoryTrust
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]


def _bucket(s3_server: SeaweedFS, hint: str) -> str:
    name = bucket_name("origin-" + hint)
    client: Any = s3_server.client()
    client.create_bucket(Bucket=name)
    return name


def _write(repo: S3Repository, payload: bytes) -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return writer.commit([], {}, {})


def _plant(source: S3Repository, target: S3Repository, backup_id: str) -> None:
    """Every object of the set, copied verbatim from one prefix to the other (what a bucket writer can do)."""
    listed = source.client.list_objects_v2(Bucket=source.bucket, Prefix=source.key(backup_id, ""))["Contents"]
    for obj in listed:
        rel = obj["Key"].split(f"/{backup_id}/", 1)[1]
        target.client.copy_object(
            Bucket=target.bucket,
            Key=target.key(backup_id, rel),
            CopySource={"Bucket": source.bucket, "Key": obj["Key"]},
        )


def _content(repo: S3Repository, manifest: Manifest) -> bytes:
    import zstandard

    with repo.open_stored(manifest, manifest.artifacts[0]) as body:
        return bytes(zstandard.ZstdDecompressor().stream_reader(body).read())


@pytest.fixture
def pair(s3_server: SeaweedFS, request: pytest.FixtureRequest) -> dict[str, Any]:
    bucket = _bucket(s3_server, request.node.name)
    trust = RepositoryTrust.generated()
    db1 = S3Repository(bucket, "db1", s3_server.endpoint, trust=trust)
    db2 = S3Repository(bucket, "db2", s3_server.endpoint, trust=trust)
    own = [_write(db1, b"db1 v1"), _write(db1, b"db1 v2")]
    other = [_write(db2, f"db2 v{i}".encode()) for i in range(4)]
    return {"bucket": bucket, "trust": trust, "db1": db1, "db2": db2, "own": own, "other": other}


def test_a_set_planted_from_another_prefix_is_foreign_and_never_latest(pair: dict[str, Any]) -> None:
    db1, db2, own, foreign = pair["db1"], pair["db2"], pair["own"], pair["other"][-1]
    assert selection.latest(db1).manifest.id == own[-1].id and db1.chain_audit().findings == []  # the quiet control
    _plant(db2, db1, foreign.id)

    found = db1.chain_audit()
    assert [(f.backup_id, f.kind) for f in found.findings] == [(foreign.id, "foreign")]
    with pytest.raises(ChainBroken, match=f"{foreign.id}: it was written in repository .*, not in this one"):
        selection.latest(db1)
    with pytest.raises(ChainBroken, match="not in this one"):
        selection.by_id(db1, foreign.id)
    chosen = selection.by_id(db1, own[-1].id)  # named, not a lock-out
    assert _content(db1, chosen.manifest) == b"db1 v2"
    # A backup goes on in db1's own chain and under db1's own identity.
    newest = _write(db1, b"db1 v3")
    assert newest.previous_id == own[-1].id and newest.repository_id == own[-1].repository_id


@pytest.mark.parametrize("record", ["deleted", "copied from db2"])
def test_a_replaced_or_deleted_identity_record_does_not_let_the_planted_set_in(
    pair: dict[str, Any], record: str
) -> None:
    db1, db2, foreign = pair["db1"], pair["db2"], pair["other"][-1]
    _plant(db2, db1, foreign.id)
    if record == "deleted":
        db1.client.delete_object(Bucket=db1.bucket, Key="db1/repository.json")
    else:
        for suffix in (".json", ".sig"):
            db1.client.copy_object(
                Bucket=db1.bucket, Key=f"db1/repository{suffix}", CopySource={"Bucket": db1.bucket, "Key": f"db2/repository{suffix}"}
            )
    found = db1.chain_audit()
    assert found.ambiguous and {f.kind for f in found.findings} == {"foreign"}
    assert {f.backup_id for f in found.findings} == {m.id for m in pair["own"]} | {foreign.id}
    with pytest.raises(ChainBroken, match="no valid identity record"):
        selection.latest(db1)
    with pytest.raises(ChainBroken):
        selection.by_id(db1, foreign.id)
    with pytest.raises(ChainBroken, match="holds sets written in several repositories"):
        _write(db1, b"db1 v3")


@pytest.mark.parametrize("record", ["deleted", "copied from db2"])
def test_a_healthy_prefix_whose_identity_record_is_gone_keeps_working(pair: dict[str, Any], record: str) -> None:
    db1, own = pair["db1"], pair["own"]
    if record == "deleted":
        db1.client.delete_object(Bucket=db1.bucket, Key="db1/repository.json")
    else:
        db1.client.copy_object(
            Bucket=db1.bucket, Key="db1/repository.json", CopySource={"Bucket": db1.bucket, "Key": "db2/repository.json"}
        )
    assert db1.chain_audit().findings == [] and selection.latest(db1).manifest.id == own[-1].id
    newest = _write(db1, b"db1 v3")
    assert newest.repository_id == own[0].repository_id and db1.recorded_identity() == own[0].repository_id


def test_an_offsite_copy_keeps_the_origin_and_refuses_another_repositorys_set(
    s3_server: SeaweedFS, pair: dict[str, Any]
) -> None:
    """The quiet control: the offsite prefix (here another bucket) holds db1's sets with a gap, and restores."""
    db1, db2, own = pair["db1"], pair["db2"], pair["own"]
    offsite = S3Repository(_bucket(s3_server, "offsite"), "db1-copy", s3_server.endpoint, trust=pair["trust"])
    newest = _write(db1, b"db1 v3")
    copy_set(db1, offsite, db1.get(own[1].id))  # own[0] never copied: the copy's chain starts later
    copy_set(db1, offsite, db1.get(newest.id))
    assert offsite.recorded_identity() == newest.repository_id
    assert offsite.chain_audit().findings == []
    chosen = selection.latest(offsite)
    assert chosen.manifest.id == newest.id and _content(offsite, chosen.manifest) == b"db1 v3"
    with pytest.raises(ChainBroken, match="holds the sets of repository"):
        copy_set(db2, offsite, db2.get(pair["other"][-1].id))
    assert offsite.stored_manifest_bytes(pair["other"][-1].id) is None


def test_sets_without_an_origin_are_accepted_with_a_note(s3_server: SeaweedFS) -> None:
    """A set an older drproof wrote (no repository_id, signed) is used, and its origin said to be unproven."""
    bucket = _bucket(s3_server, "legacy")
    trust = RepositoryTrust.generated()
    repo = S3Repository(bucket, "old", s3_server.endpoint, trust=trust)
    first = _write(repo, b"v1")
    body = json.loads(repo.stored_manifest_bytes(first.id) or b"")
    del body["repository_id"]
    data = (json.dumps(body, indent=2) + "\n").encode()
    assert trust.signer is not None
    repo.put(first.id, MANIFEST_NAME, data)
    repo.put(first.id, "manifest.sig", trust.signer.sign(data))
    for suffix in (".json", ".sig"):
        repo.client.delete_object(Bucket=bucket, Key=f"old/repository{suffix}")

    found = repo.chain_audit()
    assert [(f.backup_id, f.kind) for f in found.findings] == [(first.id, "unproven-origin")]
    chosen = selection.latest(repo)
    assert chosen.manifest.id == first.id and chosen.manifest.repository_id is None
    assert _content(repo, chosen.manifest) == b"v1" and repo.verify(first.id).ok


def test_the_cli_refuses_the_planted_set_and_restores_from_the_offsite_copy(
    s3_server: SeaweedFS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recovery list/verify/restore` on db1 with db2's set planted: exit 1, live data untouched; offsite green."""

    def cli(*args: str, config: Path) -> tuple[int, str, str]:
        code = main([*args, "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    bucket = _bucket(s3_server, "cli")
    assert main(["keys", "init", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")]) == 0
    capsys.readouterr()
    configs = {}
    for name in ("db1", "db2"):
        (tmp_path / name).mkdir()
        body = {
            "repository": {"type": "s3", "bucket": bucket, "prefix": name, "endpoint_url": s3_server.endpoint},
            "signing": {"key_file": str(tmp_path / "k.pem")},
            "components": {"files": {"kind": "volumes", "path": str(tmp_path / name)}},
        }
        if name == "db1":
            body["offsite"] = {"type": "s3", "bucket": bucket, "prefix": "db1-offsite", "endpoint_url": s3_server.endpoint}
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(body))
    (tmp_path / "sandbox").mkdir()
    to = tmp_path / "sandbox.yaml"
    to.write_text(yaml.safe_dump({"components": {"files": {"kind": "volumes", "path": str(tmp_path / "sandbox")}}}))
    ids: dict[str, list[str]] = {"db1": [], "db2": []}
    for name, count in (("db1", 2), ("db2", 4)):
        for i in range(count):
            (tmp_path / name / "a.txt").write_text(f"{name} v{i}")
            code, out, err = cli("backup", "--json", config=configs[name])
            assert code == 0, err
            ids[name].append(json.loads(out)["id"])
    (tmp_path / "db1" / "a.txt").write_text("db1 live")
    trust = RepositoryTrust.generated()  # only for the client: the planting needs no key
    db1 = S3Repository(bucket, "db1", s3_server.endpoint, trust=trust)
    db2 = S3Repository(bucket, "db2", s3_server.endpoint, trust=trust)
    foreign = ids["db2"][-1]
    _plant(db2, db1, foreign)

    code, out, _ = cli("recovery", "list", "--json", config=configs["db1"])
    assert code == 1 and [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(foreign, "foreign")]
    code, _, err = cli("recovery", "verify", config=configs["db1"])
    assert code == 1 and foreign in err and "Traceback" not in err
    code, _, err = cli("recovery", "restore", "--in-place", "--yes", config=configs["db1"])
    assert code == 1 and f"{foreign}: it was written in repository" in err
    assert (tmp_path / "db1" / "a.txt").read_text() == "db1 live"

    # The offsite copy (each backup made one) restores db1's newest set.
    code, out, err = cli("recovery", "list", "--offsite", "--json", config=configs["db1"])
    assert code == 0 and json.loads(out)["findings"] == [], err
    code, out, err = cli("recovery", "restore", "--offsite", "--to", str(to), "--json", config=configs["db1"])
    assert code == 0 and json.loads(out)["backup"] == ids["db1"][-1], err
    assert (tmp_path / "sandbox" / "a.txt").read_text() == "db1 v1"
