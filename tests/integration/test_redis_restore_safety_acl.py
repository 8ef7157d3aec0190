"""A Redis user that may not run scripts or DUMP (review-redis2 finding 7).

Before: ``drproof backup`` ended in a redis-py traceback (``NoPermissionError`` for
``script|load``, a ``ResponseError`` from inside the digest script for DUMP), and the
dry run's health check said "PING answered". Now both name what the user lacks, and
redis-rdb, whose backup needs no DUMP, is not held to it (quiet control).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from engine.backup import backup
from engine.components.redis import RedisComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.errors import ComponentError
from engine.repository.local import LocalRepository
from tests.integration.helpers import external_redis
from tests.integration.servers import redis_server, require_debian_redis

pytestmark = pytest.mark.integration

PASSWORD = "acl-secret"


@pytest.mark.parametrize(
    ("rule", "named"),
    [("-@scripting", r"script\|load.*\+@scripting"), ("-dump", r"can't run this command.*\+dump.*redis-rdb")],
    ids=["no-scripting", "no-dump"],
)
def test_a_user_without_scripts_or_dump_gets_a_domain_error_and_a_failing_health_check(
    tmp_path: Path, rule: str, named: str
) -> None:
    with redis_server(require_debian_redis(), tmp_path / "srv", PASSWORD) as port:
        client = redis.Redis(port=port, password=PASSWORD)
        client.set("user:1", "alice")
        client.execute_command("ACL", "SETUSER", "default", rule)
        comp = external_redis(tmp_path, port, PASSWORD, RedisComponent)
        health = comp.health()
        assert not health.ok and re.search(named, health.detail), health
        repo = LocalRepository(tmp_path / "repo")
        with pytest.raises(ComponentError, match=named + r".*nothing was published"):
            backup(repo, [comp])
        assert repo.summaries() == []


@pytest.mark.parametrize("kind", [RedisComponent, RedisRdbComponent], ids=["redis", "redis-rdb"])
def test_a_user_with_what_the_kind_needs_backs_up(tmp_path: Path, kind: type[RedisComponent]) -> None:
    """Quiet control: full rights for redis; no DUMP for redis-rdb, which does not use it."""
    with redis_server(require_debian_redis(), tmp_path / "srv", PASSWORD) as port:
        client = redis.Redis(port=port, password=PASSWORD)
        client.set("user:1", "alice")
        if kind is RedisRdbComponent:
            client.execute_command("ACL", "SETUSER", "default", "-dump")
        comp = external_redis(tmp_path, port, PASSWORD, kind)
        assert comp.health().ok
        manifest = backup(LocalRepository(tmp_path / "repo"), [comp])
        assert manifest.component("cache").fingerprint is not None
