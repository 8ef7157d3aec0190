"""What a writer of a signed repository (without the private key) can forge, and what refuses it.

Review "an unforgeable repository": each attack is made on a real repository (the engine's
local backend, or ``drproof backup`` through the CLI), and the detector must name it; a
healthy repository next to it stays quiet.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drills.cli import main
from engine import retention, selection
from engine.backup import copy_set
from engine.manifest import VERIFIED_NAME, VERIFIED_SIGNATURE, ComponentRecord, Manifest
from engine.repository.base import Repository, VerifyReport
from engine.repository.local import LocalRepository
from engine.signing import ManifestSigner, RepositoryTrust, TrustedKeys


def _trust(key: Ed25519PrivateKey | None = None, signer: bool = True) -> RepositoryTrust:
    key = key or Ed25519PrivateKey.generate()
    return RepositoryTrust(ManifestSigner(key, "test key") if signer else None, TrustedKeys([key.public_key()]))


@contextmanager
def _repo(trust: RepositoryTrust | None) -> Iterator[LocalRepository]:
    with tempfile.TemporaryDirectory() as d:
        yield LocalRepository(Path(d) / "repo", trust=trust)


def _write(repo: Repository, payload: bytes = b"data") -> Manifest:
    writer = repo.begin("t")
    with writer.artifact("files", "files.tar") as sink:
        sink.write(payload)
    return writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})


def _verified(repo: Repository, m: Manifest) -> None:
    report = repo.verify(m.id)
    assert report.ok
    repo.record_verification(report)


def _failed(repo: Repository, m: Manifest) -> None:
    """What a verification that found the set damaged records."""
    repo.record_verification(VerifyReport(backup_id=m.id, ok=False, findings=["fingerprint parts differ"]))


# -- b. verified.json ----------------------------------------------------------------------------


def test_a_healthy_signed_repository_counts_its_own_verifications() -> None:
    with _repo(_trust()) as repo:
        sets = [_write(repo, bytes([i]) * 50) for i in range(3)]
        for m in sets:
            _verified(repo, m)
        assert repo.verified_ids() == {m.id for m in sets}
        assert (repo.root / "sets" / sets[0].id / VERIFIED_SIGNATURE).is_file()
        _failed(repo, sets[1])  # a later failed verification takes the mark away
        assert repo.verified_ids() == {sets[0].id, sets[2].id}


def test_an_unsigned_repository_keeps_taking_the_marks_word() -> None:
    with _repo(None) as repo:
        m = _write(repo)
        _verified(repo, m)
        assert repo.verified_ids() == {m.id}


def test_a_planted_verification_mark_does_not_make_a_failed_set_verified() -> None:
    with _repo(_trust()) as repo:
        good, bad = _write(repo, b"good"), _write(repo, b"bad")
        _verified(repo, good)
        _failed(repo, bad)
        mark = repo.root / "sets" / bad.id / VERIFIED_NAME
        mark.write_text(json.dumps({"ok": True, "at": "2099-01-01T00:00:00+00:00", "damaged": []}) + "\n")
        assert repo.verified_ids() == {good.id}


def test_a_sound_sets_signed_mark_copied_to_another_set_does_not_count_there() -> None:
    with _repo(_trust()) as repo:
        good, bad = _write(repo, b"good"), _write(repo, b"bad")
        _verified(repo, good)
        _failed(repo, bad)
        for name in (VERIFIED_NAME, VERIFIED_SIGNATURE):
            shutil.copyfile(repo.root / "sets" / good.id / name, repo.root / "sets" / bad.id / name)
        assert repo.verified_ids() == {good.id}


def test_a_mark_written_without_the_private_key_does_not_count_where_signatures_are_checked() -> None:
    key = Ed25519PrivateKey.generate()
    with _repo(_trust(key)) as repo:
        m = _write(repo)
        reader = LocalRepository(repo.root, trust=_trust(key, signer=False))
        _verified(reader, m)  # a restore-only host holds public keys only: its mark is unsigned
        assert reader.verified_ids() == set() and repo.verified_ids() == set()
        _verified(repo, m)
        assert reader.verified_ids() == {m.id}


# -- a. rollback: the newest set deleted whole -------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _config(tmp: Path, extra: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {
        "repository": {"path": "repo"},
        "signing": {"key_file": "repo.key", "public_keys": ["repo.pub"]},
        "components": {"files": {"kind": "volumes", "path": "live"}},
    } | (extra or {})
    (tmp / "prod.yaml").write_text(yaml.safe_dump(body))
    return str(tmp / "prod.yaml")


@pytest.fixture
def chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Three signed sets of ``live`` made by ``drproof backup``; live data equal to the newest."""
    assert _cli(["keys", "init", "--private", str(tmp_path / "repo.key"), "--public", str(tmp_path / "repo.pub")], capsys)[0] == 0
    (tmp_path / "live").mkdir()
    return {"tmp": tmp_path}


