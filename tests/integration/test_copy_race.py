"""The issue-17 incident between real processes: ``drproof recovery copy`` racing a backup whose retention prunes.

Retention in one process deleted the set another process was copying offsite, and the
copy reported a false "offsite copy failed" (2 of 5 racing rounds). Here two forked
processes (the CLI already imported, so both reach the repository within milliseconds
of a shared barrier) run ``drproof backup`` with ``keep_last: 1`` and ``drproof recovery
copy --id`` of the set that backup's retention deletes, 50 times against one real local
repository. Each copy must either complete and verify offsite, or find its set already
gone before it read a byte; the backup must succeed every time; nothing half copied or
half deleted may be left. Which process wins is the scheduler's business and is only
counted, never asserted (two runs: 10 and 8 copies done, the prune waited for a copy in
flight in 5 and 4 rounds). With the copy's shared lock removed, the same test failed in
round 18 ("files1/files.tar is missing": the set deleted under the copy).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from drills import standalone
from drills.backup_config import load_config
from drills.cli import main
from engine.repository.local import LocalRepository

pytestmark = [pytest.mark.integration]

ROUNDS = 50
DELAY_STEP = 0.015  # seconds; small data keeps a round near the backup's own duration
COMPONENTS = 4  # one artifact each: a copy opens several files, one after the other
DATA = 256 << 10  # bytes per component, incompressible
FORK = multiprocessing.get_context("fork")


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    """One primary and signing key: the backup job prunes it, the offsite job copies from it."""
    assert main(["keys", "init", "--private", str(tmp_path / "repo.key"), "--public", str(tmp_path / "repo.pub")]) == 0
    components = "".join(f"  files{i}: {{kind: volumes, path: files{i}}}\n" for i in range(COMPONENTS))
    common = f"repository: {{path: primary}}\nsigning: {{key_file: repo.key}}\ncomponents:\n{components}"
    backup = tmp_path / "backup.yaml"
    backup.write_text(common + "retention: {keep_last: 1}\n")
    copy = tmp_path / "copy.yaml"
    copy.write_text(common + "offsite: {path: offsite}\n")
    return backup, copy


def _change_files(tmp_path: Path) -> None:
    for i in range(COMPONENTS):
        (tmp_path / f"files{i}").mkdir(exist_ok=True)
        (tmp_path / f"files{i}" / "a.bin").write_bytes(os.urandom(DATA))


def _cli(argv: list[str], output: Path, start: Barrier, delay: float) -> None:
    """A child process: wait for the other (then ``delay`` s), run the CLI with its output in ``output``, exit with its code."""
    code = 99
    with output.open("w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        try:
            start.wait(timeout=60)
            time.sleep(delay)
            code = main(argv)
        except BaseException:
            traceback.print_exc(file=out)
        out.flush()
    os._exit(code)


def _race(tmp_path: Path, backup: Path, copy: Path, backup_id: str, round_: int) -> dict[str, tuple[int, str]]:
    """Start the backup and the copy together; each one's exit code and output."""
    start = FORK.Barrier(2)
    argvs = {
        "backup": ["backup", "--config", str(backup)],
        "copy": ["recovery", "copy", "--config", str(copy), "--id", backup_id],
    }
    outputs = {name: tmp_path / f"{name}-{round_}.out" for name in argvs}
    # The copy starts at a different moment of the backup each round: before it, while it
    # archives, and while its retention waits for or holds the exclusive lock.
    delays = {"backup": 0.0, "copy": (round_ % 16) * DELAY_STEP}
    procs = {
        name: FORK.Process(target=_cli, args=(argv, outputs[name], start, delays[name])) for name, argv in argvs.items()
    }
    for proc in procs.values():
        proc.start()
    for proc in procs.values():
        proc.join(timeout=120)
        assert proc.exitcode is not None, f"round {round_}: a process did not finish"
    return {name: (procs[name].exitcode or 0, outputs[name].read_text()) for name in procs}


def test_recovery_copy_racing_backup_retention_loses_nothing(tmp_path: Path) -> None:
    backup, copy = _configs(tmp_path)
    _change_files(tmp_path)
    assert main(["backup", "--config", str(backup)]) == 0  # also imports what the children will run
    primary = LocalRepository(tmp_path / "primary")
    outcomes = {
        "copied": 0,
        "pruned before the copy": 0,
        "prune waited for the copy": 0,
        "copy waited for the prune": 0,
    }
    for round_ in range(ROUNDS):
        (old,) = [m.id for m in primary.list()]
        _change_files(tmp_path)
        result = _race(tmp_path, backup, copy, old, round_)
        code, out = result["backup"]
        assert code == 0 and "retention: deleted 1 old backup(s)" in out, f"round {round_}: backup: {out}"
        outcomes["prune waited for the copy"] += "prune (retention): waiting for" in out and "copy to" in out
        code, out = result["copy"]
        outcomes["copy waited for the prune"] += "waiting for" in out and "held by prune" in out
        assert "failed" not in out and "damaged" not in out, f"round {round_}: copy: {out}"
        if code == 0:
            outcomes["copied"] += 1
            offsite = standalone.repository(load_config(copy), None, offsite=True)
            assert offsite.verify(old).ok, f"round {round_}: {old} does not verify offsite"
        else:
            assert code == 2 and f"no complete backup set '{old}'" in out, f"round {round_}: copy: {out}"
            outcomes["pruned before the copy"] += 1
            assert not (tmp_path / "offsite" / "sets" / old).exists()
        remaining = [m.id for m in primary.list()]
        assert len(remaining) == 1 and remaining != [old], f"round {round_}: primary holds {remaining}"
        assert primary.chain_audit().findings == []  # each pruned set left its signed tombstone
        assert list((tmp_path / "offsite" / ".staging").glob("*")) == []  # no half-copied set
    offsite = LocalRepository(tmp_path / "offsite")
    assert all(offsite.verify(m.id).ok for m in offsite.list())
    assert outcomes["copied"] + outcomes["pruned before the copy"] == ROUNDS, outcomes
    print(f"outcomes over {ROUNDS} rounds: {outcomes}")
