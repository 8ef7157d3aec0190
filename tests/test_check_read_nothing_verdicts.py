"""An http or command check that read nothing is never a detection (review of verdict-honesty leftovers, 1).

Real loopback sockets and real child processes. Under a negative control a failure is the
detection; these failures read nothing, and a typo (a port, a path into the JSON, the
script's name) looks exactly the same, so they counted a blind check as a detector.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.command_check import CommandCheck, CommandParams
from drills.assertions.http_check import HttpCheck, HttpParams
from drills.runner import _negative_control
from engine.journal import AssertionResult


class _Orders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"orders": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def service() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Orders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(**params: Any) -> AssertionResult:
    spec = HttpParams.model_validate({"timeout": "1s", "expect": "fail", **params})
    return _negative_control(HttpCheck().evaluate(spec, DrillState(repository=None))[0])  # type: ignore[arg-type]


def _command(tmp_path: Path, *argv: str) -> AssertionResult:
    state = DrillState(repository=None, base_dir=tmp_path)  # type: ignore[arg-type]
    spec = CommandParams.model_validate({"argv": list(argv), "expect": "fail"})
    return _negative_control(CommandCheck().evaluate(spec, state)[0])


def test_no_answer_is_no_detection() -> None:
    r = _http(url=f"http://127.0.0.1:{_free_port()}/")
    assert (r.status, r.observed) == ("error", "fail") and "no answer" in r.summary, r.summary


def test_no_value_at_the_json_path_is_no_detection(service: int) -> None:
    r = _http(url=f"http://127.0.0.1:{service}/", json={"path": "ordrs", "expect": "= 99"})
    assert (r.status, r.observed) == ("error", "fail") and "no JSON value" in r.summary, r.summary


def test_an_answer_that_misses_is_still_a_detection(service: int) -> None:
    assert _http(url=f"http://127.0.0.1:{service}/", json={"path": "orders", "expect": "= 99"}).status == "pass"
    assert _http(url=f"http://127.0.0.1:{service}/", status=503).status == "pass"


def test_a_script_that_does_not_exist_never_ran(tmp_path: Path) -> None:
    r = _command(tmp_path, "{python}", "chekcs/smoke.py")
    assert (r.status, r.observed) == ("error", "error") and "no such file" in r.summary, r.summary


def test_a_script_that_exits_non_zero_is_still_a_detection(tmp_path: Path) -> None:
    (tmp_path / "smoke.py").write_text("raise SystemExit(1)\n")
    assert _command(tmp_path, "{python}", "smoke.py").status == "pass"
    assert _command(tmp_path, "{python}", "-c", "raise SystemExit(1)").status == "pass"
