"""Runtimes provide server kinds by registry; kinds and faults name the capabilities they need."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from drills.doctor import checks
from engine.components import component_kinds
from engine.errors import RuntimeStartError
from engine.faults import faults
from engine.runtime import KNOWN_RUNTIMES, DockerRuntime, LocalRuntime, processes, refusal, supporting
from engine.runtime.base import CAPABILITIES, Check, Runtime

REPO = Path(__file__).resolve().parent.parent


def test_every_capability_named_anywhere_is_documented() -> None:
    named = {c for r in KNOWN_RUNTIMES for c in r.capabilities}
    named |= {c for k in component_kinds for c in k.needs} | {c for f in faults for c in f.needs}
    assert named <= set(CAPABILITIES), named - set(CAPABILITIES)


def test_every_server_kind_a_component_asks_for_is_provided_by_the_local_runtime() -> None:
    for kind in component_kinds:
        assert kind.server is None or kind.server in LocalRuntime.server_kinds, kind.name
        assert refusal(LocalRuntime, kind.needs, kind.server) is None, kind.name


def test_each_runtime_has_its_own_server_kinds() -> None:
    assert LocalRuntime.server_kinds is not DockerRuntime.server_kinds
    assert {"postgres", "redis", "directory"} <= set(LocalRuntime.server_kinds.names())
    assert {"postgres", "redis", "directory"} <= set(DockerRuntime.server_kinds.names())


def test_a_refusal_names_what_is_missing_and_who_has_it() -> None:
    physical = component_kinds.get("postgres-physical")
    why = refusal(DockerRuntime, physical.needs, physical.server)
    assert why == "needs physical-access (runtimes that have it: local, external)"
    assert supporting(frozenset({"no-such-capability"})) == []
    assert refusal(LocalRuntime, frozenset(), "no-such-server") == (
        "needs no-such-server servers (runtimes that have it: none)"
    )


def test_a_server_kind_the_runtime_lacks_is_a_clear_error(tmp_path: Path) -> None:
    class Bare(Runtime):
        name = "bare"

        def __init__(self, workdir: Path, images: dict[str, str] | None = None) -> None:
            self.root, self._dirs = workdir, {}

        def describe(self) -> dict[str, str]:
            return {}

        def close(self) -> None:
            pass

    bare = Bare(tmp_path)
    assert bare.server("directory", "d") == tmp_path / "dir-d"  # every runtime with a root has directories
    with pytest.raises(RuntimeStartError, match="provides no postgres servers"):
        bare.postgres("db")
    assert bare.started() == []


def test_doctor_lists_every_runtime_and_requires_only_the_local_one_by_default() -> None:
    found = list(checks(None))
    assert all(isinstance(c, Check) for c in found)
    names = [c.name for c in found]
    assert "embedded PostgreSQL" in names
    assert "Docker engine" in names or "docker CLI" in names
    assert all(c.required for c in found if c.name.startswith("embedded"))
    assert not any(c.required for c in found if "ocker" in c.name)
    assert any(c.required for c in checks("docker") if "ocker" in c.name)


def test_clean_finds_server_processes_whose_drproof_is_gone(tmp_path: Path) -> None:
    """A process a server started in a session of its own survives a killed drproof; clean finds it."""
    marker = f"drproof-leftover-test-{time.monotonic_ns()}"
    script = (
        "from pathlib import Path; from engine.runtime import processes; "
        f"processes.spawn(['bash', '-c', '(exec -a {marker} sleep 60) &'], log=Path({str(tmp_path / 'log')!r})).wait()"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
    mine = [(run, items) for run, items in processes.leftovers().items() if any(marker in i for i in items)]
    assert len(mine) == 1, processes.leftovers()
    run = mine[0][0]
    assert run.startswith("local pid ")
    gone = processes.remove_leftovers(run)
    assert any(marker in g for g in gone)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(marker in i for v in processes.leftovers().values() for i in v):
        time.sleep(0.05)
    assert not any(marker in i for v in processes.leftovers().values() for i in v)


def test_clean_leaves_the_processes_of_a_live_drproof_alone(tmp_path: Path) -> None:
    marker = f"drproof-live-test-{time.monotonic_ns()}"
    proc = processes.spawn(["bash", "-c", f"exec -a {marker} sleep 60"], log=tmp_path / "log")
    try:
        time.sleep(0.2)
        assert not any(marker in i for v in processes.leftovers().values() for i in v)
        assert any(marker in i for v in processes.leftovers(everything=True).values() for i in v)
    finally:
        processes.kill(proc)
