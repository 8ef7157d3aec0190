"""A set copied in from another repository signed with the same key (review finding 8), local repositories.

Two repositories of one backup host (``repo`` and ``repo2``) share one signing key. A
writer of the repositories copies ``repo2``'s newest set, byte for byte, into ``repo``:
its signature is valid, its id matches its directory, and its only flaw in the chain is
a missing predecessor, which offsite copies legitimately have too. What tells it apart
is the repository identity its signed manifest names. Before: ``recovery restore``
chose it as ``repo``'s latest and restored ``repo2``'s data, exit 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.cli import main
from engine import selection
from engine.backup import copy_set
from engine.errors import ChainBroken
from engine.manifest import MANIFEST_NAME
from engine.repository import LocalRepository
from engine.signing import SIGNATURE_NAME, RepositoryTrust


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _config(tmp: Path, name: str, repo: str, live: str, offsite: str | None = None) -> str:
    body: dict[str, Any] = {
        "repository": {"path": repo},
        "signing": {"key_file": "repo.key", "public_keys": ["repo.pub"]},
        "components": {"files": {"kind": "volumes", "path": live}},
    }
    if offsite is not None:
        body["offsite"] = {"path": offsite}
    (tmp / name).write_text(yaml.safe_dump(body))
    return str(tmp / name)


def _backups(config: str, live: Path, label: str, count: int, capsys: pytest.CaptureFixture[str]) -> list[str]:
    ids = []
    for i in range(count):
        (live / "state.txt").write_text(f"{label} version {i}\n")
        code, out, err = _cli(["backup", "--config", config], capsys)
        assert code == 0, err
        ids.append(out.strip().splitlines()[-1])
    return ids


@pytest.fixture
def two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``repo`` (3 sets, with an offsite copy) and ``repo2`` (4 sets), one key; live data changed since."""
    assert _cli(["keys", "init", "--private", str(tmp_path / "repo.key"), "--public", str(tmp_path / "repo.pub")], capsys)[0] == 0
    for d in ("live", "live2", "sandbox"):
        (tmp_path / d).mkdir()
    prod = _config(tmp_path, "prod.yaml", "repo", "live", offsite="offsite")
    other = _config(tmp_path, "other.yaml", "repo2", "live2")
    (tmp_path / "sandbox.yaml").write_text(
        yaml.safe_dump({"components": {"files": {"kind": "volumes", "path": "sandbox"}}})
    )
    ids = _backups(prod, tmp_path / "live", "db1", 3, capsys)
    ids2 = _backups(other, tmp_path / "live2", "db2", 4, capsys)
    (tmp_path / "live" / "state.txt").write_text("db1 live, after the last backup\n")
    return {
        "tmp": tmp_path,
        "prod": prod,
        "other": other,
        "to": str(tmp_path / "sandbox.yaml"),
        "ids": ids,
        "ids2": ids2,
        "repo": tmp_path / "repo",
        "repo2": tmp_path / "repo2",
    }


def _plant(two: dict[str, Any]) -> str:
    """What a writer of both repositories does: repo2's newest set, copied verbatim into repo."""
    foreign = two["ids2"][-1]
    shutil.copytree(two["repo2"] / "sets" / foreign, two["repo"] / "sets" / foreign)
    return foreign


def _trust(two: dict[str, Any]) -> RepositoryTrust:
    tmp = two["tmp"]
    return RepositoryTrust.from_settings(
        key_file=tmp / "repo.key", key_env=None, passphrase_env=None, public_keys=[tmp / "repo.pub"]
    )


