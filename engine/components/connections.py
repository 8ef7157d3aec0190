"""Connection details of components, as the environment of a user's program.

Checks the user writes (``command``) and application components get, for each component
they use, ``DRPROOF_<NAME>_URL`` and friends (``NAME`` upper-cased, ``-`` as ``_``). A
password is only ever in its own variable, never inside a URL or an argument, so it
does not show in ``ps`` or in a printed URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from engine.components.base import Component

PREFIX = "DRPROOF_"


def variable(instance: str, key: str) -> str:
    return f"{PREFIX}{re.sub(r'[^A-Za-z0-9]', '_', instance).upper()}_{key}"


def connection_env(components: Mapping[str, Component]) -> dict[str, str]:
    """Every component's connection facts, as environment variables."""
    env: dict[str, str] = {}
    for name, comp in components.items():
        for key, value in comp.connection_env().items():
            env[variable(name, key)] = value
    return env


def libpq_fields(dsn: str) -> dict[str, str]:
    """``host=127.0.0.1 port=5432 ...`` as a mapping (values drproof writes have no spaces)."""
    return dict(part.split("=", 1) for part in dsn.split() if "=" in part)


def postgres_env(dsn: str, password: str | None) -> dict[str, str]:
    f = libpq_fields(dsn)
    user, host, port, db = f.get("user", "postgres"), f.get("host", "127.0.0.1"), f.get("port", "5432"), f.get("dbname", "")
    env = {
        "URL": f"postgresql://{quote(user)}@{host}:{port}/{quote(db)}",
        "HOST": host,
        "PORT": port,
        "USER": user,
        "DATABASE": db,
    }
    if password:
        env["PASSWORD"] = password
    return env


def network_connection_env(components: Mapping[str, Component], user: str) -> dict[str, str]:
    """The same variables as :func:`connection_env`, as a container on the run's network
    reaches each component (its network alias and in-container port).

    A component without such an address (a host directory) is refused by name rather than
    given a host path the container cannot open.
    """
    from engine.errors import ComponentError

    env: dict[str, str] = {}
    for name, comp in components.items():
        facts = comp.network_connection_env()
        if facts is None:
            raise ComponentError(
                f"{user} runs in a container, which cannot reach {comp.name} component {name!r}: only servers on "
                "the run's network (postgres, redis) can be its dependencies"
            )
        for key, value in facts.items():
            env[variable(name, key)] = value
    return env
