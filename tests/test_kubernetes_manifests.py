"""The Kubernetes manifests in docs/ are valid Kubernetes objects, checked offline.

No cluster can run here, so each document is validated against the API schema of a
recent Kubernetes release with ``kubernetes-validate`` (strict: unknown fields are
errors), and the scenario a manifest embeds is validated by drproof itself.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from drills import yamlsource
from drills.backup_config import BackupConfig
from drills.scenario_files import looks_like_backup_config
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


# --- the fleet's kustomize base (issue 20) ---------------------------------------------------
#
# No `kustomize` binary can be installed here, so the base is plain manifests plus a
# kustomization.yaml, and this test renders the small part of kustomize the base uses
# (resources, configMapGenerator, labels, images) and refuses any other field, so the
# rendering below cannot silently differ from kustomize's. What it does not do: the hash
# suffix kustomize adds to generated ConfigMap names (and rewrites references to).

FLEET = MANIFESTS[0].parent / "fleet"
DOCKERFILE = MANIFESTS[0].parent.parent / "container" / "Dockerfile"
REPO = MANIFESTS[0].parents[3]
_KUSTOMIZE_KEYS = {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "images"}


def _kustomization() -> dict[str, Any]:
    doc = yaml.safe_load((FLEET / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _render() -> list[dict[str, Any]]:
    k = _kustomization()
    assert set(k) <= _KUSTOMIZE_KEYS, (
        f"kustomization.yaml uses fields this offline render does not: {set(k) - _KUSTOMIZE_KEYS}"
    )
    objects = [d for name in k["resources"] for d in _documents(FLEET / name)]
    for gen in k["configMapGenerator"]:
        data = {Path(f).name: (FLEET / f).read_text(encoding="utf-8") for f in gen["files"]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in k["images"]}
    for obj in objects:
        for entry in k["labels"]:
            assert entry.get("includeSelectors") is False and not entry.get("includeTemplates")
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for container in _pod(obj).get("containers", []):
            container["image"] = images.get(container["image"], container["image"])
    return objects


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a CronJob (or {} for objects without one)."""
    if obj["kind"] != "CronJob":
        return {}
    spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def _cronjob(name: str) -> dict[str, Any]:
    return next(o for o in _render() if o["kind"] == "CronJob" and o["metadata"]["name"] == name)


def test_the_rendered_fleet_base_validates_against_the_kubernetes_schema() -> None:
    objects = _render()
    assert {o["kind"] for o in objects} == {"ServiceAccount", "PersistentVolumeClaim", "CronJob", "ConfigMap"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_every_file_of_the_base_is_used_and_every_file_named_exists() -> None:
    k = _kustomization()
    named = set(k["resources"]) | {f for gen in k["configMapGenerator"] for f in gen["files"]} | {"kustomization.yaml"}
    on_disk = {p.relative_to(FLEET).as_posix() for p in FLEET.rglob("*") if p.is_file()}
    assert named == on_disk


def test_references_inside_the_base_resolve() -> None:
    objects = _render()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        pod = _pod(obj)
        if not pod:
            continue
        assert ("ServiceAccount", pod["serviceAccountName"]) in names
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
        assert all(c["image"].startswith("registry.example.com/") for c in pod["containers"])


def _pod_templates() -> list[tuple[str, dict[str, Any]]]:
    found = [(o["metadata"]["name"], _pod(o)) for o in _render()]
    found += [(f"{p.name}:{d['metadata']['name']}", _pod(d)) for p in MANIFESTS for d in _documents(p)]
    return [(name, pod) for name, pod in found if pod]


def test_every_pod_runs_unprivileged_as_the_image_s_user() -> None:
    """The Dockerfile's USER, the manifests' runAsUser: one uid, never root."""
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert uid is not None
    for name, pod in _pod_templates():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == int(uid.group(1)), name
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), (
                f"{name}: work directories need a writable /tmp"
            )


def test_the_indexed_restore_tests_cover_every_system_once() -> None:
    job = _cronjob("drproof-restore-tests")["spec"]["jobTemplate"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    systems = next(e["value"] for e in container["env"] if e["name"] == "SYSTEMS").split()
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == len(systems) == job["maxFailedIndexes"]
    generated = next(g for g in _kustomization()["configMapGenerator"] if g["name"] == "drproof-restore-tests")
    files = {Path(f).name for f in generated["files"]}
    for system in systems:
        assert f"{system}.yaml" in files
        doc = yaml.safe_load((FLEET / "restore-tests" / f"{system}.yaml").read_text(encoding="utf-8"))
        assert doc["source"]["config"] in files  # mounted beside it, where the scenario looks
    # Each index picks its own system: the pod's shell line, run with echo in place of drproof.
    script = container["args"][0].replace("exec drproof", "echo")
    for index, system in enumerate(systems):
        out = subprocess.run(
            ["/bin/sh", "-c", script],
            env={"SYSTEMS": " ".join(systems), "JOB_COMPLETION_INDEX": str(index), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[:2] == ["run", f"/etc/drproof/restore-tests/{system}.yaml"]
        assert out[3].startswith(f"/evidence/restore-tests/{system}/")


@pytest.mark.parametrize("name", ["drproof-drill-fleet", "drproof-restore-tests"])
def test_the_pods_command_lines_are_drproof_s_own(name: str) -> None:
    """The options in the manifests exist: parsed by drproof's own argument parser."""
    from drills import fleet
    from drills.cli import _parser

    line = _cronjob(name)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    command = line.split("exec drproof ", 1)[1]
    command = re.sub(r"\$\(date[^)]*\)", "20260101T000000Z", command).replace("$system", "shop")
    args = _parser().parse_args(shlex.split(command))
    assert args.command == "run"
    if name == "drproof-drill-fleet":
        assert args.parallel == 2 and fleet.is_fleet(args.scenario, args.parallel)


def test_the_drills_in_the_base_are_valid_and_the_quickstart_is_the_shipped_one() -> None:
    for path in sorted((FLEET / "drills").glob("*.yaml")) + sorted((FLEET / "restore-tests").glob("*.yaml")):
        doc = yamlsource.load(path)
        if looks_like_backup_config(doc):
            assert model_problems(doc, BackupConfig)[1] == [], path
        else:
            assert validate(doc)[1] == [], path
    shipped = REPO / "scenarios" / "quickstart.yaml"
    assert (FLEET / "drills" / "quickstart.yaml").read_bytes() == shipped.read_bytes()
