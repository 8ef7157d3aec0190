"""Restore tests of real backups, end to end (issue 15).

A "production" stack runs as an operator runs one: PostgreSQL 15 from Debian and the
embedded 18, Debian's Redis 7, a volume and configuration files. ``drproof backup`` takes
its backup. The production servers are then **stopped**, which proves the restore test
needs none of them, and a restore-test scenario restores the set into a sandbox:

- healthy: every check passes (quiet control);
- sabotaged sandbox copy: fidelity fails, naming the table (exit 1);
- a set older than ``latest_within``: freshness fails (exit 1);
- a damaged set: the restore is refused (exit 1), the repository left as it was;
- an unreachable repository: the test could not run (exit 2), never a pass.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components.base import Component
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import lossy_side_load, read_results, run_cli, servers_under
from tests.integration.servers import PG15, debian_redis, require_pg15

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXTRA_SQL = """
CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 7;
SELECT nextval('invoice_numbers') FROM generate_series(1, 3);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), what text);
INSERT INTO audit_log (what) SELECT 'event ' || g FROM generate_series(1, 200) g;
"""


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = (Path(dirpath) / name).lstat()
            out[str((Path(dirpath) / name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A backed-up production stack whose servers are stopped once the backup is taken."""
    require_pg15()
    root = tmp_path_factory.mktemp("production")
    sql = root / "extra.sql"
    sql.write_text(EXTRA_SQL)
    env = {"PROD_PG15": "", "PROD_PG18": "", "PROD_REDIS": secrets.token_urlsafe(16), "PROD_KEY": secrets.token_hex(32)}
    with (
        LocalRuntime(root / "pg15", images={"postgres": str(PG15)}) as rt15,
        LocalRuntime(root / "rest") as rt,
        debian_redis(root / "redis", env["PROD_REDIS"]) as redis_port,
    ):
        comps: dict[str, Component] = {
            "orders15": PostgresComponent(
                "orders15", PostgresParams(database="orders", customers=120, sql_file=sql), rt15
            ),
            "shop18": PostgresComponent("shop18", PostgresParams(database="shop", customers=90), rt),
            "uploads": VolumesComponent("uploads", VolumesParams(files=10), rt),
            "app-config": ConfigurationComponent("app-config", ConfigurationParams(), rt),
        }
        for c in comps.values():
            c.provision()
            c.seed()
        _seed_redis(redis_port, env["PROD_REDIS"])
        env["PROD_PG15"] = rt15.postgres("orders15").password
        env["PROD_PG18"] = rt.postgres("shop18").password
        config = {
            "repository": {"type": "local", "path": str(root / "repository")},
            "encryption": {"key_env": "PROD_KEY"},
            "components": {
                "orders15": {
                    "kind": "postgres",
                    "url": f"postgresql://postgres@127.0.0.1:{rt15.postgres('orders15').port}/orders",
                    "password_env": "PROD_PG15",
                },
                "shop18": {
                    "kind": "postgres",
                    "url": f"postgresql://postgres@127.0.0.1:{rt.postgres('shop18').port}/shop",
                    "password_env": "PROD_PG18",
                },
                "sessions": {"kind": "redis", "url": f"redis://127.0.0.1:{redis_port}", "password_env": "PROD_REDIS"},
                "uploads": {"kind": "volumes", "path": str(comps["uploads"].path)},  # type: ignore[attr-defined]
                "app-config": {"kind": "configuration", "path": str(comps["app-config"].path)},  # type: ignore[attr-defined]
            },
        }
        (root / "backup-config.yaml").write_text(yaml.safe_dump(config))
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            assert run_cli(["backup", "--config", str(root / "backup-config.yaml"), "--json"]) == 0
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    # Every production server is stopped now: the restore tests below cannot reach them.
    yield {"root": root, "config": root / "backup-config.yaml", "key": env["PROD_KEY"]}


