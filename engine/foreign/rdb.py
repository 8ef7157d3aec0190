"""A Redis RDB snapshot another tool made: ``redis-cli --rdb``, a copied ``dump.rdb``, BGSAVE.

What it says about itself: the format version in its magic (``REDIS0011``), and the
auxiliary fields every Redis since 3.2 writes first: ``redis-ver`` (the server that
wrote it) and ``ctime`` (when the snapshot was made). The sandbox gets a Redis at least
as new as the writer (older ones refuse newer RDB formats); without ``redis-ver`` the
format version says which Redis reads it (10 needs 7.0, 11 7.2, 12 7.4).

The restore is the ``redis-rdb`` kind's own, fed the local file as its artifact: the
file is proven whole by ``redis-check-rdb`` (every record and the CRC64) before the
sandbox server loads it, so a damaged snapshot fails with the checker's words. Only the
end-of-file marker is checked while inspecting, which catches a file cut short before
any server starts.

A CRC64 field of 0 means "saved without a checksum" (``rdbchecksum no``) to Redis and to
``redis-check-rdb``, which then check nothing: a damaged value loads, and a file cut
short and given a forged end marker plus eight zero bytes loads as a smaller dataset.
Such a file cannot be proven whole, so it is refused while inspecting, never passed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from engine.components.base import ArtifactSource, Component
from engine.components.redis_rdb import ARTIFACT, RedisRdbComponent, rdb_version
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import file_time
from engine.foreign.trees import NOTHING
from engine.manifest import ArtifactRecord

_MAGIC_LEN = 9
_AUX = 0xFA
_EOF = 0xFF
_TRAILER = 9  # the end-of-file opcode and the CRC64 (format 5 and later)
_HEAD = 4096  # the auxiliary fields come first and are short
# The oldest Redis that reads each RDB format (formats up to 9 are read by every Redis here).
_READER = {10: "7.0", 11: "7.2", 12: "7.4"}


def aux_fields(head: bytes) -> dict[str, str | int]:
    """The auxiliary fields at the start of an RDB (``redis-ver``, ``ctime``, ...).

    Only the encodings Redis uses for them are read: plain strings and 8/16/32-bit
    integers. Anything else (or a field cut off by the end of ``head``) ends the list.
    """
    fields: dict[str, str | int] = {}
    pos = _MAGIC_LEN
    while pos < len(head) and head[pos] == _AUX:
        key, pos = _value(head, pos + 1)
        if not isinstance(key, bytes):
            break
        value, pos = _value(head, pos)
        if value is None:
            break
        fields[key.decode("ascii", "replace")] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return fields


def _value(buf: bytes, pos: int) -> tuple[bytes | int | None, int]:
    """One RDB string at ``pos``: its bytes or its integer, and where the next begins."""
    if pos >= len(buf):
        return None, len(buf)
    first, kind = buf[pos], buf[pos] >> 6
    if kind == 3:  # an integer in 1, 2 or 4 little-endian bytes
        width = {0: 1, 1: 2, 2: 4}.get(first & 0x3F)
        if width is None or pos + 1 + width > len(buf):
            return None, len(buf)
        return int.from_bytes(buf[pos + 1 : pos + 1 + width], "little", signed=True), pos + 1 + width
    if kind == 0:
        length, pos = first & 0x3F, pos + 1
    elif kind == 1 and pos + 1 < len(buf):
        length, pos = ((first & 0x3F) << 8) | buf[pos + 1], pos + 2
    elif first == 0x80 and pos + 5 <= len(buf):
        length, pos = int.from_bytes(buf[pos + 1 : pos + 5], "big"), pos + 5
    else:
        return None, len(buf)
    if pos + length > len(buf):
        return None, len(buf)
    return buf[pos : pos + length], pos + length


def _version_numbers(text: str) -> str | None:
    parts = text.split(".")
    return text if len(parts) >= 2 and all(p.isdigit() for p in parts) else None


class RedisRdb(ForeignFormat):
    name: ClassVar[str] = "rdb"
    kinds: ClassVar[tuple[str, ...]] = ("redis-rdb",)
    server: ClassVar[str | None] = "redis"
    Params: ClassVar[type[ForeignParams]] = ForeignParams
    description: ClassVar[str] = (
        "A Redis RDB snapshot (`redis-cli --rdb`, a copied dump.rdb), checked with redis-check-rdb and loaded into "
        "a Redis at least as new as the one that wrote it."
    )

    def inspect(self, local: Path) -> ForeignFacts:
        if local.is_dir():
            raise ComponentError(f"{local}: a directory, not an RDB file")
        size = local.stat().st_size
        with open(local, "rb") as fh:
            head = fh.read(_HEAD)
            fh.seek(max(size - _TRAILER, 0))
            tail = fh.read(_TRAILER)
        version = rdb_version(head)
        if version is None:
            raise ComponentError(
                f"{local}: not an RDB file (it starts with {head[:_MAGIC_LEN]!r}, not REDIS and a version)"
            )
        last = tail[0] if version >= 5 else tail[-1]
        if size < _MAGIC_LEN + _TRAILER or last != _EOF:
            raise ComponentError(
                f"{local}: an RDB file of {size} bytes that does not end with the end-of-file marker: it was cut short"
            )
        if version >= 5 and tail[1:] == b"\0" * 8:
            raise ComponentError(
                f"{local}: the RDB file carries no checksum (its CRC64 field is 0): it was saved with "
                "`rdbchecksum no`, or cut short and given a new end marker; Redis and redis-check-rdb then check "
                "nothing, so it cannot be proven whole. Save snapshots with `rdbchecksum yes` (Redis's default)"
            )
        fields = aux_fields(head)
        writer = fields.get("redis-ver")
        writer_version = _version_numbers(writer) if isinstance(writer, str) else None
        ctime = fields.get("ctime")
        taken, taken_from = file_time(local), "the file's modification time (the RDB records no ctime)"
        if isinstance(ctime, int) or (isinstance(ctime, str) and ctime.isdigit()):
            taken, taken_from = datetime.fromtimestamp(int(ctime), UTC), "the RDB's ctime field (when it was saved)"
        wanted = writer_version or _READER.get(version)
        return ForeignFacts(
            taken_at=taken,
            taken_at_from=taken_from,
            server_version=(f"Redis {wanted}" if writer_version else f"Redis {wanted} (RDB format {version})")
            if wanted
            else None,
            server_major=int(wanted.split(".")[0]) if wanted else None,
            size_bytes=size,
            details={
                "rdb_version": version,
                "written_by": f"Redis {writer}" if writer else None,
                "valkey": fields.get("valkey-ver"),
                "bits": fields.get("redis-bits"),
            },
        )

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        if not isinstance(component, RedisRdbComponent):
            raise ComponentError(f"an RDB file restores into a redis-rdb component, not a {component.name}")
        size = local.stat().st_size
        record = ArtifactRecord.model_construct(
            component=component.instance,
            name=ARTIFACT,
            path=f"{component.instance}/{ARTIFACT}.zst",
            size=size,
            sha256="",
            raw_size=size,
        )
        component.restore(ArtifactSource({ARTIFACT: record}, _opener(local)))
        client = component.client()
        keys = {name: int(info["keys"]) for name, info in client.info("keyspace").items() if name.startswith("db")}
        if not sum(keys.values()):
            # An empty server's snapshot (or one whose every key had expired) restores
            # "successfully" and proves nothing about the data: never a pass.
            raise ComponentError(f"{local}: {NOTHING}: no key is left after loading the RDB (an empty server's snapshot)")
        return {"rdb_version": facts.details["rdb_version"], "keys": keys}


def _opener(local: Path) -> Any:
    """What ``ArtifactSource`` calls to open its one artifact: the file itself, read as it is."""

    def open_rdb(record: ArtifactRecord, whole: bool = True) -> IO[bytes]:
        return open(local, "rb")

    return open_rdb
