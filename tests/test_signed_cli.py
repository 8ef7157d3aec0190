"""`drproof backup` and `drproof recovery ...` on a signed repository, end to end (issue 17).

A volumes-only stack (directories, no server), so these run with the fast tests: keys
made by `drproof keys init`, backups signed and chained, every command naming a forged
set and refusing it with exit 1, and an unsigned repository saying plainly what is not
proven.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.cli import main
from engine.manifest import MANIFEST_NAME


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, _ = _cli(
        ["keys", "init", "--private", str(tmp_path / "repo.key"), "--public", str(tmp_path / "repo.pub")], capsys
    )
    assert code == 0
    key_text = (tmp_path / "repo.key").read_text()
    assert (
        "BEGIN PUBLIC KEY" in out and key_text.splitlines()[1] not in out
    )  # the public key printed, never the private
    assert stat.S_IMODE((tmp_path / "repo.key").stat().st_mode) == 0o600
    live, sandbox = tmp_path / "live", tmp_path / "sandbox"
    live.mkdir()
    sandbox.mkdir()
    signing = {"key_file": "repo.key", "public_keys": ["repo.pub"]}
    prod = tmp_path / "prod.yaml"
    prod.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": "repo"},
                "offsite": {"path": "offsite"},
                "signing": signing,
                "components": {"files": {"kind": "volumes", "path": "live"}},
            }
        )
    )
    to = tmp_path / "sandbox.yaml"
    to.write_text(yaml.safe_dump({"components": {"files": {"kind": "volumes", "path": "sandbox"}}}))
    ids = []
    for i in range(3):
        (live / "state.txt").write_text(f"version {i}\n")
        code, out, _ = _cli(["backup", "--config", str(prod)], capsys)
        assert code == 0
        ids.append(out.strip().splitlines()[-1])
    return {
        "prod": str(prod),
        "to": str(to),
        "ids": ids,
        "repo": tmp_path / "repo",
        "sandbox": sandbox,
        "tmp": tmp_path,
    }


def test_a_signed_chain_lists_and_verifies_clean(site: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["recovery", "list", "--config", site["prod"], "--json"], capsys)
    body = json.loads(out)
    assert code == 0 and body["findings"] == [] and body["integrity"] is None
    assert [(b["id"], b["sequence"], b["signature"]["status"]) for b in body["backups"]] == [
        (i, n, "valid") for n, i in enumerate(site["ids"], 1)
    ]
    code, out, _ = _cli(["recovery", "verify", "--config", site["prod"], "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["backup_id"] == site["ids"][-1]
    assert report["trust"] == [f"{site['ids'][-1]}: signature valid (key {report['trust'][0].split('key ')[1][:-1]})"]
    # The offsite copy each backup made carries the same signed chain.
    code, out, _ = _cli(["recovery", "list", "--config", site["prod"], "--offsite", "--json"], capsys)
    offsite = json.loads(out)
    assert code == 0 and offsite["findings"] == [] and [b["id"] for b in offsite["backups"]] == site["ids"]


def test_a_forged_newest_set_is_named_and_refused_by_every_command(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    older, newest = site["ids"][1], site["ids"][2]
    manifest = site["repo"] / "sets" / newest / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"type": "full"', '"type": "fuII"'))

    code, out, err = _cli(["recovery", "list", "--config", site["prod"], "--json"], capsys)
    assert code == 1
    assert [(f["backup"], f["kind"]) for f in json.loads(out)["findings"]] == [(newest, "altered")]
    code, out, err = _cli(["recovery", "list", "--config", site["prod"]], capsys)
    assert code == 1 and f"ALTERED {newest}: its manifest was altered after signing" in err

    code, _, err = _cli(["recovery", "verify", "--config", site["prod"], "--id", newest], capsys)
    assert code == 1 and f"backup {newest} is not trusted: its manifest was altered after signing" in err

    code, _, err = _cli(["recovery", "restore", "--config", site["prod"], "--to", site["to"], "--id", newest], capsys)
    assert code == 1 and "is not trusted" in err and list(site["sandbox"].iterdir()) == []
    code, _, err = _cli(["recovery", "restore", "--config", site["prod"], "--to", site["to"]], capsys)
    assert code == 1 and "refusing to choose the latest backup" in err and f"vouches for is {older}" in err
    assert list(site["sandbox"].iterdir()) == []
    code, _, err = _cli(["recovery", "copy", "--config", site["prod"], "--id", newest], capsys)
    assert code == 1 and "is not trusted" in err

    code, out, _ = _cli(
        ["recovery", "restore", "--config", site["prod"], "--to", site["to"], "--id", older, "--json"], capsys
    )
    assert code == 0 and json.loads(out)["components"][0]["fidelity"] == "match"
    assert (site["sandbox"] / "state.txt").read_text() == "version 1\n"


def test_an_unsigned_repository_says_integrity_is_not_proven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "a.txt").write_text("a")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({"repository": {"path": "repo"}, "components": {"files": {"kind": "volumes", "path": "live"}}})
    )
    assert _cli(["backup", "--config", str(cfg)], capsys)[0] == 0
    code, out, err = _cli(["recovery", "verify", "--config", str(cfg)], capsys)
    assert code == 0 and "integrity NOT proven against anyone who can write the repository" in out
    assert "verified (its artifacts; integrity against a repository writer NOT proven: unsigned)" in err
    code, out, _ = _cli(["recovery", "list", "--config", str(cfg), "--json"], capsys)
    assert code == 0 and json.loads(out)["integrity"].startswith("integrity NOT proven")


def test_a_host_with_public_keys_only_restores_but_cannot_back_up(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    restore_only = site["tmp"] / "restore-only.yaml"
    body = yaml.safe_load(Path(site["prod"]).read_text())
    body["signing"] = {"public_keys": ["repo.pub"]}
    restore_only.write_text(yaml.safe_dump(body))
    code, _, err = _cli(["backup", "--config", str(restore_only)], capsys)
    assert code == 2 and "needs the private key" in err
    code, out, _ = _cli(["recovery", "verify", "--config", str(restore_only), "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"]


def test_prune_records_what_it_deleted_so_the_chain_stays_whole(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load(Path(site["prod"]).read_text())
    body["retention"] = {"keep_last": 1}
    Path(site["prod"]).write_text(yaml.safe_dump(body))
    code, out, _ = _cli(["recovery", "prune", "--config", site["prod"], "--json"], capsys)
    assert code == 0 and [d["id"] for d in json.loads(out)["deleted"]] == site["ids"][:2][::-1]
    assert sorted(p.name for p in (site["repo"] / "pruned").iterdir()) == sorted(
        f"{i}{suffix}" for i in site["ids"][:2] for suffix in (".json", ".sig")
    )
    code, out, _ = _cli(["recovery", "list", "--config", site["prod"], "--json"], capsys)
    assert code == 0 and json.loads(out)["findings"] == []


def test_the_newest_set_deleted_whole_is_seen_against_the_offsite_copy(
    site: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing in the primary shows a set deleted with all its files; the offsite copy does."""
    import shutil

    older, newest = site["ids"][1], site["ids"][2]
    shutil.rmtree(site["repo"] / "sets" / newest)
    code, _, err = _cli(["recovery", "restore", "--config", site["prod"], "--to", site["to"]], capsys)
    assert (
        code == 1 and f"{newest}: the other repository holds it at place 3" in err and f"vouches for is {older}" in err
    )
    assert list(site["sandbox"].iterdir()) == []
    code, out, _ = _cli(["recovery", "verify", "--config", site["prod"], "--id", older, "--json"], capsys)
    assert code == 0 and any(
        line.startswith(f"missing: {newest}: the other repository holds it") for line in json.loads(out)["trust"]
    )
    code, out, _ = _cli(
        ["recovery", "restore", "--config", site["prod"], "--offsite", "--to", site["to"], "--json"], capsys
    )
    assert code == 0 and json.loads(out)["backup"] == newest
