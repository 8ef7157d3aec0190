"""This host's own record of each repository's newest set (engine/witness.py).

A writer of the repository who deletes the newest set whole, deletes or rolls back the head
record and empties the audit log kept in the repository left a chain that ended one set
earlier: "latest" restored the older set in place, exit 0. The host that made (or read)
the newer set remembers it, out of that writer's reach. Each attack is made on a real
repository through the CLI; the healthy paths beside it stay quiet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.cli import main
from engine import witness


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A signed repository configuration over ``live``, and this host's state directory."""
    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path / "backup-host-state"))
    code = _cli(["keys", "init", "--private", str(tmp_path / "repo.key"), "--public", str(tmp_path / "repo.pub")], capsys)
    assert code[0] == 0
    (tmp_path / "live").mkdir()
    body = {
        "repository": {"path": "repo"},
        "signing": {"key_file": "repo.key", "public_keys": ["repo.pub"]},
        "components": {"files": {"kind": "volumes", "path": "live"}},
    }
    (tmp_path / "prod.yaml").write_text(yaml.safe_dump(body))
    return {"tmp": tmp_path, "config": str(tmp_path / "prod.yaml"), "repo": tmp_path / "repo"}


def _backup(site: dict[str, Any], version: int, capsys: pytest.CaptureFixture[str]) -> str:
    (site["tmp"] / "live" / "state.txt").write_text(f"version {version}\n")
    code, out, err = _cli(["backup", "--config", site["config"]], capsys)
    assert code == 0, err
    return out.strip().splitlines()[-1]


def _live(site: dict[str, Any]) -> str:
    return (site["tmp"] / "live" / "state.txt").read_text()