def _backups(chain: dict[str, Any], capsys: pytest.CaptureFixture[str], extra: dict[str, Any] | None = None) -> list[str]:
    tmp: Path = chain["tmp"]
    chain["config"] = config = _config(tmp, extra)
    ids = []
    for i in range(3):
        (tmp / "live" / "state.txt").write_text(f"version {i}\n")
        code, out, err = _cli(["backup", "--config", config], capsys)
        assert code == 0, err
        ids.append(out.strip().splitlines()[-1])
    return ids


def _live(chain: dict[str, Any]) -> str:
    return (chain["tmp"] / "live" / "state.txt").read_text()


def _restore_latest(chain: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, _, err = _cli(["recovery", "restore", "--config", chain["config"], "--in-place", "--yes"], capsys)
    return code, err


def _refused_as_rolled_back(
    chain: dict[str, Any], gone: str, capsys: pytest.CaptureFixture[str], by: str = "audit log"
) -> None:
    code, err = _restore_latest(chain, capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and gone in err and by in err
    assert _live(chain) == "version 2\n"  # live data exactly as it was, not rolled back to version 1
    code, out, _ = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    assert code == 1 and [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(gone, "missing")]


@pytest.fixture
def no_witness(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host keeps no record of its own (engine/witness.py): the repository's records alone."""
    monkeypatch.setenv("DRPROOF_STATE_DIR", "")


@pytest.mark.usefixtures("no_witness")
def test_the_newest_set_deleted_whole_is_not_silently_replaced_by_the_one_before(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys)
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    (chain["tmp"] / "repo" / "head.json").unlink()  # a writer who knows the head record: the audit log remains
    _refused_as_rolled_back(chain, ids[-1], capsys)
    # Named, not a lock-out: the older set restores when asked for by id.
    code, _, err = _cli(["recovery", "restore", "--config", chain["config"], "--in-place", "--yes", "--id", ids[1]], capsys)
    assert code == 0, err
    assert _live(chain) == "version 1\n"


@pytest.mark.usefixtures("no_witness")
def test_the_newest_set_moved_out_with_the_identity_record_replaced_is_refused(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys)
    repo: Path = chain["tmp"] / "repo"
    (repo / "sets" / ids[-1]).rename(chain["tmp"] / "hidden")
    (repo / "repository.json").write_text('{"format": "drproof-repository-v1"}\n')
    (repo / "head.json").unlink()
    _refused_as_rolled_back(chain, ids[-1], capsys)


@pytest.mark.usefixtures("no_witness")
def test_an_audit_log_kept_outside_the_repository_names_the_rollback(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys, {"audit_log": "host-audit/audit.jsonl"})
    assert not (chain["tmp"] / "repo" / "audit.jsonl").exists()
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    (chain["tmp"] / "repo" / "head.json").unlink()
    _refused_as_rolled_back(chain, ids[-1], capsys)


def test_the_signed_head_record_names_the_rollback_when_the_audit_log_is_cut_too(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys)
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    (chain["tmp"] / "repo" / "audit.jsonl").write_text("")  # the same writer cut the default audit log
    _refused_as_rolled_back(chain, ids[-1], capsys, by="signed head record")


def test_the_next_backup_after_a_rollback_keeps_naming_the_lost_set(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The next set follows the lost one in the chain, so its signed link names the loss after the head moves on."""
    ids = _backups(chain, capsys)
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    (chain["tmp"] / "repo" / "audit.jsonl").write_text("")
    (chain["tmp"] / "live" / "state.txt").write_text("version 3\n")
    code, out, err = _cli(["backup", "--config", chain["config"]], capsys)
    assert code == 0, err
    newest = out.strip().splitlines()[-1]
    code, out, _ = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    body = json.loads(out)
    assert code == 1 and [(f["backup"], f["kind"]) for f in body["findings"]] == [(ids[-1], "missing")]
    assert [b["sequence"] for b in body["backups"]] == [1, 2, 4]
    (chain["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(chain, capsys)  # the new set is truly the newest: restored
    assert code == 0 and _live(chain) == "version 3\n" and newest, err


def test_a_healthy_repository_pruned_and_backed_up_again_restores_latest(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys, {"retention": {"keep_last": 1}})
    (chain["tmp"] / "live" / "state.txt").write_text("changed after the last backup\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 0, err
    assert _live(chain) == "version 2\n"
    code, _, err = _cli(["recovery", "prune", "--config", chain["config"]], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (chain["tmp"] / "repo" / "sets").iterdir()) == [ids[-1]]
    code, out, err = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == [], err
    (chain["tmp"] / "live" / "state.txt").write_text("changed again\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 0, err
    assert _live(chain) == "version 2\n"


def test_a_set_deleted_from_the_middle_leaves_latest_alone(chain: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """The head is still the newest set: no rollback, so no refusal; ``list`` names the gap (the chain's link)."""
    ids = _backups(chain, capsys)
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[1])
    (chain["tmp"] / "live" / "state.txt").write_text("changed after the last backup\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 0, err
    assert _live(chain) == "version 2\n"
    code, out, _ = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    assert code == 1 and [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(ids[1], "missing")]



def test_the_parent_of_the_newest_incremental_deleted_whole_refuses_latest_and_leaves_live_data(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Held before this review: the newest set's link names the gap, and its restore refuses before touching anything."""
    ids = _backups(chain, capsys)
    (chain["tmp"] / "live" / "state.txt").write_text("version 3\n")
    code, out, err = _cli(["backup", "--config", chain["config"], "--type", "incremental"], capsys)
    assert code == 0, err
    newest = out.strip().splitlines()[-1]
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])  # the incremental's parent, and its chain predecessor
    (chain["tmp"] / "live" / "state.txt").write_text("live now\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 1 and f"'files' is incremental on {ids[-1]}, which is gone" in err and newest in err
    assert _live(chain) == "live now\n"
    code, out, _ = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    assert code == 1 and [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(ids[-1], "missing")]



# -- d. what held before this review (kept as regression tests) -------------------------------


def _swap_signatures(sets: Path, ids: list[str]) -> None:
    a, b = sets / ids[-1] / "manifest.sig", sets / ids[-2] / "manifest.sig"
    first = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(first)


def _replay_under_a_newer_name(sets: Path, ids: list[str]) -> None:
    shutil.copytree(sets / ids[0], sets / "29990101T000000Z-aaaaaa")


def _symlink_newest_outside(sets: Path, ids: list[str]) -> None:
    outside = sets.parent.parent / "outside"
    shutil.copytree(sets / ids[0], outside)
    shutil.rmtree(sets / ids[-1])
    (sets / ids[-1]).symlink_to(outside)


@pytest.mark.parametrize("attack", [_swap_signatures, _replay_under_a_newer_name, _symlink_newest_outside])
def test_forged_sets_never_become_latest_nor_restore(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str], attack: Any
) -> None:
    ids = _backups(chain, capsys)
    attack(chain["tmp"] / "repo" / "sets", ids)
    (chain["tmp"] / "live" / "state.txt").write_text("live now\n")
    code, err = _restore_latest(chain, capsys)
    assert _live(chain) in ("live now\n", "version 2\n"), err  # never an older set's content
    if code == 0:  # the forgery is a set of its own, never the newest: the true newest restored
        assert attack is _replay_under_a_newer_name and _live(chain) == "version 2\n"
    else:
        assert "refusing to choose the latest backup" in err
    code, _, _ = _cli(["recovery", "list", "--config", chain["config"]], capsys)
    assert code == 1


# -- c. a pinned repository identity -----------------------------------------------------------

PIN = "0123456789abcdef0123456789abcdef"


def _identity(repo: Path) -> str:
    return str(json.loads((repo / "repository.json").read_text())["repository_id"])


def _pin(chain: dict[str, Any], repository_id: str, path: str = "repo") -> None:
    doc = yaml.safe_load(Path(chain["config"]).read_text())
    doc["repository"] = {"path": path, "repository_id": repository_id}
    Path(chain["config"]).write_text(yaml.safe_dump(doc))


def test_an_empty_repository_takes_the_pinned_identity_and_stays_green(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys, {"repository": {"path": "repo", "repository_id": PIN}})
    assert _identity(chain["tmp"] / "repo") == PIN
    code, out, err = _cli(["recovery", "list", "--config", chain["config"], "--json"], capsys)
    body = json.loads(out)
    assert code == 0 and body["findings"] == [] and body["repository_id"] == PIN, err
    assert {b["repository_id"] for b in body["backups"]} == {PIN} and len(body["backups"]) == len(ids)
    (chain["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 0 and _live(chain) == "version 2\n", err


def test_pinning_the_identity_a_repository_already_has_keeps_it_green(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _backups(chain, capsys)
    _pin(chain, _identity(chain["tmp"] / "repo"))
    (chain["tmp"] / "live" / "state.txt").write_text("changed\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 0 and _live(chain) == "version 2\n", err
    code, _, err = _cli(["backup", "--config", chain["config"]], capsys)
    assert code == 0, err


def test_a_pinned_configuration_pointed_at_another_repository_is_refused_from_the_first_use(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Another repository signed with the same key (its sets, its identity record) is never read as this one."""
    _backups(chain, capsys)  # "repo": another repository of this host, same key
    other = _identity(chain["tmp"] / "repo")
    _pin(chain, PIN)
    (chain["tmp"] / "live" / "state.txt").write_text("live, not to be touched\n")
    code, err = _restore_latest(chain, capsys)
    assert code == 1 and f"is not repository {PIN}" in err and other in err
    assert _live(chain) == "live, not to be touched\n"
    for argv in (["recovery", "list"], ["recovery", "verify"], ["backup"]):
        code, _, err = _cli([*argv, "--config", chain["config"]], capsys)
        assert code == 1 and f"is not repository {PIN}" in err, argv
    assert len(list((chain["tmp"] / "repo" / "sets").iterdir())) == 3  # the backup published nothing


def test_an_identity_record_of_another_repository_refuses_even_an_empty_one(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _backups(chain, capsys)
    other = _identity(chain["tmp"] / "repo")
    fresh = chain["tmp"] / "fresh"
    fresh.mkdir()
    for name in ("repository.json", "repository.sig"):  # what a writer of both plants
        shutil.copyfile(chain["tmp"] / "repo" / name, fresh / name)
    _pin(chain, PIN, "fresh")
    code, _, err = _cli(["backup", "--config", chain["config"]], capsys)
    assert code == 1 and f"its identity record names {other}" in err
    assert not (fresh / "sets").exists() or list((fresh / "sets").iterdir()) == []


# -- e. tombstones: only the repository that pruned a set excuses its absence ------------------


def _offsite_pruned(chain: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Three backups copied offsite; then the offsite alone pruned (keep_last 1): its tombstones name ids[0], ids[1]."""
    ids = _backups(chain, capsys, {"offsite": {"path": "offsite"}})
    _config(chain["tmp"], {"offsite": {"path": "offsite"}, "retention": {"keep_last": 1}})
    code, _, err = _cli(["recovery", "prune", "--config", chain["config"], "--offsite"], capsys)
    assert code == 0, err
    tmp: Path = chain["tmp"]
    assert sorted(p.name for p in (tmp / "offsite" / "sets").iterdir()) == [ids[-1]]
    assert sorted(p.name for p in (tmp / "repo" / "sets").iterdir()) == sorted(ids)  # `--offsite` left the primary alone
    for offsite in ([], ["--offsite"]):  # the quiet controls: both repositories clean
        code, out, err = _cli(["recovery", "list", "--config", chain["config"], "--json", *offsite], capsys)
        assert code == 0 and json.loads(out)["findings"] == [], err
    return ids


def _copy_tombstone(chain: dict[str, Any], backup_id: str, source: str = "offsite", target: str = "repo") -> None:
    tmp: Path = chain["tmp"]
    (tmp / target / "pruned").mkdir(exist_ok=True)
    for suffix in (".json", ".sig"):
        shutil.copyfile(tmp / source / "pruned" / f"{backup_id}{suffix}", tmp / target / "pruned" / f"{backup_id}{suffix}")


def _missing_naming_the_offsite(chain: dict[str, Any], gone: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, _ = _cli(["recovery", "list", "--config", chain["config"], "--json", *args], capsys)
    findings = json.loads(out)["findings"]
    assert code == 1 and [(f["backup"], f["kind"]) for f in findings] == [(gone, "missing")], findings
    detail: str = findings[0]["detail"]
    assert "tombstone" in detail and "excuses nothing" in detail
    return detail


def test_an_offsite_tombstone_copied_into_the_primary_does_not_excuse_a_deleted_set(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _offsite_pruned(chain, capsys)
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[1])
    _copy_tombstone(chain, ids[1])
    detail = _missing_naming_the_offsite(chain, ids[1], capsys)
    assert "written by an offsite copy" in detail and str(chain["tmp"] / "offsite") in detail
    code, err = _restore_latest(chain, capsys)  # a set gone from the middle leaves "latest" alone
    assert code == 0 and _live(chain) == "version 2\n", err


def test_a_primary_tombstone_copied_into_the_offsite_does_not_excuse_a_deleted_copy(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _backups(chain, capsys, {"offsite": {"path": "offsite"}, "retention": {"keep_last": 1}})
    tmp: Path = chain["tmp"]
    assert sorted(p.name for p in (tmp / "repo" / "sets").iterdir()) == [ids[-1]]  # the primary pruned the rest
    for offsite in ([], ["--offsite"]):  # the quiet controls
        code, out, err = _cli(["recovery", "list", "--config", chain["config"], "--json", *offsite], capsys)
        assert code == 0 and json.loads(out)["findings"] == [], err
    shutil.rmtree(tmp / "offsite" / "sets" / ids[1])  # from the middle of the offsite's copies
    _copy_tombstone(chain, ids[1], source="repo", target="offsite")
    detail = _missing_naming_the_offsite(chain, ids[1], capsys, "--offsite")
    assert "written by the primary repository" in detail


def test_a_tombstone_for_the_newest_set_does_not_excuse_its_deletion(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A tombstone the offsite signed for the newest set (retention never deletes it), copied in: "latest" refused."""
    ids = _offsite_pruned(chain, capsys)
    offsite = LocalRepository(chain["tmp"] / "offsite", trust=_trust_of(chain))
    offsite.record_deletion(ids[-1], "retention policy")  # as the offsite's own retention would sign it
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    _copy_tombstone(chain, ids[-1])
    (chain["tmp"] / "repo" / "audit.jsonl").write_text("")  # cut too: the signed head record is the witness
    code, err = _restore_latest(chain, capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and ids[-1] in err, err
    assert _live(chain) == "version 2\n"
    _missing_naming_the_offsite(chain, ids[-1], capsys)


def test_the_primarys_own_tombstone_for_its_newest_set_does_not_excuse_its_deletion(
    chain: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed here, yet for the set the head record names with nothing after it: retention never wrote it."""
    ids = _backups(chain, capsys)
    repo = LocalRepository(chain["tmp"] / "repo", trust=_trust_of(chain))
    repo.record_deletion(ids[-1], "retention policy")
    shutil.rmtree(chain["tmp"] / "repo" / "sets" / ids[-1])
    (chain["tmp"] / "repo" / "audit.jsonl").write_text("")
    code, err = _restore_latest(chain, capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and ids[-1] in err and "never deletes" in err
    assert _live(chain) == "version 2\n"


def _trust_of(chain: dict[str, Any]) -> RepositoryTrust:
    """The key pair ``drproof keys init`` wrote, as the engine's API takes it."""
    tmp: Path = chain["tmp"]
    return RepositoryTrust.from_settings(
        key_file=tmp / "repo.key", key_env=None, passphrase_env=None, public_keys=[tmp / "repo.pub"]
    )


def test_the_offsites_other_signed_records_copied_into_the_primary_vouch_for_nothing_there() -> None:
    """Verification marks, the identity record and sets the offsite holds, copied into the primary (same key, same sets)."""
    trust = _trust()
    with tempfile.TemporaryDirectory() as d:
        primary, offsite = LocalRepository(Path(d) / "p", trust=trust), LocalRepository(Path(d) / "o", trust=trust)
        offsite.role = "copy"  # as a configuration's `offsite:` opens it
        sets = [_write(primary, bytes([i]) * 50) for i in range(3)]
        for m in sets:
            copy_set(primary, offsite, m)
        _verified(offsite, sets[1])
        _failed(primary, sets[1])
        assert sets[1].id in offsite.verified_ids() and primary.verified_ids() == set()  # quiet controls
        for name in (VERIFIED_NAME, VERIFIED_SIGNATURE):  # the offsite's signed mark for the same set and manifest
            shutil.copyfile(offsite.root / "sets" / sets[1].id / name, primary.root / "sets" / sets[1].id / name)
        assert primary.verified_ids() == set()
        for name in ("repository.json", "repository.sig"):  # bound to the offsite's location: vouches for nothing here
            shutil.copyfile(offsite.root / name, primary.root / name)
        assert primary.recorded_identity() is None and primary.own_role() == "origin"
        assert primary.chain_audit().findings == [] and primary.chain_audit().identity == sets[0].repository_id
        retention.prune(primary, retention.Policy(keep_last=2))  # the primary prunes sets[0]: its own tombstone
        assert primary.chain_audit().findings == []
        shutil.copytree(offsite.root / "sets" / sets[0].id, primary.root / "sets" / sets[0].id)  # put back from the offsite
        assert [(f.backup_id, f.kind) for f in primary.chain_audit().findings] == [(sets[0].id, "replayed")]
        assert selection.latest(primary).manifest.id == sets[-1].id


def test_a_tombstone_written_before_tombstones_named_their_repository_still_excuses_its_set() -> None:
    """The quiet control for upgrades: a signed tombstone without repository, role or location counts as before."""
    trust = _trust()
    with _repo(trust) as repo:
        sets = [_write(repo, bytes([i]) * 50) for i in range(3)]
        retention.prune(repo, retention.Policy(keep_last=1))
        old = repo.root / "pruned" / f"{sets[1].id}.json"
        body = json.loads(old.read_text())
        assert (body["role"], body["repository_id"], body["location"]) == ("origin", sets[1].repository_id, str(repo.root.resolve()))
        for name in ("repository_id", "role", "location"):
            del body[name]
        data = (json.dumps(body, indent=2) + "\n").encode()
        old.write_bytes(data)
        assert trust.signer is not None
        old.with_suffix(".sig").write_bytes(trust.signer.sign(data))
        assert repo.chain_audit().findings == [] and selection.latest(repo).manifest.id == sets[-1].id
