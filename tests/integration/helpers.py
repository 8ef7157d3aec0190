"""Helpers for tests that run real drills."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil


def run_cli(args: list[str]) -> int:
    from drills.cli import main

    return main(args)


def read_results(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "results.json").read_text())
    return data


def servers_under(path: Path) -> list[str]:
    """Server processes whose command line mentions ``path``: there must be none after a run."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(path) in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.info['pid']}: {cmd}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
