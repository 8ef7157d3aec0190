"""The S3 repository lock (lease objects), against a real SeaweedFS on loopback.

A prune waits for backups, copies and restores in flight and then fails naming them; a
backup waits for a prune; two prunes never both hold the lock; a dead holder's lease is
ignored once expired; copies racing prunes lose nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RepositoryError
from engine.repository import S3Repository
from engine.repository.objectlock import ObjectLocked
from engine.repository.s3lease import LockBusy
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["plain", "object-lock"])
def open_repo(s3_server: SeaweedFS, request: pytest.FixtureRequest) -> Callable[..., S3Repository]:
    """Repositories on one bucket; with Object Lock, a lease's delete only adds a delete marker."""
    from engine.repository.objectlock import ObjectLock

    bucket = bucket_name("lease-" + request.node.name)
    client: Any = s3_server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=request.param == "object-lock")
    lock = ObjectLock("GOVERNANCE", timedelta(minutes=5)) if request.param == "object-lock" else None

    def make(ttl: float = 3.0, wait: float = 2.0) -> S3Repository:
        return S3Repository(
            bucket,
            prefix="p",
            endpoint_url=s3_server.endpoint,
            object_lock=lock,
            lease_ttl=timedelta(seconds=ttl),
            lock_wait=timedelta(seconds=wait),
        )

    return make


def test_prune_fails_naming_the_restore_in_flight_and_runs_once_it_ends(open_repo: Callable[..., S3Repository]) -> None:
    restorer, pruner = open_repo(), open_repo()
    with restorer.lock(exclusive=False, operation="restore"):
        with pytest.raises(LockBusy) as busy, pruner.lock(exclusive=True, operation="prune"):
            pass
        message = str(busy.value)
        assert "locked by restore on host" in message and f"(pid {os.getpid()})" in message
        assert "since 20" in message and "lease expires" in message and "did nothing" in message
        # The waiting prune withdrew: another shared holder gets in at once.
        with open_repo().lock(exclusive=False, operation="copy"):
            pass
    with pruner.lock(exclusive=True, operation="prune"):
        pass


def test_backup_waits_for_a_prune_and_two_prunes_never_hold_it_together(
    open_repo: Callable[..., S3Repository],
) -> None:
    first, second, backup = open_repo(), open_repo(), open_repo()
    with first.lock(exclusive=True, operation="prune"):
        with pytest.raises(LockBusy, match="locked by prune on host"), second.lock(exclusive=True, operation="prune"):
            pass
        with pytest.raises(LockBusy, match="locked by prune on host"), backup.lock(exclusive=False, operation="backup"):
            pass
    with backup.lock(exclusive=False, operation="backup"):
        pass


def test_a_dead_holders_lease_is_ignored_once_it_expires(open_repo: Callable[..., S3Repository]) -> None:
    dead = open_repo(ttl=2.0)
    lease_cm = dead.lock(exclusive=True, operation="prune")
    lease_cm.__enter__()
    assert dead._lease is not None
    dead._lease._stop.set()  # the holder dies: no renewal, no release
    # Waiting longer than the ttl, the next prune takes over the expired lease.
    with open_repo(wait=8.0).lock(exclusive=True, operation="prune"):
        pass
    with pytest.raises(RepositoryError, match="lock was lost"):
        dead._lease.check()


def test_a_held_lease_is_renewed_past_its_ttl(open_repo: Callable[..., S3Repository]) -> None:
    holder = open_repo(ttl=1.5)
    with holder.lock(exclusive=False, operation="copy"):
        threading.Event().wait(4.0)  # more than two ttls: renewals keep it alive
        with pytest.raises(LockBusy, match="locked by copy"), open_repo(wait=1.0).lock(exclusive=True):
            pass


def test_copies_racing_prunes_lose_nothing(open_repo: Callable[..., S3Repository], tmp_path: Path) -> None:
    """Each round a copy (shared lease) and a prune (exclusive) start together: the prune
    either runs first (the copy then finds the set gone and says so) or waits for the copy;
    a copy that started is never cut short by a delete under it."""
    from engine import backup as engine_backup
    from engine.errors import BackupNotFound
    from engine.repository import LocalRepository

    source = open_repo(ttl=3.0, wait=30.0)
    outcomes: list[str] = []
    for round_ in range(5):
        writer = source.begin(f"r{round_}")
        with writer.artifact("comp", "data") as fh:
            fh.write(os.urandom(3 << 20))
        manifest = writer.commit([], {}, {})
        target = LocalRepository(tmp_path / f"offsite-{round_}")
        errors: list[BaseException] = []

        def copy(
            manifest: Any = manifest, target: LocalRepository = target, errors: list[BaseException] = errors
        ) -> None:
            try:
                # The copy holds its shared lease for the whole copy, on the handle it copies from
                # (copy_set takes it again on that handle: re-entrant, one lease).
                copier = open_repo(ttl=3.0, wait=30.0)
                with copier.lock(exclusive=False, operation="copy"):
                    engine_backup.copy_set(copier, target, copier.get(manifest.id))
            except BackupNotFound:
                outcomes.append("pruned before the copy began")
            except BaseException as exc:
                errors.append(exc)
            else:
                outcomes.append("copied")

        def prune(manifest: Any = manifest) -> None:
            pruner = open_repo(ttl=3.0, wait=30.0)
            with pruner.lock(exclusive=True, operation="prune"), suppress(ObjectLocked):
                pruner.delete(manifest.id)  # with Object Lock the store keeps the set: nothing to race

        threads = [threading.Thread(target=copy), threading.Thread(target=prune)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors  # never a copy broken half-way by a delete
        if outcomes[-1] == "copied":
            assert target.verify(manifest.id).ok
    assert len(outcomes) == 5
    print(f"\ncopy vs prune, 5 rounds: {outcomes}")


def test_read_only_keys_restore_unannounced_but_cannot_prune(
    s3_server: SeaweedFS, open_repo: Callable[..., S3Repository], caplog: pytest.LogCaptureFixture
) -> None:
    """A restore with keys that may not write ``locks/`` goes on (saying a prune is not kept out); a prune cannot."""
    from engine.repository.s3 import Credentials

    writer = open_repo()
    with writer.lock(exclusive=False, operation="backup"):
        pass  # the bucket and prefix exist; nothing is left under locks/
    reader = S3Repository(
        writer.bucket,
        prefix=writer.prefix,
        endpoint_url=s3_server.endpoint,
        credentials=Credentials(*s3_server.reader_keys),
        lock_wait=timedelta(seconds=1),
    )
    with caplog.at_level("WARNING"), reader.lock(exclusive=False, operation="restore"):
        assert "going on without it, so a prune started now would not wait for this restore" in caplog.text
    with pytest.raises(RepositoryError, match="AccessDenied"), reader.lock(exclusive=True, operation="prune"):
        pass
    # A live prune still keeps the read-only restore out: reading the lease needs no write.
    with (
        writer.lock(exclusive=True, operation="prune"),
        pytest.raises(LockBusy, match="locked by prune"),
        reader.lock(exclusive=False, operation="restore"),
    ):
        pass
