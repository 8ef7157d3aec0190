"""Where one SQL statement ends, as PostgreSQL's own lexer sees it.

A ``query`` check runs in a read-only transaction, but a string of several statements
(``COMMIT; DELETE FROM orders; SELECT ...``) ends that transaction and writes in the next
one (found by review: the rows were deleted and the check passed). psycopg2 sends text
through the simple-query protocol, which runs every statement in it, so the check must
refuse a second statement before the server sees the text.

The scan follows PostgreSQL's lexer (scan.l) for everything that can hide a semicolon:
``--`` and nested ``/* */`` comments, ``'...'`` with ``''``, ``E'...'`` with backslash
escapes (only where the ``E`` starts a token: ``xE'..'`` is an identifier and a plain
string), ``"..."`` identifiers, and ``$tag$...$tag$`` dollar quotes (``$`` inside an
identifier, and ``$1``, are not quotes). It assumes ``standard_conforming_strings`` is
on, which the check sets itself. Text it cannot close (an open quote or comment) gives
-1, and the check refuses it: refusing a check is safe, letting a write through is not.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def _dollar() -> re.Pattern[str]:
    """Compiled on first use: its Unicode ranges take 5 ms to compile, paid by every start-up otherwise."""
    return re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")


def _ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


def _skip_string(sql: str, i: int, escapes: bool) -> int:
    """The index after the ``'...'`` opening at ``i``; -1 when it never closes."""
    j = i + 1
    while j < len(sql):
        ch = sql[j]
        if escapes and ch == "\\":
            j += 2
            continue
        if ch == "'":
            if j + 1 < len(sql) and sql[j + 1] == "'":
                j += 2
                continue
            return j + 1
        j += 1
    return -1


def _skip_block_comment(sql: str, i: int) -> int:
    depth, j = 0, i
    while j < len(sql) - 1:
        pair = sql[j : j + 2]
        if pair == "/*":
            depth, j = depth + 1, j + 2
        elif pair == "*/":
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return -1


def _skip_token(sql: str, i: int) -> int:
    """The index after the quoted token or comment starting at ``i`` (i + 1 for anything else; -1 if unclosed)."""
    ch, nxt = sql[i], sql[i + 1 : i + 2]
    if ch == "-" and nxt == "-":
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end + 1
    if ch == "/" and nxt == "*":
        return _skip_block_comment(sql, i)
    if ch == "'":
        return _skip_string(sql, i, escapes=False)
    if ch in "eE" and nxt == "'" and (i == 0 or not _ident(sql[i - 1])):
        return _skip_string(sql, i + 1, escapes=True)
    if ch == '"':
        end = i + 1
        while True:
            end = sql.find('"', end)
            if end < 0:
                return -1
            if sql[end + 1 : end + 2] != '"':
                return end + 1
            end += 2
    if ch == "$" and (i == 0 or not _ident(sql[i - 1])) and (m := _dollar().match(sql, i)):
        close = sql.find(m.group(0), m.end())
        return -1 if close < 0 else close + len(m.group(0))
    if _ident(ch):  # a whole identifier or keyword, so a ``$`` or ``E`` inside it is not read as a quote
        end = i + 1
        while end < len(sql) and _ident(sql[end]):
            end += 1
        return end
    return i + 1


def statements_in(sql: str) -> int:
    """How many statements ``sql`` holds (a trailing ``;`` and comments after it do not count).

    -1 when a quote or comment never closes: see the module's docstring.
    """
    count, i, pending = 0, 0, False
    while i < len(sql):
        ch = sql[i]
        if ch == ";":
            count, pending, i = count + (1 if pending else 0), False, i + 1
            continue
        end = _skip_token(sql, i)
        if end < 0:
            return -1
        if not ch.isspace() and not sql.startswith(("--", "/*"), i):
            pending = True
        i = end
    return count + (1 if pending else 0)
