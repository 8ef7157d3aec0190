"""The Kubernetes manifests in docs/ are valid Kubernetes objects, checked offline.

No cluster can run here, so each document is validated against the API schema of a
recent Kubernetes release with ``kubernetes-validate`` (strict: unknown fields are
errors), and the scenario a manifest embeds is validated by drproof itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from drills import yamlsource
from drills.backup_config import BackupConfig
from drills.validation import model_problems, validate

MANIFESTS = sorted((Path(__file__).resolve().parent.parent / "docs" / "examples" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.33"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    docs = _documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_manifest_with_an_unknown_field_is_refused() -> None:
    doc = _documents(MANIFESTS[0])[-1]
    doc["spec"]["schedul"] = doc["spec"].pop("schedule")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_embedded_scenario_and_backup_config_are_valid(tmp_path: Path) -> None:
    config_map = next(d for p in MANIFESTS for d in _documents(p) if d["kind"] == "ConfigMap")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    config_doc = yamlsource.load(tmp_path / "backup-config.yaml")
    assert model_problems(config_doc, BackupConfig)[1] == []
    scenario, problems = validate(yamlsource.load(tmp_path / "shop-restore-test.yaml"))
    assert problems == [] and scenario is not None and scenario.source is not None
