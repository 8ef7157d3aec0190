"""One repository lock (issue 17): it names its holder, and a copy never loses its set to a prune.

The race test is the incident itself: retention deleted a set while another process was
copying it offsite (a false "offsite copy failed", 2 of 5 rounds). Here a copy and a
prune start together 50 times against real repositories; every copy either completes
and verifies, or finds its set already deleted before it read a byte; nothing half
copied or half deleted is ever left. No timing is asserted: which of the two goes first
is the scheduler's business, the outcome must be sound either way.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drills import standalone
from drills.backup_config import BackupConfig, load_config
from engine.errors import BackupNotFound, RepositoryError, RepositoryLocked
from engine.repository.local import LocalRepository
from engine.repository.locking import holders

ROUNDS = 50


def test_a_waiter_names_the_holder_and_gives_up_at_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    held, release = threading.Event(), threading.Event()

    def prune() -> None:
        with repo.lock(exclusive=True, operation="prune (retention)"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=prune)
    t.start()
    try:
        held.wait(10)
        other = LocalRepository(tmp_path / "repo")
        with (
            caplog.at_level(logging.INFO, logger="engine"),
            pytest.raises(RepositoryLocked) as exc,
            other.lock(exclusive=False, operation="recovery restore", timeout=0.3),
        ):
            pass
        message = str(exc.value)
        assert message.startswith("recovery restore: gave up after")
        assert f"prune (retention) (pid {os.getpid()} on " in message and "exclusive, since" in message
        assert any(
            "waiting for the lock of repository" in r.getMessage() and "prune (retention)" in r.getMessage()
            for r in caplog.records
        )
    finally:
        release.set()
        t.join()
    assert holders(tmp_path / "repo" / ".lock") == []  # the note goes with the lock


def test_shared_holders_do_not_wait_for_each_other(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    seen: list[str] = []

    def restore() -> None:  # another thread: its own lock, as another process would take
        with LocalRepository(tmp_path / "repo").lock(exclusive=False, operation="restore", timeout=0):
            seen.extend(sorted(h.operation for h in holders(tmp_path / "repo" / ".lock")))

    with repo.lock(exclusive=False, operation="copy"):
        t = threading.Thread(target=restore)
        t.start()
        t.join()
    assert seen == ["copy", "restore"]


def test_the_lock_is_reentrant_within_a_thread_and_never_upgraded(tmp_path: Path) -> None:
    """A command holding the lock calls engine functions that take it again: one hold, no self-wait."""
    repo = LocalRepository(tmp_path / "repo")
    with repo.lock(exclusive=False, operation="recovery restore"):
        with repo.lock(exclusive=False, operation="restore of files", timeout=0):
            assert [h.operation for h in holders(tmp_path / "repo" / ".lock")] == ["recovery restore"]
        with pytest.raises(RepositoryError, match="holds shared"), repo.lock(exclusive=True, operation="prune"):
            pass
    with repo.lock(exclusive=True, operation="prune"), repo.lock(exclusive=False, operation="verify", timeout=0):
        assert [h.operation for h in holders(tmp_path / "repo" / ".lock")] == ["prune"]
    assert holders(tmp_path / "repo" / ".lock") == []


def test_a_wrapped_repository_takes_the_inner_lock_reentrantly(tmp_path: Path) -> None:
    """The offsite fault's wrapper locks through the inner handle: a holder of the inner lock never waits for itself."""
    from engine.faults.offsite import UnreachableRepository

    inner = LocalRepository(tmp_path / "repo")
    wrapped = UnreachableRepository(inner, attempts_failing=1)
    with pytest.raises(RepositoryError, match="offsite unreachable"), wrapped.lock(exclusive=False):
        pass
    with inner.lock(exclusive=False, operation="copy"), wrapped.lock(exclusive=False, operation="verify", timeout=0):
        assert [h.operation for h in holders(tmp_path / "repo" / ".lock")] == ["copy"]
    assert holders(tmp_path / "repo" / ".lock") == []


def test_a_note_left_by_a_dead_process_is_not_a_holder(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    with repo.lock(exclusive=False, operation="backup"):
        pass
    notes = tmp_path / "repo" / ".lock.holders"
    import json
    import socket

    (notes / "dead.json").write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "pid": 2**22 + 7,
                "start": "1",
                "operation": "ghost",
                "exclusive": True,
                "since": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    assert holders(tmp_path / "repo" / ".lock") == [] and not (notes / "dead.json").exists()


def _config(tmp_path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "repo.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("hello")
    path = tmp_path / "backup-config.yaml"
    path.write_text(
        "repository: {path: primary}\n"
        "offsite: {path: offsite}\n"
        "signing: {key_file: repo.key}\n"
        "retention: {keep_last: 1}\n"
        "components:\n  files: {kind: volumes, path: files}\n"
    )
    return path


def _race(config: BackupConfig, backup_id: str) -> tuple[bool, list[BaseException]]:
    """Copy ``backup_id`` offsite and prune, started together; (whether the copy happened, errors)."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    copied: list[str] = []

    def copy() -> None:
        start.wait()
        try:
            copied.append(standalone.copy(config, backup_id, True, _quiet).id)
        except BackupNotFound:
            pass  # prune went first: the set was gone before the copy read anything
        except BaseException as exc:
            errors.append(exc)

    def prune() -> None:
        start.wait()
        try:
            standalone.prune(config, False, _quiet)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=copy), threading.Thread(target=prune)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return bool(copied), errors


def _quiet(message: str) -> None:
    return None


def test_copy_and_prune_race_fifty_rounds_and_nothing_is_lost(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    outcomes = {"copied": 0, "deleted first": 0}
    for round_ in range(ROUNDS):
        (tmp_path / "files" / "a.txt").write_text(f"round {round_}")
        old = standalone.take_backup(config, None, "full", None, _quiet)
        newest = standalone.take_backup(config, None, "full", None, _quiet)
        copied, errors = _race(config, old.id)
        assert errors == [], f"round {round_}: {errors}"
        outcomes["copied" if copied else "deleted first"] += 1
        primary = standalone.repository(config, None)
        offsite = standalone.repository(config, None, offsite=True)
        assert isinstance(offsite, LocalRepository)
        assert [m.id for m in primary.list()] == [newest.id]  # the newest is never what a prune deletes
        assert primary.chain_audit().findings == []  # each deleted set has its signed tombstone
        if copied:
            assert offsite.verify(old.id).ok
        else:
            assert not (offsite.root / "sets" / old.id).exists()
        assert list((offsite.root / ".staging").iterdir()) == []
    offsite = standalone.repository(config, None, offsite=True)
    assert all(offsite.verify(m.id).ok for m in offsite.list())
    assert sum(outcomes.values()) == ROUNDS


def test_backups_publishing_at_once_never_take_one_place_in_the_chain(tmp_path: Path) -> None:
    from engine.manifest import ComponentRecord

    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def backups() -> None:
        repo = LocalRepository(tmp_path / "repo")  # each writer its own handle, as separate processes have
        start.wait()
        try:
            for i in range(10):
                writer = repo.begin(f"w{i}")
                with writer.artifact("files", "files.tar") as sink:
                    sink.write(b"x" * 100)
                writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=backups) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    found = LocalRepository(tmp_path / "repo").chain_audit()
    assert found.findings == []
    assert sorted(st.summary.sequence or 0 for st in found.sets.values()) == list(range(1, 41))
