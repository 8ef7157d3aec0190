"""Telling people and monitoring what a backup or a drill did: webhooks, Prometheus, JSON events.

The webhook URL usually carries a token, so it is read from an environment variable, never
from the configuration or the command line, and never printed: a failed notification says
which variable and why, not where. The same holds for Pushgateway credentials. A
notification that fails never turns a good backup (or drill) into a failed one; it is
reported on stderr, so it is seen, not hidden.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

PUSHGATEWAY_USER_ENV = "DRPROOF_PUSHGATEWAY_USER"
PUSHGATEWAY_PASSWORD_ENV = "DRPROOF_PUSHGATEWAY_PASSWORD"
PUSH_JOB = "drproof"


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


# --- drills ------------------------------------------------------------------------------


def check_pushgateway_url(url: str) -> str:
    """Refuse a URL that is not http(s) or that carries credentials (they would be in argv and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--pushgateway must be an http(s) URL such as http://pushgateway:9091, not {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"--pushgateway must not carry credentials (they would show in the process list); "
            f"set {PUSHGATEWAY_USER_ENV} and {PUSHGATEWAY_PASSWORD_ENV} instead"
        )
    return url


def push_metrics(url: str, registry: Any, grouping: dict[str, str], timeout: float = 10.0) -> str | None:
    """PUT ``registry`` to a Pushgateway under job ``drproof`` and ``grouping``; a problem, or None.

    PUT replaces the group's metrics, so a scenario's series never mix two runs.
    """
    from prometheus_client import exposition

    password = os.environ.get(PUSHGATEWAY_PASSWORD_ENV)
    user = os.environ.get(PUSHGATEWAY_USER_ENV, "")

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes) -> Any:
        if password:
            return exposition.basic_auth_handler(url, method, timeout, headers, data, user, password)
        return exposition.default_handler(url, method, timeout, headers, data)

    try:
        exposition.push_to_gateway(url, PUSH_JOB, registry, grouping_key=grouping, timeout=timeout, handler=handler)
    except urllib.error.HTTPError as exc:
        return f"the Pushgateway answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the Pushgateway could not be reached ({type(reason).__name__})"
    return None


def write_textfile(path: Path, registry: Any) -> None:
    """The textfile collector's format, replaced in one step (node_exporter reads it any time)."""
    from prometheus_client import write_to_textfile

    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot write {path}: {exc.strerror}") from exc


def write_event(path: Path, event: dict[str, Any]) -> None:
    """The drill's JSON event, for a CI step that hands it to a compliance platform."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(event, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"event: cannot write {path}: {exc.strerror}") from exc
