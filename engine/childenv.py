"""The environment each child process gets: what it needs, nothing drproof holds.

drproof's own environment carries secrets by design: the encryption key or passphrase
(``key_env``), the webhook URL with its token, server passwords (``password_env``), the
signing key. A child inheriting all of it (``pg_dump``, a scratch ``redis-server``,
pgBackRest) would hold them for no reason, and leak them to anything that reads
``/proc/<pid>/environ`` or a core dump. So children get an allow-list:

- **tools and servers** (``tool_environment``): ``PATH``, locale and time zone, ``HOME``
  and the temporary directory, plus what a tool's own prefixes name (``PG`` for libpq's
  ``PGSSLMODE`` and friends) and the variables drproof passes on purpose
  (``PGPASSWORD`` for the one server the tool talks to);
- **the operator's own commands** (hooks, stop/start commands; ``operator_environment``):
  the whole environment, which those commands may need, minus every variable the
  configuration names as holding a secret and every ``DRPROOF_`` variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_BASE = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL"})
SECRET_PREFIXES = ("DRPROOF_",)


def tool_environment(extra: dict[str, str] | None = None, prefixes: Iterable[str] = ()) -> dict[str, str]:
    """A minimal environment for a tool or server, with ``extra`` on top."""
    keep = tuple(prefixes)
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _BASE or k.startswith("LC_") or (keep and k.startswith(keep) and not k.startswith(SECRET_PREFIXES))
    }
    env.update(extra or {})
    return env


def operator_environment(secret_names: Iterable[str] = ()) -> dict[str, str]:
    """The environment minus what the configuration keeps secrets in."""
    drop = set(secret_names)
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(SECRET_PREFIXES)}
