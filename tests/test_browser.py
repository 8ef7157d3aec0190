"""The HTML report as a browser really renders it.

The writer tests check the HTML text; this checks what an auditor sees: headless Chromium
loads a real drill's report from disk, the rendered DOM still carries the verdict, the
failing assertion and the SVG timeline, the page logs nothing to the console (no script
error, no missing resource), and a screenshot comes out as a PNG of the requested size.
A negative control shows the console check fires on a page that does log an error.

Chromium is a system package (``apt-get install -y chromium`` on Debian). With CI=true a
missing browser fails the test, since .ci/run is expected to install it; elsewhere the
test is skipped with that command as the reason.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner
from reports import write_all
from tests.integration.servers import require

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent / "data"
INSTALL = "apt-get install -y chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 1280, 2000
# Flags that keep a headless run hermetic and quiet: no sandbox (CI runs as root), no GPU,
# no network chatter of its own, and a throwaway profile per call.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    require("chromium", path is not None, INSTALL)
    assert path is not None
    return path


def _browse(chromium: str, profile: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _console_messages(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (errors, failed loads, uncaught exceptions).

    With ``--enable-logging=stderr`` every console message is logged as ``INFO:CONSOLE``
    whatever its level, so any such line counts: the report has no reason to log at all.
    """
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A failed drill's report: it exercises more of the page (findings, failed marks) than a pass."""
    loaded = load_scenario(DATA / "drills" / "sabotage-after-restore.yaml")
    results = DrillRunner(loaded).run()
    assert results.verdict == "fail", results.error
    out = tmp_path_factory.mktemp("browser-report")
    return write_all(results, out, formats=("json", "html"))["html"]


def test_rendered_report_shows_verdict_and_timeline_without_console_errors(
    chromium: str, report: Path, tmp_path: Path
) -> None:
    proc = _browse(chromium, tmp_path / "profile", report.as_uri(), "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "verdict verdict-fail" in dom
    assert "FAIL" in dom
    assert "fidelity[app-config]" in dom
    assert '<svg class="gantt"' in dom
    assert _console_messages(proc.stderr) == []


def test_screenshot_is_a_png_of_the_window_size(chromium: str, report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = _browse(
        chromium, tmp_path / "profile", report.as_uri(), f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    # IHDR is the first chunk: length, type, then width and height as big-endian uint32.
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    # A blank page compresses to a few kilobytes; a rendered report is far larger.
    assert len(data) > 20_000


def test_console_check_fires_on_a_page_that_logs_an_error(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>x</title><script>no_such_function();</script>", encoding="utf-8")
    proc = _browse(chromium, tmp_path / "profile", page.as_uri(), "--enable-logging=stderr", "--v=0", "--dump-dom")
    messages = _console_messages(proc.stderr)
    assert any("Uncaught ReferenceError" in m for m in messages), proc.stderr[-2000:]
