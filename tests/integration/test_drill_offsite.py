"""Offsite copies, encryption and the three faults that need them, in real drills.

Each fault's damage is checked where it lands (the primary directory, the key, the
offsite link), and each has a negative control: a scenario that declares the wrong
outcome must not pass. The stack is files only (configuration and volumes), so no
server starts and every drill takes about a second.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine import backup as engine_backup
from engine.errors import FaultError, IntegrityError, RepositoryError
from engine.faults import FaultContext, faults
from engine.faults.offsite import UnreachableRepository
from engine.journal import Results
from engine.manifest import Manifest
from engine.repository import LocalRepository

pytestmark = [pytest.mark.integration]

STACK = """
stack:
  runtime: local
  components:
    app-config:
      kind: configuration
    uploads:
      kind: volumes
      seed: {files: 12, file_size: 2KiB}
"""


def _run(tmp_path: Path, name: str, body: str) -> Results:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{STACK}{body}", encoding="utf-8")
    return DrillRunner(load_scenario(path), work_root=tmp_path / "work").run()


def _phase(results: Results, name: str) -> Any:
    return next(p for p in results.phases if p.name == name)


def _restores(results: Results) -> list[Any]:
    return [p for p in results.phases if p.kind == "restore"]


def _timeline(results: Results) -> Any:
    return next(a for a in results.assertions if a.id == "timeline")


# -- delete_local_backups ----------------------------------------------------------------------


LOCAL_LOSS = """
repository:
  path: primary
  offsite: {{path: offsite}}
steps:
  - backup: {{name: nightly}}
  - disaster: {{target: repository, fault: delete_local_backups}}
  - disaster: {{target: uploads, fault: delete_files, fraction: 1.0}}
  - restore: {{from: nightly, components: [uploads], expect: {primary_expect}}}
  - restore: {{from: nightly, components: [uploads], repository: offsite}}
assertions:
  - fidelity
"""


def test_delete_local_backups_empties_the_primary_and_the_offsite_copy_restores(tmp_path: Path) -> None:
    results = _run(tmp_path, "local-loss", LOCAL_LOSS.format(primary_expect="refused"))
    assert results.verdict == "pass", (results.error, [(a.id, a.findings) for a in results.assertions])
    backup_id = results.backups[0].id
    effect = next(d.effect for d in results.disasters if d.fault == "delete_local_backups")
    assert effect == {"deleted": [backup_id], "count": 1, "listed_after": 0}
    # The damage is real: nothing of the set is left in the primary directory.
    assert LocalRepository(tmp_path / "primary").list() == []
    assert not (tmp_path / "primary" / "sets" / backup_id).exists()
    # The offsite copy was made by the backup step, recorded, and still verifies.
    offsite_data = _phase(results, "backup nightly").data["offsite"]
    assert offsite_data["copied"] == [backup_id] and offsite_data["verified"] is True
    assert LocalRepository(tmp_path / "offsite").verify(backup_id).ok
    primary, offsite = _restores(results)
    assert primary.status == "refused" and "missing" in primary.detail
    assert offsite.status == "ok" and offsite.data["repository"] == "offsite"
    assert results.repository["offsite"] == str(tmp_path / "offsite")


def test_negative_control_restore_from_the_emptied_primary_cannot_pass(tmp_path: Path) -> None:
    results = _run(tmp_path, "local-loss-wrong", LOCAL_LOSS.format(primary_expect="success"))
    assert results.verdict == "fail"
    timeline = _timeline(results)
    assert timeline.status == "fail"
    assert any("expected to succeed but refused" in f for f in timeline.findings), timeline.findings


def test_delete_local_backups_refuses_an_empty_repository(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    ctx = FaultContext(component=None, repository=repo, find_backup=_no_backup, rng=random.Random(1))
    fault = faults.get("delete_local_backups")(faults.get("delete_local_backups").Params())
    with pytest.raises(FaultError, match="no backup set"):
        fault.inject(ctx)


def _no_backup(name: str | None) -> Manifest:
    raise AssertionError("not used")


# -- lose_encryption_key -----------------------------------------------------------------------


LOST_KEY = """
repository:
  path: primary
  encryption: true
steps:
  - backup: {{name: nightly}}
  - disaster: {{target: repository, fault: lose_encryption_key}}
  - restore: {{from: nightly, expect: {expect}}}
