"""A run's private directories: named for their run, removed whole, and found after a crash.

Found: a SIGKILLed drill left its servers' directories in /tmp for ever (four per killed
run, a restored database among them), and a normal close could lose its removal to a
server still writing (a Patroni node's half data directory stayed). These pin the parts:
the owner in the name, the removal that names what it could not remove, and the close
that ends our own late writer but never an operator's shell.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine import scratch
from engine.repository import staging
from engine.runtime import local, processes
from tests.conftest import in_pid_namespace
from tests.integration.servers import unavailable


def _dead_pid() -> tuple[int, str]:
    """A pid that is gone, and the start time it had."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = scratch._process_start(proc.pid)
    proc.wait()
    return proc.pid, str(start)


def test_a_dead_runs_directory_is_stale_and_a_live_ones_is_not(tmp_path: Path) -> None:
    pid, start = _dead_pid()
    dead = tmp_path / f"drproof-pg-{pid}-{start}-abcd1234"
    live = scratch.owned_dir("drproof-pg-", tmp_path)
    dead.mkdir()
    assert scratch.stale("drproof-pg-", tmp_path) == [dead]
    assert scratch.owner_of("drproof-pg-", dead) == pid
    assert scratch.owner_of("drproof-pg-", live) is None
    assert live.name.startswith(f"drproof-pg-{os.getpid()}-")


def test_a_longer_prefix_is_not_read_as_an_owner(tmp_path: Path) -> None:
    """Scenario "a" must not take the numbers of scenario "a-1"'s live directory for a dead owner."""
    other = tmp_path / f"drproof-a-1-{os.getpid()}-{scratch._process_start(os.getpid())}-abcd1234"
    other.mkdir()
    assert scratch.stale("drproof-a-", tmp_path) == []
    scratch.owned_dir("drproof-a-", tmp_path)
    assert other.is_dir()


def test_a_new_directory_removes_the_stale_ones_of_its_kind(tmp_path: Path) -> None:
    pid, start = _dead_pid()
    dead = tmp_path / f"drproof-pgs-{pid}-{start}-abcd1234"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "f").write_text("x")
    unnamed = tmp_path / "drproof-pgs-abcd1234"  # an old-style name: not ours to judge
    unnamed.mkdir()
    scratch.owned_dir("drproof-pgs-", tmp_path)
    assert not dead.exists() and unnamed.is_dir()


def test_remove_tree_names_what_it_could_not_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "run"
    (kept / "data").mkdir(parents=True)
    (kept / "data" / "pg_stat").write_text("x")
    monkeypatch.setattr(
        os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted"))
    )
    left = scratch.remove_tree(kept, attempts=2)
    monkeypatch.undo()
    assert left is not None and "pg_stat" in left and "Operation not permitted" in left
    assert scratch.remove_tree(kept) is None and not kept.exists()


def test_close_ends_our_late_writer_and_removes_the_whole_tree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Negative control: a server child still writing in its directory (as a stopping server does)."""
    run = tmp_path / "run"
    data = run / "node0" / "data"
    data.mkdir(parents=True)
    writer = processes.spawn(
        ["sh", "-c", "i=0; while :; do i=$((i+1)); mkdir -p pg_stat; : > pg_stat/s$i; sleep 0.01; done"],
        log=tmp_path / "writer.log",
        cwd=data,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="engine.runtime.local"):
            local._remove_run_files([run], grace=0.5)
        assert not run.exists()
        assert writer.wait(5) is not None
        assert f"process {writer.pid} (sh -c " in caplog.text and "still worked" in caplog.text
    finally:
        writer.kill()
        writer.wait()


def test_close_leaves_a_process_that_is_not_ours_alone(tmp_path: Path) -> None:
    """Quiet control: an operator's shell sitting in the run directory is neither killed nor waited for."""
    run = tmp_path / "run"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != processes.OWNER_ENV}
    shell = subprocess.Popen(["sleep", "60"], cwd=run, env=env)
    try:
        local._remove_run_files([run], grace=0.5)
        assert not run.exists()
        assert shell.poll() is None
    finally:
        shell.kill()
        shell.wait()


