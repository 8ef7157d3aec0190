"""Scheme ``redis/5``: only the drill workload's own keys are left out of the fingerprint.

Schemes 1 to 4 left out the whole key space ``drproof_workload`` of every database, even
in a backup no workload ever wrote to (found by review: a user's ``drproof_workload:x``
lost by a restore was a match). Scheme 5 leaves out the workload's marker and numbered
keys in the database the workload marked, and nothing where no workload ran. Negative
controls: such a user's key lost or changed after a real backup and restore is named,
with and without a workload. Quiet controls: the workload writing around the backup and
the restore changes nothing compared; a scheme 4 backup compares in its own scheme. On
Debian's redis-server 7.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drills.workload.redis import RedisWriter
from engine import backup as engine_backup
from engine.components.base import WORKLOAD_MARK
from engine.components.redis import RedisComponent
from engine.fingerprint import Fingerprint, compare
from engine.repository import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import debian_redis

pytestmark = [pytest.mark.integration]

PASSWORD = "workload-keys"
SPACE = f"db0 keyspace {WORKLOAD_MARK}"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RedisComponent]:
    with debian_redis(tmp_path / "srv", PASSWORD) as port:
        comp: RedisComponent = external_redis(tmp_path, port, PASSWORD)
        r = comp.client()
        r.set("user:1", "alice")
        r.set(f"{WORKLOAD_MARK}:x", "the application's own")
        r.set(f"{WORKLOAD_MARK}_archive:1", "the application's own too")
        yield comp


def _write(comp: RedisComponent, seqs: range) -> None:
    writer = RedisWriter(comp)
    writer.open()
    for seq in seqs:
        writer.write(seq)
    writer.close()


def _backup_and_restore(comp: RedisComponent, tmp_path: Path, workload: bool) -> Fingerprint:
    taken = comp.fingerprint()
    if workload:
        _write(comp, range(10, 20))  # between the fingerprint and the dump, as a drill's workload does
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp], fingerprints={"cache": taken})
    if workload:
        _write(comp, range(20, 30))
    engine_backup.restore(repo, manifest, comp)
    if workload:
        _write(comp, range(30, 40))  # the workload goes on writing into the restored database
    return taken


@pytest.mark.parametrize("workload", [False, True], ids=["no workload", "with a workload"])
def test_a_users_key_named_like_the_workloads_lost_by_a_restore_is_named(
    cache: RedisComponent, tmp_path: Path, workload: bool
) -> None:
    if workload:
        _write(cache, range(1, 10))
    taken = _backup_and_restore(cache, tmp_path, workload)
    assert compare(taken, cache.fingerprint()) == []  # quiet control: the workload's own keys are unseen
    cache.client().delete(f"{WORKLOAD_MARK}:x")
    assert SPACE in {d.part for d in compare(taken, cache.fingerprint())}
    assert taken.scheme == "redis/5"


def test_a_key_the_workload_could_have_written_is_compared_where_it_never_ran(cache: RedisComponent) -> None:
    """No marker, nothing left out: ``drproof_workload:7`` in a database the workload never marked is data."""
    cache.client().set(f"{WORKLOAD_MARK}:7", "7")
    taken = cache.fingerprint()
    cache.client().set(f"{WORKLOAD_MARK}:7", "8")
    assert SPACE in {d.part for d in compare(taken, cache.fingerprint())}


def test_a_key_of_the_markers_name_but_another_type_is_the_databases_own(cache: RedisComponent) -> None:
    cache.client().hset(WORKLOAD_MARK, "field", "value")
    cache.client().set(f"{WORKLOAD_MARK}:7", "7")
    taken = cache.fingerprint()  # no traceback (WRONGTYPE), and nothing left out
    cache.client().delete(f"{WORKLOAD_MARK}:7")
    cache.client().hset(WORKLOAD_MARK, "field", "changed")
    assert {d.part for d in compare(taken, cache.fingerprint())} == {SPACE, "db0 keyspace (no prefix)"}


def test_the_workloads_keys_in_another_database_than_the_marked_one_are_compared(cache: RedisComponent) -> None:
    _write(cache, range(1, 3))  # marks db 0
    other = cache.client(1)
    other.set(f"{WORKLOAD_MARK}:1", "1")
    taken = cache.fingerprint()
    other.delete(f"{WORKLOAD_MARK}:1")
    assert {d.part for d in compare(taken, cache.fingerprint())} == {f"db1 keyspace {WORKLOAD_MARK}"}


def test_a_scheme_4_backup_compares_in_its_own_scheme_and_says_what_it_left_out(cache: RedisComponent) -> None:
    old = cache.legacy_fingerprint("redis/4")
    assert old is not None and old.scheme == "redis/4"
    assert SPACE not in old.parts  # its rule: the whole key space, by name
    cache.client().delete(f"{WORKLOAD_MARK}:x")
    assert compare(old, cache.fingerprint_like(old)) == []
    assert "drproof_workload" in (cache.blind_spot("redis/4") or "")
    assert cache.blind_spot("redis/5") is None
