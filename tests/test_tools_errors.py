"""Client tools that fail without saying so in their exit code are still caught.

pg_restore and psql can exit 0 after printing ``ERROR:`` lines (psql without
ON_ERROR_STOP, pg_restore on some errors it counts as warnings), so a restore judged by
exit code alone can report success over a half-restored database. Each "tool" here is a
tiny shell script with exactly one such behaviour; no server is needed.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from engine.components.tools import stream_in, stream_out
from engine.errors import ComponentError


def _tool(tmp_path: Path, body: str, name: str = "tool") -> list[str]:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.mark.parametrize(
    "line",
    [
        'ERROR:  relation \\"public.orders\\" does not exist',
        'psql:<stdin>:12: ERROR:  syntax error at or near \\"CREAT\\"',
        "pg_restore: error: could not execute query: ERROR:  permission denied for schema public",
        "FATAL:  terminating connection due to administrator command",
    ],
)
def test_stream_in_fails_a_tool_that_exits_0_after_printing_an_error(tmp_path: Path, line: str) -> None:
    argv = _tool(tmp_path, f'cat > /dev/null\necho "{line}" >&2\nexit 0')
    with pytest.raises(ComponentError) as caught:
        stream_in(argv, ENV, io.BytesIO(b"SELECT 1;\n" * 100), "restoring db")
    message = str(caught.value)
    assert message.startswith("restoring db failed (exit 0): ")
    assert line.replace('\\"', '"') in message


def test_stream_in_names_every_error_line_and_none_of_the_noise(tmp_path: Path) -> None:
    argv = _tool(
        tmp_path,
        "cat > /dev/null\n"
        'echo "NOTICE:  table \\"x\\" does not exist, skipping" >&2\n'
        'echo "pg_restore: error: could not create table a" >&2\n'
        'echo "WARNING:  no privileges were granted" >&2\n'
        'echo "pg_restore: error: could not create table b" >&2\n'
        "exit 0",
    )
    with pytest.raises(ComponentError) as caught:
        stream_in(argv, ENV, io.BytesIO(b"x"), "pg_restore of 'db'")
    assert str(caught.value) == (
        "pg_restore of 'db' failed (exit 0): pg_restore: error: could not create table a\n"
        "pg_restore: error: could not create table b"
    )


def test_warnings_and_notices_alone_are_not_errors(tmp_path: Path) -> None:
    argv = _tool(
        tmp_path,
        'cat > /dev/null\necho "WARNING:  errors ignored: none" >&2\necho "NOTICE:  terror is not error-free" >&2',
    )
    stderr = stream_in(argv, ENV, io.BytesIO(b"x"), "restoring db")
    assert "WARNING" in stderr


def test_ignored_error_patterns_do_not_hide_other_errors(tmp_path: Path) -> None:
    argv = _tool(
        tmp_path,
        'cat > /dev/null\necho "ERROR:  role \\"app\\" already exists" >&2\n'
        'echo "ERROR:  could not open extension control file" >&2\nexit 0',
    )
    benign = (r'role ".+" already exists',)
    with pytest.raises(ComponentError, match="could not open extension control file") as caught:
        stream_in(argv, ENV, io.BytesIO(b"x"), "restoring roles", ignore_errors=benign)
    assert "already exists" not in str(caught.value)
    only_benign = _tool(tmp_path, 'cat > /dev/null\necho "ERROR:  role \\"app\\" already exists" >&2', "benign")
    stream_in(only_benign, ENV, io.BytesIO(b"x"), "restoring roles", ignore_errors=benign)


def test_a_nonzero_exit_without_error_lines_still_fails_with_its_stderr(tmp_path: Path) -> None:
    argv = _tool(tmp_path, 'cat > /dev/null\necho "something went sideways" >&2\nexit 3')
    with pytest.raises(ComponentError, match=r"failed \(exit 3\): something went sideways"):
        stream_in(argv, ENV, io.BytesIO(b"x"), "restoring db")


def test_a_tool_that_stops_reading_its_input_fails(tmp_path: Path) -> None:
    """Exit 0 without consuming the dump: the data never reached the database."""
    argv = _tool(tmp_path, "exit 0")
    with pytest.raises(ComponentError, match="stopped reading its input"):
        stream_in(argv, ENV, io.BytesIO(b"\0" * (8 * 1024 * 1024)), "pg_restore of 'db'")


def test_stream_out_fails_a_dump_tool_that_exits_0_after_an_error(tmp_path: Path) -> None:
    argv = _tool(tmp_path, 'printf "PGDMP partial"\necho "pg_dump: error: query failed: server closed" >&2\nexit 0')
    sink = io.BytesIO()
    with pytest.raises(ComponentError, match=r"pg_dump of 'db' failed \(exit 0\): pg_dump: error: query failed"):
        stream_out(argv, ENV, sink, "pg_dump of 'db'")
    assert sink.getvalue() == b"PGDMP partial"  # streamed, but the caller never stores it as a backup


def test_stream_out_passes_a_clean_tool_through(tmp_path: Path) -> None:
    argv = _tool(tmp_path, 'printf "PGDMP whole"\necho "pg_dump: warning: nothing serious" >&2')
    sink = io.BytesIO()
    assert stream_out(argv, ENV, sink, "pg_dump of 'db'") == len(b"PGDMP whole")
    assert sink.getvalue() == b"PGDMP whole"


def test_restoring_roles_keeps_the_password_of_the_role_drproof_connects_as() -> None:
    """Replaying globals into another server must not lock drproof (and the operator) out."""
    from engine.components.postgres import keep_own_password

    sql = (
        b"CREATE ROLE postgres;\n"
        b"ALTER ROLE postgres WITH SUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc';\n"
        b'ALTER ROLE "Admin ""x""" WITH LOGIN PASSWORD \'secret\';\n'
        b"ALTER ROLE app WITH LOGIN PASSWORD 'it''s';\n"
    )
    kept = keep_own_password(sql, "postgres")
    assert b"ALTER ROLE postgres WITH SUPERUSER INHERIT LOGIN;\n" in kept
    assert b"PASSWORD 'it''s'" in kept and b"PASSWORD 'secret'" in kept  # other roles keep theirs
    quoted = keep_own_password(sql, 'Admin "x"')
    assert b'ALTER ROLE "Admin ""x""" WITH LOGIN;\n' in quoted and b"SCRAM" in quoted
