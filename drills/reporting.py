"""Telling people and monitoring what a backup did: a webhook and a Prometheus textfile.

The webhook URL usually carries a token, so it is read from an environment variable, never
from the configuration, and never printed: a failed notification says which variable
and why, not where. A notification that fails never turns a good backup into a failed
one; it is reported on stderr, so it is seen, not hidden.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from engine.errors import ConfigError


def notify(url_env: str, payload: dict[str, Any], timeout: float = 10.0) -> str | None:
    """POST ``payload`` as JSON; return a problem description (without the URL) or None."""
    url = os.environ.get(url_env)
    if not url:
        return f"environment variable {url_env} is not set"
    if not url.startswith(("https://", "http://")):
        return f"{url_env} does not hold an http(s) URL"
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status >= 300:
                return f"the webhook answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"the webhook answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the webhook could not be reached ({type(reason).__name__})"
    return None


def write_metrics(path: Path, backup: dict[str, Any] | None, success: bool, duration: float) -> None:
    """Prometheus textfile-collector format, written atomically (node_exporter reads it any time)."""
    lines = [
        "# HELP drproof_backup_success 1 if the last backup run succeeded, else 0.",
        "# TYPE drproof_backup_success gauge",
        f"drproof_backup_success {1 if success else 0}",
        "# HELP drproof_backup_duration_seconds Duration of the last backup run.",
        "# TYPE drproof_backup_duration_seconds gauge",
        f"drproof_backup_duration_seconds {duration:.3f}",
    ]
    if backup is not None:
        lines += [
            "# HELP drproof_backup_last_success_timestamp_seconds When the last successful backup was created.",
            "# TYPE drproof_backup_last_success_timestamp_seconds gauge",
            f"drproof_backup_last_success_timestamp_seconds {backup['created_at_epoch']:.0f}",
            "# HELP drproof_backup_stored_bytes Bytes stored by the last successful backup.",
            "# TYPE drproof_backup_stored_bytes gauge",
            f"drproof_backup_stored_bytes {backup['stored_bytes']}",
        ]
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot write {path}: {exc.strerror}") from exc