assertions:
  - backup_integrity: {{backup: nightly}}
"""


def test_lost_key_refuses_restores_naming_both_fingerprints(tmp_path: Path) -> None:
    results = _run(tmp_path, "lost-key", LOST_KEY.format(expect="refused"))
    assert results.verdict == "pass", (results.error, [(a.id, a.findings) for a in results.assertions])
    effect = results.disasters[0].effect
    before, after = effect["key_fingerprint_before"], effect["key_fingerprint_after"]
    assert before != after and len(before) == len(after) == 32
    # The sets really are encrypted with the lost key, and still verify without any key.
    repo = LocalRepository(tmp_path / "primary")
    manifest = repo.get(results.backups[0].id)
    assert manifest.encryption is not None and manifest.encryption["key_fingerprint"] == before
    assert repo.verify(manifest.id).ok
    restores = _restores(results)
    assert len(restores) == 2
    for phase in restores:
        assert phase.status == "refused"
        assert before in phase.detail and after in phase.detail, phase.detail
    # Refused before anything was touched: the components still hold their seeded state.
    assert all(c.restored_from is None for c in results.components)


def test_negative_control_restore_with_the_lost_key_cannot_pass(tmp_path: Path) -> None:
    results = _run(tmp_path, "lost-key-wrong", LOST_KEY.format(expect="success"))
    assert results.verdict == "fail"
    assert _timeline(results).status == "fail"


def test_lose_encryption_key_needs_an_encrypted_drill(tmp_path: Path) -> None:
    body = "steps:\n  - backup\n  - disaster: {target: repository, fault: lose_encryption_key}\nassertions:\n  - fidelity\n"
    results = _run(tmp_path, "no-key", body)
    assert results.verdict == "error"
    assert results.error is not None and "repository.encryption: true" in results.error


# -- offsite_unavailable -----------------------------------------------------------------------


def test_one_failed_attempt_is_retried_and_stays_on_record(tmp_path: Path) -> None:
    body = """
repository:
  offsite: {path: offsite}
steps:
  - backup: {name: first}
  - disaster: {target: repository, fault: offsite_unavailable, attempts_failing: 1}
  - backup: {name: second}
assertions:
  - backup_integrity
"""
    results = _run(tmp_path, "offsite-blip", body)
    assert results.verdict == "pass", (results.error, [(a.id, a.findings) for a in results.assertions])
    attempts = _phase(results, "backup second").data["offsite"]["attempts"]
    assert [a["ok"] for a in attempts] == [False, True]
    assert "offsite unreachable" in attempts[0]["error"]
    assert {m.id for m in LocalRepository(tmp_path / "offsite").list()} == {b.id for b in results.backups}
    assert "probe" in results.disasters[0].effect


OUTAGE = """
repository:
  path: primary
  offsite: {{path: offsite}}
steps:
  - backup: {{name: first}}
  - disaster: {{target: repository, fault: offsite_unavailable{attempts}}}
  - backup: {{name: second{expect}}}
assertions:
  - backup_integrity
