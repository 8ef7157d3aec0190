"""The audit log is evidence: every line must be whole, parseable, free of secrets, and a
log that cannot be written must stop the command rather than let it run unrecorded."""

from __future__ import annotations

import getpass
import json
import re
import socket
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills import standalone
from drills.backup_config import load_config
from engine import __version__
from engine.audit import AuditError, AuditLog, describe_repository
from engine.errors import ComponentError, IntegrityError
from tests.integration.helpers import run_cli

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _record(log: AuditLog, **kw: Any) -> None:
    args: dict[str, Any] = {
        "backup_ids": ["20261124T202458Z-48afd0"],
        "components": ["db", "conf"],
        "repository": "local /srv/backups",
        "duration_seconds": 1.23456,
    }
    args.update(kw)
    log.record(args.pop("event", "backup"), args.pop("outcome", "ok"), **args)


def test_line_format(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    _record(log)
    _record(log, event="delete", outcome="failed", error="disk on fire")
    ok, failed = _lines(tmp_path / "audit.jsonl")
    assert STAMP.fullmatch(ok["timestamp"])
    assert ok == {
        "timestamp": ok["timestamp"],
        "event": "backup",
        "outcome": "ok",
        "backup_ids": ["20261124T202458Z-48afd0"],
        "components": ["db", "conf"],
        "repository": "local /srv/backups",
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "drproof_version": __version__,
        "duration_seconds": 1.235,
    }
    assert "error" not in ok, "only failures carry an error text"
    assert (failed["event"], failed["outcome"], failed["error"]) == ("delete", "failed", "disk on fire")


def test_error_text_is_redacted_and_kept_on_one_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    error = "pg_dump: connection failed: password=hunter2 host=db\nurl postgresql://app:s3cr3t@db/shop\ntoken=abc123"
    _record(log, outcome="failed", error=error)
    text = (tmp_path / "audit.jsonl").read_text()
    assert text.count("\n") == 1
    for secret in ("hunter2", "s3cr3t", "abc123"):
        assert secret not in text
    [line] = _lines(tmp_path / "audit.jsonl")
    assert "password=***" in line["error"] and "postgresql://app:***@db/shop" in line["error"]


def test_repository_description_drops_endpoint_credentials() -> None:
    text = describe_repository(
        {"type": "s3", "bucket": "b", "prefix": "p", "endpoint_url": "https://key:secret@minio.internal:9000/"}
    )
    assert text == "s3://b/p at https://minio.internal:9000/"
    assert describe_repository({"type": "local", "path": "/srv/r"}) == "local /srv/r"


def _append_many(path: str, writer: int, count: int) -> None:
    log = AuditLog(Path(path))
    for i in range(count):
        # Lines far longer than PIPE_BUF: atomicity must not depend on small writes.
        _record(log, components=[f"w{writer}-{i}-" + "x" * 40] * 300)


def test_concurrent_processes_and_threads_write_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_append_many, str(path), w, 40) for w in range(4)]
        with ThreadPoolExecutor(4) as threads:
            list(threads.map(lambda w: _append_many(str(path), w, 40), range(4, 8)))
        for f in futures:
            f.result()
    lines = _lines(path)  # every line parses
    assert len(lines) == 8 * 40
    seen = {line["components"][0].rsplit("-", 1)[0] for line in lines}
    assert seen == {f"w{w}-{i}" for w in range(8) for i in range(40)}
    assert all(len(set(line["components"])) == 1 for line in lines), "no line mixes two writers"


def test_unwritable_log_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")
    with pytest.raises(AuditError, match="cannot write the audit log") as info:
        log.check()
    assert info.value.exit_code == 2
    with pytest.raises(AuditError, match="delete \\(ok\\) of 20261124T202458Z-48afd0 is not recorded"):
        _record(log, event="delete")
    directory_log = AuditLog(tmp_path)  # a directory where the file should be
    with pytest.raises(AuditError):
        _record(directory_log)


def test_null_log_records_nothing(tmp_path: Path) -> None:
    log = AuditLog(None)
    log.check()
    _record(log)
    assert list(tmp_path.iterdir()) == []


