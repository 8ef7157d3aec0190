"""SIGKILL during a drill and during a physical restore never leaves lasting damage.

A drill (``drproof run``) killed at a random moment, drawn by hypothesis: every set its
persistent repository lists verifies clean, its PostgreSQL and Redis servers die with it
(PR_SET_PDEATHSIG, no ``drproof clean`` needed), the report directory an earlier complete
run wrote is still whole, and the same drill run again passes.

A ``postgres-physical`` restore of an operator's server (``drproof recovery restore``)
killed at a random moment: the repository still verifies, and running the restore again
succeeds and brings back exactly the backed-up data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.repository import LocalRepository
from engine.runtime.external import PhysicalTarget, PostgresTarget
from tests.integration.helpers import insert_mark, marks, servers_under
from tests.integration.test_external_physical import PASSWORD, _component, existing_server

pytestmark = [pytest.mark.integration]

SCENARIO = """
name: crash-drill
objectives:
  rto: 2m
stack:
  runtime: local
  components:
    orders-db:
      kind: postgres
      seed: {customers: 100, orders_per_customer: 2}
    sessions:
      kind: redis
      seed: {keys: 200}
    app-config:
      kind: configuration
repository:
  path: repo
steps:
  - backup: {name: nightly}
  - disaster: {target: orders-db, fault: delete_data_dir}
  - disaster: {target: sessions, fault: flushall}
  - disaster: {target: app-config, fault: delete}
  - restore: {from: nightly}
assertions:
  - fidelity
  - rto
  - backup_integrity
"""


def _cli(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "drills.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )


def _kill_after(args: list[str], delay: float, env: dict[str, str] | None = None) -> bool:
    """Run drproof, SIGKILL its whole process group after ``delay`` s; True if it was still running."""
    proc = _cli(args, env=env)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def _server_dirs(tmp: Path) -> list[Path]:
    """The directories runs gave their servers in ``tmp`` (their TMPDIR): data, WAL, sockets."""
    return sorted(tmp.glob("drproof-pg*"))


@pytest.fixture(scope="module")
def run_tmp() -> Iterator[Path]:
    """A TMPDIR of the killed runs' own, so what they leave there is theirs alone.

    Reachable by the servers' system user (a root run puts its servers' directories
    there when the work directory is not), as /tmp is.
    """
    tmp = Path(tempfile.mkdtemp(prefix="drproof-crash-tmp-"))
    tmp.chmod(0o711)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "drills.cli", *args], capture_output=True, timeout=300, env=env)


def _assert_whole_report(report: Path) -> None:
    """Every report file parses in full: atomic writes never leave a torn file."""
    results = json.loads((report / "results.json").read_text())
    assert results["verdict"] == "pass" and results["scenario"]["name"] == "crash-drill"
    assert (report / "report.html").read_text().rstrip().endswith("</html>")
    assert ET.parse(report / "junit.xml").getroot().tag in {"testsuites", "testsuite"}


def _assert_repository_whole(repo_path: Path, before: set[str]) -> LocalRepository:
    repo = LocalRepository(repo_path)
    listed = repo.list()
    assert before <= {m.id for m in listed}, "a stored set disappeared"
    for manifest in listed:
        report = repo.verify(manifest.id)
        assert report.ok, (manifest.id, [c.problem for c in report.checks if not c.ok])
    return repo


# -- a killed drill ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("crash-drill")
    (base / "drill.yaml").write_text(SCENARIO, encoding="utf-8")
    done = _run(
        ["run", str(base / "drill.yaml"), "--report-dir", str(base / "report"), "--work-dir", str(base / "work")]
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    _assert_whole_report(base / "report")
    return base


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(min_value=0.5, max_value=4.0))
def test_a_drill_killed_at_any_moment_leaves_no_server_no_torn_report_and_reruns(
    drill: Path, run_tmp: Path, delay: float
) -> None:
    repo_path, report, work = drill / "repo", drill / "report", drill / "work"
    before = {m.id for m in LocalRepository(repo_path).list()}
    first = {p: p.read_bytes() for p in (drill / "report").iterdir()}
    assert first
    args = ["run", str(drill / "drill.yaml"), "--report-dir", str(report), "--work-dir", str(work), "-q"]

    env = {**os.environ, "TMPDIR": str(run_tmp)}
    _kill_after(args, delay, env)

    # The servers the killed run started die with it (the kernel's parent-death signal):
    # allow a moment for a short-lived tool (initdb, pg_dump) the kill caught mid-run.
    deadline = time.monotonic() + 10
    while servers_under(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_under(work) == [], "a killed drill left processes running"
    # The killed run's private directory under --work-dir stays behind (a --work-dir may be
    # shared between hosts, where a pid names nothing), but others can neither list nor write it
    # (0711: the unprivileged server user only traverses it), and the files that hold a
    # server password are the owner's alone.
    for leftover in work.iterdir():
        assert leftover.stat().st_mode & 0o066 == 0, oct(leftover.stat().st_mode)
        for secret_file in [*leftover.rglob("redis.conf"), *leftover.rglob("pwfile")]:
            assert secret_file.stat().st_mode & 0o077 == 0, secret_file
    # Its servers' directories in /tmp (a root run's, when the work directory is not
    # reachable by the server user) are named for it: `drproof clean` lists them.
    left = _server_dirs(run_tmp)
    if left:
        listed = _run(["clean", "--runtime", "local", "--dry-run"], env).stdout.decode()
        assert all(str(d) in listed for d in left), listed
    # Same report directory as the complete runs: each file is the whole of some run's.
    _assert_whole_report(report)
    assert {p.name for p in report.iterdir() if not p.name.startswith(".")} >= {p.name for p in first}
    _assert_repository_whole(repo_path, before)

    again = _run(args, env)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    _assert_whole_report(report)
    assert servers_under(work) == []
    assert _server_dirs(run_tmp) == [], f"the next run left the killed run's server directories: {left}"
    _assert_repository_whole(repo_path, before)


# -- a killed physical restore -----------------------------------------------------------------


@pytest.fixture(scope="module")
def physical(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An operator's PostgreSQL server (pg_ctl), one physical backup of it, and its fingerprint."""
    base = tmp_path_factory.mktemp("crash-physical")
    server = existing_server.__wrapped__(base)  # the same server test_external_physical uses
    target, phys = next(server)
    try:
        yield _physical_setup(base, target, phys)
    finally:
        next(server, None)


