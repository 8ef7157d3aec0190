"""Fixtures for integration tests: a real S3-compatible server (SeaweedFS) on loopback, and a local runtime.

One SeaweedFS serves the whole session (it takes about 4 s to start); each test makes
its own buckets. The AWS credential variables are set for the session to the server's
one identity, so boto3 in the tests and in drproof (in this process or a child) signs
with it, whatever the machine's environment held.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engine.runtime.local import LocalRuntime

if TYPE_CHECKING:
    from engine.components.postgres import PostgresComponent
from tests.integration.seaweedfs import MakeBucket, SeaweedFS, bucket_name, seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    root: Path = tmp_path_factory.mktemp("seaweedfs")
    with seaweedfs(root) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: SeaweedFS) -> str:
    return s3_server.endpoint


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 imitation, only where no real server fits (each use says why in its module)."""
    from moto.server import ThreadedMotoServer

    from engine.runtime.processes import free_port

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto takes any credentials
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    """A local runtime of the test's own, closed (every server it started stopped) after the test."""
    with LocalRuntime(tmp_path / "work") as rt:
        yield rt


@pytest.fixture
def seeded_postgres(runtime: LocalRuntime) -> PostgresComponent:
    """A seeded PostgreSQL (20 customers) of the embedded server, in the test's own runtime."""
    from engine.components.postgres import PostgresComponent, PostgresParams

    comp = PostgresComponent("db", PostgresParams(customers=20), runtime)
    comp.provision()
    comp.seed()
    return comp


@pytest.fixture
def make_bucket(s3_server: SeaweedFS, request: pytest.FixtureRequest) -> MakeBucket:
    """A new bucket on the session's SeaweedFS, named after the test: with Object Lock, or versioned."""

    def make(lock: bool = False, versioned: bool = False) -> str:
        name = bucket_name(request.node.name)
        client: Any = s3_server.client()
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        if versioned and not lock:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    return make
