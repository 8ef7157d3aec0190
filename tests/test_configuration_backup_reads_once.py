"""A configuration backup's fingerprint describes exactly the bytes it archived.

The kind used to fingerprint the directory first and archive it second: two reads of
every file. An application rewriting its state file in between (review B2: 6 of 10 sets
with a rewrite every 0.5 ms) gave a published, verified set whose every restore was
refused as different from its own fingerprint. The race is made deterministic here: the
application rewrites ``state.json`` right after each read of it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components import files
from engine.components.configuration import KEY, MAX_PARSE_BYTES, ConfigurationComponent, ConfigurationParams
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.streams import CHUNK
from tests.conftest import DirsRuntime


def _component(tmp_path: Path) -> tuple[ConfigurationComponent, LocalRepository]:
    comp = ConfigurationComponent("conf", ConfigurationParams(files={}), DirsRuntime(tmp_path / "live"))  # type: ignore[arg-type]
    comp.provision()
    (comp.path / "app.yaml").write_text("service: checkout\nworkers: 4\n")
    (comp.path / "state.json").write_text('{"generation": 0}\n')
    return comp, LocalRepository(tmp_path / "repo")


def _rename(victim: Path, text: str) -> None:
    """As most applications save state: a new file renamed over the old one."""
    tmp = victim.with_name(".state.json.tmp")
    tmp.write_text(text)
    os.rename(tmp, victim)


def _in_place(victim: Path, text: str) -> None:
    """Rewritten in the same inode, its modification time moved (as a clock tick would)."""
    before = victim.stat().st_mtime_ns
    victim.write_text(text)
    os.utime(victim, ns=(before + 1_000_000, before + 1_000_000))


def _rewrite_after_every_read(
    victim: Path, save: Callable[[Path, str], None], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The application writes a new generation as soon as anything has read the current one."""
    real_read, written = os.read, ['{"generation": 0}\n']

    def read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if victim.exists() and os.path.samestat(os.fstat(fd), os.stat(victim)):
            written.append(f'{{"generation": {len(written)}}}\n')
            save(victim, written[-1])
        return data

    monkeypatch.setattr(os, "read", read)
    return written


@pytest.mark.parametrize("save", [_rename, _in_place], ids=["renamed-over", "in-place"])
def test_a_state_file_rewritten_after_every_read_gives_sets_that_all_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: Callable[[Path, str], None]
) -> None:
    comp, repo = _component(tmp_path)
    victim = comp.path / "state.json"
    written = _rewrite_after_every_read(victim, save, monkeypatch)
    sets = [engine_backup.backup(repo, [comp]) for _ in range(3)]
    monkeypatch.undo()
    assert len(written) >= 4  # every backup read the file, and the app rewrote it each time
    for manifest in sets:
        assert repo.verify(manifest.id)
        shutil.rmtree(comp.path)
        engine_backup.restore(repo, manifest, comp)  # its own proof: refused before the fix
        restored = comp.fingerprint()
        assert compare(manifest.component("conf").fingerprint, restored) == []
        assert victim.read_text() in written[:-1]
        assert f"{KEY}state.json:generation" in restored.parts
    details = [m.component("conf").details for m in sets]
    if save is _in_place:  # the same file changed under the reader: named, as for volumes
        assert all("state.json: changed while archived" in d["changed_while_archived"]["entries"][0] for d in details)
    else:  # a new file replaced it: what was read is one consistent version, nothing to say
        assert all("changed_while_archived" not in d for d in details)


def _varied_tree(root: Path) -> None:
    """Every way a file reaches the archive: small, large, tarfile's path, links, other types."""
    (root / "app.yaml").write_text("service: checkout\ndatabase:\n  port: 5432\n  password: hunter2hunter2\n")
    (root / "crlf.ini").write_bytes(b"[main]\r\nhost = a\r\nport = 1\r\n")
    (root / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')  # not UTF-8: a file part only
    (root / "large.env").write_text("# " + "x" * CHUNK + "\nLARGE=1\n")  # over CHUNK: archived in pieces
    (root / "huge.yaml").write_text("k: " + "x" * MAX_PARSE_BYTES + "\n")  # over the parse limit
    (root / "rés.yaml").write_text("accent: true\n")  # a non-ASCII name: tarfile writes its header
    (root / "first.txt").write_text("linked: 1\n")
    os.link(root / "first.txt", root / "second.yaml")  # a hard link whose second name has settings
    os.symlink("app.yaml", root / "link.yaml")
    (root / ".env").write_text("export TOKEN='abc'\nPORT=8080\n")
    (root / "nginx").mkdir()
    (root / "nginx" / "site.conf").write_text("server { listen 80; }\n")
    os.mkfifo(root / "control.fifo")


@pytest.mark.parametrize("fast", [True, False], ids=["own-headers", "tarfile"])
def test_a_steady_tree_gets_the_fingerprint_a_walk_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """Quiet control: key parts taken from the archived bytes are those read from the files."""
    monkeypatch.setattr(files, "FAST_HEADERS", fast)
    comp, repo = _component(tmp_path)
    _varied_tree(comp.path)
    manifest = engine_backup.backup(repo, [comp])
    taken = manifest.component("conf").fingerprint
    assert compare(taken, comp.fingerprint()) == []
    keys = {name.split(":")[0] for name in taken.parts if name.startswith(KEY)}
    assert keys == {
        f"{KEY}{name}"
        for name in ("app.yaml", "crlf.ini", "large.env", "rés.yaml", "second.yaml", ".env", "state.json")
    }
    assert "changed_while_archived" not in manifest.component("conf").details
    shutil.rmtree(comp.path)
    engine_backup.restore(repo, manifest, comp)
    assert compare(taken, comp.fingerprint()) == []
