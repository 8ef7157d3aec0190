"""Which files are drill scenarios, without parsing them.

Shared by the pytest plugin (which YAML files become test items) and by fleets
(``drproof run DIR``: which files of a directory are drills), so both agree on what a
scenario is. It lives apart from the plugin because the plugin imports pytest, which an
installation of drproof that only runs drills need not have.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drills.yamlsource import Document

SUFFIXES = (".yaml", ".yml")
# Larger files are refused by the loader anyway; reading more just to sniff keys is waste.
_SNIFF_LIMIT = 2 * 1024 * 1024 + 1
_TOP_LEVEL_KEY = re.compile(r"^(stack|steps|source|assertions)[ \t]*:", re.MULTILINE)


def is_scenario_file(path: Path) -> bool:
    """Whether ``path`` looks like a drill scenario: a top-level ``stack:`` (a drill) or
    ``source:`` (a restore test), or ``steps:`` together with ``assertions:``.

    A textual sniff rather than a YAML parse so a scenario with a syntax error is still
    recognised and reported as an invalid drill instead of silently not being collected.
    One drill key is enough (found by review): requiring both ``stack:`` and ``steps:``
    dropped a scenario whose ``steps:`` was mistyped (``step:``) from a fleet and from
    pytest without a word, and the fleet's scorecard, JUnit and index page were green
    with that drill missing. A misspelt key must make an invalid drill, never no drill.
    CI files with a top-level ``steps:`` (Cloud Build, Azure Pipelines) have no
    ``assertions:``, and a backup configuration has neither.
    """
    try:
        with path.open("rb") as fh:
            text = fh.read(_SNIFF_LIMIT).decode("utf-8", errors="replace")
    except OSError:
        return False
    keys = {m.group(1) for m in _TOP_LEVEL_KEY.finditer(text)}
    return bool(keys & {"stack", "source"}) or {"steps", "assertions"} <= keys


def looks_like_backup_config(doc: Document) -> bool:
    """Whether a parsed file is a backup-config rather than a scenario: its top-level keys say so.

    Here rather than in drills.backup_config so that `drproof validate` of a scenario
    does not import the backup-config schema (and the target kinds it is built from).
    """
    data = doc.data if isinstance(doc.data, dict) else {}
    return "components" in data and not ({"name", "steps", "stack", "source", "assertions"} & set(data))
