"""A directory drproof just created to restore into, made its own before anything is written.

A restore creates its staging (or new data) directory beside the target, so it inherits
what the target's parent gives new entries: the group of a set-group-ID parent (with the
set-group-ID bit) and a default ACL. Everything written into it inherits them in turn,
so the restored tree carried a group and ACLs the backup never had (found by review of
tree restores, then of PostgreSQL data directories: a data directory restored under a
shared ``/srv/pg`` was mode 2700 with the parent's ACLs on every file).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

ACL_NAMES = ("system.posix_acl_default", "system.posix_acl_access")


def make_private(path: Path) -> None:
    """Make ``path`` the restorer's own: its effective group, mode 0700 (no set-group-ID), no ACL.

    The recorded (or required) owner and mode are given after the content is written, by
    the caller; this only stops the parent's inheritance from reaching the content.
    """
    for name in ACL_NAMES:
        try:
            os.removexattr(path, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    if path.stat().st_gid != os.getegid():  # inherited from a set-group-ID parent (its owner is the restorer)
        os.chown(path, -1, os.getegid())
    os.chmod(path, 0o700)  # after chown, which keeps the set-group-ID bit for root
