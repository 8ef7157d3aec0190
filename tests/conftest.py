"""Shared fixtures.

Integration tests start real servers from the embedded wheels. They are marked
``integration`` so a quick loop can deselect them (``-m "not integration"``); the README's
test command and CI run everything.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# This host's witness of each repository's newest set (engine/witness.py) is kept in a
# directory of the test session's own, never in the home of whoever runs the tests.
os.environ["DRPROOF_STATE_DIR"] = tempfile.mkdtemp(prefix="drproof-test-state-")
atexit.register(shutil.rmtree, os.environ["DRPROOF_STATE_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
DATA = Path(__file__).resolve().parent / "data"


class DirsRuntime:
    """Just enough of a runtime for directory components: a fresh directory per instance."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS


@pytest.fixture
def data_dir() -> Path:
    return DATA


def empty_tree_component(kind: str, root: Path) -> Any:
    """A provisioned, empty ``volumes`` or ``configuration`` component under ``root``: tests fill its ``path``."""
    from engine.components.configuration import ConfigurationComponent, ConfigurationParams
    from engine.components.volumes import VolumesComponent, VolumesParams

    if kind == "volumes":
        comp: Any = VolumesComponent("files", VolumesParams(files=0), DirsRuntime(root))  # type: ignore[arg-type]
    else:
        comp = ConfigurationComponent("conf", ConfigurationParams(files={}), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    return comp


@contextmanager
def in_pid_namespace(code: str, arg: str) -> Iterator[str]:
    """Python ``code`` (given ``arg`` as ``sys.argv[1]``) running as pid 1 of a new pid namespace: a drproof in
    a container that shares this host's files. Yields the first line it prints; it runs until the block ends
    (it should wait on stdin). Where no namespace can be made the test is skipped, or fails under CI=true.
    """
    from tests.integration.servers import unavailable

    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, arg]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        unavailable("no unshare")
        raise
    with proc:
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        try:
            if not line:
                unavailable(f"no pid namespace here: {proc.stderr.read()[:200]}")
            yield line
        finally:
            proc.stdin.close()
            proc.wait(10)