def _physical_setup(base: Path, target: PostgresTarget, phys: PhysicalTarget) -> dict[str, Any]:
    config = base / "backup-config.yaml"
    config.write_text(
        json.dumps(
            {
                "repository": {"type": "local", "path": str(base / "repo")},
                "components": {
                    "db": {
                        "kind": "postgres-physical",
                        "url": f"postgresql://postgres@127.0.0.1:{target.port}/postgres",
                        "password_env": "DRPROOF_CRASH_PG_PASSWORD",
                        "physical": {
                            "data_directory": str(phys.data_directory),
                            "wal_archive": str(phys.wal_archive),
                            "stop": phys.stop,
                            "start": phys.start,
                        },
                    }
                },
            }
        )
    )
    comp: PostgresPhysicalComponent = _component(target, phys)
    comp.params = comp.params.model_copy(update={"database": "postgres"})
    insert_mark(comp, "backed-up")
    env = {**os.environ, "DRPROOF_CRASH_PG_PASSWORD": PASSWORD}
    done = subprocess.run(
        [sys.executable, "-m", "drills.cli", "backup", "--config", str(config)], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return {
        "config": config,
        "repo": base / "repo",
        "comp": comp,
        "target": phys,
        "fingerprint": comp.fingerprint(),
        "env": env,
    }


def _kept(data: Path) -> set[Path]:
    """The directories restores set aside (``<data>.drproof-replaced-<time>``)."""
    return set(data.parent.glob(f"{data.name}.drproof-replaced-*"))


def _marker(data: Path) -> Path:
    """Written before the stop command, removed once the restore succeeded or was rolled back."""
    return data.with_name(f"{data.name}.drproof-restore-in-progress")


def _holds(directory: Path, token: bytes) -> bool:
    """Whether some file under ``directory`` contains ``token`` (a short text row is stored as is)."""
    return any(token in p.read_bytes() for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _restore(config: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "recovery", "restore", "--in-place", "--yes", "--config", config],
        capture_output=True,
        env=env,
        timeout=300,
    )


def _kill_restore_and_rerun(physical: dict[str, Any], kill_when: Callable[[], bool]) -> dict[str, Any]:
    """Start a restore, SIGKILL it once ``kill_when()`` holds, check, re-run once with no help.

    Returns what the checks saw: whether the kill left the restore-in-progress marker,
    and the re-run's stderr.
    """
    comp: PostgresPhysicalComponent = physical["comp"]
    phys: PhysicalTarget = physical["target"]
    data = phys.data_directory
    config, env = str(physical["config"]), physical["env"]
    before = {m.id for m in LocalRepository(physical["repo"]).list()}
    token = f"pre-restore-{uuid.uuid4().hex[:12]}"
    insert_mark(comp, token)  # what the restore must undo, and what must survive it
    assert marks(comp) == ["backed-up", token]
    kept_before = _kept(data)

    proc = _cli(["recovery", "restore", "--in-place", "--yes", "--config", config], env=env)
    while proc.poll() is None and not kill_when():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = _marker(data).exists()

    # The killed attempt never damages the repository.
    _assert_repository_whole(physical["repo"], before)
    verify = subprocess.run(
        [sys.executable, "-m", "drills.cli", "recovery", "verify", "--config", config], capture_output=True, env=env
    )
    assert verify.returncode == 0, verify.stderr.decode()[-3000:]

    # Whatever the moment, the re-run succeeds by itself: a server the killed attempt
    # stopped is not "down, start it" but a restore to resume.
    again = _restore(config, env)
    stderr = again.stderr.decode()
    assert again.returncode == 0, stderr[-3000:]
    assert "fidelity: match" in stderr, stderr[-3000:]
    assert marks(comp) == ["backed-up"]
    assert comp.fingerprint().digest == physical["fingerprint"].digest
    assert not _marker(data).exists()
    # The pre-restore data (with the row the restore undid) are kept, never deleted.
    new = _kept(data) - kept_before
    assert 1 <= len(new) <= 2, new  # 2 only if the "killed" attempt had already finished
    assert any(_holds(d, token.encode()) for d in new), "the pre-restore data directory lost its data"
    return {"interrupted": interrupted, "stderr": stderr}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(min_value=0.3, max_value=5.0))
@example(delay=2.0)
def test_a_physical_restore_killed_at_any_moment_can_be_run_again(physical: dict[str, Any], delay: float) -> None:
    deadline = time.monotonic() + delay
    _kill_restore_and_rerun(physical, lambda: time.monotonic() >= deadline)


def test_a_physical_restore_killed_with_the_server_down_is_resumed_by_a_rerun(physical: dict[str, Any]) -> None:
    """The worst moment, hit on purpose: just after the attempt stopped the server and set its data aside."""
    data: Path = physical["target"].data_directory
    kept_before = _kept(data)
    seen = _kill_restore_and_rerun(physical, lambda: bool(_kept(data) - kept_before))
    assert seen["interrupted"], "the killed attempt left no restore-in-progress marker"
    assert "interrupted" in seen["stderr"] and "resuming" in seen["stderr"], seen["stderr"][-3000:]