def _restore_latest(site: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, _, err = _cli(["recovery", "restore", "--config", site["config"], "--in-place", "--yes"], capsys)
    return code, err


def _roll_back(site: dict[str, Any], newest: str, old_head: tuple[bytes, bytes] | None = None) -> None:
    """What a writer of the storage does: the newest set, the head record and the audit log in the repository."""
    repo: Path = site["repo"]
    shutil.rmtree(repo / "sets" / newest)
    (repo / "head.sig").unlink(missing_ok=True)
    (repo / "head.json").unlink()
    if old_head is not None:  # an older signed head record they kept
        (repo / "head.json").write_bytes(old_head[0])
        (repo / "head.sig").write_bytes(old_head[1])
    (repo / "audit.jsonl").write_text("")


def _refused(site: dict[str, Any], gone: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _restore_latest(site, capsys)
    assert code == 1 and "refusing to choose the latest backup" in err, err
    assert gone in err and "this host's own record" in err
    assert _live(site) == "version 2\n"  # live data exactly as it was
    code, out, _ = _cli(["recovery", "list", "--config", site["config"], "--json"], capsys)
    assert code == 1 and [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(gone, "missing")]


def test_the_newest_set_deleted_with_the_head_record_and_the_audit_log_is_named(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [_backup(site, v, capsys) for v in range(3)]
    _roll_back(site, ids[-1])
    _refused(site, ids[-1], capsys)
    code, _, err = _cli(["recovery", "restore", "--config", site["config"], "--in-place", "--yes", "--id", ids[1]], capsys)
    assert code == 0, err  # named, not a lock-out: the older set restores when asked for by id
    assert _live(site) == "version 1\n"


def test_an_older_signed_head_record_put_back_is_seen(site: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ids = [_backup(site, v, capsys) for v in range(2)]
    kept = ((site["repo"] / "head.json").read_bytes(), (site["repo"] / "head.sig").read_bytes())
    ids.append(_backup(site, 2, capsys))
    _roll_back(site, ids[-1], old_head=kept)
    _refused(site, ids[-1], capsys)


def test_a_restore_host_learns_the_newest_set_by_reading_the_repository(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [_backup(site, v, capsys) for v in range(3)]
    monkeypatch.setenv(witness.STATE_ENV, str(site["tmp"] / "restore-host-state"))
    assert _cli(["recovery", "list", "--config", site["config"]], capsys)[0] == 0  # a routine look, nothing amiss
    _roll_back(site, ids[-1])
    _refused(site, ids[-1], capsys)


def test_a_repository_started_again_at_the_same_place_is_not_held_to_the_old_history(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for v in range(3):
        _backup(site, v, capsys)
    shutil.rmtree(site["repo"])  # deliberately emptied: its next set names a new identity
    _backup(site, 7, capsys)
    (site["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(site, capsys)
    assert code == 0, err
    assert _live(site) == "version 7\n"


def test_healthy_backups_prune_and_restore_stay_quiet(site: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    body = yaml.safe_load(Path(site["config"]).read_text()) | {"retention": {"keep_last": 1}}
    Path(site["config"]).write_text(yaml.safe_dump(body))
    for v in range(3):
        _backup(site, v, capsys)  # retention deletes the older sets after each backup
    code, out, err = _cli(["recovery", "list", "--config", site["config"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == [], err
    (site["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(site, capsys)
    assert code == 0, err
    assert _live(site) == "version 2\n"


def test_a_host_that_cannot_keep_its_record_still_backs_up(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = site["tmp"] / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv(witness.STATE_ENV, str(blocker))  # mkdir under a file fails
    _backup(site, 0, capsys)
    code, err = _restore_latest(site, capsys)
    assert code == 0, err


def test_the_record_never_moves_backwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path))
    newer, older = b'{"sequence": 5}', b'{"sequence": 4}'
    witness.remember("/r", "id-1", newer, None, 5)
    witness.remember("/r", "id-1", older, None, 4)
    held = witness.recall("/r")
    assert held is not None and held.record == newer
    witness.remember("/r", "id-2", older, None, 4)  # another identity at the same place replaces it
    held = witness.recall("/r")
    assert held is not None and (held.repository_id, held.record) == ("id-2", older)
    assert witness.recall("/elsewhere") is None


def test_an_empty_state_setting_keeps_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(witness.STATE_ENV, "")
    witness.remember("/r", "id-1", b'{"sequence": 1}', None, 1)
    assert witness.state_dir() is None and witness.recall("/r") is None


def test_a_repository_that_keeps_no_witness_writes_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drill's throwaway repository (drills/runner.py) leaves nothing in the host's state directory."""
    from engine.manifest import ComponentRecord
    from engine.repository.local import LocalRepository
    from engine.signing import RepositoryTrust

    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path / "state"))
    for keeps in (False, True):
        repo = LocalRepository(tmp_path / f"repo-{keeps}", trust=RepositoryTrust.generated())
        repo.keeps_witness = keeps
        writer = repo.begin("t")
        with writer.artifact("files", "files.tar") as sink:
            sink.write(b"data")
        writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})
        repo.chain_audit()
        assert (witness.recall(str(repo.root.resolve())) is not None) is keeps


@pytest.mark.parametrize("head_record", ["kept", "deleted", "none kept anywhere"])
def test_an_older_signed_manifest_copied_over_the_newest_sets_is_seen(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, head_record: str
) -> None:
    """The newest set's manifest replaced by an older set's, validly signed: "latest" was the set before it, exit 0.

    Only an ``altered`` finding was left, which did not count as a doubt (the copied
    manifest's signed place is older), and its mere presence stood for the set the head
    record (and this host's record) named.
    """
    if head_record == "none kept anywhere":
        monkeypatch.setenv(witness.STATE_ENV, "")
    ids = [_backup(site, v, capsys) for v in range(3)]
    repo: Path = site["repo"]
    for name in ("manifest.json", "manifest.sig"):
        shutil.copy(repo / "sets" / ids[0] / name, repo / "sets" / ids[-1] / name)
    if head_record != "kept":
        (repo / "head.json").unlink()
        (repo / "head.sig").unlink()
    code, err = _restore_latest(site, capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and ids[-1] in err, err
    assert _live(site) == "version 2\n"  # live data exactly as it was


def test_a_refusal_names_this_hosts_record_and_deleting_it_accepts_a_rollback_made_on_purpose(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator who puts the repository back from a snapshot on purpose is told which file to delete, and it works."""
    for v in range(2):
        _backup(site, v, capsys)
    shutil.copytree(site["repo"], site["tmp"] / "snapshot")
    _backup(site, 2, capsys)
    shutil.rmtree(site["repo"])
    shutil.copytree(site["tmp"] / "snapshot", site["repo"])  # the repository rolled back on purpose
    code, err = _restore_latest(site, capsys)
    [record] = (site["tmp"] / "backup-host-state" / "witness").glob("*.json")
    assert code == 1 and f"delete that record, {record}, before the next backup" in err, err
    record.unlink()
    _backup(site, 3, capsys)
    code, out, err = _cli(["recovery", "list", "--config", site["config"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == [], err  # no lasting scar in the chain
    (site["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(site, capsys)
    assert code == 0 and _live(site) == "version 3\n", err


def _legacy_repository(tmp_path: Path) -> tuple[Any, list[str]]:
    """A signed repository whose two sets an older drproof wrote (they name no repository; no identity record)."""
    import hashlib

    from engine.repository.local import MANIFEST_NAME, SIGNATURE_NAME, LocalRepository
    from engine.signing import RepositoryTrust

    trust = RepositoryTrust.generated()
    repo = LocalRepository(tmp_path / "repo", trust=trust)
    ids = [_api_backup(repo, payload) for payload in (b"v1", b"v2")]
    previous_sha, signer = None, trust.signer
    assert signer is not None
    for backup_id in ids:
        path = repo.root / "sets" / backup_id / MANIFEST_NAME
        body = json.loads(path.read_text())
        del body["repository_id"]
        body["previous_sha256"] = previous_sha or body["previous_sha256"]
        data = (json.dumps(body, indent=2) + "\n").encode()
        path.write_bytes(data)
        (path.parent / SIGNATURE_NAME).write_bytes(signer.sign(data))
        previous_sha = hashlib.sha256(data).hexdigest()
    for name in ("repository.json", "repository.sig", "head.json", "head.sig"):
        (repo.root / name).unlink()
    return repo, ids


def _api_backup(repo: Any, payload: bytes) -> str:
    writer = repo.begin("t")
    with writer.artifact("comp", "data") as fh:
        fh.write(payload)
    return str(writer.commit([], {}, {}).id)


def test_deleting_every_set_that_names_the_repository_does_not_hide_the_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade, the newer sets (which name the repository) deleted with its identity and head records.

    Only sets an older drproof wrote were left, naming no repository: the chain had no
    identity to match this host's record against, and "latest" was the pre-upgrade set.
    """
    from engine import selection
    from engine.errors import ChainBroken

    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path / "state"))
    repo, ids = _legacy_repository(tmp_path)
    newer = [_api_backup(repo, b"v3"), _api_backup(repo, b"v4")]
    assert selection.latest(repo).manifest.id == newer[-1]  # control: the upgraded repository is healthy
    for backup_id in newer:
        shutil.rmtree(repo.root / "sets" / backup_id)
    for name in ("repository.json", "repository.sig", "head.json", "head.sig"):
        (repo.root / name).unlink()
    with pytest.raises(ChainBroken, match=f"{newer[-1]}: this host's own record"):
        selection.latest(repo)
    (repo.root / "sets").mkdir(exist_ok=True)
    for backup_id in ids:
        shutil.rmtree(repo.root / "sets" / backup_id)  # emptied whole: started again, not held to the old history
    assert repo.chain_audit().findings == []


def test_two_processes_writing_one_record_never_move_it_backwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``recovery list`` that read place 5 writes while a backup writes place 6: the record must end at 6.

    Each write read the record, compared, and wrote it: the slower writer put the older
    place back over the newer one, so a rollback to it went unseen.
    """
    import threading

    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path))
    real_write = witness._write_atomically
    reader_may_write = threading.Event()

    def slow_write(path: Path, text: str) -> None:
        if '"sequence": 5' in text:
            reader_may_write.wait(5)  # the reader is between its comparison and its write
        real_write(path, text)

    monkeypatch.setattr(witness, "_write_atomically", slow_write)
    reader = threading.Thread(target=witness.remember, args=("/r", "id-1", b'{"sequence": 5}', None, 5))
    reader.start()
    backup = threading.Thread(target=witness.remember, args=("/r", "id-1", b'{"sequence": 6}', None, 6))
    backup.start()
    backup.join(0.5)
    reader_may_write.set()
    reader.join(10)
    backup.join(10)
    held = witness.recall("/r")
    assert held is not None and held.record == b'{"sequence": 6}'


def test_a_record_that_is_not_a_regular_file_is_ignored_without_waiting(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO (or a directory) where the record belongs: read as no record, never waited on; backups go on."""
    import os
    import threading

    _backup(site, 0, capsys)
    [record] = (site["tmp"] / "backup-host-state" / "witness").glob("*.json")
    record.unlink()
    os.mkfifo(record)
    location = json.loads((site["repo"] / "head.json").read_text())["location"]
    looking = threading.Thread(target=witness.recall, args=(location,), daemon=True)
    looking.start()
    looking.join(10)
    assert not looking.is_alive(), "reading this host's record waited on a FIFO"
    assert _cli(["recovery", "list", "--config", site["config"]], capsys)[0] == 0
    _backup(site, 1, capsys)  # a rename puts the record back in its place
    code, err = _restore_latest(site, capsys)
    assert code == 0 and _live(site) == "version 1\n", err


def test_another_repository_swapped_in_for_a_while_does_not_make_this_host_forget(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer swaps in another repository signed with the same key, a backup runs into it, then they put this
    one back without its newest set.

    The host kept one record per place: the other repository's replaced this one's, so the
    rollback went unseen and "latest" restored the older set, exit 0.
    """
    ids = [_backup(site, v, capsys) for v in range(3)]
    other = yaml.safe_load(Path(site["config"]).read_text())
    other["repository"] = {"path": "other-repo"}
    (site["tmp"] / "other.yaml").write_text(yaml.safe_dump(other))
    assert _cli(["backup", "--config", str(site["tmp"] / "other.yaml")], capsys)[0] == 0
    repo: Path = site["repo"]
    repo.rename(site["tmp"] / "kept-aside")
    (site["tmp"] / "other-repo").rename(repo)  # swapped in
    _backup(site, 3, capsys)  # the backup host writes into it (unpinned), and reads it
    shutil.rmtree(repo)
    (site["tmp"] / "kept-aside").rename(repo)  # put back, without its newest set
    (site["tmp"] / "live" / "state.txt").write_text("version 2\n")
    _roll_back(site, ids[-1])
    _refused(site, ids[-1], capsys)


def test_records_of_several_repositories_at_one_place_are_kept_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(witness.STATE_ENV, str(tmp_path))
    witness.remember("/r", "id-0", b'{"sequence": 7}', None, 7)
    for n in range(1, witness.MAX_IDENTITIES):
        witness.remember("/r", f"id-{n}", b'{"sequence": 1}', None, 1)
    witness.remember("/r", "id-0", b'{"sequence": 3}', None, 3)  # never backwards
    held = {w.repository_id: w.record for w in witness.recall_all("/r")}
    assert len(held) == witness.MAX_IDENTITIES and held["id-0"] == b'{"sequence": 7}'
    witness.remember("/r", "id-new", b'{"sequence": 1}', None, 1)
    held = {w.repository_id: w.record for w in witness.recall_all("/r")}
    assert len(held) == witness.MAX_IDENTITIES and "id-0" not in held  # the oldest written is forgotten first
    path = witness.file_for("/r")
    assert path is not None and path.stat().st_size < witness.MAX_WITNESS_BYTES
    body = json.loads(path.read_text())
    del body["others"]  # as the first drproof to keep a record wrote it
    path.write_text(json.dumps(body))
    assert [w.repository_id for w in witness.recall_all("/r")] == ["id-new"]