def test_operation_outcomes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with log.operation("verify", "local /r") as op:
        op.backup_ids = ["a"]
        op.fail("1 damaged artifact(s): db/database.dump")
    with pytest.raises(IntegrityError), log.operation("restore", "local /r") as op:
        op.backup_ids = ["b"]
        raise IntegrityError("stored bytes differ")
    with pytest.raises(IntegrityError), log.operation("backup", "local /r") as op:
        raise IntegrityError("failed verification right after writing")
    with pytest.raises(RuntimeError), log.operation("copy", "local /r"):
        raise RuntimeError("bug")
    with log.operation("copy", "local /r") as op:
        op.record_success = False  # success of a preparatory step is not a line
    lines = _lines(tmp_path / "audit.jsonl")
    assert [(x["event"], x["outcome"]) for x in lines] == [
        ("verify", "failed"),
        ("restore", "refused"),
        ("backup", "failed"),
        ("copy", "failed"),
    ]
    assert lines[0]["error"] == "1 damaged artifact(s): db/database.dump"
    assert lines[3]["error"] == "RuntimeError: bug"


def test_failure_to_record_a_failure_keeps_both_errors(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)  # a directory: every write fails
    expected = "the restore itself failed: pg_restore: password=\\*\\*\\* rejected"
    with pytest.raises(AuditError, match=expected) as info, log.operation("restore", "local /r"):
        raise ComponentError("pg_restore: password=hunter2 rejected")
    assert isinstance(info.value.__cause__, ComponentError)
    assert "hunter2" not in str(info.value)


# -- where the log goes ---------------------------------------------------------------------


def _config(tmp_path: Path, **extra: Any) -> Path:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "app.yaml").write_text("port: 1\n")
    doc = {"repository": {"path": "repo"}, "components": {"conf": {"kind": "configuration", "path": "conf"}}}
    doc.update(extra)
    path = tmp_path / "backup-config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_log_location(tmp_path: Path) -> None:
    local = load_config(_config(tmp_path))
    assert standalone.audit_log(local, None).path == tmp_path / "repo" / "audit.jsonl"
    assert standalone.audit_log(local, tmp_path / "other").path == tmp_path / "other" / "audit.jsonl"
    configured = load_config(_config(tmp_path, audit_log="logs/drproof-audit.jsonl"))
    assert standalone.audit_log(configured, None).path == tmp_path / "logs" / "drproof-audit.jsonl"
    s3 = load_config(_config(tmp_path, repository={"type": "s3", "bucket": "bucket"}))
    assert standalone.audit_log(s3, None).path is None, "S3 without audit_log: no local log"
    assert standalone.where(s3, None) == "s3://bucket"


def test_unwritable_log_stops_backup_and_prune_before_they_change_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    ids = []
    for _ in range(2):
        assert run_cli(["backup", "--config", str(cfg), "--json"]) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    assert [x["event"] for x in _lines(tmp_path / "repo" / "audit.jsonl")] == ["backup", "backup"]

    (tmp_path / "blocker").write_text("")
    doc = yaml.safe_load(cfg.read_text())
    doc.update(audit_log="blocker/audit.jsonl", retention={"keep_last": 1})
    cfg.write_text(yaml.safe_dump(doc))
    assert run_cli(["backup", "--config", str(cfg)]) == 2
    assert run_cli(["recovery", "prune", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("cannot write the audit log") == 2
    assert run_cli(["recovery", "list", "--config", str(cfg), "--json"]) == 0, "listing needs no audit log"
    assert [b["id"] for b in json.loads(capsys.readouterr().out)["backups"]] == ids, "nothing taken, nothing deleted"


def test_an_interrupted_operation_is_recorded_as_interrupted(tmp_path: Path) -> None:
    """Found by review: a restore stopped by SIGTERM was recorded as "KeyboardInterrupt"."""
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(KeyboardInterrupt), log.operation("restore", "local /r"):
        raise KeyboardInterrupt
    [line] = _lines(tmp_path / "audit.jsonl")
    assert line["outcome"] == "failed" and line["error"] == "interrupted (SIGINT or SIGTERM) before it finished"


def test_a_line_after_one_a_full_disk_cut_short_is_whole(tmp_path: Path) -> None:
    """Found by review: after a short write (ENOSPC) the next record was glued to the torn half line."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    _record(log)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[:40])  # what a write cut short by a full disk leaves
    _record(log, event="delete", outcome="ok")
    lines = path.read_text().splitlines()
    assert lines[1] == whole[:40].decode()
    assert json.loads(lines[2])["event"] == "delete"


def test_lines_of_an_intact_log_follow_each_other_without_blank_lines(tmp_path: Path) -> None:
    """Quiet control: a log ending in a newline gets no extra one."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for _ in range(3):
        _record(log)
    assert [json.loads(line)["event"] for line in path.read_text().split("\n")[:-1]] == ["backup"] * 3
