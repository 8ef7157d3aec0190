"""Keeping a scenario's secrets out of its record: one pass over everything results.json holds.

A scenario can hold secrets in many places: the configuration files it seeds
(``seed.files``), an application's or a check's ``env``, a check's argv or SQL, even a
description or the report title. Every one of them can come back in the record: the
scenario source is kept verbatim for the evidence appendix, and checks, phases and errors
quote what they ran. Masking each echo where it is made would miss the next one someone
adds, so the finished record is scrubbed as a whole, by the rules of
:mod:`engine.redaction` (the ones every error message and log line already follows):

- the scenario source is parsed, and every scalar under a key that holds a secret
  (``password``, ``api_key``, ``DB_TOKEN``, …) is masked where it is written, whatever its
  length; so is the value after an argv flag named like one (``["--password", "x"]``);
- the files a scenario seeds are read as the configuration component reads them, and
  their secret settings collected;
- every string of the record is then masked for those values (four characters or more),
  for secret ``key: value`` lines, and for credentials in URLs and ``key=value`` text.

Fields that are words drproof chose (kinds, statuses, digests, times) are left alone: a
password that happens to be "postgres" must not turn every component kind into ``***``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.components.configuration import secrets_in_text
from engine.journal import Results
from engine.redaction import REDACTED, holds_secret, scrub_text

__all__ = ["redact_source", "scenario_secrets", "scrub"]

MIN_VALUE_CHARS = 4
# Keys of results.json whose values drproof writes itself from a fixed vocabulary or as
# digests and times: never user text, and never worth garbling.
_STRUCTURAL = frozenset(
    {
        "kind",
        "status",
        "verdict",
        "expected",
        "observed",
        "unit",
        "sha256",
        "manifest_sha256",
        "fingerprint_at_backup",
        "fingerprint_final",
        "digest",
        "schema_version",
        "drproof_version",
        "started_at",
        "finished_at",
        "injected_at",
        "created_at",
        "backup_taken_at",
        "ci_provider",
        "scenario_git_state",
        "git_commit",
    }
)
_FLAG = re.compile(r"-{1,2}([A-Za-z][A-Za-z0-9_\-]*)")


def _scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.SequenceNode):
        return [s for item in node.value for s in _scalars(item)]
    if isinstance(node, yaml.MappingNode):
        return [s for k, v in node.value for s in (*_scalars(k), *_scalars(v))]
    return []


class _Collector:
    """Walks the composed scenario: secret scalars (with where they are written) and seed files."""

    def __init__(self) -> None:
        self.spans: dict[tuple[int, int], str] = {}
        self.values: set[str] = set()
        self._seen: set[int] = set()

    def secret(self, node: yaml.Node) -> None:
        for scalar in _scalars(node):
            if scalar.value:
                self.values.add(str(scalar.value))
                self.spans[(scalar.start_mark.index, scalar.end_mark.index)] = str(scalar.value)

    def walk(self, node: yaml.Node, key: str | None = None) -> None:
        if id(node) in self._seen:  # an alias: the anchored node was walked already
            return
        self._seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else ""
                if name and holds_secret(name):
                    self.secret(v)
                elif name == "files" and isinstance(v, yaml.MappingNode):
                    self._seed_files(v)
                else:
                    self.walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            items = node.value
            for i, item in enumerate(items):
                flag = _FLAG.fullmatch(str(item.value)) if isinstance(item, yaml.ScalarNode) else None
                if flag and holds_secret(flag.group(1)) and i + 1 < len(items):
                    self.secret(items[i + 1])
                self.walk(item, key)

    def _seed_files(self, files: yaml.MappingNode) -> None:
        for k, v in files.value:
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) and isinstance(v.value, str):
                self.values.update(secrets_in_text(str(k.value), v.value))
            else:
                self.walk(v, "files")


def scenario_secrets(source: str) -> tuple[set[str], dict[tuple[int, int], str]]:
    """The secret values a scenario holds, and the spans of the source where they are written."""
    collector = _Collector()
    try:
        for document in yaml.compose_all(source, Loader=yaml.SafeLoader):
            if document is not None:
                collector.walk(document)
    except yaml.YAMLError:
        pass  # a source that no longer parses is masked by the text rules alone
    return collector.values, collector.spans


def redact_source(source: str) -> str:
    """The scenario as run, with every secret masked where it is written and wherever it recurs."""
    values, spans = scenario_secrets(source)
    text = source
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + REDACTED + text[end:]
    return scrub_text(text, values, MIN_VALUE_CHARS)


def _scrub(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        return scrub_text(value, secrets, MIN_VALUE_CHARS)
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {
            (scrub_text(k, secrets, MIN_VALUE_CHARS) if isinstance(k, str) else k): (
                v if k in _STRUCTURAL else _scrub(v, secrets)
            )
            for k, v in value.items()
        }
    return value


def scrub(results: Results) -> Results:
    """The record with the scenario's secrets (and any credential) masked in every string.

    Idempotent: a scrubbed record's source yields no secrets that are still there.
    """
    source = results.scenario.source
    secrets, _ = scenario_secrets(source)
    data = results.model_dump(mode="json")
    cleaned = _scrub(data, secrets)
    cleaned["scenario"]["source"] = redact_source(source)
    return Results.model_validate(cleaned)
