"""File names that are not UTF-8, through a manifest on disk (found by review).

Such a name reaches drproof with lone surrogates, which JSON cannot hold: pydantic
wrote U+FFFD into the manifest, the stored name differed from the file's, and every
restore of the set was refused while ``verify`` said the set was fine. Names are now
stored as their bytes where they must be. Quiet control: a tree with such names, and a
backslash-named neighbour spelling the same escape, backs up, reads back from disk and
restores with nothing different; negative control: a changed byte in one is named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import backup as engine_backup
from engine.components.base import Component
from engine.fingerprint import Fingerprint, Part, compare
from engine.repository import LocalRepository
from tests.conftest import empty_tree_component

NAMES = [b"caf\xe9.conf", b"caf\\xe9.conf", b"\xff\xfe", b"ok.conf"]


def _component(kind: str, root: Path) -> Component:
    comp: Component = empty_tree_component(kind, root)
    path: Path = comp.path  # type: ignore[attr-defined]
    for i, name in enumerate(NAMES):
        with open(os.path.join(os.fsencode(path), name), "wb") as fh:
            fh.write(b"x = %d\n" % i)
    os.mkdir(os.path.join(os.fsencode(path), b"dir\xe9"))
    return comp


@pytest.mark.parametrize("kind", ["volumes", "configuration"])
def test_a_set_with_undecodable_names_restores_and_a_change_is_named(tmp_path: Path, kind: str) -> None:
    comp = _component(kind, tmp_path / "live")
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    stored = LocalRepository(tmp_path / "repo").get(manifest.id)  # read back from disk
    taken = stored.components[0].fingerprint
    assert taken is not None
    assert "\ufffd" not in "".join(taken.parts)
    path: Path = comp.path  # type: ignore[attr-defined]
    with open(os.path.join(os.fsencode(path), b"caf\xe9.conf"), "wb") as fh:
        fh.write(b"x = 99\n")
    assert any("caf" in d.part for d in compare(taken, comp.fingerprint()))
    engine_backup.restore(repo, stored, comp)
    assert compare(taken, comp.fingerprint()) == []
    assert manifest.id == stored.id


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=6, unique=True))
def test_any_names_survive_the_manifest_json(names: list[bytes]) -> None:
    part = Part(digest="d", count=1, unit="bytes")
    parts = {"file " + os.fsdecode(n): part for n in names}
    fp = Fingerprint.build("c", "volumes", parts)
    back = Fingerprint.model_validate_json(fp.model_dump_json())
    assert back.parts == fp.parts and back.digest == fp.digest
