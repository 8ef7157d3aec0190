"""The restore-in-progress marker of a physical restore onto an existing server, without a server.

``ExternalPhysicalPostgres.replace_cluster`` writes ``<data>.drproof-restore-in-progress``
before it runs the operator's stop command; a restore killed after that is resumed by the
next one. Here the server is faked (no connection, stop and start are shell commands that
leave a trace), so every state a SIGKILL can leave is set up by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from engine.errors import RuntimeStartError
from engine.runtime.external import ExternalPhysicalPostgres, PhysicalTarget, PostgresTarget


class FakeServer(ExternalPhysicalPostgres):
    """Answers as ``running`` says; "promotes" as soon as it is started."""

    running = False
    stop_timeout = 0.5

    def is_running(self) -> bool:
        return self.running

    def _promoted(self) -> bool:
        return True


def _server(tmp_path: Path, *, running: bool = False, start_fails: bool = False) -> FakeServer:
    trace = tmp_path / "trace"
    data = tmp_path / "data"
    stop = ["sh", "-c", f"echo stop >> {trace}"]
    start = ["sh", "-c", f"echo start >> {trace}" + ("; exit 3" if start_fails else "")]
    server = FakeServer(
        PostgresTarget("127.0.0.1", 1, "postgres", "postgres", None),
        PhysicalTarget(data_directory=data, wal_archive=tmp_path / "archive", stop=stop, start=start),
    )
    server.running = running
    return server


def _trace(tmp_path: Path) -> list[str]:
    path = tmp_path / "trace"
    return path.read_text().split() if path.exists() else []


def _marker(tmp_path: Path) -> Path:
    return tmp_path / "data.drproof-restore-in-progress"


def _populate(data: Path) -> None:
    (data / "PG_VERSION").write_text("restored\n")


def _old_cluster(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("old\n")
    return data


def _write(tmp_path: Path, **fields: object) -> None:
    body = {"phase": "restoring", "replaced": None, "started": "2026-11-25T01:00:00+00:00", **fields}
    _marker(tmp_path).write_text(json.dumps(body))


def test_a_restore_writes_the_marker_before_stopping_and_removes_it_after(tmp_path: Path) -> None:
    data = _old_cluster(tmp_path)
    seen = tmp_path / "seen"
    server = _server(tmp_path)
    # The stop command runs with the marker already in place, naming where the data go;
    # the server answers until it ran.
    server.physical.stop[:] = ["sh", "-c", f"cp {_marker(tmp_path)} {seen}"]
    server.is_running = lambda: not seen.exists()  # type: ignore[method-assign]
    during: dict[str, object] = {}

    def populate(target: Path) -> None:
        during.update(json.loads(_marker(tmp_path).read_text()))
        _populate(target)

    server.replace_cluster(populate, {})

    at_stop = json.loads(seen.read_text())
    assert at_stop["phase"] == "stopping" and at_stop["replaced"].startswith("data.drproof-replaced-")
    assert during["phase"] == "restoring" and during["replaced"] == at_stop["replaced"]
    assert not _marker(tmp_path).exists()
    assert server.replaced == tmp_path / at_stop["replaced"]
    assert (tmp_path / at_stop["replaced"] / "PG_VERSION").read_text() == "old\n"
    assert (data / "PG_VERSION").read_text() == "restored\n"


def test_a_failed_stop_leaves_no_marker_and_nothing_changed(tmp_path: Path) -> None:
    data = _old_cluster(tmp_path)
    server = _server(tmp_path, running=True)  # "still answers after its stop command"
    with pytest.raises(RuntimeStartError, match="still answers"):
        server.replace_cluster(_populate, {})
    assert not _marker(tmp_path).exists()
    assert (data / "PG_VERSION").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "trace"]


def test_a_restore_killed_after_setting_the_data_aside_is_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = tmp_path / "data.drproof-replaced-20261125T010000Z"
    kept.mkdir()
    (kept / "PG_VERSION").write_text("old\n")
    half = tmp_path / "data"
    half.mkdir()
    (half / "half-extracted").write_text("x")
    _write(tmp_path, replaced=kept.name)
    server = _server(tmp_path)

    server.ensure_running()  # the server is down on purpose: no "start it" refusal
    assert server.server_file_owner() == (kept.stat().st_uid, kept.stat().st_gid)
    with caplog.at_level(logging.WARNING, logger="engine.runtime.external"):
        server.replace_cluster(_populate, {})

    assert "interrupted" in caplog.text and "resuming" in caplog.text
    assert _trace(tmp_path) == ["start"]  # the server was down: no stop command
    assert not _marker(tmp_path).exists()
    assert (half / "PG_VERSION").read_text() == "restored\n"
    assert server.replaced == kept and (kept / "PG_VERSION").read_text() == "old\n"
    (partial,) = tmp_path.glob("data.drproof-partial-*")  # moved aside, not deleted
    assert (partial / "half-extracted").exists()


def test_a_resumed_restore_stops_a_server_the_killed_one_had_started(tmp_path: Path) -> None:
    kept = tmp_path / "data.drproof-replaced-20261125T010000Z"
    kept.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "postmaster.pid").write_text("1\n/data\n")  # pid 1: alive
    _write(tmp_path, replaced=kept.name)
    server = _server(tmp_path)
    server.replace_cluster(_populate, {})
    assert _trace(tmp_path) == ["stop", "start"]
    assert kept.exists() and not _marker(tmp_path).exists()


def test_a_restore_killed_before_setting_the_data_aside_sets_it_aside_under_the_marked_name(
    tmp_path: Path,
) -> None:
    data = _old_cluster(tmp_path)
    _write(tmp_path, phase="stopping", replaced="data.drproof-replaced-20261125T010000Z")
    server = _server(tmp_path)
    server.replace_cluster(_populate, {})
    kept = tmp_path / "data.drproof-replaced-20261125T010000Z"
    assert (kept / "PG_VERSION").read_text() == "old\n"
    assert (data / "PG_VERSION").read_text() == "restored\n"
    assert not list(tmp_path.glob("data.drproof-partial-*"))


def test_a_resumed_restore_that_fails_puts_the_kept_data_back(tmp_path: Path) -> None:
    kept = tmp_path / "data.drproof-replaced-20261125T010000Z"
    kept.mkdir()
    (kept / "PG_VERSION").write_text("old\n")
    _write(tmp_path, replaced=kept.name)
    server = _server(tmp_path)

    def broken(data: Path) -> None:
        raise RuntimeStartError("damaged")

    with pytest.raises(RuntimeStartError, match="damaged"):
        server.replace_cluster(broken, {})
    assert (tmp_path / "data" / "PG_VERSION").read_text() == "old\n"
    assert not kept.exists() and not _marker(tmp_path).exists()
    assert _trace(tmp_path)[-1] == "start"


@pytest.mark.parametrize(("phase", "half_built"), [("restoring", True), ("restoring", False), ("stopping", False)])
def test_a_marker_naming_a_vanished_directory_is_an_error_that_deletes_nothing(
    tmp_path: Path, phase: str, half_built: bool
) -> None:
    half = tmp_path / "data"
    if half_built:
        half.mkdir()
        (half / "half-extracted").write_text("x")
    _write(tmp_path, phase=phase, replaced="data.drproof-replaced-20261125T010000Z")
    server = _server(tmp_path)
    with pytest.raises(RuntimeStartError) as caught:
        server.replace_cluster(_populate, {})
    message = str(caught.value)
    assert "data.drproof-replaced-20261125T010000Z" in message and "no longer exists" in message
    assert "drproof changed nothing" in message and "delete the marker" in message
    assert (half / "half-extracted").exists() == half_built and _marker(tmp_path).exists()
    assert _trace(tmp_path) == []


@pytest.mark.parametrize("body", ["{not json", '{"phase": "restoring"}', '{"phase": "restoring", "started": "t", '
                                  '"replaced": "../etc"}'])  # fmt: skip
def test_an_unreadable_marker_is_an_error_that_changes_nothing(tmp_path: Path, body: str) -> None:
    data = _old_cluster(tmp_path)
    _marker(tmp_path).write_text(body)
    server = _server(tmp_path)
    with pytest.raises(RuntimeStartError, match="not one drproof can read"):
        server.replace_cluster(_populate, {})
    assert (data / "PG_VERSION").read_text() == "old\n" and _marker(tmp_path).read_text() == body
    assert _trace(tmp_path) == []


def test_without_a_marker_a_server_that_does_not_answer_is_still_refused(tmp_path: Path) -> None:
    server = _server(tmp_path)
    with pytest.raises(
        RuntimeStartError, match=r"does not answer \(connection refused or timed out after 10 s\); start it"
    ):
        server.ensure_running()


def test_only_the_newest_replaced_data_directories_are_kept(tmp_path: Path) -> None:
    from engine.runtime.external import prune_replaced

    data = tmp_path / "main"
    data.mkdir()
    names = [
        "main.drproof-replaced-20261101T020000Z",
        "main.drproof-replaced-20261102T020000Z",
        "main.drproof-replaced-20261102T020000Z-1",
        "main.drproof-replaced-20261103T020000Z",
        "main.drproof-partial-20261101T020000Z",  # not a replaced directory: never touched
        "main.drproof-replaced-notes",  # not drproof's own name
        "other.drproof-replaced-20261101T020000Z",  # another data directory's
    ]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "main.drproof-replaced-20261001T020000Z").symlink_to(tmp_path / "elsewhere")
    gone = prune_replaced(data, 2)
    assert sorted(p.name for p in gone) == [
        "main.drproof-replaced-20261101T020000Z",
        "main.drproof-replaced-20261102T020000Z",
    ]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "main.drproof-replaced-20261103T020000Z" in left and "main.drproof-replaced-20261102T020000Z-1" in left
    assert {
        "main.drproof-partial-20261101T020000Z",
        "main.drproof-replaced-notes",
        "other.drproof-replaced-20261101T020000Z",
    } <= set(left)
    assert (tmp_path / "elsewhere").is_dir(), "a link is never followed"
