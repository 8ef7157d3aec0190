"""The rules of a logical PostgreSQL restore's space check, without a server (``engine.components.postgres_space``).

Older sets did not record the database's size: they must still restore, with the check
saying it only estimated; a guess never refuses. A data directory this host cannot see is
said, never silently passed.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import diskspace
from engine.components import postgres_space
from engine.components.base import ArtifactSource
from engine.errors import ComponentError
from engine.manifest import ArtifactRecord


def _record(name: str, raw: int) -> ArtifactRecord:
    return ArtifactRecord(component="db", name=name, path=f"db/{name}.zst", size=1, sha256="0" * 64, raw_size=raw)


def _source(details: dict[str, Any], **raw: int) -> ArtifactSource:
    artifacts = {name.replace("_", "."): _record(name.replace("_", "."), size) for name, size in raw.items()}
    return ArtifactSource(artifacts, opener=None, details=details)


class _Comp:
    instance = "db"
    service: object = None


def test_a_recorded_size_is_exact() -> None:
    need = postgres_space.database_need(_source({"database_bytes": 5000, "dump_bytes": 10}, database_dump=10))
    assert need is not None and need.exact and need.bytes == 5000


def test_an_older_set_is_estimated_from_its_dump() -> None:
    need = postgres_space.database_need(_source({"dump_bytes": 1000}, database_dump=1000, globals_sql=50))
    assert need is not None and not need.exact
    assert need.bytes == 1000 * postgres_space.ESTIMATE_FACTOR and "estimated" in need.how


def test_without_details_the_artifacts_raw_sizes_are_the_dump() -> None:
    source = _source({}, database_dir_data_tar=700, database_dir_toc=30, database_dir_files_json=9, globals_sql=50)
    need = postgres_space.database_need(source)
    assert need is not None and need.bytes == 730 * postgres_space.ESTIMATE_FACTOR
    assert postgres_space.scratch_need(source) == 730  # a directory-format dump is extracted
    assert postgres_space.scratch_need(_source({}, database_dump=700)) == 0  # a custom one streams


def test_nothing_known_is_none() -> None:
    assert postgres_space.database_need(_source({"database_bytes": True})) is None


def _fs(free: int) -> postgres_space.Filesystem:
    return postgres_space.Filesystem(Path("/data"), device=-1, size=10 * postgres_space.GIB, free=free)


def test_an_estimate_that_does_not_fit_warns_and_leaves_it_to_the_guard(caplog: pytest.LogCaptureFixture) -> None:
    need = postgres_space.Need(5 * postgres_space.GIB, False, "estimated")
    with caplog.at_level(logging.WARNING):
        postgres_space._refuse_or_warn(_Comp(), _fs(postgres_space.GIB), need, 0, postgres_space.GIB)  # type: ignore[arg-type]
    assert "may not fit" in caplog.text and "estimated" in caplog.text and "watched" in caplog.text


def test_a_recorded_need_that_does_not_fit_is_refused_with_the_ways_out() -> None:
    need = postgres_space.Need(5 * postgres_space.GIB, True, "recorded")
    with pytest.raises(ComponentError) as refused:
        postgres_space._refuse_or_warn(_Comp(), _fs(postgres_space.GIB), need, 0, postgres_space.GIB)  # type: ignore[arg-type]
    text = str(refused.value)
    assert f"needs 5.0 GiB ({5 * postgres_space.GIB} bytes)" in text
    assert f"has 1.0 GiB ({postgres_space.GIB} bytes) free" in text
    assert "/data" in text and "--to" in text and "Nothing was changed" in text


def test_the_reserve_is_room_for_wal_not_a_share_of_a_large_disk(tmp_path: Path) -> None:
    """A share alone kept 100 GB back on a 2 TB disk; the reserve is the WAL's 1 GiB, never less than the trees'."""
    fs = postgres_space.filesystem(tmp_path)
    assert postgres_space.reserve(fs) == max(postgres_space.GIB, diskspace.reserve_for(tmp_path))
    assert postgres_space.reserve(fs) == postgres_space.GIB
    # A known need keeps the WAL its load can write, not 1 GiB (a small data disk stays restorable).
    small = 10 << 20
    assert postgres_space.reserve(fs, small) == max(2 * small + (16 << 20), diskspace.reserve_for(tmp_path))
    assert postgres_space.reserve(fs, 100 * postgres_space.GIB) == postgres_space.GIB


def test_a_data_directory_of_another_cluster_or_out_of_reach_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes((42).to_bytes(8, sys.byteorder))
    assert postgres_space._same_cluster(tmp_path, 42)[0] == tmp_path
    other, why = postgres_space._same_cluster(tmp_path, 43)
    assert other is None and "another cluster" in why
    gone, why = postgres_space._same_cluster(tmp_path / "absent", 42)
    assert gone is None and "cannot be read from this host" in why


def test_a_data_directory_out_of_reach_is_said_and_the_restore_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(postgres_space, "data_directory", lambda _comp, _admin: (None, "it is in a container"))
    source = _source({"database_bytes": 5000}, database_dump=10)
    with caplog.at_level(logging.WARNING):
        plan = postgres_space.preflight(_Comp(), source, None)  # type: ignore[arg-type]
    assert plan.data_dir is None  # nothing to watch, and not refused
    assert "was not checked and is not watched: it is in a container" in caplog.text and "5000 bytes" in caplog.text


def test_the_guard_thread_survives_an_error_says_it_once_and_still_stops_the_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Found by review: any error in the guard's thread ended it, unseen; the load then ran on unwatched."""
    monkeypatch.setattr(postgres_space, "POLL_SECONDS", 0.001)
    looks = iter([OSError(5, "Input/output error")] * 3 + [0] * 1000)
    ended: list[int] = []

    def filesystem(path: Path) -> postgres_space.Filesystem:
        look = next(looks)
        if isinstance(look, Exception):
            raise look
        if len(ended) >= 2:
            watch.stop.set()
        return postgres_space.Filesystem(path, 1, 100, look)

    monkeypatch.setattr(postgres_space, "filesystem", filesystem)
    watch = object.__new__(postgres_space.Watch)
    watch.side, watch.instance = "side", "db"
    watch.low, watch.stop, watch._said = None, threading.Event(), set()
    watch.watched, watch.where, watch.what, watch.kept = (
        [("data directory", tmp_path, 10)],
        tmp_path,
        "data directory",
        10,
    )
    monkeypatch.setattr(watch, "_end_sessions", lambda: ended.append(1), raising=False)
    with caplog.at_level(logging.WARNING):
        watch.run()
    assert watch.low == 0 and len(ended) >= 2  # it went on after the errors, and ended the load
    assert caplog.text.count("the disk space guard of the restore failed (OSError") == 1
