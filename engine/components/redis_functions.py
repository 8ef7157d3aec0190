"""Redis Functions (``FUNCTION LOAD`` libraries, Redis 7.0 and later, Valkey): compared, backed up, restored.

Why: a library is part of a server's data set (the RDB stores it, replicas receive it),
and an application's ``FCALL`` fails with "Function not found" without it. Found by
review: both Redis kinds restored the keys only, and the fidelity check, reading keys
only, called such a restore a match.

The fingerprint part ``functions`` digests each library's name, engine and code, as
``FUNCTION LIST WITHCODE`` gives them, sorted by name (not ``FUNCTION DUMP``'s payload,
whose version bytes differ between servers holding the same libraries). A server
without Functions (Redis 6.2) and a server without libraries have no such part, so a
backup with libraries restored into a server left without them is named ("functions"
missing), and a healthy round trip is quiet.

Functions are global to the server, not to a logical database, so they cannot be
staged beside the live ones as keys are: a restore puts them in only after the keys
were proven and swapped in (``load``), with ``FUNCTION RESTORE ... FLUSH``, which
replaces the server's libraries by the backup's in one step, or changes nothing when
it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.components.redis_stage import server_error
from engine.errors import ComponentError
from engine.fingerprint import Part, PartHasher
from engine.lazy import lazy

if TYPE_CHECKING:
    import redis
else:
    redis = lazy("redis")

PART = "functions"
UNIT = "libraries"
# The artifact of a ``redis`` backup set holding ``FUNCTION DUMP``'s payload; written
# only when the server had libraries (sets without it restore as before).
ARTIFACT = "functions.dump"
# The backup's details: how many libraries it holds (0 included); absent when the server
# had no Functions, they could not be read, or drproof did not record them yet.
DETAIL = "function_libraries"


def _field(library: Any, name: str) -> Any:
    """One field of a library as redis-py parses ``FUNCTION LIST`` (a dict, or a flat list under RESP2)."""
    if isinstance(library, list):
        library = dict(zip(library[0::2], library[1::2], strict=False))
    if not isinstance(library, dict):
        raise ComponentError(f"FUNCTION LIST answered with something that is not a library: {library!r:.200}")
    value = library.get(name.encode(), library.get(name))
    return value.encode() if isinstance(value, str) else value


def _unsupported(exc: redis.ResponseError) -> bool:
    """The server has no Functions (before Redis 7.0), as opposed to refusing them (ACL, renamed)."""
    text = str(exc).lower()
    return "unknown command" in text and "function" in text


@dataclass(frozen=True)
class Libraries:
    """The function libraries a server holds: (name, engine, code) of each, sorted by name."""

    libraries: tuple[tuple[bytes, bytes, bytes], ...]

    @classmethod
    def parse(cls, reply: Any) -> Libraries:
        found = []
        for library in reply or []:
            name, engine, code = (_field(library, f) for f in ("library_name", "engine", "library_code"))
            if not all(isinstance(v, bytes) for v in (name, engine, code)):
                raise ComponentError(f"FUNCTION LIST WITHCODE gave a library without name, engine or code: {name!r}")
            found.append((name, engine, code))
        return cls(tuple(sorted(found)))

    def part(self) -> Part:
        h = PartHasher(UNIT)
        for name, engine, code in self.libraries:
            h.add(name + b"\0" + engine + b"\0" + code)
        return h.part()

    def names(self) -> str:
        return ", ".join(n.decode("utf-8", "backslashreplace") for n, _, _ in self.libraries) or "none"


def read(client: redis.Redis) -> Libraries | None:
    """The server's libraries; None on a server without Functions. Other errors propagate."""
    try:
        return Libraries.parse(client.execute_command("FUNCTION", "LIST", "WITHCODE"))  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        if _unsupported(exc):
            return None
        raise


def parts(client: redis.Redis) -> dict[str, Part]:
    """The fingerprint's ``functions`` part: none without Functions or libraries; a placeholder if unreadable.

    A placeholder never matches (``engine.fingerprint.UNMEASURED``): a server that refuses
    ``FUNCTION LIST`` (an ACL without ``+function|list``) is "could not compare", never a match.
    """
    try:
        found = read(client)
    except redis.RedisError as exc:
        return {PART: Part(digest=f"unreadable: FUNCTION LIST failed: {server_error(exc)}", count=0, unit=UNIT)}
    if found is None or not found.libraries:
        return {}
    return {PART: found.part()}


