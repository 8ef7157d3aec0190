"""The standalone engine's acceptance test: a whole running stack, backed up encrypted,
restored into *empty* servers and directories with identical fingerprints, through the
local repository and through S3 (SeaweedFS on loopback).

The source stack has what makes restores go wrong in practice: PostgreSQL tables with
sequences, a materialized view and grants; Redis with every type and keys that expire;
a FAISS index with its id map and metadata; a volume; configuration files with secrets.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from engine.components.base import Component
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]

EXTRA_SQL = """
CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 7;
SELECT nextval('invoice_numbers') FROM generate_series(1, 5);
CREATE MATERIALIZED VIEW big_spenders AS
  SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id HAVING sum(amount) > 500;
"""


def _stack(rt: LocalRuntime, root: Path, seed: bool) -> dict[str, Component]:
    sql = root / "extra.sql"
    sql.write_text(EXTRA_SQL)
    comps: dict[str, Component] = {
        "db": PostgresComponent("db", PostgresParams(database="shop", customers=150, sql_file=sql), rt),
        "cache": RedisComponent("cache", RedisParams(keys=400, expiring_fraction=0.3), rt),
        "vectors": VectorstoreComponent("vectors", VectorstoreParams(vectors=500, dimension=32), rt),
        "files": VolumesComponent("files", VolumesParams(files=12), rt),
        "conf": ConfigurationComponent("conf", ConfigurationParams(), rt),
    }
    for c in comps.values():
        c.provision()
        if seed:
            c.seed()
    return comps


def _config(path: Path, comps: dict[str, Component], rt: LocalRuntime, repository: dict[str, Any], env: str) -> Path:
    pg, rd = rt.postgres("db"), rt.redis("cache")
    config = {
        "repository": repository,
        "encryption": {"key_env": "DRPROOF_TEST_KEY"},
        "components": {
            "db": {
                "kind": "postgres",
                "url": f"postgresql://postgres@127.0.0.1:{pg.port}/shop",
                "password_env": f"{env}_PG",
            },
            "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{rd.port}", "password_env": f"{env}_REDIS"},
            "vectors": {"kind": "vectorstore", "path": str(comps["vectors"].path), "dimension": 32},  # type: ignore[attr-defined]
            "files": {"kind": "volumes", "path": str(comps["files"].path)},  # type: ignore[attr-defined]
            "conf": {"kind": "configuration", "path": str(comps["conf"].path)},  # type: ignore[attr-defined]
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(params=["local", "s3"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "local":
        yield {"type": "local", "path": str(tmp_path / "repo")}
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"drproof-accept-{secrets.token_hex(4)}"
    boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield {"type": "s3", "bucket": bucket, "prefix": "prod", "endpoint_url": endpoint, "region": "us-east-1"}


def test_encrypted_backup_restores_into_empty_servers_with_identical_fingerprints(
    repository: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRPROOF_TEST_KEY", secrets.token_hex(32))
    with LocalRuntime(tmp_path / "prod") as prod, LocalRuntime(tmp_path / "empty") as empty:
        source = _stack(prod, tmp_path, seed=True)
        target = _stack(empty, tmp_path, seed=False)
        for rt, env in ((prod, "PROD"), (empty, "EMPTY")):
            monkeypatch.setenv(f"{env}_PG", rt.postgres("db").password)
            monkeypatch.setenv(f"{env}_REDIS", rt.redis("cache").password)
        prod_config = _config(tmp_path / "prod.yaml", source, prod, repository, "PROD")
        empty_config = _config(tmp_path / "empty.yaml", target, empty, repository, "EMPTY")
        expected = {name: c.fingerprint() for name, c in source.items()}
        assert all(target[n].fingerprint().digest != fp.digest for n, fp in expected.items()), "targets start empty"

        assert run_cli(["backup", "--config", str(prod_config)]) == 0
        backup_id = capsys.readouterr().out.strip().splitlines()[-1]
        assert run_cli(["recovery", "verify", "--config", str(empty_config), "--id", backup_id]) == 0
        code = run_cli(
            ["recovery", "restore", "--config", str(prod_config), "--to", str(empty_config), "--id", backup_id]
        )

        assert code == 0
        for name, fp in expected.items():
            got = target[name].fingerprint()
            assert got.digest == fp.digest, (name, [p for p in fp.parts if fp.parts[p] != got.parts.get(p)])
        # What the acceptance names explicitly, spelled out once more on the restored server.
        conn = target["db"].connect()  # type: ignore[attr-defined]
        with conn.cursor() as cur:
            cur.execute("SELECT last_value FROM invoice_numbers")
            assert cur.fetchone() == (1028,)
            cur.execute("SELECT ispopulated FROM pg_matviews WHERE matviewname = 'big_spenders'")
            assert cur.fetchone() == (True,)
        conn.close()
        ttls = [target["cache"].client().pttl(k) for k in target["cache"].client().scan_iter(count=1000)]  # type: ignore[attr-defined]
        assert any(t > 0 for t in ttls), "expiring keys came back with their expiry"
