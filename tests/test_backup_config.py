"""backup-config.yaml: the documented example is valid, and mistakes are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.backup_config import S3RepositorySpec, load_config
from drills.targets import PostgresSpec, VolumesSpec
from engine.errors import ValidationFailed

ROOT = Path(__file__).resolve().parent.parent


def test_documented_example_is_valid() -> None:
    config = load_config(ROOT / "docs" / "examples" / "backup-config.yaml")
    assert isinstance(config.offsite, S3RepositorySpec)
    assert isinstance(config.components["orders-db"], PostgresSpec)
    assert isinstance(config.components["uploads"], VolumesSpec)
    assert config.retention is not None and config.retention.daily == 7
    assert config.components["embeddings"].dimension == 384


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "repository: {path: r}\ncomponents:\n  db: {kind: postgres, url: 'postgresql://u:pw@h/d'}\n",
            ":3:29: components.db.url: passwords may not be written in the URL",
        ),
        (
            "repository: {path: r}\nretention: {keep_last: 0}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            ":2:1: retention: a retention policy that keeps nothing",
        ),
        (
            "repository: {path: r}\nencryption: {key_env: A, passphrase_env: B}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            ":2:1: encryption: give exactly one of key_env, key_file, passphrase_env",
        ),
        (
            "repository: {type: s3}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            ":1:1: repository.bucket: required key 'bucket' is missing",
        ),
        (
            "repository: {type: s3, bucket: bkt, access_key_id_env: K}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            ":1:1: repository: give access_key_id_env and secret_access_key_env together",
        ),
        (
            "repository: {type: s3, bucket: bkt, endpoint_url: 'https://k:s@h'}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            ":1:1: repository: endpoint_url must not hold credentials",
        ),
        (
            "repository: {type: s3, bucket: bkt, object_lock: {mode: LEGAL, days: 0}}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            "repository.object_lock.mode",
        ),
        (
            "repository: {type: local}\ncomponents:\n  f: {kind: volumes, path: x}\n",
            "repository.path: required key 'path' is missing",
        ),
        (
            "repository: {path: r}\ncomponents:\n  f: {kind: volume, path: x}\n",
            ":3:13: components.f.kind: unknown kind 'volume'; did you mean 'volumes'?",
        ),
    ],
)
def test_mistakes_are_located(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ValidationFailed) as exc:
        load_config(path)
    assert any(expected in str(p) for p in exc.value.problems), [str(p) for p in exc.value.problems]


def test_s3_secrets_come_only_from_the_named_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drills.backup_config import secret_variables
    from drills.standalone import repository
    from engine.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(
        "repository: {type: s3, bucket: bkt, access_key_id_env: KEY_ID, secret_access_key_env: KEY_SECRET,\n"
        "  object_lock: {mode: COMPLIANCE, days: 30}}\ncomponents:\n  f: {kind: volumes, path: x}\n"
    )
    config = load_config(path)
    assert {"KEY_ID", "KEY_SECRET"} <= set(secret_variables(config))  # kept from operators' commands
    monkeypatch.delenv("KEY_SECRET", raising=False)
    monkeypatch.setenv("KEY_ID", "AKIDEXAMPLE")
    with pytest.raises(ConfigError, match=r"repository\.secret_access_key_env: the environment variable KEY_SECRET"):
        repository(config, None)
    monkeypatch.setenv("KEY_SECRET", "s3cr3t-never-shown")
    repo = repository(config, None)
    assert repo.describe() == {"type": "s3", "bucket": "bkt", "prefix": "", "object_lock": "COMPLIANCE for 30 days"}
    assert "s3cr3t" not in repr(vars(repo))


def test_validate_accepts_restore_targets_without_a_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``recovery restore --to`` file needs no repository; validate refused what the restore accepts (review)."""
    from drills.cli import main

    targets = tmp_path / "scratch.yaml"
    targets.write_text("components:\n  files: {kind: volumes, path: /srv/scratch/files}\n")
    assert main(["validate", str(targets)]) == 0
    assert "restore targets for `recovery restore --to`" in capsys.readouterr().out
    wrong = tmp_path / "wrong.yaml"  # the same file with a mistake: still named at its line
    wrong.write_text("components:\n  files: {kind: volumes, pth: /srv/scratch/files}\n")
    assert main(["validate", str(wrong)]) == 2
    assert "wrong.yaml:2:" in capsys.readouterr().err
