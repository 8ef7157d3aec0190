"""Faults in the engine's own path (issue 7, item 5): the repository or a server fails mid-backup.

Real processes throughout: ``drproof backup`` runs as a subprocess against a repository on
a deliberately small tmpfs, against embedded PostgreSQL and Redis servers that are
SIGKILLed while it runs, and against a real S3-compatible server (SeaweedFS) behind a fault-injecting proxy.
Each time the backup must fail with a domain error (exit 2, no traceback, no secret) that
says what broke and where, publish nothing, and leave the sets stored before intact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.repository import S3Repository
from engine.runtime.local import LocalRuntime
from tests.integration.fault_proxy import FaultProxy
from tests.integration.helpers import mounted_tmpfs
from tests.integration.seaweedfs import SeaweedFS, bucket_name

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


# --- driving the CLI -------------------------------------------------------------------------


def _cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "drills.cli", *args]


def _drproof(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(args), capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _backup_id(config: Path, env: dict[str, str] | None = None, extra: list[str] | None = None) -> str:
    summary = json.loads(_ok(_drproof(["backup", "--config", str(config), "--json", *(extra or [])], env)).stdout)
    return str(summary["id"])


def _listed(config: Path, env: dict[str, str] | None = None) -> list[str]:
    out = json.loads(_ok(_drproof(["recovery", "list", "--config", str(config), "--json"], env)).stdout)
    assert out["unreadable"] == {}
    return [b["id"] for b in out["backups"]]


def _verifies(config: Path, backup_id: str, env: dict[str, str] | None = None) -> None:
    result = _ok(_drproof(["recovery", "verify", "--config", str(config), "--id", backup_id, "--json"], env))
    assert json.loads(result.stdout)["ok"] is True


def _domain_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one ``drproof: error:`` paragraph of a failed run; it must contain every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    _, marker, message = result.stderr.partition("drproof: error: ")
    assert marker, result.stderr[-3000:]
    message = message.strip()
    assert "\n\n" not in message and len(message) < 3000, message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)
    return message


def _write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- 1. disk full during a backup ------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs as the repository directory; unmounted afterwards, also on failure."""
    with mounted_tmpfs(tmp_path / "repo", "20m") as mountpoint:
        yield mountpoint


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_full_during_backup_publishes_nothing_and_says_so(tmp_path: Path, small_disk: Path) -> None:
    notes, data = tmp_path / "notes", tmp_path / "data"
    notes.mkdir()
    (notes / "readme.txt").write_text("a small component that fits\n")
    data.mkdir()
    for i in range(40):  # 40 MiB of incompressible data for a 20 MiB repository
        (data / f"blob{i:02d}.bin").write_bytes(os.urandom(1 << 20))
    config = _write_config(
        tmp_path / "backup-config.yaml",
        {
            "repository": {"path": str(small_disk)},
            "components": {
                "notes": {"kind": "configuration", "path": str(notes)},
                "data": {"kind": "volumes", "path": str(data)},
            },
        },
    )
    first = _backup_id(config, None, ["--components", "notes"])
    free_before = _free_bytes(small_disk)

    started = time.monotonic()
    failed = _drproof(["backup", "--config", str(config)])
    message = _domain_error(failed, str(small_disk), "is full", "No space left on device", "nothing was published")
    assert "free space" in message
    print(f"\ndisk full: {message}")
    assert time.monotonic() - started < 30
    # The failure is on the audit record with the same explanation.
    last = json.loads((small_disk / "audit.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "backup" and last["outcome"] == "failed" and "is full" in last["error"], last

    # Nothing half-written is listed, nothing is left in staging to hold the space, and the
    # set stored before still verifies.
    assert _listed(config) == [first]
    assert list((small_disk / ".staging").iterdir()) == []
    assert _free_bytes(small_disk) >= free_before - (64 << 10), "the failed backup still holds space"
    _verifies(config, first)

    # With room to spare, the very same backup succeeds.
    grown = subprocess.run(["mount", "-o", "remount,size=80m", str(small_disk)], capture_output=True)
    assert grown.returncode == 0, grown.stderr
    second = _backup_id(config)
    assert _listed(config) == [first, second]
    _verifies(config, second)
    _verifies(config, first)


# --- 2. a server that dies mid-backup --------------------------------------------------------


def _staged(repo: Path, component: str, artifact: str, min_size: int) -> Path | None:
    """The artifact being written by a running backup, once ``min_size`` bytes have reached it."""
    for path in (repo / ".staging").glob(f"*/{component}/{artifact}.zst"):
        try:
            if path.stat().st_size >= min_size:
                return path
        except FileNotFoundError:
            continue
    return None


def _kill_mid_backup(
    config: Path,
    env: dict[str, str],
    repo: Path,
    component: str,
    artifact: str,
    kill: Callable[[], None],
    restart: Callable[[], None],
    grow: Callable[[int], None],
    log: Path,
    min_size: int = 1,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``drproof backup`` and kill the server once ``artifact`` is being written.

    If the backup finishes before its artifact is seen (a fast machine), or succeeds anyway
    because the server had already sent everything into the socket before it died,
    ``grow`` adds more data and the attempt is repeated (after ``restart``); a fixed sleep
    would be flaky either way. Returns the killed run and the sets listed before it.
    """
    for attempt in range(1, 4):
        grow(attempt)
        before = _listed(config, env)
        with open(log, "w") as out, open(log.with_suffix(".err"), "w") as err:
            proc = subprocess.Popen(
                _cmd(["backup", "--config", str(config)]), stdout=out, stderr=err, env=env, cwd=ROOT
            )

            def writing_or_done(proc: subprocess.Popen[bytes] = proc) -> bool:
                return _staged(repo, component, artifact, min_size) is not None or proc.poll() is not None

            try:
                _wait(writing_or_done, 60, f"{artifact} to be written")
                if proc.poll() is None:
                    kill()
                    code = proc.wait(60)
                    run = subprocess.CompletedProcess(
                        proc.args, code, log.read_text(), log.with_suffix(".err").read_text()
                    )
                    if code != 0:
                        return run, before
                    restart()  # the kill came too late to matter: a complete set, rightly
                    continue
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == 0, log.with_suffix(".err").read_text()[-3000:]
    pytest.fail("the backup always finished before the server could be killed, even with more data")


@pytest.mark.parametrize(
    ("kind", "artifact", "tool"),
    [("postgres", "database.dump", "pg_dump"), ("postgres-physical", "base.tar", "pg_basebackup")],
)
def test_postgres_killed_mid_backup_fails_the_backup_clearly(
    tmp_path: Path, kind: str, artifact: str, tool: str
) -> None:
    repo = tmp_path / "repo"
    with LocalRuntime(tmp_path / "prod") as rt:
        db = PostgresComponent("db", PostgresParams(database="shop", customers=50), rt)
        db.provision()
        db.seed()
        pg = rt.postgres("db")
        env = {**os.environ, "SHOP_DB_PASSWORD": pg.password}
        config = _write_config(
            tmp_path / "backup-config.yaml",
            {
                "repository": {"path": str(repo)},
                "components": {
                    "db": {
                        "kind": kind,
                        "url": f"postgresql://postgres@127.0.0.1:{pg.port}/shop",
                        "password_env": "SHOP_DB_PASSWORD",
                        **(
                            {
                                "physical": {
                                    "data_directory": str(pg.data_dir()),
                                    "wal_archive": str(pg.wal_archive()),
                                    "stop": ["true"],  # only a restore stops and starts the server
                                    "start": ["true"],
                                }
                            }
                            if kind == "postgres-physical"
                            else {}
                        ),
                    }
                },
            },
        )
        first = _backup_id(config, env)
        assert _listed(config, env) == [first]

        def grow(attempt: int) -> None:
            # ~60 MB of text per attempt: the tool streams for a few seconds on this machine.
            conn = db.connect()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE TABLE filler_{attempt} AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS payload "
                    f"FROM generate_series(1, {700_000 * attempt}) g"
                )
            conn.close()

        failed, before = _kill_mid_backup(
            config, env, repo, "db", artifact, pg.kill, pg.ensure_running, grow, tmp_path / "run.log"
        )
        message = _domain_error(failed, "'db'", "nothing was published")
        if f"{tool} of 'db' failed" in message or "cannot connect" in message:
            # The tool's own summary ("PQgetCopyData() failed") may not say why; the engine adds
            # it. ("cannot connect": the tool had finished, the engine's next query failed.)
            assert "'db' no longer answers" in message and "server stopped" in message, message
        else:  # a driver error in the engine's own query
            assert "'db': lost the connection to its server" in message, message
        print(f"\n{kind} killed mid-backup: {message}")
        assert pg.password not in failed.stdout + failed.stderr

        assert first in before
        assert _listed(config, env) == before, "a partial set was listed"
        assert list((repo / ".staging").iterdir()) == []
        for backup_id in before:
            _verifies(config, backup_id, env)


def test_redis_killed_mid_backup_fails_the_backup_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with LocalRuntime(tmp_path / "prod") as rt:
        cache = RedisComponent("cache", RedisParams(keys=1000), rt)
        cache.provision()
        cache.seed()
        rd = rt.redis("cache")
        env = {**os.environ, "CACHE_PASSWORD": rd.password}
        config = _write_config(
            tmp_path / "backup-config.yaml",
            {
                "repository": {"path": str(repo)},
                "components": {
                    "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{rd.port}", "password_env": "CACHE_PASSWORD"}
                },
            },
        )
        first = _backup_id(config, env)
        assert _listed(config, env) == [first]

        def grow(attempt: int) -> None:
            r = cache.client()
            pipe = r.pipeline(transaction=False)
            blob = os.urandom(1024)
            for i in range(60_000 * attempt):
                pipe.set(f"bulk{attempt}:{i}".encode(), blob)
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()

        # The artifact exists from the moment the component starts reading keys.
        failed, before = _kill_mid_backup(
            config, env, repo, "cache", "keys.dump", rd.kill, rd.ensure_running, grow, tmp_path / "run.log", 0
        )
        message = _domain_error(failed, "'cache'", "nothing was published")
        assert "lost the connection to its server" in message or "no longer answers" in message, message
        print(f"\nredis killed mid-backup: {message}")
        assert rd.password not in failed.stdout + failed.stderr

        assert first in before
        assert _listed(config, env) == before, "a partial set was listed"
        assert list((repo / ".staging").iterdir()) == []
        for backup_id in before:
            _verifies(config, backup_id, env)


# --- 3. S3 errors and timeouts ---------------------------------------------------------------


@pytest.fixture
def s3_setup(s3_server: SeaweedFS, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A bucket with one good set in it, written straight to SeaweedFS, and a source directory."""
    s3_endpoint = s3_server.endpoint
    bucket = bucket_name("faults-" + request.node.name)
    s3_server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    source = tmp_path / "files"
    source.mkdir()
    for i in range(5):  # 10 MiB, incompressible: a multipart upload of two parts
        (source / f"f{i}.bin").write_bytes(os.urandom(2 << 20))
    env = {
        **os.environ,
        **s3_server.env(),
        "DRPROOF_S3_MAX_ATTEMPTS": "4",
        "DRPROOF_S3_CONNECT_TIMEOUT": "2",
        "DRPROOF_S3_READ_TIMEOUT": "2",
    }

    def config(endpoint: str) -> Path:
        return _write_config(
            tmp_path / f"config-{endpoint.rsplit(':', 1)[-1]}.yaml",
            {
                "repository": {"type": "s3", "bucket": bucket, "prefix": "prod", "endpoint_url": endpoint},
                "components": {"files": {"kind": "volumes", "path": str(source)}},
            },
        )

    direct = config(s3_endpoint)
    first = _backup_id(direct, env)
    keys = (s3_server.access_key, s3_server.secret_key)
    return {"bucket": bucket, "config": config, "direct": direct, "first": first, "env": env, "keys": keys}


def _lock_or_settings(head: bytes) -> bool:
    """The lease objects of the repository lock and the bucket's settings: spared by the proxy."""
    line = head.split(b"\r\n", 1)[0]
    return b"/locks/" in line or b"?versioning" in line or b"?object-lock" in line


def _upstream_port(s3_endpoint: str) -> int:
    return int(s3_endpoint.rsplit(":", 1)[-1])


def _no_secrets(result: subprocess.CompletedProcess[str], keys: tuple[str, str]) -> None:
    for secret in keys:
        assert secret not in result.stdout + result.stderr


def _store_untouched(setup: dict[str, Any], s3_endpoint: str) -> None:
    """Only the set stored before is listed, it verifies, no multipart upload is left open,
    and with the store reachable again the next backup needs no cleanup first."""
    assert _listed(setup["direct"], setup["env"]) == [setup["first"]]
    _verifies(setup["direct"], setup["first"], setup["env"])
    repo = S3Repository(setup["bucket"], "prod", s3_endpoint)
    assert repo.client.list_multipart_uploads(Bucket=setup["bucket"]).get("Uploads", []) == []
    again = _backup_id(setup["direct"], setup["env"])
    assert _listed(setup["direct"], setup["env"]) == [setup["first"], again]


def test_s3_errors_are_retried_with_backoff_then_the_backup_succeeds(
    s3_endpoint: str, s3_setup: dict[str, Any]
) -> None:
    with FaultProxy(_upstream_port(s3_endpoint), mode="pass", fail_first=3, spare=_lock_or_settings) as proxy:
        config = s3_setup["config"](proxy.url)
        result = _ok(_drproof(["backup", "--config", str(config), "--json"], s3_setup["env"]))
        assert proxy.failed == 3 and proxy.requests > 3, vars(proxy)
    _no_secrets(result, s3_setup["keys"])
    second = json.loads(result.stdout)["id"]
    assert _listed(s3_setup["direct"], s3_setup["env"]) == [s3_setup["first"], second]
    _verifies(s3_setup["direct"], second, s3_setup["env"])


def test_s3_failing_every_request_fails_the_backup_after_bounded_retries(
    s3_endpoint: str, s3_setup: dict[str, Any]
) -> None:
    with FaultProxy(_upstream_port(s3_endpoint), mode="fail", spare=_lock_or_settings) as proxy:
        config = s3_setup["config"](proxy.url)
        started = time.monotonic()
        failed = _drproof(["backup", "--config", str(config)], s3_setup["env"])
        elapsed = time.monotonic() - started
    message = _domain_error(
        failed, proxy.url, s3_setup["bucket"], "after 4 attempts", "retried 3 times", "nothing was published"
    )
    assert "SlowDown" in message or "503" in message, message
    print(f"\nS3 failing: {message}")
    # Exactly 4: tar and zstd writing again while they unwind must not start the retry cycle
    # over (each would cost another 4 attempts), and nothing is attempted after the failure.
    assert proxy.requests == proxy.failed == 4, vars(proxy)
    assert proxy.spared > 0, vars(proxy)  # the repository lock was taken and released through the proxy
    assert elapsed < 30, elapsed
    _no_secrets(failed, s3_setup["keys"])
    _store_untouched(s3_setup, s3_endpoint)


def test_s3_that_never_answers_fails_the_backup_within_the_timeouts(s3_endpoint: str, s3_setup: dict[str, Any]) -> None:
    with FaultProxy(_upstream_port(s3_endpoint), mode="hang", spare=_lock_or_settings) as proxy:
        config = s3_setup["config"](proxy.url)
        started = time.monotonic()
        failed = _drproof(["backup", "--config", str(config)], s3_setup["env"])
        elapsed = time.monotonic() - started
    message = _domain_error(failed, proxy.url, s3_setup["bucket"], "after 4 attempts", "timeout")
    print(f"\nS3 hanging: {message}")
    assert proxy.requests == proxy.hung == 4, vars(proxy)
    # Four attempts of at most a 2 s read timeout each, plus backoff (up to 1 + 2 + 4 s),
    # start-up, and taking and releasing the repository lock (lease requests, spared).
    assert elapsed < 30, elapsed
    _no_secrets(failed, s3_setup["keys"])
    _store_untouched(s3_setup, s3_endpoint)
