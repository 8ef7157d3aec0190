"""Secrets never leak from a drill: not in its output, its reports, its repository, or argv.

A drill holds more secrets than it is given: the local runtime makes a random password
for every PostgreSQL and Redis server, ``repository.encryption: true`` makes an in-memory
AES key, the seeded configuration files carry a database password and a session secret,
and ``--sign-key`` reads an Ed25519 private key. Each is recorded as drproof creates it;
then a passing drill and a failing one (wrong server passwords at restore time, the error
path where messages quote the most) are run, and every secret is searched for in stdout,
stderr (the children's too), every file of the report directory (results.json,
report.html, junit.xml, evidence), both repositories and the history database, and in
the command line of every process the drill started, sampled while it ran.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import drills.runner
import engine.components.configuration as configuration
from drills.runner import DrillRunner
from drills.steps.backup import Backup
from drills.steps.restore import Restore
from engine.crypto import Encryption
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]

SCENARIO = """
name: {name}
objectives:
  rto: 2m
stack:
  runtime: local
  components:
    orders-db:
      kind: postgres
      seed: {{customers: 60, orders_per_customer: 2}}
    sessions:
      kind: redis
      seed: {{keys: 100}}
    app-config:
      kind: configuration
repository:
  path: repo
  encryption: true
  offsite: {{path: offsite}}
steps:
  - backup: {{name: nightly}}
  - sql: {{target: orders-db, statement: "CREATE TABLE later (id int)"}}
  - disaster: {{target: orders-db, fault: {pg_fault}}}
  - disaster: {{target: sessions, fault: flushall}}
  - disaster: {{target: app-config, fault: modify}}
  - restore: {{from: nightly}}
assertions:
  - fidelity
  - backup_integrity
