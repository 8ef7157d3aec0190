"""`drproof backup` of a source that fails its health check keeps the set, says so and exits 1.

The same path as a hole in the WAL archive (test_backup_wal_gap.py): a warning, `--json`'s
``findings``, a failed audit line naming the set, and `recovery list` marking it. Found by
review (review-vector): a vector store holding a NaN was backed up with exit 0, and learnt
of only when its restore swapped the damage in. No server is needed: a FAISS store.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.components import vectorstore
from engine.components.vectorstore import INDEX, VectorstoreComponent, VectorstoreParams
from tests.conftest import DirsRuntime
from tests.integration.helpers import run_cli

pytestmark = [pytest.mark.integration]


def _setup(tmp_path: Path) -> tuple[VectorstoreComponent, Path, Path]:
    comp = VectorstoreComponent("vectors", VectorstoreParams(vectors=200, dimension=8), DirsRuntime(tmp_path / "src"))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    repo = tmp_path / "repo"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repository": {"type": "local", "path": str(repo)},
                "components": {"vectors": {"kind": "vectorstore", "path": str(comp.path), "dimension": 8}},
            }
        )
    )
    return comp, config, repo


def _backup(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = run_cli(["backup", "--config", str(config), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _list(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(["recovery", "list", "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_backup_of_a_store_holding_a_nan_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    comp, config, repo = _setup(tmp_path)
    with open(comp.path / INDEX, "r+b") as fh:
        fh.seek(vectorstore._HEADER.size + 10 * 8 * 4)
        fh.write(struct.pack("<f", float("nan")))

    code, taken, err = _backup(config, capsys)

    assert code == 1, "what was captured is damaged: the backup says so the night it happens"
    assert "warning: vectors: the source failed its health check when it was backed up" in err
    assert "hold NaN or infinity (e.g. the one with id 77)" in err
    assert taken["findings"] and "NaN" in taken["findings"][0], "--json carries it"
    line = json.loads((repo / "audit.jsonl").read_text().splitlines()[-1])
    assert (line["event"], line["outcome"], line["backup_ids"]) == ("backup", "failed", [taken["id"]])
    assert "NaN" in line["findings"][0]
    assert json.loads((repo / "sets" / taken["id"] / "verified.json").read_text())["ok"] is True, "the set is kept"

    code, out, err = _list(config, capsys)
    assert code == 0
    [row] = [r for r in out.splitlines() if r.startswith(taken["id"])]
    assert row.endswith("[1 finding(s)]")
    assert f"FINDING {taken['id']}: vectors: the source failed its health check" in err

    code = run_cli(["recovery", "verify", "--config", str(config), "--id", taken["id"]])
    said = capsys.readouterr()
    assert code == 1 and "FINDING vectors: the source failed its health check" in said.out + said.err


def test_a_backup_of_a_healthy_store_is_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Quiet control: exit 0, no warning, no finding in the audit line or the inventory."""
    _, config, repo = _setup(tmp_path)
    code, taken, err = _backup(config, capsys)
    assert code == 0 and "findings" not in taken and "warning" not in err
    line = json.loads((repo / "audit.jsonl").read_text().splitlines()[-1])
    assert line["outcome"] == "ok" and "findings" not in line
    code, out, err = _list(config, capsys)
    assert code == 0 and "finding" not in out and "FINDING" not in err
    code = run_cli(["recovery", "verify", "--config", str(config), "--id", taken["id"]])
    said = capsys.readouterr()
    assert code == 0 and "FINDING" not in said.out + said.err


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_set_of_an_unhealthy_source_is_not_restored_in_place_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """"latest" is the damaged set: restored in place it would put the NaN back over a repaired store."""
    comp, config, _ = _setup(tmp_path)
    healthy = (comp.path / INDEX).read_bytes()
    with open(comp.path / INDEX, "r+b") as fh:
        fh.seek(vectorstore._HEADER.size + 10 * 8 * 4)
        fh.write(struct.pack("<f", float("nan")))
    code, taken, _ = _backup(config, capsys)
    assert code == 1
    (comp.path / INDEX).write_bytes(healthy)  # the operator repaired the source since
    live = _tree(comp.path)
    for dry in ([], ["--dry-run"]):
        code = run_cli(["recovery", "restore", "--config", str(config), "--in-place", "--yes", *dry])
        err = capsys.readouterr().err
        assert code == 1, err
        assert f"backup {taken['id']} was taken of a source that failed its health check" in err
        assert "--accept-unhealthy" in err
        assert _tree(comp.path) == live, "the refused restore changed the live store"
    # Asked for, it restores the set as it was: the damage comes back, and health says so.
    code = run_cli(["recovery", "restore", "--config", str(config), "--in-place", "--yes", "--accept-unhealthy"])
    said = capsys.readouterr()
    assert (comp.path / INDEX).read_bytes() != healthy
    assert code != 0 and "NaN" in said.out + said.err  # "restored but not healthy": never green


def test_a_set_of_a_healthy_source_restores_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Quiet control: no finding, no refusal, no flag needed."""
    comp, config, _ = _setup(tmp_path)
    code, _, _ = _backup(config, capsys)
    assert code == 0
    live = _tree(comp.path)
    (comp.path / INDEX).unlink()
    code = run_cli(["recovery", "restore", "--config", str(config), "--in-place", "--yes"])
    assert code == 0, capsys.readouterr().err
    assert _tree(comp.path) == live


def _list_json(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = run_cli(["recovery", "list", "--config", str(config), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("nan", [True, False], ids=["unhealthy-at-backup", "quiet-control"])
def test_the_inventory_says_a_sets_finding_at_its_top_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nan: bool
) -> None:
    """Review of verdict-honesty leftovers, 4: `list` is an inventory (exit 0 on a sound set with a finding,
    as documented), but its JSON said the finding only inside the set's entry; the top-level `findings`
    (the chain's) was empty, so a script reading the top level was told nothing was wrong."""
    comp, config, _ = _setup(tmp_path)
    if nan:
        with open(comp.path / INDEX, "r+b") as fh:
            fh.seek(vectorstore._HEADER.size + 10 * 8 * 4)
            fh.write(struct.pack("<f", float("nan")))
    _, taken, _ = _backup(config, capsys)
    code, body = _list_json(config, capsys)
    assert code == 0, "an inventory: the finding alone does not make the exit 1 (backup and verify exit 1)"
    if nan:
        assert body["needs_attention"] is True
        [entry] = body["sets_with_findings"]
        assert entry["backup"] == taken["id"] and "NaN" in entry["findings"][0], entry
    else:
        assert (body["needs_attention"], body["sets_with_findings"]) == (False, [])
