"""Drill telemetry (issue 19): Prometheus metrics, a Pushgateway, a webhook and a JSON event.

The metrics and the event are derived from results only; an unmeasured RTO is an absent
sample, never 0. The Pushgateway and the webhook are checked against a small HTTP
receiver this test starts on 127.0.0.1, which records exactly what it is sent (the
Pushgateway's API is a PUT of the text format to /metrics/job/<job>/<label>/<value>).
A receiver that fails or is not there only makes a warning: the drill's exit code stands.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drills.cli import main
from engine.journal import AssertionResult, Scope
from reports.telemetry import EVENT_SCHEMA, event, registry
from tests.conftest import ROOT
from tests.test_scrub import _results

DRILL = ROOT / "tests" / "data" / "drills" / "sabotage-after-restore.yaml"  # fails on purpose, in about a second


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    for (n, ls), v in samples.items():
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items()):
            return v
    return None


def _restore_test_results() -> Any:
    results = _results("name: s\n")
    results.verdict, results.exit_code = "fail", 1
    results.measured.components = {"db": 12.5, "cache": None}
    results.measured.rpo_components = {"db": 3.0}
    results.objectives.rto_seconds = 60.0
    results.assertions = [
        AssertionResult(id="fidelity[db]", name="fidelity", status="pass", summary="ok"),
        AssertionResult(id="rto", name="rto", status="fail", summary="slow"),
        AssertionResult(id="drift[db]", name="drift", status="not_compared", summary="first test"),
    ]
    results.scope = Scope(kind="restore-test", statement="restore test of backup b1", backup_age_seconds=5400.0)
    return results


def test_metrics_say_what_the_results_say() -> None:
    samples = _samples(generate_latest(registry(_restore_test_results())).decode())
    who = {"scenario": "s", "kind": "restore-test"}
    assert _value(samples, "drproof_drill_success", **who) == 0
    assert _value(samples, "drproof_drill_verdict", verdict="fail") == 1
    assert _value(samples, "drproof_drill_verdict", verdict="pass") == 0
    assert _value(samples, "drproof_component_rto_seconds", component="db") == 12.5
    assert _value(samples, "drproof_component_rto_seconds", component="cache") is None  # not recovered: no sample
    assert _value(samples, "drproof_component_rpo_seconds", component="db") == 3.0
    assert _value(samples, "drproof_drill_rto_seconds") is None  # not measured, not 0
    assert _value(samples, "drproof_drill_rto_objective_seconds") == 60.0
    assert _value(samples, "drproof_restore_test_backup_age_seconds", **who) == 5400.0
    assert _value(samples, "drproof_check_status", check="rto", status="fail") == 1
    assert _value(samples, "drproof_check_status", check="rto", status="pass") == 0
    assert _value(samples, "drproof_checks", status="not_compared") == 1
    assert _value(samples, "drproof_checks", status="pass") == 1


def test_event_is_self_contained_json() -> None:
    doc = event(_restore_test_results(), results_sha256="f" * 64, report_dir="/r", signing_key="ab")
    assert json.loads(json.dumps(doc)) == doc
    assert doc["schema"] == EVENT_SCHEMA and doc["event"] == "restore-test" and doc["status"] == "fail"
    assert doc["scope"]["backup_age_seconds"] == 5400.0
    assert doc["measured"]["components"]["db"] == {"rto_seconds": 12.5, "rpo_seconds": 3.0}
    assert {c["id"]: c["status"] for c in doc["checks"]}["drift[db]"] == "not_compared"
    assert doc["evidence"] == {"report_dir": "/r", "results_sha256": "f" * 64, "signing_key": "ab"}
    assert datetime.fromisoformat(doc["started_at"]).tzinfo == UTC


class _Receiver(http.server.ThreadingHTTPServer):
    """Records every request; answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        self.send_response(self.server.status)
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", str(DRILL), "--report-dir", str(tmp_path / "out"), "-q", *extra])


@pytest.mark.integration
def test_a_drill_pushes_metrics_posts_its_event_and_writes_both_files(
    tmp_path: Path, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_HOOK", receiver.url + "/hook?token=s3cr3t")
    code = _run(tmp_path, "--pushgateway", receiver.url, "--webhook-url-env", "DR_HOOK",
                "--metrics-textfile", str(tmp_path / "drproof.prom"), "--event-file", str(tmp_path / "event.json"))  # fmt: skip
    assert code == 1  # the drill fails on purpose; telemetry does not change that
    pushes = [r for r in receiver.received if r["method"] == "PUT"]
    (push,) = pushes
    assert push["path"] == "/metrics/job/drproof/scenario/sabotage-after-restore"
    samples = _samples(push["body"].decode())
    assert _value(samples, "drproof_drill_success", scenario="sabotage-after-restore", kind="synthetic") == 0
    assert _value(samples, "drproof_check_status", check="fidelity[app-config]", status="fail") == 1
    (hook,) = [r for r in receiver.received if r["method"] == "POST"]
    assert hook["path"] == "/hook?token=s3cr3t" and hook["headers"]["Content-Type"] == "application/json"
    posted = json.loads(hook["body"])
    assert posted["schema"] == EVENT_SCHEMA and posted["status"] == "fail"
    assert posted["identity"]["user"] and posted["evidence"]["results_sha256"]
    assert json.loads((tmp_path / "event.json").read_text()) == posted
    assert samples == _samples((tmp_path / "drproof.prom").read_text())


@pytest.mark.integration
def test_webhook_on_failure_only_stays_quiet_on_a_pass(
    tmp_path: Path, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_HOOK", receiver.url)
    passing = tmp_path / "pass.yaml"
    passing.write_text(
        DRILL.read_text().split("  - disaster: {target: app-config, fault: modify")[0] + "assertions:\n  - fidelity\n"
    )
    assert (
        main(
            [
                "run",
                str(passing),
                "--report-dir",
                str(tmp_path / "o"),
                "-q",
                "--webhook-url-env",
                "DR_HOOK",
                "--webhook-on",
                "failure",
            ]
        )
        == 0
    )
    assert receiver.received == []
    assert _run(tmp_path, "--webhook-url-env", "DR_HOOK", "--webhook-on", "failure") == 1
    assert len(receiver.received) == 1


@pytest.mark.integration
def test_a_failing_or_absent_receiver_only_warns(
    tmp_path: Path, receiver: _Receiver, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.status = 500
    monkeypatch.setenv("DR_HOOK", receiver.url + "/hook?token=s3cr3t")
    assert _run(tmp_path, "--pushgateway", receiver.url, "--webhook-url-env", "DR_HOOK") == 1
    err = capsys.readouterr().err
    assert "metrics not pushed: the Pushgateway answered HTTP 500" in err
    assert "notification not sent: the webhook answered HTTP 500" in err
    assert "s3cr3t" not in err  # the URL (and its token) is never printed
    receiver.shutdown()
    receiver.server_close()
    assert _run(tmp_path, "--pushgateway", receiver.url) == 1
    assert "metrics not pushed: the Pushgateway could not be reached" in capsys.readouterr().err


def test_credentials_in_the_pushgateway_url_are_refused_before_the_drill(tmp_path: Path) -> None:
    assert _run(tmp_path, "--pushgateway", "http://user:pw@127.0.0.1:9091") == 2
    assert not (tmp_path / "out").exists()
    assert _run(tmp_path, "--pushgateway", "file:///etc/passwd") == 2
