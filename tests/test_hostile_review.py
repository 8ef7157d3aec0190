"""Hostile repositories through the commands an operator runs: list, verify, restore.

Each case takes two real backups of two directories with ``drproof backup``, damages the
newest set the way a person with write access to the repository (or a broken disk)
could, and runs ``recovery list``, ``verify`` and ``restore --to`` / ``--in-place``. None
may be green, none may end in a traceback or hang, and the live directories stay
byte-for-byte as they were. Found by an adversarial review; each names what was wrong.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drills.cli import main


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _config(path: Path, where: Path, signing: str = "") -> Path:
    path.write_text(
        "repository: {path: repo}\n" + signing + "components:\n"
        f"  files: {{kind: volumes, path: {where / 'files'}}}\n"
        f"  conf: {{kind: configuration, path: {where / 'conf'}}}\n"
    )
    return path


class Hung(BaseException):
    """Not an ``OSError`` (as ``TimeoutError`` is): drproof must not turn it into a verdict."""


def _cli(args: list[str]) -> tuple[int, str]:
    """Run drproof in-process; a hang of more than 20 s fails the test instead of the suite."""
    err = io.StringIO()

    def hung(*_: Any) -> None:
        raise Hung("drproof hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, err.getvalue()


def _make_site(tmp_path: Path, signed: bool = False) -> dict[str, Any]:
    live = tmp_path / "live"
    (live / "files").mkdir(parents=True)
    (live / "conf").mkdir()
    (live / "files" / "a.txt").write_text("one")
    (live / "conf" / "app.yaml").write_text("a: 1\n")
    signing = ""
    if signed:
        keys = tmp_path / "keys"
        keys.mkdir()
        assert _cli(["keys", "init", "--private", str(keys / "repo.key"), "--public", str(keys / "repo.pub")])[0] == 0
        signing = f"signing: {{key_file: {keys / 'repo.key'}, public_keys: [{keys / 'repo.pub'}]}}\n"
    config = _config(tmp_path / "backup-config.yaml", live, signing)
    (tmp_path / "scratch").mkdir()
    scratch = _config(tmp_path / "scratch.yaml", tmp_path / "scratch", signing)
    assert _cli(["backup", "--config", str(config), "--json"])[0] == 0
    (live / "files" / "b.txt").write_text("two")
    assert _cli(["backup", "--config", str(config), "--json"])[0] == 0
    sets = sorted(
        (tmp_path / "repo" / "sets").iterdir(),
        key=lambda p: json.loads((p / "manifest.json").read_text())["sequence"],
    )
    return {"root": tmp_path, "live": live, "config": config, "scratch": scratch, "newest": sets[-1]}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Any]:
    return _make_site(tmp_path)


def _edit(newest: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = newest / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _expect_refused(site: dict[str, Any], codes: dict[str, int]) -> None:
    """Every command gives its expected non-zero code, says why, and live data stay as they were."""
    cfg = str(site["config"])
    before = _tree(site["live"])
    commands = {
        "list": ["recovery", "list", "--config", cfg, "--json"],
        "verify": ["recovery", "verify", "--config", cfg, "--json"],
        "to": ["recovery", "restore", "--to", str(site["scratch"]), "--config", cfg, "--json"],
        "in-place": ["recovery", "restore", "--in-place", "--yes", "--config", cfg, "--json"],
    }
    got = {name: _cli(args)[0] for name, args in commands.items()}
    assert got == codes
    assert _tree(site["live"]) == before


REFUSED = {"list": 1, "verify": 1, "to": 1, "in-place": 1}


def _drop_artifact(doc: dict[str, Any]) -> None:
    doc["artifacts"] = [a for a in doc["artifacts"] if a["component"] != "files"]


@pytest.mark.parametrize(
    "change",
    [
        # was: TypeError (naive vs aware datetime) out of the chain's date check, in every command
        lambda d: d.update(created_at="2026-01-01T00:00:00"),
        # was: verify green (it checks listed artifacts only), restore a KeyError traceback
        _drop_artifact,
        # was: green everywhere, the artifact verified and restored twice
        lambda d: d["artifacts"].append(dict(d["artifacts"][0])),
        # was: green everywhere, the component restored twice from one record
        lambda d: d["components"].append(dict(d["components"][0])),
        # was: listed and verified green as a component named '../files'
        lambda d: d["components"][0].update(name="../files"),
        # was: green: the component named an artifact the set does not list
        lambda d: d["components"][0].update(artifacts=["config.tar"]),
    ],
    ids=["naive-date", "artifact-entry-deleted", "artifact-twice", "component-twice", "component-path", "wrong-names"],
)
def test_an_inconsistent_manifest_is_refused_by_every_command(site: dict[str, Any], change: Any) -> None:
    _edit(site["newest"], change)
    _expect_refused(site, REFUSED)


def test_an_artifact_renamed_consistently_is_refused_not_a_traceback(site: dict[str, Any]) -> None:
    """The manifest still verifies (its artifacts match), but holds no artifact the kind restores from."""
    newest = site["newest"]

    def rename(doc: dict[str, Any]) -> None:
        doc["components"][0]["artifacts"] = ["other.tar"]
        doc["artifacts"][0].update(name="other.tar", path="files/other.tar.zst")

    _edit(newest, rename)
    (newest / "files" / "files.tar.zst").rename(newest / "files" / "other.tar.zst")
    _expect_refused(site, {"list": 0, "verify": 0, "to": 1, "in-place": 1})


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_an_artifact_that_is_not_a_file_is_refused_without_hanging(site: dict[str, Any], kind: str) -> None:
    """A FIFO in place of an artifact made verify and restore block for ever in open()."""
    stored = site["newest"] / "files" / "files.tar.zst"
    stored.unlink()
    os.mkfifo(stored) if kind == "fifo" else stored.mkdir()
    _expect_refused(site, {"list": 0, "verify": 1, "to": 1, "in-place": 1})


def test_a_sets_directory_replaced_by_a_file_is_named_not_a_traceback(site: dict[str, Any]) -> None:
    sets = site["root"] / "repo" / "sets"
    for entry in sets.iterdir():
        entry.rename(site["root"] / entry.name)
    sets.rmdir()
    sets.write_text("not a directory")
    _expect_refused(site, {"list": 2, "verify": 2, "to": 2, "in-place": 2})
    code, err = _cli(["recovery", "list", "--config", str(site["config"])])
    assert code == 2 and "cannot list the backup sets" in err


def test_a_set_directory_that_is_a_symlink_is_named_and_latest_is_not_guessed(site: dict[str, Any]) -> None:
    """A linked-in set was skipped unseen, so "latest" silently restored the older set."""
    newest = site["newest"]
    moved = site["root"] / "elsewhere"
    newest.rename(moved)
    newest.symlink_to(moved)
    _expect_refused(site, REFUSED)
    code, err = _cli(["recovery", "verify", "--config", str(site["config"])])
    assert code == 1 and "symbolic link" in err


@pytest.mark.parametrize("planted", ["manifest.sig", "verified.json"])
def test_a_fifo_beside_a_signed_manifest_is_refused_without_hanging(tmp_path: Path, planted: str) -> None:
    """A FIFO as the signature made list, verify and restore block for ever reading it."""
    site = _make_site(tmp_path, signed=True)
    path = site["newest"] / planted
    path.unlink()
    os.mkfifo(path)
    # verified.json is a cache of a past verification: a FIFO there must just not be trusted.
    _expect_refused(site, REFUSED if planted == "manifest.sig" else {"list": 0, "verify": 0, "to": 0, "in-place": 0})


@pytest.mark.parametrize(
    ("change", "listed"),
    [(lambda d: d.update(sequence=0), 1), (lambda d: d.update(tools={"pg_dump": 1}), 0)],
    ids=["place-zero", "tools-not-text"],
)
def test_a_malformed_manifest_is_damage_not_could_not_run(site: dict[str, Any], change: Any, listed: int) -> None:
    """Was: verify and restore exit 2, and list green on a place 0 (the inventory did not bound it).

    A manifest drproof did not write is damage found (exit 1, as the exit-code table says),
    not a command that could not run. The inventory reads no tools, so it lists that one.
    """
    _edit(site["newest"], change)
    _expect_refused(site, {"list": listed, "verify": 1, "to": 1, "in-place": 1})


def test_a_sequence_edited_upwards_makes_latest_undecided_in_an_unsigned_repository(site: dict[str, Any]) -> None:
    """Was: list said "reordered" but verify and restore of latest were green on the edited set.

    Negative control: the newest set claims place 10**40 after its predecessor at place 1;
    "latest" is refused everywhere. Quiet control: the same repository unedited is green.
    """
    assert _cli(["recovery", "verify", "--config", str(site["config"]), "--json"])[0] == 0
    _edit(site["newest"], lambda d: d.update(sequence=10**40))
    _expect_refused(site, REFUSED)
    code, err = _cli(["recovery", "restore", "--to", str(site["scratch"]), "--config", str(site["config"])])
    assert code == 1 and ("reordered" in err or "place" in err), err
