"""Restore tests of directory trees drproof did not archive: tar files and plain directories.

The archives are written by GNU tar (plain, gzip, zstd) and by Python's tarfile (xz, with
a top directory that ``strip_components`` removes), of a tree with nested and empty
directories, modes, a symlink and a hard link. Each restores into a fresh sandbox
directory whose fingerprint equals the fingerprint of the tree that was archived.
Hostile archives (``../``, an absolute name, a write through a link the archive made)
are refused with nothing written outside the sandbox, and a truncated archive could not
be tested (exit 2), never a pass.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.volumes import VolumesComponent, VolumesParams
from tests.integration.helpers import read_results, run_cli
from tests.integration.servers import unavailable

pytestmark = [pytest.mark.integration]


def _tree(root: Path) -> Path:
    tree = root / "uploads"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "empty").mkdir(mode=0o750)
    (tree / "a" / "b" / "deep.bin").write_bytes(os.urandom(300_000))
    (tree / "a" / "notes.txt").write_text("hello\n")
    (tree / "a" / "notes.txt").chmod(0o640)
    (tree / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tree / "run.sh").chmod(0o755)
    os.link(tree / "a" / "notes.txt", tree / "notes-again.txt")
    os.symlink("a/b/deep.bin", tree / "latest")
    (tree / "empty").chmod(0o750)
    return tree


def _digest(tree: Path, kind: str = "volumes") -> str:
    comp: Any
    if kind == "volumes":
        comp = VolumesComponent("files", VolumesParams(), None)  # type: ignore[arg-type]  # no runtime needed
    else:
        comp = ConfigurationComponent("files", ConfigurationParams(), None)  # type: ignore[arg-type]
    comp.path = tree
    digest: str = comp.fingerprint().digest
    return digest


def _scenario(path: Path, backups: dict[str, dict[str, Any]], assertions: list[Any] | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "trees-restore-test",
                "objectives": {"rto": "10m"},
                "source": {"backups": backups},
                "assertions": assertions or ["fidelity", "rto"],
            }
        )
    )
    return path


def _run(tmp_path: Path, scenario: Path, name: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / name
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "-q"])
    return code, read_results(report)


def _restored(results: dict[str, Any]) -> dict[str, str]:
    return {
        a["id"].split("[", 1)[1].rstrip("]"): a["evidence"]["restored_sha256"]
        for a in results["assertions"]
        if a["name"] == "fidelity"
    }


def test_tar_archives_and_a_directory_restore_into_trees_equal_to_the_source(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    digest = _digest(tree)
    out = tmp_path / "backups"
    out.mkdir()
    subprocess.run(["tar", "-C", str(tree), "-cf", str(out / "gnu.tar"), "."], check=True)
    subprocess.run(["tar", "-C", str(tree), "-czf", str(out / "gnu.tgz"), "."], check=True)
    subprocess.run(["tar", "-C", str(tree), "--zstd", "-cf", str(out / "gnu.tar.zst"), "."], check=True)
    with tarfile.open(out / "py.tar.xz", "w:xz") as tar:
        tar.add(tree, arcname="uploads")  # one top directory: strip_components removes it
    backups = {
        "gnu-plain": {"format": "tar", "path": str(out / "gnu.tar")},
        "gnu-gzip": {"format": "tar", "path": str(out / "gnu.tgz"), "kind": "volumes"},
        "gnu-zstd": {"format": "tar", "path": str(out / "gnu.tar.zst"), "taken_at": "file"},
        "python-xz": {"format": "tar", "path": str(out / "py.tar.xz"), "strip_components": 1},
        "rsynced": {"format": "directory", "path": str(tree)},
    }
    code, results = _run(tmp_path, _scenario(tmp_path / "rt.yaml", backups), "trees")
    assert code == 0, [a for a in results["assertions"] if a["status"] not in ("pass", "not_compared")]
    restored = _restored(results)
    assert restored == dict.fromkeys(backups, digest), (restored, digest)
    inspected = next(p for p in results["phases"] if p["name"] == "inspect the foreign backups")["data"]
    assert inspected["gnu-gzip"]["compression"] == "gzip" and inspected["gnu-zstd"]["compression"] == "zstd"
    # Three directories, three files, a hard link to one of them and a symlink.
    assert (inspected["gnu-plain"]["entries"], inspected["gnu-plain"]["files"]) == (8, 3)
    scope = results["scope"]["statement"]
    assert "tar " + str(out / "gnu.tar") in scope and "not compared" in scope


def test_a_configuration_tree_restores_and_must_parse(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "app").mkdir(parents=True)
    (conf / "app" / "settings.yaml").write_text("db:\n  host: db.internal\n  pool: 10\n")
    (conf / "feature.ini").write_text("[flags]\nnew_ui = true\n")
    archive = tmp_path / "conf.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(conf, arcname=".")
    scenario = _scenario(
        tmp_path / "rt.yaml", {"app-config": {"format": "tar", "path": str(archive), "kind": "configuration"}}
    )
    code, results = _run(tmp_path, scenario, "report")
    assert code == 0, results["assertions"]
    assert _restored(results) == {"app-config": _digest(conf, "configuration")}

    # Negative control: the same tree with a file that does not parse restores, but is not healthy.
    (conf / "broken.yaml").write_text("key: [unclosed\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(conf, arcname=".")
    code, results = _run(tmp_path, scenario, "broken")
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert restore["status"] == "failed" and "broken.yaml" in restore["detail"]


def _hostile(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"pwned\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize(
    ("case", "expected_code", "message"),
    [
        ("dotdot", 2, "'..' path component"),
        ("absolute", 2, "is an absolute path"),
        ("through-link", 1, "which is not a directory"),
    ],
)
def test_a_hostile_archive_is_refused_and_writes_nothing_outside(
    tmp_path: Path, case: str, expected_code: int, message: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    members = {
        "dotdot": [_file("ok.txt"), _file(f"../../../../../../../../..{victim}")],
        "absolute": [_file("ok.txt"), _file(str(victim))],
        "through-link": [_file("ok.txt"), _link("escape", str(outside)), _file("escape/victim.txt")],
    }[case]
    archive = _hostile(tmp_path / f"{case}.tar", members)
    code, results = _run(
        tmp_path, _scenario(tmp_path / "rt.yaml", {"files": {"format": "tar", "path": str(archive)}}), case
    )
    assert code == expected_code and results["verdict"] != "pass"
    said = (
        results["error"]
        if expected_code == 2
        else next(p for p in results["phases"] if p["kind"] == "restore")["detail"]
    )
    assert message in said, said
    assert not victim.exists() and list(outside.iterdir()) == []


def test_a_truncated_archive_could_not_be_tested(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    archive = tmp_path / "cut.tgz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tree, arcname=".")
    archive.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    code, results = _run(
        tmp_path, _scenario(tmp_path / "rt.yaml", {"files": {"format": "tar", "path": str(archive)}}), "cut"
    )
    assert code == 2 and results["verdict"] == "error"
    assert "cut.tgz: cannot unpack" in results["error"], results["error"]


def test_a_directory_with_a_device_node_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    try:
        os.mknod(tree / "null", 0o600 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        unavailable("creating a device node needs root (CI runs as root)")
    code, results = _run(
        tmp_path, _scenario(tmp_path / "rt.yaml", {"files": {"format": "directory", "path": str(tree)}}), "dev"
    )
    assert code == 1 and results["verdict"] == "fail"
    restore = next(p for p in results["phases"] if p["kind"] == "restore")
    assert "device node" in restore["detail"]
    shutil.rmtree(tree)


def test_a_restore_test_whose_every_check_is_not_compared_is_never_a_pass(tmp_path: Path) -> None:
    """Negative control: a foreign backup with fidelity alone proves nothing, so the drill is no pass (exit 2).

    Quiet control: the same restore with the RTO measured beside it passes, fidelity shown as not compared.
    """
    tree = _tree(tmp_path)
    archive = tmp_path / "uploads.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(archive), "."], check=True)
    backups = {"uploads": {"format": "tar", "path": str(archive)}}
    code, results = _run(tmp_path, _scenario(tmp_path / "only.yaml", backups, ["fidelity"]), "only-fidelity")
    assert {a["id"]: a["status"] for a in results["assertions"]} == {"timeline": "pass", "fidelity[uploads]": "not_compared"}
    assert (code, results["verdict"]) == (2, "error"), results["error"]
    assert "nothing was compared" in results["error"]
    code, results = _run(tmp_path, _scenario(tmp_path / "with-rto.yaml", backups), "with-rto")
    assert (code, results["verdict"]) == (0, "pass")
    statuses = {a["name"]: a["status"] for a in results["assertions"]}
    assert statuses == {"timeline": "pass", "fidelity": "not_compared", "rto": "pass"}