"""


class Planted:
    """Every secret the drill makes or is given, recorded as it comes into being."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.keys: list[bytes] = []

    def add(self, value: str) -> None:
        assert len(value) >= 12, value  # long enough that a match is no coincidence
        self.values.add(value)

    def needles(self) -> list[bytes]:
        out = [v.encode() for v in self.values]
        for key in self.keys:
            out += [key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"=")]
        return out


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Planted:
    found = Planted()
    runtimes: list[LocalRuntime] = []

    real_init = LocalRuntime.__init__

    def init(self: LocalRuntime, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        runtimes.append(self)

    real_postgres, real_redis = LocalRuntime.postgres, LocalRuntime.redis

    def postgres(self: LocalRuntime, instance: str) -> Any:
        svc = real_postgres(self, instance)
        found.add(svc.password)
        return svc

    def redis(self: LocalRuntime, instance: str) -> Any:
        svc = real_redis(self, instance)
        found.add(svc.password)
        return svc

    real_files = configuration._default_files

    def default_files(rng: Any) -> dict[str, str]:
        files = real_files(rng)
        text = "".join(files.values())
        for pattern in (r"password = (\S+)", r"session_secret: (\S+)"):
            match = re.search(pattern, text)
            assert match, pattern
            found.add(match.group(1))
        return files

    real_encryption = drills.runner._drill_encryption

    def drill_encryption(key: bytes) -> Encryption:
        found.keys.append(key)
        return real_encryption(key)

    monkeypatch.setattr(LocalRuntime, "__init__", init)
    monkeypatch.setattr(LocalRuntime, "postgres", postgres)
    monkeypatch.setattr(LocalRuntime, "redis", redis)
    monkeypatch.setattr(configuration, "_default_files", default_files)
    monkeypatch.setattr(drills.runner, "_drill_encryption", drill_encryption)
    return found


@contextmanager
def argv_sampler() -> Iterator[list[str]]:
    """Collect the command line of every descendant process, every few milliseconds."""
    seen: dict[tuple[int, str], None] = {}
    stop = threading.Event()
    me = psutil.Process(os.getpid())

    def sample() -> None:
        while not stop.is_set():
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                try:
                    seen[(child.pid, "\0".join(child.cmdline()))] = None
                except psutil.Error:
                    continue
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out: list[str] = []
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out.extend(cmd for _, cmd in seen)


def _signing_key(tmp_path: Path, planted: Planted) -> Path:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "signing.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    planted.add(body.decode())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    planted.keys.append(raw)
    return path


def _every_file(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _drill(
    tmp_path: Path,
    name: str,
    pg_fault: str,
    planted: Planted,
    capfd: pytest.CaptureFixture[str],
    *,
    sets_written: bool = True,
) -> int:
    """Run one drill with everything recorded and searched; its exit code."""
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(SCENARIO.format(name=name, pg_fault=pg_fault), encoding="utf-8")
    report = tmp_path / f"report-{name}"
    history = tmp_path / "history.sqlite"
    key = _signing_key(tmp_path, planted)
    args = ["run", str(scenario), "--report-dir", str(report), "--work-dir", str(tmp_path / "work")]
    with argv_sampler() as argvs:
        code = run_cli([*args, "--sign-key", str(key), "--history", str(history)])
    out, err = capfd.readouterr()

    # The recorder saw what it should, and the sampler saw the drill's own children.
    assert len(planted.values) >= 5 and planted.keys, planted.values
    assert any("redis-server" in a for a in argvs) and any("postgres" in a for a in argvs), argvs
    assert any(re.search(r"pg_dump|pg_restore|psql|initdb", a) for a in argvs), argvs
    files = {**_every_file(report), **_every_file(tmp_path / "repo"), **_every_file(tmp_path / "offsite")}
    files[history] = history.read_bytes()
    assert {"results.json", "report.html", "junit.xml"} <= {p.name for p in files}
    assert any("sets" in p.parts for p in files) == sets_written, "backup sets written or not, unexpectedly"
    for needle in planted.needles():
        shown = needle[:6].decode(errors="replace") + "…"
        for argv in argvs:  # first: a secret in argv also ends up wherever commands are recorded
            assert needle.decode(errors="replace") not in argv, f"secret {shown} in a command line: {argv[:200]}"
        assert needle not in out.encode(), f"secret {shown} printed on stdout"
        assert needle not in err.encode(), f"secret {shown} printed on stderr"
        for path, data in files.items():
            assert needle not in data, f"secret {shown} written to {path}"
    return code


def test_a_passing_drill_leaks_no_secret(tmp_path: Path, planted: Planted, capfd: pytest.CaptureFixture[str]) -> None:
    code = _drill(tmp_path, "secret-drill", "delete_data_dir", planted, capfd)
    assert code == 0, read_results(tmp_path / "report-secret-drill").get("error")


def _send_wrong_passwords(runner: DrillRunner, planted: Planted) -> None:
    """From now on drproof sends wrong passwords (a rotated secret); the servers keep theirs."""
    assert runner.state is not None
    swapped = 0
    for comp in runner.state.components.values():
        service = getattr(comp, "service", None)
        if service is not None and hasattr(service, "password"):
            wrong = "wrong-" + secrets.token_urlsafe(18)
            planted.add(wrong)
            service.password = wrong
            swapped += 1
    assert swapped == 2  # PostgreSQL and Redis


def test_a_drill_failing_on_wrong_passwords_at_restore_leaks_neither_the_right_nor_the_wrong_ones(
    tmp_path: Path, planted: Planted, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_restore = Restore.run

    def restore_with_wrong_passwords(self: Restore, runner: DrillRunner, i: int, spec: Any) -> None:
        _send_wrong_passwords(runner, planted)
        real_restore(self, runner, i, spec)

    monkeypatch.setattr(Restore, "run", restore_with_wrong_passwords)
    code = _drill(tmp_path, "secret-drill-fails", "drop_table", planted, capfd)

    results = read_results(tmp_path / "report-secret-drill-fails")
    # A refused password is a failed restore, not a drproof bug: exit 1, no traceback.
    assert code == 1 and results["verdict"] == "fail", (results["verdict"], results["error"])
    restores = {p["component"]: p for p in results["phases"] if p["kind"] == "restore"}
    assert {restores[c]["status"] for c in ("orders-db", "sessions")} == {"failed"}, restores
    assert "password authentication failed" in restores["orders-db"]["detail"], restores["orders-db"]
    assert "AuthenticationError" in restores["sessions"]["detail"], restores["sessions"]
    timeline = next(a for a in results["assertions"] if a["id"] == "timeline")
    assert timeline["status"] == "fail"


def test_a_drill_failing_on_wrong_passwords_at_backup_leaks_neither_the_right_nor_the_wrong_ones(
    tmp_path: Path, planted: Planted, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_backup = Backup.run

    def backup_with_wrong_passwords(self: Backup, runner: DrillRunner, i: int, spec: Any) -> None:
        _send_wrong_passwords(runner, planted)
        real_backup(self, runner, i, spec)

    monkeypatch.setattr(Backup, "run", backup_with_wrong_passwords)
    code = _drill(tmp_path, "secret-drill-no-backup", "drop_table", planted, capfd, sets_written=False)

    results = read_results(tmp_path / "report-secret-drill-no-backup")
    # The drill could not run its timeline: exit 2, never a pass, and no half-made set.
    assert code == 2 and results["verdict"] == "error", (results["verdict"], results["error"])
    assert "internal error" not in (results["error"] or ""), results["error"]
    backup = next(p for p in results["phases"] if p["kind"] == "backup")
    assert backup["status"] == "error", backup
    assert "password authentication failed" in backup["detail"] or "auth" in backup["detail"].lower(), backup