def test_clean_lists_a_dead_runs_server_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = scratch.owned_dir(local.SERVERS_PREFIX)  # first: making one removes the stale ones
    pid, start = _dead_pid()
    dead = tmp_path / f"{local.SERVERS_PREFIX}{pid}-{start}-abcd1234"
    dead.mkdir()
    listed = local.LocalRuntime.leftovers()
    assert listed.get(f"local pid {pid}") == [f"directory {dead}"]
    assert all(str(live) not in item for items in listed.values() for item in items)
    assert local.LocalRuntime.remove_leftovers(f"local pid {pid}") == [f"directory {dead}"]
    assert not dead.exists() and live.is_dir()


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("how", [{"keep_workdir": True}, {"work_root": "tmp"}])
def test_a_kept_work_directory_is_never_read_as_a_dead_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: dict[str, object]
) -> None:
    """Found by review: a kept run of scenario "upgrade-15-17" was ``drproof-upgrade-15-17-<random>``, which the
    next run of scenario "upgrade" read as the directory of a dead pid 15 and removed (restored database and all);
    ``drproof clean`` read a kept "pg-15-18" as a dead run's server directory the same way."""
    from drills.loader import load_scenario
    from drills.runner import DrillRunner

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    options = {k: (tmp_path if v == "tmp" else v) for k, v in how.items()}
    runner = DrillRunner(load_scenario(REPO / "scenarios" / "quickstart.yaml"), **options)  # type: ignore[arg-type]
    kept = [runner._make_workdir("upgrade-15-17"), runner._make_workdir("pg-15-18")]
    for d in kept:
        (d / "restored").mkdir()
    scratch.owned_dir("drproof-upgrade-")  # the next run of scenario "upgrade"
    listed = local.LocalRuntime.leftovers()
    assert all(str(tmp_path) not in item for items in listed.values() for item in items), listed
    assert all((d / "restored").is_dir() for d in kept)


def test_a_dead_runs_work_directory_is_still_removed_by_the_next_run(tmp_path: Path) -> None:
    """Quiet control: the sweep of a SIGKILLed run's work directory still works."""
    pid, start = _dead_pid()
    dead = tmp_path / f"drproof-upgrade-{pid}-{start}-abcd1234"
    (dead / "restored").mkdir(parents=True)
    scratch.owned_dir("drproof-upgrade-", tmp_path)
    assert not dead.exists()


def test_a_live_runs_directory_in_another_pid_namespace_is_not_a_dead_ones(tmp_path: Path) -> None:
    """Found by review: a drproof in a container sharing this /tmp is pid 1 there; read here, pid 1 is another
    process, so its live run's directories were removed as a dead one's."""
    code = (
        "import sys; from pathlib import Path; from engine import scratch; "
        "print(scratch.owned_dir('drproof-pg-', Path(sys.argv[1])), flush=True); sys.stdin.read()"
    )
    with in_pid_namespace(code, str(tmp_path)) as theirs:
        assert Path(theirs).name.startswith("drproof-pg-1-")
        assert scratch.stale("drproof-pg-", tmp_path) == []
        scratch.owned_dir("drproof-pg-", tmp_path)
        assert Path(theirs).is_dir()


def test_a_dead_runs_directory_named_with_this_namespace_is_still_removed(tmp_path: Path) -> None:
    """Quiet control: the name now carries the namespace, and a dead owner's is still swept."""
    pid, start = _dead_pid()
    dead = tmp_path / f"drproof-pg-{pid}-{start}-n{staging.pid_namespace()}_abcd1234"
    dead.mkdir()
    assert scratch.stale("drproof-pg-", tmp_path) == [dead]
    live = scratch.owned_dir("drproof-pg-", tmp_path)
    assert not dead.exists() and scratch.owner_of("drproof-pg-", live) is None


def test_without_proc_no_run_is_judged_gone(tmp_path: Path) -> None:
    """Found by review: where /proc cannot be read (a chroot or sandbox without it) every owner looked gone, and
    `drproof clean` listed a live CI run's server directories for removal; a live backup's set went the same way."""
    import json
    import shlex
    import socket

    start = scratch._process_start(os.getpid())
    live = tmp_path / f"drproof-pg-{os.getpid()}-{start}-abcd1234"  # as an older drproof (no namespace) names it
    live.mkdir()
    writing = tmp_path / "repo" / ".staging" / "20261207T000000Z-abcdef"
    writing.mkdir(parents=True)
    note = {"host": socket.gethostname(), "pid": os.getpid(), "start": start}  # an older drproof's note
    writing.with_name(writing.name + ".owner").write_text(json.dumps(note))
    code = (
        "import json, sys; from pathlib import Path; from engine import scratch; "
        "from engine.repository import staging; "
        "print(json.dumps([str(p) for p in scratch.stale('drproof-pg-', Path(sys.argv[1]))] "
        "+ staging.clean(Path(sys.argv[1]) / 'repo')))"
    )
    python = f"{sys.executable} -c {shlex.quote(code)} {shlex.quote(str(tmp_path))}"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none /proc && {python}"]
    try:
        seen = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60)
    except FileNotFoundError:
        unavailable("no unshare")
    if seen.returncode != 0 and "mount" in seen.stderr:
        unavailable(f"cannot hide /proc here: {seen.stderr[:200]}")
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout) == []
    assert live.is_dir() and writing.is_dir()
