"""The local runtime works wherever drproof is installed, and cleans up after itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg2
import pytest

from engine.runtime import local
from engine.runtime.local import LocalRuntime, postgres_bin_dir

pytestmark = [pytest.mark.integration]


def test_server_runs_even_when_the_install_is_unreachable_for_its_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venv under a 0700 directory (/root, tox's .tox) must still work when run as root."""
    package = postgres_bin_dir().parent.parent
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    for part in (package.name, package.name + ".libs"):
        if (package.parent / part).is_dir():
            shutil.copytree(package.parent / part, closed / part, symlinks=True)
    moved_bin = closed / package.name / "pginstall" / "bin"
    monkeypatch.setattr(local, "postgres_bin_dir", lambda: moved_bin)

    with LocalRuntime(tmp_path / "work") as runtime:
        svc = runtime.postgres("db")
        conn = psycopg2.connect(svc.dsn(), password=svc.password)
        conn.close()
        if os.geteuid() == 0:
            # The server user cannot enter `closed`: the server must run from a private mirror.
            assert svc.server_bin != moved_bin
            assert not svc.server_bin.is_relative_to(closed)
        else:
            assert svc.server_bin == moved_bin
        mirror_root = runtime.pg_root
    assert not (mirror_root / "server-install").exists()
