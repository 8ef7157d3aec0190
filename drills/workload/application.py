"""Workload records written through an application's own HTTP endpoints.

The recovery point users care about is what their service acknowledged and lost, which
includes what the service buffers or writes elsewhere. So each record is a POST to the
service (acknowledged by a 2xx answer), and after the restore the service is asked
which records it holds, through the same service, restarted against the restored data.
"""

from __future__ import annotations

import http.client
import json
from typing import ClassVar
from urllib.parse import urlsplit

from drills.workload.base import Writer
from engine.components.application import ApplicationComponent, WorkloadEndpoints
from engine.components.base import Component
from engine.errors import ComponentError

TIMEOUT = 5.0  # seconds one request may take; a slower answer counts as not acknowledged
MAX_LISTING = 64 * 1024 * 1024  # bytes of the survivors listing read at most


class ApplicationWriter(Writer):
    name: ClassVar[str] = "application"

    @classmethod
    def accepts(cls, component: Component) -> bool:
        """Only a service that declares its workload endpoints takes a workload."""
        return isinstance(component, ApplicationComponent) and component.params.workload is not None

    def _app(self) -> tuple[ApplicationComponent, WorkloadEndpoints]:
        app = self.component
        if not isinstance(app, ApplicationComponent) or app.params.workload is None:
            raise ComponentError(
                f"application {self.component.instance!r} declares no workload endpoints "
                "(run.workload: {write: /path/{seq}, read: /path})"
            )
        return app, app.params.workload

    def open(self) -> None:
        self._app()

    def write(self, seq: int) -> None:
        app, endpoints = self._app()
        status, body = _request(app.url(endpoints.write.replace("{seq}", str(seq))), "POST")
        if not 200 <= status < 300:
            raise ComponentError(f"POST {endpoints.write}: {status} {body[:200]!r}")

    def survivors(self) -> set[int]:
        """The records the service reports; an error when it does not answer or answers nonsense."""
        app, endpoints = self._app()
        try:
            status, body = _request(app.url(endpoints.read), "GET")
            seqs = json.loads(body) if status == 200 else None
        except (OSError, ValueError) as exc:  # no answer is not "nothing survived": nothing was read
            raise ComponentError(f"GET {endpoints.read}: no readable answer: {exc}") from None
        if not isinstance(seqs, list):
            raise ComponentError(f"GET {endpoints.read}: answered {status}, not a JSON list of write numbers")
        return {s for s in seqs if isinstance(s, int) and not isinstance(s, bool)}


def _request(url: str, method: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        answer = conn.getresponse()
        return answer.status, answer.read(MAX_LISTING + 1)[:MAX_LISTING]
    finally:
        conn.close()
