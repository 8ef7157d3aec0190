"""A PostgreSQL data directory restored under a shared parent is the server's alone.

Leftover of review finding 5 (review-trees): tree restores got a clean staging directory
(no group, set-group-ID bit or default ACL inherited from a shared parent), but physical
and foreign PostgreSQL restores create the new data directory (and drproof's private WAL
directory) in the old one's parent, so a set-group-ID parent with a default ACL gave the
restored cluster mode 2700 directories and the parent's ACL on every file. Real servers:
Debian's PostgreSQL 15 run by hand with pg_ctl (an operator's, restored in place), and the
embedded PostgreSQL of a drill's local runtime (where foreign pg_basebackup and pgBackRest
restores land too: the same ``replace_cluster``).
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresParams
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.repository import LocalRepository
from engine.runtime.external import ExternalRuntime, PhysicalTarget, PostgresTarget
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import insert_mark, marks
from tests.integration.operator_pg import init_cluster
from tests.integration.servers import require, require_pg15

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _as_root() -> None:
    """Only root gives groups away; under CI=true a failure, never a skip (.ci/run runs as root)."""
    require("root (only root gives a file's group away)", os.geteuid() == 0, "run the tests as root")
PASSWORD = "shared-parent-test-password"
DAEMON = pwd.getpwnam("daemon")
# user::rwx group::r-x mask::rwx other::--- : a default ACL as a shared directory has one
PARENT_ACL = bytes.fromhex("02000000" "01000700ffffffff" "04000500ffffffff" "10000700ffffffff" "20000000ffffffff")
SHARED = ["set-gid and default ACL", "neither"]


def _share(parent: Path, how: str) -> None:
    """The data directory's parent as a shared one often is (its owner, the server's user, stays)."""
    if how == "neither":
        return
    os.chown(parent, -1, DAEMON.pw_gid)
    os.chmod(parent, 0o2775)
    os.setxattr(parent, "system.posix_acl_default", PARENT_ACL)


def _leaks(data: Path, owner: tuple[int, int]) -> list[str]:
    """Every way the restored cluster is not the server's alone, mode 0700 at its root."""
    found = []
    st = data.stat()
    if stat.S_IMODE(st.st_mode) != 0o700:
        found.append(f"data directory mode {stat.S_IMODE(st.st_mode):o}")
    for path in [data, *data.rglob("*")]:
        st = path.lstat()
        rel = str(path.relative_to(data)) or "."
        if (st.st_uid, st.st_gid) != owner:
            found.append(f"{rel}: owner {st.st_uid}:{st.st_gid}")
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISGID:
            found.append(f"{rel}: set-group-ID")
        if not path.is_symlink() and any(n.startswith("system.posix_acl") for n in os.listxattr(path)):
            found.append(f"{rel}: ACL")
    return found


@pytest.fixture
def operator_server(tmp_path: Path) -> Iterator[tuple[PostgresPhysicalComponent, Path, tuple[int, int]]]:
    with LocalRuntime(tmp_path / "lend", images={"postgres": str(require_pg15())}) as lender:
        assert lender._pg_user is not None
        pg = init_cluster(lender.pg_root, "existing", lender._pg_user, lender._server_binaries(), PASSWORD)
        subprocess.run(pg.start, check=True, capture_output=True)
        try:
            runtime = ExternalRuntime(
                Path("."),
                postgres={"db": PostgresTarget("127.0.0.1", pg.port, "postgres", "app", PASSWORD)},
                physical={"db": PhysicalTarget(data_directory=pg.data, wal_archive=pg.archive, stop=pg.stop, start=pg.start)},
            )
            comp = PostgresPhysicalComponent("db", PostgresParams(customers=50), runtime)
            comp.provision()
            entry = pwd.getpwnam(lender._pg_user)
            yield comp, pg.data, (entry.pw_uid, entry.pw_gid)
        finally:
            subprocess.run(pg.stop, capture_output=True)


@pytest.mark.parametrize("how", SHARED)
def test_an_in_place_restore_of_an_operators_server_under_a_shared_parent_leaks_nothing(
    operator_server: tuple[PostgresPhysicalComponent, Path, tuple[int, int]], tmp_path: Path, how: str
) -> None:
    comp, data, owner = operator_server
    comp.seed()
    repo = LocalRepository(tmp_path / "repo")
    manifest = engine_backup.backup(repo, [comp])
    insert_mark(comp, "after the backup")
    _share(data.parent, how)

    engine_backup.restore(repo, manifest, comp)

    assert marks(comp) == [] and comp.health().ok
    assert _leaks(data, owner) == []


@pytest.mark.parametrize("how", SHARED)
def test_a_restore_into_the_local_runtime_under_a_shared_parent_leaks_nothing(tmp_path: Path, how: str) -> None:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresPhysicalComponent("db", PostgresParams(customers=50), runtime)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        data = comp.service.data_dir()  # type: ignore[attr-defined]
        user = runtime._pg_user
        assert user is not None
        entry = pwd.getpwnam(user)
        _share(data.parent, how)
        comp.service.wipe_data()  # type: ignore[attr-defined]

        engine_backup.restore(repo, manifest, comp)

        assert comp.health().ok
        assert _leaks(data, (entry.pw_uid, entry.pw_gid)) == []
