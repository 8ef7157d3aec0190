"""Restore tests without a server: which set is picked, that the source repository is never
written, how the backup's age is judged, and what validation says about a `source:`."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.assertions.base import DrillState
from drills.assertions.freshness import Freshness, FreshnessParams
from drills.loader import load_scenario
from drills.source import OpenedSource
from engine.errors import BackupNotFound, RepositoryError, ValidationFailed
from engine.manifest import ComponentRecord, ComponentSummary, ManifestSummary
from engine.picking import Pick, Picked, pick_set
from engine.repository.local import LocalRepository
from engine.repository.readonly import ReadOnlyRepository

NOW = datetime(2026, 12, 6, 5, 30, tzinfo=UTC)


def _summary(i: int, hours_ago: float, components: tuple[str, ...] = ("db", "files")) -> ManifestSummary:
    at = NOW - timedelta(hours=hours_ago)
    return ManifestSummary(
        id=f"{at:%Y%m%dT%H%M%SZ}-{i:06x}",
        created_at=at,
        completed_at=at,
        components=[ComponentSummary(name=c, kind="volumes") for c in components],
        artifacts=[],
    )


ages = st.lists(st.floats(min_value=0, max_value=24 * 60, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(ages)
def test_latest_is_the_newest_set_holding_every_component(hours: list[float]) -> None:
    sets = [_summary(i, h, ("db", "files") if i % 3 else ("db",)) for i, h in enumerate(hours)]
    fitting = [s for s in sets if {"db", "files"} <= {c.name for c in s.components}]
    if not fitting:
        with pytest.raises(BackupNotFound, match="holds db, files"):
            pick_set(sets, ["db", "files"], Pick(), NOW)
        return
    picked = pick_set(sets, ["db", "files"], Pick(), NOW)
    assert picked.summary.created_at == max(s.created_at for s in fitting)
    assert picked.candidates == len(fitting)


@settings(max_examples=60, deadline=None)
@given(ages, st.integers(min_value=0, max_value=2**31 - 1))
def test_a_random_pick_stays_in_its_window_and_repeats_with_its_seed(hours: list[float], seed: int) -> None:
    sets = [_summary(i, h) for i, h in enumerate(hours)]
    rule = Pick("random_within", within_seconds=7 * 24 * 3600, seed=seed)
    window = [s for s in sets if (NOW - s.created_at).total_seconds() <= 7 * 24 * 3600]
    if not window:
        with pytest.raises(BackupNotFound, match="in the last"):
            pick_set(sets, ["db"], rule, NOW)
        return
    first = pick_set(sets, ["db"], rule, NOW)
    assert first.summary in window and first.seed == seed
    assert pick_set(list(reversed(sets)), ["db"], rule, NOW).summary == first.summary


def test_a_random_pick_without_a_seed_draws_one_and_records_it() -> None:
    sets = [_summary(i, i) for i in range(10)]
    picked = pick_set(sets, ["db"], Pick("random_within", within_seconds=48 * 3600), NOW)
    assert picked.seed is not None
    again = pick_set(sets, ["db"], Pick("random_within", within_seconds=48 * 3600, seed=picked.seed), NOW)
    assert again.summary == picked.summary


def test_a_named_set_must_exist_and_hold_every_component() -> None:
    sets = [_summary(0, 1), _summary(1, 2, ("db",))]
    assert pick_set(sets, ["db"], Pick("id", backup_id=sets[1].id), NOW).summary == sets[1]
    with pytest.raises(BackupNotFound, match="holds db, not every one of db, files"):
        pick_set(sets, ["db", "files"], Pick("id", backup_id=sets[1].id), NOW)
    with pytest.raises(BackupNotFound, match="no complete backup 'nope'"):
        pick_set(sets, ["db"], Pick("id", backup_id="nope"), NOW)


def test_an_empty_repository_is_not_found_never_an_empty_pass() -> None:
    with pytest.raises(BackupNotFound, match=r"\(0 sets there\)"):
        pick_set([], [], Pick(), NOW)


# -- the source repository is read, never written -------------------------------------------


def _repository_with_a_set(root: Path) -> tuple[LocalRepository, str]:
    repo = LocalRepository(root)
    writer = repo.begin("nightly")
    with writer.artifact("files", "tree.tar") as sink:
        sink.write(b"x" * 1000)
    manifest = writer.commit([ComponentRecord(name="files", kind="volumes", artifacts=[])], {}, {})
    return repo, manifest.id


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st_ = (Path(dirpath) / name).lstat()
            out[str((Path(dirpath) / name).relative_to(root))] = (st_.st_mode, st_.st_mtime_ns)
    return out


def test_a_read_only_repository_reads_everything_and_writes_nothing(tmp_path: Path) -> None:
    inner, backup_id = _repository_with_a_set(tmp_path / "repo")
    before = _tree(tmp_path / "repo")
    repo = ReadOnlyRepository(inner)
    manifest = repo.get(backup_id)
    assert [s.id for s in repo.summaries()] == [backup_id]
    report = repo.verify(backup_id)
    assert report.ok and all(c.content_proven for c in report.checks)
    with repo.open_artifact(manifest, manifest.artifacts[0]) as stream:
        assert stream.read() == b"x" * 1000
    with repo.lock(exclusive=False):
        pass
    refusals = [
        lambda: repo.begin("x"),
        lambda: repo.delete(backup_id),
        lambda: repo.record_verification(report),
        lambda: repo.overwrite_stored(manifest, manifest.artifacts[0], 0, b"y"),
        lambda: repo.truncate_stored(manifest, manifest.artifacts[0], 1),
        lambda: repo.delete_stored(manifest, manifest.artifacts[0]),
        lambda: repo.import_set(manifest, inner),
    ]
    for attempt in refusals:
        with pytest.raises(RepositoryError, match="open read-only for a restore test"):
            attempt()
    with pytest.raises(RepositoryError, match="exclusive lock"), repo.lock(exclusive=True):
        pass
    assert _tree(tmp_path / "repo") == before  # no lock file, no verification mark, nothing changed
    assert repo.describe()["access"] == "read-only"


# -- freshness --------------------------------------------------------------------------------


def _state(age: timedelta, latest_within: float | None = None) -> DrillState:
    inner, backup_id = _repository_with_a_set(Path(os.environ.get("TMPDIR", "/tmp")) / f"fresh-{random.random()}")
    manifest = inner.get(backup_id)
    opened_at = manifest.created_at + age
    picked = Picked(ManifestSummary.of(manifest), "the newest", 1)
    state = DrillState(repository=inner, rpo_objective=None)
    state.source = OpenedSource(Path("cfg.yaml"), None, inner, manifest, picked, opened_at, ["files"], latest_within)  # type: ignore[arg-type]
    return state


def test_freshness_passes_within_the_limit_and_fails_beyond_it() -> None:
    fresh = Freshness().evaluate(FreshnessParams.model_validate({"max": "26h"}), _state(timedelta(hours=25)))[0]
    assert fresh.status == "pass" and fresh.evidence["limit_from"] == "freshness.max"
    stale = Freshness().evaluate(FreshnessParams(), _state(timedelta(hours=27), latest_within=26 * 3600))[0]
    assert stale.status == "fail" and stale.evidence["limit_from"] == "source.pick.latest_within"
    assert "1h" in stale.findings[0]


def test_freshness_never_trusts_a_backup_dated_in_the_future() -> None:
    skewed = Freshness().evaluate(FreshnessParams.model_validate({"max": "26h"}), _state(timedelta(days=-365)))[0]
    assert skewed.status == "fail" and "in the future" in skewed.summary


def test_freshness_without_a_source_or_a_limit_is_an_error_not_a_pass() -> None:
    inner, _ = _repository_with_a_set(Path(os.environ.get("TMPDIR", "/tmp")) / f"fresh-{random.random()}")
    assert Freshness().evaluate(FreshnessParams(), DrillState(repository=inner))[0].status == "error"
    assert Freshness().evaluate(FreshnessParams(), _state(timedelta(hours=1)))[0].status == "error"


# -- validation -------------------------------------------------------------------------------

DATA = Path(__file__).resolve().parent / "data" / "restore-test"


def test_a_restore_test_needs_no_stack_and_no_steps() -> None:
    loaded = load_scenario(DATA / "valid.yaml")
    assert loaded.scenario.stack.components == {}
    assert [loaded.scenario.step_kind(i) for i in range(len(loaded.scenario.steps))] == ["restore"]
    assert loaded.scenario.steps[0].restore.from_ == "source"  # type: ignore[attr-defined]


def test_restore_test_problems_are_located_in_the_scenario_and_in_the_backup_config() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_scenario(DATA / "invalid.yaml")
    got = [str(p) for p in caught.value.problems]
    scenario, config = str(DATA / "invalid.yaml"), str(DATA / "bad-backup-config.yaml")
    assert got == [
        f"{scenario}:5:20: source.pick.random_within: expected a duration with a unit such as 90s, 5m or 1h30m, got 30",
        f"{scenario}:6:16: source.components[0]: 'files' is both a seeded component of the stack and a component of the source; rename one",
        f"{scenario}:13:5: assertions[0]: freshness needs a limit: freshness.max, source.pick.latest_within or objectives.rpo",
        f"{config}:4:29: components.db.url: passwords may not be written in the URL; use password_env or password_file",
    ]


# -- foreign backups ----------------------------------------------------------------------------


def test_roles_a_dump_refers_to_are_found_and_builtins_left_out() -> None:
    import io

    from engine.foreign.pg_dump import _roles_in

    script = b"""CREATE TABLE public.t (id int);
