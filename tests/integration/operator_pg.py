"""A PostgreSQL cluster set up and run by hand with initdb and pg_ctl, as an operator runs one.

Tests of physical backups, point-in-time recovery and scratch restores need a server
drproof did not start (it restores into the operator's data directory and runs the
operator's stop and start commands). A LocalRuntime only lends the server binaries and,
as root, an unprivileged user who may own a data directory; everything else is here, once.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.runtime import processes


@dataclass
class OperatorCluster:
    base: Path
    data: Path
    archive: Path  # where archive_command copies WAL
    socket: Path
    port: int
    pg_ctl: list[str]  # pg_ctl -D data -w, as the server's user

    @property
    def start(self) -> list[str]:
        return [*self.pg_ctl, "-l", str(self.base / "server.log"), "start"]

    @property
    def stop(self) -> list[str]:
        return [*self.pg_ctl, "-m", "fast", "stop"]

    def write_config(self, path: Path, repository: Path, password_env: str) -> Path:
        """A backup-config naming this cluster as component ``db`` (postgres-physical), its password by variable."""
        physical = {"data_directory": str(self.data), "wal_archive": str(self.archive), "stop": self.stop, "start": self.start}
        component = {
            "kind": "postgres-physical",
            "url": f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
            "password_env": password_env,
            "physical": physical,
        }
        config = {"repository": {"type": "local", "path": str(repository)}, "components": {"db": component}}
        path.write_text(json.dumps(config))
        return path


def init_cluster(
    root: Path,
    name: str,
    user: str | None,
    bin_dir: Path,
    password: str,
    *,
    conf: str = "postgresql.auto.conf",
    archive: str = "archive",
    settings: str = "",
    wait: int = 120,
) -> OperatorCluster:
    """An initialised cluster under ``root/name`` archiving into ``root/name/archive`` (not started)."""
    base = root / name
    data, wal, sock = base / "data", base / archive, base / "socket"
    ids = None
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        ids = (entry.pw_uid, entry.pw_gid)
    for d in (base, wal, sock):
        d.mkdir(mode=0o755)
        if ids is not None:
            os.chown(d, *ids)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if ids is not None:
        os.chown(pwfile, *ids)
    as_user = ["runuser", "-u", user, "--"] if user else []
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
         "--auth-host=scram-sha-256", "--auth-local=peer", "--locale=C"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = processes.free_port()
    with (data / conf).open("a") as fh:
        fh.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n{settings}"
            f"archive_mode = on\narchive_command = 'test ! -f {wal}/%f && cp %p {wal}/%f'\n"
        )
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", str(wait)]
    return OperatorCluster(base, data, wal, sock, port, pg_ctl)
