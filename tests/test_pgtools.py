"""Client tools are chosen by the server's major version, or the backup is refused with the fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import pgtools
from engine.errors import ComponentError


def _bindir(root: Path, major: int, tools: tuple[str, ...] = pgtools.LOGICAL_TOOLS) -> Path:
    bindir = root / f"pg{major}" / "bin"
    bindir.mkdir(parents=True)
    for name in tools:
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {major}.3'\n")
        script.chmod(0o755)
    return bindir


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, Path]]:
    dirs = {15: _bindir(tmp_path, 15), 18: _bindir(tmp_path, 18), 16: _bindir(tmp_path, 16, ("pg_dump",))}

    def candidates(major: int) -> Iterator[tuple[Path, str]]:
        for d in dirs.values():
            yield d, "test"

    monkeypatch.setattr(pgtools, "candidates", candidates)
    pgtools._PROBED.clear()
    yield dirs
    pgtools._PROBED.clear()


def test_the_tools_of_the_servers_major_are_found(host: dict[int, Path]) -> None:
    assert pgtools.for_server(15).bindir == host[15]
    assert pgtools.for_server(18).bindir == host[18]


def test_a_directory_lacking_a_tool_is_passed_over_and_none_left_is_refused_with_the_fix(host: dict[int, Path]) -> None:
    with pytest.raises(ComponentError) as refused:
        pgtools.for_server(16, what="the PostgreSQL server at db:5432")
    message = str(refused.value)
    assert "is PostgreSQL 16, and no PostgreSQL 16 client tools were found" in message
    assert "apt-get install postgresql-client-16" in message and "nothing was backed up" in message


def test_a_configured_bindir_of_another_major_is_refused(host: dict[int, Path]) -> None:
    with pytest.raises(
        ComponentError, match=r"is PostgreSQL 15, but the configured bindir .* holds PostgreSQL 18 tools"
    ):
        pgtools.for_server(15, configured=host[18])
    assert pgtools.for_server(15, configured=host[15]).source == "configured bindir"


def test_a_configured_bindir_without_pg_dump_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="holds no working pg_dump"):
        pgtools.for_server(15, configured=tmp_path)
