"""Running client tools (pg_dump, pg_restore, psql) with streamed stdin/stdout.

stderr always goes to a temporary file rather than a pipe: a tool that writes a lot
of warnings must never deadlock against a full pipe while we stream its data.
Tools that exit 0 but print ``error:`` lines are treated as failed, because pg_restore
and psql are known to do exactly that.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from typing import IO

from engine.childenv import tool_environment
from engine.errors import ComponentError
from engine.streams import CHUNK

_ERROR_LINE = re.compile(r"^(?:.*?: )?(?:error|ERROR|FATAL|PANIC)\b.*$", re.MULTILINE)


def _errors(stderr: str, ignore: Iterable[str]) -> list[str]:
    patterns = [re.compile(p) for p in ignore]
    out = []
    for m in _ERROR_LINE.finditer(stderr):
        line = m.group(0)
        if not any(p.search(line) for p in patterns):
            out.append(line)
    return out


def stream_out(argv: Sequence[str], env: dict[str, str], sink: IO[bytes], what: str) -> int:
    """Run a tool, copying its stdout into ``sink``; return bytes copied."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        total = 0
        try:
            while chunk := proc.stdout.read(CHUNK):
                sink.write(chunk)
                total += len(chunk)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    problems = _errors(stderr, ())
    if code != 0 or problems:
        detail = "\n".join(problems) or stderr.strip()[-2000:]
        raise ComponentError(f"{what} failed (exit {code}): {detail}")
    return total


def stream_in(
    argv: Sequence[str],
    env: dict[str, str],
    source: IO[bytes],
    what: str,
    ignore_errors: Iterable[str] = (),
) -> str:
    """Run a tool, feeding ``source`` into its stdin; return its stderr."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env)
        assert proc.stdin is not None
        broken = False
        try:
            while chunk := source.read(CHUNK):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            broken = True  # the tool stopped reading: its exit code and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    problems = _errors(stderr, ignore_errors)
    if code != 0 or problems or broken:
        detail = "\n".join(problems) or stderr.strip()[-2000:] or "stopped reading its input"
        raise ComponentError(f"{what} failed (exit {code}): {detail}")
    return stderr


MAX_CAPTURE = 64 * 1024 * 1024  # a TOC listing or a few statements, never data


def capture(argv: Sequence[str], env: dict[str, str], what: str, source: IO[bytes] | None = None) -> str:
    """Run a tool and return its stdout; feed ``source`` to stdin until the tool stops reading.

    For tools that read only the head of their input (``pg_restore -l`` reads an archive's
    table of contents and exits): their closing the pipe early is not a failure, their
    exit code says whether they got what they needed.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = subprocess.PIPE if source is not None else subprocess.DEVNULL
        proc = subprocess.Popen(list(argv), stdin=stdin, stdout=out, stderr=err, env=env)
        if source is not None:
            assert proc.stdin is not None
            try:
                while chunk := source.read(CHUNK):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        out.seek(0)
        text = out.read(MAX_CAPTURE + 1)
    problems = _errors(stderr, ())
    if code != 0 or problems:
        detail = "\n".join(problems) or stderr.strip()[-2000:]
        raise ComponentError(f"{what} failed (exit {code}): {detail}")
    if len(text) > MAX_CAPTURE:
        raise ComponentError(f"{what} printed more than {MAX_CAPTURE} bytes; that is not what it was asked for")
    return text.decode("utf-8", errors="replace")


def run_tool(argv: Sequence[str], env: dict[str, str], what: str, ignore_errors: Iterable[str] = ()) -> str:
    """Run a tool that reads and writes files itself; fail on a bad exit or error lines."""
    with tempfile.TemporaryFile() as err:
        code = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        ).returncode
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    problems = _errors(stderr, ignore_errors)
    if code != 0 or problems:
        detail = "\n".join(problems) or stderr.strip()[-2000:]
        raise ComponentError(f"{what} failed (exit {code}): {detail}")
    return stderr


def version(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=True, env=tool_environment()
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
