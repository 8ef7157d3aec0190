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