def test_a_set_planted_from_another_repository_is_refused_by_every_command(
    two: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    foreign, own = _plant(two), two["ids"][-1]
    live = two["tmp"] / "live" / "state.txt"

    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--json"], capsys)
    body = json.loads(out)
    assert code == 1 and [(f["backup"], f["kind"]) for f in body["findings"]] == [(foreign, "foreign")]
    identity = json.loads((two["repo"] / "repository.json").read_text())["repository_id"]
    assert body["repository_id"] == identity and {b["repository_id"] for b in body["backups"]} == {identity}
    code, _, err = _cli(["recovery", "list", "--config", two["prod"]], capsys)
    assert code == 1 and f"FOREIGN {foreign}: it was written in repository" in err

    code, _, err = _cli(["recovery", "verify", "--config", two["prod"]], capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and f"vouches for is {own}" in err
    code, _, err = _cli(["recovery", "verify", "--config", two["prod"], "--id", foreign], capsys)
    assert code == 1 and f"backup {foreign} cannot be used: it was written in repository" in err

    for target in (["--to", two["to"]], ["--in-place", "--yes"]):
        code, _, err = _cli(["recovery", "restore", "--config", two["prod"], *target], capsys)
        assert code == 1 and "refusing to choose the latest backup" in err and foreign in err
        code, _, err = _cli(["recovery", "restore", "--config", two["prod"], *target, "--id", foreign], capsys)
        assert code == 1 and "not in this one" in err
    assert list((two["tmp"] / "sandbox").iterdir()) == []
    assert live.read_text() == "db1 live, after the last backup\n"  # live data untouched
    code, _, err = _cli(["recovery", "copy", "--config", two["prod"], "--id", foreign], capsys)
    assert code == 1 and "not in this one" in err and not (two["tmp"] / "offsite" / "sets" / foreign).exists()

    # Named, not a lock-out: repo's own sets restore by id, and removing the planted set ends it.
    code, out, _ = _cli(["recovery", "restore", "--config", two["prod"], "--to", two["to"], "--id", own, "--json"], capsys)
    assert code == 0 and json.loads(out)["components"][0]["fidelity"] == "match"
    assert (two["tmp"] / "sandbox" / "state.txt").read_text() == "db1 version 2\n"
    shutil.rmtree(two["repo"] / "sets" / foreign)
    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == []


def test_the_offsite_copy_and_a_restore_from_it_stay_green(
    two: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The quiet control: an offsite repository holds the source's sets (its identity) with gaps; all fine."""
    offsite = two["tmp"] / "offsite"
    shutil.rmtree(offsite)
    code, _, err = _cli(["recovery", "copy", "--config", two["prod"], "--id", two["ids"][1]], capsys)
    assert code == 0, err
    code, _, err = _cli(["recovery", "copy", "--config", two["prod"]], capsys)  # the latest: a gap before it
    assert code == 0, err
    record = json.loads((offsite / "repository.json").read_text())
    source = json.loads((two["repo"] / "repository.json").read_text())
    assert record["repository_id"] == source["repository_id"] and record["role"] == "copy"
    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--offsite", "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == []
    code, out, _ = _cli(
        ["recovery", "restore", "--config", two["prod"], "--offsite", "--to", two["to"], "--json"], capsys
    )
    assert code == 0 and json.loads(out)["backup"] == two["ids"][-1]
    assert (two["tmp"] / "sandbox" / "state.txt").read_text() == "db1 version 2\n"
    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == []


def test_a_set_of_another_repository_is_not_copied_into_an_offsite_repository(two: dict[str, Any]) -> None:
    trust = _trust(two)
    offsite = LocalRepository(two["tmp"] / "offsite", trust=trust)
    other = LocalRepository(two["repo2"], trust=trust)
    with pytest.raises(ChainBroken, match="holds the sets of repository"):
        copy_set(other, offsite, other.get(two["ids2"][-1]))
    assert not (two["tmp"] / "offsite" / "sets" / two["ids2"][-1]).exists()


@pytest.mark.parametrize("record", ["deleted", "copied from the other repository", "forged"])
def test_what_a_writer_does_to_the_identity_record_does_not_make_a_foreign_set_latest(
    two: dict[str, Any], capsys: pytest.CaptureFixture[str], record: str
) -> None:
    """Without a record this repository can vouch for, sets of two repositories are all refused, never guessed."""
    foreign = _plant(two)
    path = two["repo"] / "repository.json"
    if record == "deleted":
        path.unlink()
    elif record == "forged":
        body = json.loads((two["repo2"] / "repository.json").read_text())
        body["location"] = json.loads(path.read_text())["location"]
        path.write_text(json.dumps(body))  # its signature no longer matches
    else:
        shutil.copy(two["repo2"] / "repository.json", path)
        shutil.copy(two["repo2"] / "repository.sig", two["repo"] / "repository.sig")

    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--json"], capsys)
    found = {(f["backup"], f["kind"]) for f in json.loads(out)["findings"]}
    assert code == 1 and found == {(i, "foreign") for i in [*two["ids"], foreign]}
    code, _, err = _cli(["recovery", "restore", "--config", two["prod"], "--in-place", "--yes"], capsys)
    assert code == 1 and "no valid identity record" in err
    code, _, err = _cli(["recovery", "restore", "--config", two["prod"], "--to", two["to"], "--id", foreign], capsys)
    assert code == 1 and list((two["tmp"] / "sandbox").iterdir()) == []
    assert (two["tmp"] / "live" / "state.txt").read_text() == "db1 live, after the last backup\n"
    code, _, err = _cli(["backup", "--config", two["prod"]], capsys)
    assert code == 1 and "holds sets written in several repositories" in err


@pytest.mark.parametrize("record", ["deleted", "copied from the other repository"])
def test_a_healthy_repository_whose_identity_record_is_gone_is_not_locked_out(
    two: dict[str, Any], capsys: pytest.CaptureFixture[str], record: str
) -> None:
    """Its sets keep the identity: everything works, and the next backup writes the record back from them."""
    path = two["repo"] / "repository.json"
    identity = json.loads(path.read_text())["repository_id"]
    if record == "deleted":
        path.unlink()
    else:
        shutil.copy(two["repo2"] / "repository.json", path)
    code, out, _ = _cli(["recovery", "list", "--config", two["prod"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == []
    code, out, _ = _cli(["recovery", "restore", "--config", two["prod"], "--to", two["to"], "--json"], capsys)
    assert code == 0 and json.loads(out)["backup"] == two["ids"][-1]
    newest = _backups(two["prod"], two["tmp"] / "live", "db1", 1, capsys)[0]
    assert json.loads(path.read_text())["repository_id"] == identity
    assert json.loads((two["repo"] / "sets" / newest / MANIFEST_NAME).read_text())["repository_id"] == identity


def test_sets_written_before_origins_were_kept_are_accepted_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older drproof's signed sets name no repository: used as before, and said to be of unproven origin."""
    trust = RepositoryTrust.generated()
    repo = LocalRepository(tmp_path / "repo", trust=trust)
    ids = []
    for payload in (b"v1", b"v2"):
        writer = repo.begin("t")
        with writer.artifact("comp", "data") as fh:
            fh.write(payload)
        ids.append(writer.commit([], {}, {}).id)
    # What the older drproof wrote: the same sets without the field (re-signed), and no identity record.
    previous_sha = None
    assert trust.signer is not None
    for backup_id in ids:
        path = repo.root / "sets" / backup_id / MANIFEST_NAME
        body = json.loads(path.read_text())
        del body["repository_id"]
        if previous_sha is not None:
            body["previous_sha256"] = previous_sha
        data = (json.dumps(body, indent=2) + "\n").encode()
        path.write_bytes(data)
        (path.parent / SIGNATURE_NAME).write_bytes(trust.signer.sign(data))
        import hashlib

        previous_sha = hashlib.sha256(data).hexdigest()
    (repo.root / "repository.json").unlink()
    (repo.root / "repository.sig").unlink()

    found = repo.chain_audit()
    assert [(f.backup_id, f.kind) for f in found.findings] == [(ids[-1], "unproven-origin")]
    assert "2 set(s) name no repository" in found.findings[0].detail and "not proven" in found.findings[0].detail
    assert selection.latest(repo).manifest.id == ids[-1]
    assert repo.verify(ids[0]).ok
    # The next set names a new identity; the older ones keep their note, nothing is refused.
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(b"v3")
    newest = writer.commit([], {}, {})
    assert newest.repository_id is not None and newest.previous_id == ids[-1]
    found = repo.chain_audit()
    assert [f.kind for f in found.findings] == ["unproven-origin"] and selection.latest(repo).manifest.id == newest.id


def test_an_older_set_of_another_repository_naming_none_is_foreign_after_this_ones_first_named_set(
    two: dict[str, Any],
) -> None:
    """A set of repo2 from before sets named their repository, planted at a later place than repo's named sets."""
    trust = _trust(two)
    assert trust.signer is not None
    foreign = two["ids2"][-1]
    path = two["repo2"] / "sets" / foreign / MANIFEST_NAME
    body = json.loads(path.read_text())
    del body["repository_id"]
    data = (json.dumps(body, indent=2) + "\n").encode()
    path.write_bytes(data)
    (path.parent / SIGNATURE_NAME).write_bytes(trust.signer.sign(data))  # as an older drproof signed it
    _plant(two)
    repo = LocalRepository(two["repo"], trust=trust)
    found = repo.chain_audit()
    assert [(f.backup_id, f.kind) for f in found.findings] == [(foreign, "foreign")]
    assert "names no repository, yet claims place 4" in found.findings[0].detail
    with pytest.raises(ChainBroken, match="names no repository"):
        selection.latest(repo)
