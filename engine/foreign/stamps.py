"""Times a foreign backup records about itself, read without guessing a zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path


def pg_time(text: str | None) -> datetime | None:
    """PostgreSQL's "2026-12-05 02:00:12 UTC" (local time and a zone abbreviation); None when unsure.

    pg_dump's header and a base backup's ``backup_label`` write the server's local time
    with an abbreviation. Only UTC and this host's own zone are unambiguous; any other
    abbreviation (IST is India, Ireland or Israel) gives None, and the caller uses the
    file's time instead.
    """
    if not text:
        return None
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\S*)", text)
    if m is None:
        return None
    moment = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    zone = m.group(2).upper()
    if zone in ("UTC", "GMT", "Z", "+00", "UCT"):
        return moment.replace(tzinfo=UTC)
    here = datetime.now().astimezone()
    if here.tzinfo is not None and zone and zone == here.strftime("%Z").upper():
        return moment.replace(tzinfo=here.tzinfo).astimezone(UTC)
    return None


def file_time(path: Path) -> datetime:
    """The modification time of ``path`` (a download from S3 carries the object's)."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