def _seed_redis(port: int, password: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    pipe = client.pipeline()
    for i in range(300):
        pipe.set(f"session:{i}", secrets.token_hex(8))
        pipe.hset(f"cart:{i % 40}", f"item{i}", i)
    pipe.expire("session:7", 3600)
    pipe.execute()


def _scenario(tmp_path: Path, production: dict[str, Any], **extra: Any) -> Path:
    data: dict[str, Any] = {
        "name": "shop-restore-test",
        "objectives": {"rto": "10m"},
        "source": {"config": str(production["config"]), "pick": {"latest_within": "2h"}},
        "assertions": ["fidelity", "rto", "freshness", "backup_integrity"],
    }
    data.update(extra)
    path = tmp_path / "restore-test.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _scenario_source(production: dict[str, Any]) -> dict[str, Any]:
    return {"config": str(production["config"]), "pick": {"latest_within": "2h"}}


def _run(
    tmp_path: Path, scenario: Path, production: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("PROD_KEY", production["key"])
    report = tmp_path / "report"
    code = run_cli(["run", str(scenario), "--report-dir", str(report), "--work-dir", str(tmp_path / "work"), "--quiet"])
    assert servers_under(tmp_path / "work") == [], "the sandbox is torn down"
    return code, read_results(report)


def _status(results: dict[str, Any]) -> dict[str, str]:
    return {
        a["id"].split("[")[0] + ("[" + a["id"].split("[")[1] if "[" in a["id"] else ""): a["status"]
        for a in results["assertions"]
    }


def test_the_latest_backup_restores_into_a_sandbox_of_matching_versions(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _tree_state(production["root"] / "repository")
    code, results = _run(tmp_path, _scenario(tmp_path, production), production, monkeypatch)
    assert code == 0, [a for a in results["assertions"] if a["status"] != "pass"] or results["error"]
    fidelity = [a for a in results["assertions"] if a["name"] == "fidelity"]
    assert sorted(a["id"] for a in fidelity) == [
        "fidelity[app-config]",
        "fidelity[orders15]",
        "fidelity[sessions]",
        "fidelity[shop18]",
        "fidelity[uploads]",
    ]
    runtime = results["runtime"]
    assert "15." in runtime["postgres:orders15"] and "18." in runtime["postgres:shop18"], runtime
    assert "7." in runtime["redis:sessions"], runtime  # the wheel's Redis 6.2 could not read a Redis 7 RDB
    scope = results["scope"]
    assert scope["kind"] == "restore-test" and scope["backup_id"] in scope["statement"]
    assert scope["backup_age_seconds"] > 0
    assert results["measured"]["rto_seconds"] > 0
    assert _tree_state(production["root"] / "repository") == before, "the production repository is never written"
    # The sandbox databases held nothing: their restores left the proof to fidelity, which says so.
    proofs = {p["component"]: p["data"].get("proof") for p in results["phases"] if p["name"].startswith("restore ")}
    assert proofs["orders15"] and proofs["shop18"], proofs
    assert all("proof" in a["evidence"] for a in fidelity if a["id"] in ("fidelity[orders15]", "fidelity[shop18]"))


def test_a_restore_that_loads_other_rows_fails_fidelity_when_its_proof_was_left_to_it(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control of the deferred proof: pg_restore loses a row on the way; fidelity, the proof, fails."""
    lossy_side_load(monkeypatch, "DELETE FROM audit_log WHERE id = 42")
    code, results = _run(
        tmp_path,
        _scenario(tmp_path, production, source={**_scenario_source(production), "components": ["orders15"]}),
        production,
        monkeypatch,
    )
    assert code == 1
    failed = [a for a in results["assertions"] if a["status"] == "fail"]
    assert [a["id"] for a in failed] == ["fidelity[orders15]"], failed
    assert any("table public.audit_log" in f for f in failed[0]["findings"]), failed[0]["findings"]
    assert "proof" in failed[0]["evidence"]


def test_without_a_fidelity_check_the_restore_proves_before_the_swap(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing would compare the sandbox afterwards: the restore's own proof refuses the lossy load."""
    lossy_side_load(monkeypatch, "DELETE FROM audit_log WHERE id = 42")
    scenario = _scenario(
        tmp_path,
        production,
        source={**_scenario_source(production), "components": ["orders15"]},
        assertions=["rto", "freshness"],
    )
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    assert code == 1
    restore = [p for p in results["phases"] if p["name"].startswith("restore orders15")]
    assert restore[0]["status"] == "refused" and "public.audit_log" in restore[0]["detail"], restore
    assert "proof" not in restore[0]["data"]


def test_a_sabotaged_sandbox_copy_fails_fidelity_naming_the_table(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = _scenario(
        tmp_path,
        production,
        steps=[
            {"restore": {"from": "source"}},
            {"sql": {"target": "orders15", "statement": "DELETE FROM audit_log WHERE id = 42"}},
        ],
    )
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    assert code == 1
    failed = [a for a in results["assertions"] if a["status"] == "fail"]
    assert [a["id"] for a in failed] == ["fidelity[orders15]"]
    assert any("table public.audit_log" in f for f in failed[0]["findings"]), failed[0]["findings"]


def test_a_set_older_than_latest_within_fails_freshness(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = _scenario(tmp_path, production)
    data = yaml.safe_load(scenario.read_text())
    data["source"]["pick"] = {"latest_within": "1s"}  # the backup was taken well before this test
    data["source"]["components"] = ["uploads"]
    scenario.write_text(yaml.safe_dump(data))
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    assert code == 1
    freshness = next(a for a in results["assertions"] if a["name"] == "freshness")
    assert freshness["status"] == "fail" and "over the 1s limit" in freshness["summary"]
    assert [a["id"] for a in results["assertions"] if a["status"] != "pass"] == [freshness["id"]]


def test_a_damaged_set_is_refused_and_left_as_it_was(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "damaged"
    shutil.copytree(production["root"] / "repository", copy / "repository")
    config = yaml.safe_load(production["config"].read_text())
    config["repository"]["path"] = str(copy / "repository")
    (copy / "backup-config.yaml").write_text(yaml.safe_dump(config))
    stored = next((copy / "repository" / "sets").glob("*/uploads/*.zst"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    before = _tree_state(copy / "repository")
    scenario = _scenario(tmp_path, {**production, "config": copy / "backup-config.yaml"})
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    assert code == 1
    restore = next(p for p in results["phases"] if p["kind"] == "restore" and p["component"] == "uploads")
    assert restore["status"] == "refused", restore
    integrity = next(a for a in results["assertions"] if a["name"] == "backup_integrity")
    assert integrity["status"] == "fail" and any("uploads/" in f for f in integrity["findings"])
    assert _tree_state(copy / "repository") == before
    # Found by review: the other components' restores made "stack recovered" and CP-10 evidenced.
    rto = next(a for a in results["assertions"] if a["id"] == "rto[stack]")
    assert rto["status"] == "fail", rto
    assert results["measured"]["rto_seconds"] is None


def test_a_restore_test_that_restores_one_of_its_components_never_recovers_the_stack(
    production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: restoring shop18 alone gave "stack recovered", exit 0, CP-10 evidenced.

    Every sandbox starts empty; the four left alone never came back.
    """
    scenario = _scenario(
        tmp_path,
        production,
        steps=[{"restore": {"from": "source", "components": ["shop18"]}}],
        assertions=["rto"],
    )
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    rto = next(a for a in results["assertions"] if a["id"] == "rto[stack]")
    assert rto["status"] == "fail" and code == 1, rto
    assert results["measured"]["rto_seconds"] is None


@pytest.mark.parametrize("where", ["missing-directory", "s3-closed-port"])
def test_an_unreachable_repository_is_could_not_run_never_a_pass(
    where: str, production: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.runtime.processes import free_port

    config = yaml.safe_load(production["config"].read_text())
    if where == "missing-directory":
        config["repository"] = {"type": "local", "path": str(tmp_path / "no-such-repository")}
    else:
        monkeypatch.setenv("DRPROOF_S3_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("DRPROOF_S3_CONNECT_TIMEOUT", "1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        config["repository"] = {
            "type": "s3",
            "bucket": "backups",
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "region": "us-east-1",
        }
    (tmp_path / "backup-config.yaml").write_text(yaml.safe_dump(config))
    scenario = _scenario(tmp_path, {**production, "config": tmp_path / "backup-config.yaml"})
    code, results = _run(tmp_path, scenario, production, monkeypatch)
    assert code == 2 and results["verdict"] == "error", results["error"]
    assert all(a["status"] == "not_run" for a in results["assertions"])
    assert results["scope"]["kind"] == "restore-test"
    assert not (tmp_path / "no-such-repository").exists(), "a read-only source creates nothing"
