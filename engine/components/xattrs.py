"""Extended attributes of tree entries: archived, restored and fingerprinted.

Why: POSIX ACLs (``system.posix_acl_access``, ``system.posix_acl_default``), file
capabilities (``security.capability``: a binary allowed to bind port 443 without root)
and an application's own ``user.*`` attributes live in extended attributes. A restore
that drops them leaves every byte and mode equal while a service can no longer open its
files, or its binary no longer start; with no record of them, fidelity said "match".

They travel as tar does it (GNU tar ``--xattrs``, bsdtar): one pax record
``SCHILY.xattr.<name>`` per attribute, the value's bytes kept exactly. Every attribute
the file system lists is archived except ``security.selinux``: a label is the host's
policy (restorecon sets it), and a restore onto another host must not carry one over.
ACLs are copied as the kernel stores them, so a named user in an ACL is by number.

Only ``user.*`` attributes and POSIX ACLs are given back from an archive (``GIVEN``):
every other attribute (``security.capability``, ``security.ima``, ``security.evm``,
``trusted.*``, ...) is archived and compared but never set. Like a set-user-ID bit, an
archive's file capability would be a privilege on this host; an IMA/EVM record makes
integrity appraisal accept a forged file as is; ``trusted.overlay.*`` steers overlayfs
when the restored tree is a container layer. An allow-list, not a deny-list: a review
found ``security.ima``, ``security.evm`` and ``trusted.*`` given back from a hostile
archive while only ``security.capability`` was withheld. The fidelity check names every
entry that lacks one, so such a restore is never called whole.

A fingerprint part records the attributes as `` xattrs:<digest>`` after the owner
(:func:`engine.components.files.owned`): a finding says the attributes differ, never
their values (a value may be anything an application keeps there).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

PAX_PREFIX = "SCHILY.xattr."
SKIPPED = ("security.selinux",)
# What a restore gives back from an archive: an application's own attributes and ACLs.
# Everything else is archived and compared, never given (see the module's docstring).
GIVEN_PREFIXES = ("user.",)
GIVEN_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
# What setting an attribute may fail with where the restore cannot give it (not root, or
# a file system without that namespace): the restore goes on and fidelity names the entry.
NOT_GIVEN = (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL)
# What setting one fails with where the target file system cannot hold it: ext4 keeps all of
# a file's attributes in one block, so a 60 KB value from tmpfs or XFS does not fit there.
# Found by review: the whole restore failed with "No space left on device: 7" on a disk with
# gigabytes free, naming neither file nor attribute. Now it is not given, as above, and
# named in a warning; fidelity names the entry.
TOO_LARGE = (errno.ENOSPC, errno.E2BIG, errno.ERANGE)

Xattrs = dict[str, bytes]


def read(target: int | str, follow_symlinks: bool = False) -> Xattrs:
    """The archived attributes of an open file (``target`` a descriptor) or an entry (a path)."""
    follow = follow_symlinks or isinstance(target, int)  # a descriptor is the file itself
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}  # a file system without extended attributes: none to lose
        raise
    if not names:
        return {}
    found = {}
    for name in sorted(n for n in names if n not in SKIPPED):
        try:
            found[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed since it was listed
                raise
    return found


def token(xattrs: Xattrs) -> str:
    """What a part ends with for these attributes: nothing for none, else `` xattrs:<digest>``."""
    if not xattrs:
        return ""
    h = hashlib.sha256()
    for name in sorted(xattrs):
        raw = name.encode("utf-8", "surrogateescape")
        h.update(len(raw).to_bytes(8, "big") + raw + len(xattrs[name]).to_bytes(8, "big") + xattrs[name])
    return f" xattrs:{h.hexdigest()[:32]}"


def to_pax(xattrs: Xattrs) -> dict[str, str]:
    """pax records of the attributes; bytes that are not UTF-8 survive as surrogates (tarfile writes them back)."""
    return {PAX_PREFIX + name: value.decode("utf-8", "surrogateescape") for name, value in xattrs.items()}


def from_pax(pax: Mapping[str, str] | None) -> Xattrs:
    """The attributes an archive member's pax records carry (none for a plain ustar member)."""
    if not pax:
        return {}
    return {
        key[len(PAX_PREFIX) :]: value.encode("utf-8", "surrogateescape")
        for key, value in sorted(pax.items())
        if key.startswith(PAX_PREFIX) and key[len(PAX_PREFIX) :] not in SKIPPED
    }


def given(name: str) -> bool:
    """Whether a restore sets the attribute ``name`` from an archive (``user.*`` and POSIX ACLs only)."""
    return name.startswith(GIVEN_PREFIXES) or name in GIVEN_NAMES


def give(target: int | str, xattrs: Xattrs, host_own: bool = False, where: str = "") -> int:
    """Set the attributes on ``target`` (a descriptor, or a path not followed); how many were not set.

    Only those :func:`given` allows, unless ``host_own``: attributes read from this host's
    own live directory a restore replaces (never from an archive or a backup's record).
    ``where``: the entry's name, for the warning about an attribute too large to set.
    """
    missed = 0
    for name, value in xattrs.items():
        if not host_own and not given(name):
            missed += 1
            continue
        try:
            os.setxattr(target, name, value, follow_symlinks=isinstance(target, int))
        except OSError as exc:
            if exc.errno in TOO_LARGE:
                log.warning(
                    "extended attribute %s of %s (%d bytes) was not set: the file system restored to cannot hold "
                    "it (%s); the fidelity check names the entry",
                    name,
                    where or target,
                    len(value),
                    os.strerror(exc.errno or 0),
                )
            elif exc.errno not in NOT_GIVEN:
                raise
            missed += 1
    return missed