ALTER TABLE public.t OWNER TO app_owner;
ALTER SCHEMA sales OWNER TO "Sales Team";
GRANT SELECT ON TABLE public.t TO reporting;
GRANT ALL ON SCHEMA public TO PUBLIC;
REVOKE ALL ON TABLE public.t FROM auditor;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO readers;
ALTER TABLE public.t OWNER TO postgres;
-- GRANT SELECT ON t TO commented_out;
"""
    assert _roles_in(io.BytesIO(script)) == {"app_owner", "Sales Team", "reporting", "auditor", "readers"}


def test_the_dump_time_is_trusted_only_in_a_zone_that_is_unambiguous() -> None:
    from engine.foreign.pg_dump import _created

    assert _created("2026-12-05 02:00:12 UTC") == datetime(2026, 12, 5, 2, 0, 12, tzinfo=UTC)
    assert _created("2026-12-05 02:00:12 IST") is None  # India, Ireland or Israel: use the file's time
    assert _created(None) is None and _created("yesterday") is None


def test_a_restore_test_of_foreign_backups_refuses_checks_that_need_a_repository(tmp_path: Path) -> None:
    (tmp_path / "a.dump").write_bytes(b"PGDMP")
    (tmp_path / "rt.yaml").write_text(
        "name: foreign\nsource:\n  backups:\n    db: {format: pg_dump, path: a.dump}\n"
        "assertions:\n  - backup_integrity\n  - fidelity: {components: [dbb]}\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        load_scenario(tmp_path / "rt.yaml")
    messages = [p.message for p in caught.value.problems]
    assert any("backup_integrity re-reads a drproof repository" in m for m in messages), messages
    assert any("no component named 'dbb'; did you mean 'db'?" in m for m in messages), messages


def test_a_source_is_either_a_config_or_backups(tmp_path: Path) -> None:
    (tmp_path / "rt.yaml").write_text("name: neither\nsource: {}\nassertions: [rto]\n")
    with pytest.raises(ValidationFailed, match="give either `config`"):
        load_scenario(tmp_path / "rt.yaml")


def test_a_time_a_copy_resets_is_told_from_one_the_backup_records() -> None:
    from engine.foreign.base import ForeignFacts

    now = datetime.now(UTC)
    stamped = [
        "the file's modification time",
        "the file's modification time (a plain SQL dump records none)",
        "the index file's modification time (a faiss index records no time)",
        "the newest modification time of a file or link in it",
        "the directory's modification time",
        "the archive file's modification time",
        "the backup file's modification time",
        "the repository's modification time",
    ]
    recorded = [
        "the dump's header (Archive created at)",
        "the RDB's ctime field (when it was saved)",
        "backup_label's START TIME",
        "pgBackRest's record of when the backup stopped",
        "the newest modification time of a file in it",
    ]
    assert all(ForeignFacts(now, t).dated_by_file_stamp for t in stamped)
    assert not any(ForeignFacts(now, t).dated_by_file_stamp for t in recorded)
