"""The http check judges the address's own answer (review of verdicts, finding 1).

A real HTTP server on loopback: ``/api/orders`` redirects to a login page whose 200 and
text ("sign in to see your orders") met ``status: 200`` and ``body: orders`` while urllib
followed redirects, so an application that had lost its data or its sessions passed.
"""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.http_check import HttpCheck, HttpParams
from engine.journal import AssertionResult


class _App(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/login"):
            self._answer(200, b"please sign in to see your orders")
        elif self.path == "/health":
            self._answer(200, b'{"orders": 42}')
        elif self.path == "/note":
            self._answer(200, b'{"note": "password=hunter22", "orders": 5}')
        elif self.path.startswith("/empty"):
            self._answer(200, b'{"orders": [], "ok": true}')
        else:
            self.send_response(302)
            self.send_header("Location", "/login?next=" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _check(**params: Any) -> AssertionResult:
    state = DrillState(repository=None)  # type: ignore[arg-type]
    return HttpCheck().evaluate(HttpParams.model_validate({"timeout": "1s", **params}), state)[0]


def test_a_redirect_to_a_login_page_is_not_the_answer_expected(app: str) -> None:
    for extra in ({}, {"body": "orders"}):
        r = _check(url=f"{app}/api/orders", **extra)
        assert r.status == "fail", r.summary
        assert "status 302, expected 200" in r.summary and "/login" in r.summary


def test_a_redirect_can_itself_be_what_is_expected(app: str) -> None:
    assert _check(url=f"{app}/api/orders", status=302).status == "pass"


def test_the_address_answering_itself_still_passes(app: str) -> None:
    r = _check(url=f"{app}/health", body="orders", json={"path": "orders", "expect": "= 42"})
    assert r.status == "pass", r.summary


def test_a_proxy_of_the_environment_is_not_asked(app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CI job's http_proxy (here: nothing listens there) must not answer for 127.0.0.1.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's default opener reads the environment once
    r = _check(url=f"{app}/health")
    assert r.status == "pass", r.summary


def test_a_token_in_the_address_is_never_written_into_results(app: str) -> None:
    """Found by review: `?access_token=...` was in the check's id, summary and evidence."""
    r = _check(url=f"{app}/empty?access_token=tok123456")
    assert r.status == "pass", r.summary
    assert "tok123456" not in r.model_dump_json() and "access_token=***" in r.id


def test_an_address_with_credentials_is_refused_at_load(app: str) -> None:
    """urllib never sent them, and the URL was written whole into every report."""
    with pytest.raises(ValueError, match="user or password"):
        _check(url=app.replace("http://", "http://admin:s3cretpw@") + "/health")


def test_an_empty_json_array_has_no_rows_and_is_not_one_value(app: str) -> None:
    """`rows` was met by `[]` (it counted as one value); `contains: "["` by its Python text."""
    assert _check(url=f"{app}/empty", json={"path": "orders", "expect": "rows"}).status == "fail"
    r = _check(url=f"{app}/empty", json={"path": "orders", "expect": {"contains": "["}})
    assert r.status == "fail" and r.evidence["measured"] is False and "not one value" in r.summary
    assert _check(url=f"{app}/empty", json={"path": "ok", "expect": {"equals": True}}).status == "pass"  # control


def test_an_answer_is_judged_as_sent_and_shown_masked(app: str) -> None:
    """The body was masked before it was judged: `password=...` in it broke its JSON, and the check failed."""
    r = _check(url=f"{app}/note", json={"path": "orders", "expect": "= 5"}, body='"orders"')
    assert r.status == "pass", r.summary
    r = _check(url=f"{app}/note", json={"path": "orders", "expect": "= 6"})
    assert r.status == "fail" and "hunter22" not in r.model_dump_json()
    r = _check(url=f"{app}/note", status=201)
    assert r.status == "fail" and "password=***" in r.summary and "hunter22" not in r.model_dump_json()