def dump(client: redis.Redis) -> tuple[dict[str, Part], bytes | None, int | None]:
    """The ``functions`` part, ``FUNCTION DUMP``'s payload (None without libraries) and the library count.

    Both are read in one MULTI/EXEC, so the payload holds exactly the libraries the part
    describes even if someone loads a library meanwhile. The count is None where it is
    unknown (no Functions, or not readable): a restore then leaves the live libraries alone.
    """
    try:
        if read(client) is None:
            return {}, None, None
        tx = client.pipeline(transaction=True)
        tx.execute_command("FUNCTION", "LIST", "WITHCODE")  # type: ignore[no-untyped-call]
        tx.execute_command("FUNCTION", "DUMP")  # type: ignore[no-untyped-call]
        listed, payload = tx.execute()
    except redis.RedisError as exc:
        placeholder = Part(digest=f"unreadable: reading the functions failed: {server_error(exc)}", count=0, unit=UNIT)
        return {PART: placeholder}, None, None
    found = Libraries.parse(listed)
    if not found.libraries:
        return {}, None, 0
    return {PART: found.part()}, bytes(payload), len(found.libraries)


def load(client: redis.Redis, payload: bytes | None, count: int | None, what: str) -> None:
    """Make the server's libraries the backup's, after its keys were swapped in.

    ``payload``: ``FUNCTION DUMP`` of the backup's libraries, put in with ``FUNCTION
    RESTORE ... FLUSH`` (the server's own libraries are replaced, as its keys were).
    None with ``count`` 0: the backup had Functions but no library, so the server's are
    flushed. None with ``count`` None: the backup does not say (an older set, a server
    without Functions), and the live libraries are left as they are; the fidelity check
    names them if the backup's fingerprint has none.
    """
    if payload is None and count != 0:
        return
    try:
        before = read(client)
        if before is None:
            if payload is None:
                return  # no Functions here, and none to restore
            raise ComponentError(f"{what}: the server has no Functions (FUNCTION is an unknown command)")
        if payload is None:
            if before.libraries:
                client.execute_command("FUNCTION", "FLUSH", "SYNC")  # type: ignore[no-untyped-call]
            return
        client.execute_command("FUNCTION", "RESTORE", payload, "FLUSH")  # type: ignore[no-untyped-call]
    except (redis.RedisError, ComponentError) as exc:
        problem = server_error(exc) if isinstance(exc, redis.RedisError) else str(exc).split(": ", 1)[-1]
        raise ComponentError(
            f"{what}: the keys were restored, but the backup's function libraries were not: {problem}. "
            f"FUNCTION RESTORE and FUNCTION FLUSH change nothing when they fail, so the server's libraries are "
            f"those it had before the restore ({_names(client)}); an application's FCALL of the backup's "
            "functions fails until they are loaded (FUNCTION LOAD, or restore again onto a server that takes them)"
        ) from None


def _names(client: redis.Redis) -> str:
    try:
        found = read(client)
    except redis.RedisError as exc:
        return f"could not list them: {server_error(exc)}"
    return "it has no Functions" if found is None else found.names()


def stored(source: Any, client: redis.Redis, what: str) -> tuple[bytes | None, int | None]:
    """A ``redis`` backup's libraries (payload, count), read and checked against the server before anything is written.

    A backup with libraries is refused while the live data are untouched when the server
    cannot take them: it has no Functions, or refuses ``FUNCTION`` to this user.
    """
    count = source.details.get(DETAIL)
    count = count if isinstance(count, int) else None
    if ARTIFACT not in source.names():
        return None, count
    with source.open(ARTIFACT) as stream:
        payload = bytes(stream.read())
    check_target(client, count, what)
    return payload, count


def from_scratch(scratch: redis.Redis, live: redis.Redis, what: str) -> tuple[bytes | None, int | None]:
    """The libraries the scratch server loaded from the RDB (payload, count), checked against the live server."""
    try:
        found = read(scratch)
        if found is None:
            return None, None  # a scratch server without Functions read an RDB that cannot hold them
        if not found.libraries:
            return None, 0
        payload = bytes(scratch.execute_command("FUNCTION", "DUMP"))  # type: ignore[no-untyped-call]
    except redis.RedisError as exc:
        raise ComponentError(
            f"{what}: reading the backup's function libraries on the scratch server failed: {server_error(exc)}; "
            "the live data were not touched"
        ) from None
    check_target(live, len(found.libraries), what)
    return payload, len(found.libraries)


def check_target(client: redis.Redis, count: int | None, what: str) -> None:
    """Refuse, before anything live is written, a server that cannot take the backup's libraries."""
    libraries = f"{count} function libraries" if count else "function libraries"
    try:
        found = read(client)
    except redis.RedisError as exc:
        raise ComponentError(
            f"{what}: the backup holds {libraries}, and the server refuses FUNCTION LIST ({server_error(exc)}); "
            "grant the user the `@scripting` commands FUNCTION LIST, FUNCTION RESTORE and FUNCTION FLUSH, "
            "then restore again; the live data were not touched"
        ) from None
    if found is None:
        raise ComponentError(
            f"{what}: the backup holds {libraries}, and this server has no Functions (Redis before 7.0): "
            "restore onto Redis 7.0 or later, or Valkey; the live data were not touched"
        )
