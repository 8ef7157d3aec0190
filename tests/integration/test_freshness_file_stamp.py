"""freshness of a foreign backup dated only by its file's modification time (found by a hostile review).

A month-old plain SQL dump, copied nightly (``cp`` without ``-p``) to where the restore
test reads it, has the copy's modification time: freshness {max: 1h} passed it as one
second old, and the run passed. That stamp can show a backup is old, never that it is young.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from drills.loader import load_scenario
from drills.runner import DrillRunner
from engine.journal import Results

pytestmark = [pytest.mark.integration]

DUMP = """--
-- PostgreSQL database dump
--
CREATE TABLE invoices (id int PRIMARY KEY, total numeric(10,2));
INSERT INTO invoices SELECT g, g * 1.5 FROM generate_series(1, 50) g;
--
-- PostgreSQL database dump complete
--
"""


def _restore_test(tmp_path: Path, dump: Path) -> Results:
    path = tmp_path / "rt.yaml"
    spec = {
        "name": "stamped-freshness",
        "objectives": {"rto": "10m"},
        "source": {"backups": {"db": {"format": "pg_dump", "path": str(dump), "database": "shop"}}},
        "assertions": [{"freshness": {"max": "1h"}}],
    }
    path.write_text(yaml.safe_dump(spec))
    return DrillRunner(load_scenario(path), work_root=tmp_path / "work").run()


def _old_dump(tmp_path: Path) -> Path:
    old = tmp_path / "old.sql"
    old.write_text(DUMP)
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    return old


def test_a_copy_of_an_old_dump_is_not_proven_fresh(tmp_path: Path) -> None:
    copy = tmp_path / "latest.sql"
    shutil.copy(_old_dump(tmp_path), copy)  # the copy's mtime is now
    results = _restore_test(tmp_path, copy)
    [fresh] = [a for a in results.assertions if a.name == "freshness"]
    assert fresh.status == "not_compared", (fresh.status, fresh.summary)
    assert "not proven" in fresh.summary and "modification time" in fresh.evidence["taken_at_from"]
    assert results.verdict != "pass"


def test_an_old_stamp_still_fails(tmp_path: Path) -> None:
    """Quiet control: the same dump, not copied: its stamp says a month, which is over the limit."""
    results = _restore_test(tmp_path, _old_dump(tmp_path))
    [fresh] = [a for a in results.assertions if a.name == "freshness"]
    assert fresh.status == "fail" and fresh.evidence["age_seconds"] > 29 * 86400
    assert results.verdict == "fail"
