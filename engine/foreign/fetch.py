"""Where a foreign backup is read from: a local path, or an S3 object or prefix.

Local backups are read in place and never changed. An S3 backup is downloaded into the
run's private work directory first (tools such as pg_restore and redis-server read
files), so it needs that much free space there; the download counts in the restore's
time, as it would on the day. Credentials come from the environment, as boto3 finds
them; none is ever written in a scenario.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from engine.errors import ConfigError, RepositoryError


@dataclass(frozen=True)
class S3Location:
    endpoint_url: str | None = None
    region: str | None = None


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def local_path(location: str, base_dir: Path) -> Path:
    """A local backup path, relative to the scenario's directory; it must exist."""
    path = Path(location)
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        raise ConfigError(f"foreign backup {location!r}: {path} does not exist")
    return path


def materialize(location: str, base_dir: Path, workdir: Path, s3: S3Location | None = None) -> Path:
    """A local path holding the backup at ``location`` (downloaded into ``workdir`` from S3)."""
    if not is_s3(location):
        return local_path(location, base_dir)
    parts = urlsplit(location)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise ConfigError(f"foreign backup {location!r}: expected s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
    from engine.repository.s3 import _client

    client = _client((s3 or S3Location()).endpoint_url, (s3 or S3Location()).region)
    target = workdir / "foreign" / bucket / key.rstrip("/")
    try:
        if key.endswith("/"):
            _download_prefix(client, bucket, key, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            _keep_time(target, client.head_object(Bucket=bucket, Key=key)["LastModified"])
    except RepositoryError:
        raise
    except Exception as exc:  # botocore's ClientError, EndpointConnectionError, ...
        raise RepositoryError(f"cannot download the foreign backup {location}: {type(exc).__name__}: {exc}") from None
    return target


def _download_prefix(client: object, bucket: str, prefix: str, target: Path) -> None:
    """Every object under ``prefix``, into the same layout below ``target``; none outside it."""
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    count = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = PurePosixPath(obj["Key"][len(prefix) :])
            if obj["Key"].endswith("/") and not obj.get("Size"):
                _folder_marker(bucket, obj["Key"], rel, target)
                continue
            if not rel.parts or rel.is_absolute() or ".." in rel.parts:
                raise RepositoryError(f"s3://{bucket}/{obj['Key']}: a key that would land outside {target}")
            dest = target.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))  # type: ignore[attr-defined]
            _keep_time(dest, obj["LastModified"])
            count += 1
    if count == 0:
        raise RepositoryError(f"s3://{bucket}/{prefix}: no object under this prefix")


def _folder_marker(bucket: str, key: str, rel: PurePosixPath, target: Path) -> None:
    """A zero-byte key ending in ``/`` (the S3 console's "Create folder", some sync tools): a directory.

    The prefix's own marker is the target itself; a deeper one is made a directory (an
    empty folder is part of the tree), never a zero-byte file that the keys below it
    would then collide with.
    """
    if not rel.parts:
        return
    if rel.is_absolute() or ".." in rel.parts:
        raise RepositoryError(f"s3://{bucket}/{key}: a key that would land outside {target}")
    target.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)


def _keep_time(path: Path, modified: datetime) -> None:
    """Give the download the object's time: a backup's age must not restart at the download.

    Formats that record no time of their own (a plain SQL dump, a tar, an index file) fall
    back on the file's modification time; the download's own would make every backup
    look minutes old.
    """
    stamp = modified.timestamp()
    os.utime(path, (stamp, stamp))