"""


def test_backup_during_an_outage_fails_the_step_loudly(tmp_path: Path) -> None:
    results = _run(tmp_path, "offsite-down", OUTAGE.format(attempts="", expect=""))
    assert results.verdict == "error"
    assert results.error is not None and "offsite copy failed 3 times" in results.error
    phase = _phase(results, "backup second")
    assert phase.status == "error"
    assert [a["ok"] for a in phase.data["offsite"]["attempts"]] == [False, False, False]
    # The set exists in the primary only; the offsite holds just the earlier one.
    second = phase.data["backup_id"]
    assert second in {m.id for m in LocalRepository(tmp_path / "primary").list()}
    assert [m.id for m in LocalRepository(tmp_path / "offsite").list()] == [results.backups[0].id]
    assert all(a.status == "not_run" for a in results.assertions)


def test_a_declared_failing_backup_passes_the_timeline(tmp_path: Path) -> None:
    results = _run(tmp_path, "offsite-down-declared", OUTAGE.format(attempts="", expect=", expect: failure"))
    assert results.verdict == "pass", (results.error, [(a.id, a.findings) for a in results.assertions])
    phase = _phase(results, "backup second")
    assert phase.status == "failed" and phase.detail.startswith("failed as expected")
    assert "1 backup(s) failed as declared" in _timeline(results).summary


def test_negative_control_backup_expected_to_fail_but_succeeding_fails_the_drill(tmp_path: Path) -> None:
    results = _run(
        tmp_path, "offsite-back", OUTAGE.format(attempts=", attempts_failing: 2", expect=", expect: failure")
    )
    assert results.verdict == "fail"
    timeline = _timeline(results)
    assert timeline.status == "fail"
    assert timeline.findings == ["step 3: backup second was expected to fail but succeeded"]


def test_offsite_unavailable_needs_an_offsite_repository(tmp_path: Path) -> None:
    body = "steps:\n  - backup\n  - disaster: {target: repository, fault: offsite_unavailable}\nassertions:\n  - fidelity\n"
    results = _run(tmp_path, "no-offsite", body)
    assert results.verdict == "error"
    assert results.error is not None and "repository.offsite" in results.error


def test_restore_from_offsite_without_one_stops_before_anything_starts(tmp_path: Path) -> None:
    body = "steps:\n  - backup\n  - restore: {repository: offsite}\nassertions:\n  - fidelity\n"
    results = _run(tmp_path, "no-offsite-restore", body)
    assert results.verdict == "error"
    assert results.error is not None and "repository.offsite" in results.error
    assert not results.backups


def test_unreachable_repository_counts_failures_and_then_delegates(tmp_path: Path) -> None:
    inner = LocalRepository(tmp_path / "offsite")
    repo = UnreachableRepository(inner, attempts_failing=2)
    for _ in range(2):
        with pytest.raises(RepositoryError, match="offsite unreachable"):
            repo.list()
    assert repo.list() == [] and repo.failed_attempts == 2
    forever = UnreachableRepository(inner, attempts_failing=None)
    for _ in range(5):
        with pytest.raises(RepositoryError):
            forever.list()


# -- the shared copy -----------------------------------------------------------------------------


def test_copy_set_refuses_a_damaged_source_and_publishes_nothing(tmp_path: Path) -> None:
    results = _run(
        tmp_path, "copy-source", "repository: {path: primary}\nsteps:\n  - backup\nassertions:\n  - fidelity\n"
    )
    source = LocalRepository(tmp_path / "primary")
    manifest = source.get(results.backups[0].id)
    artifact = manifest.artifacts[0]
    source.overwrite_stored(manifest, artifact, 0, bytes([source.read_stored(manifest, artifact, 0, 1)[0] ^ 0xFF]))
    target = LocalRepository(tmp_path / "copy")
    with pytest.raises(IntegrityError, match="damaged in the source"):
        engine_backup.copy_set(source, target, manifest)
    assert target.list() == []


FAILED_BACKUP = """
name: failed-backup-then-{what}
objectives: {{rto: 1m}}
stack:
  components:
    uploads: {{kind: volumes, seed: {{files: 10, file_size: 1KiB}}}}
repository:
  offsite: {{}}
steps:
  - backup: {{name: first}}
  - disaster: {{target: repository, fault: offsite_unavailable}}
  - backup: {{name: failing, expect: failure}}
  - disaster: {{target: uploads, fault: delete_files}}
  - restore: {restore}
assertions: [fidelity, rto]
"""


def test_a_backup_that_failed_as_declared_cannot_be_named_later(tmp_path: Path) -> None:
    """Found by review: validation said ok, then the restore crashed with KeyError: 'failing'."""
    from engine.errors import ValidationFailed

    path = tmp_path / "s.yaml"
    path.write_text(FAILED_BACKUP.format(what="named", restore="{from: failing}"))
    with pytest.raises(ValidationFailed, match=r"no earlier backup step named 'failing' \(earlier backups: first\)"):
        load_scenario(path)


def test_the_latest_set_a_failed_backup_left_restores_and_is_compared(tmp_path: Path) -> None:
    """Its set was written before the offsite copy failed: pick: latest restores it, and
    fidelity compares with its own fingerprint (this crashed with a KeyError on its id)."""
    path = tmp_path / "s.yaml"
    path.write_text(FAILED_BACKUP.format(what="latest", restore="{pick: latest}"))
    results = DrillRunner(load_scenario(path), work_root=tmp_path / "work").run()
    assert results.error is None, results.error
    [fidelity] = [a for a in results.assertions if a.name == "fidelity"]
    assert fidelity.status == "pass" and "match backup" in fidelity.summary
