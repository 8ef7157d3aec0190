"""S3 "folder" marker objects in a prefix backup: directories, never files or a refusal.

The S3 console's "Create folder" and several sync tools store a zero-byte key ending in
``/`` for each folder. AWS lists them like any object. The prefix's own marker was
refused as "a key that would land outside" the target, and a deeper one became a
zero-byte file that the keys below it then collided with (FileExistsError). The listing
here is shaped as AWS returns it; the client only copies bytes into place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RepositoryError
from engine.foreign.fetch import _download_prefix

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


class _Bucket:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_paginator(self, name: str) -> Any:
        bucket = self

        class _Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # boto3's keyword names
                keys = sorted(k for k in bucket.objects if k.startswith(Prefix))
                return [{"Contents": [{"Key": k, "Size": len(bucket.objects[k]), "LastModified": WHEN} for k in keys]}]

        return _Pages()

    def download_file(self, bucket: str, key: str, dest: str) -> None:
        Path(dest).write_bytes(self.objects[key])


def test_folder_markers_become_directories(tmp_path: Path) -> None:
    bucket = _Bucket(
        {
            "etc-app/": b"",
            "etc-app/conf/": b"",
            "etc-app/conf/app.ini": b"[app]\n",
            "etc-app/empty/": b"",
            "etc-app/README": b"hello\n",
        }
    )
    target = tmp_path / "etc-app"
    _download_prefix(bucket, "acme", "etc-app/", target)
    assert (target / "conf" / "app.ini").read_bytes() == b"[app]\n"
    assert (target / "README").read_bytes() == b"hello\n"
    assert (target / "empty").is_dir() and not any((target / "empty").iterdir())


def test_a_prefix_of_only_folder_markers_holds_no_object(tmp_path: Path) -> None:
    bucket = _Bucket({"uploads/": b"", "uploads/sub/": b""})
    with pytest.raises(RepositoryError, match="no object under this prefix"):
        _download_prefix(bucket, "acme", "uploads/", tmp_path / "uploads")


def test_a_marker_climbing_out_is_still_refused(tmp_path: Path) -> None:
    bucket = _Bucket({"uploads/../x/": b"", "uploads/a": b"1"})
    with pytest.raises(RepositoryError, match="would land outside"):
        _download_prefix(bucket, "acme", "uploads/", tmp_path / "uploads")
