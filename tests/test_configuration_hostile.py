"""Configuration files built to hurt the reader.

Review of the configuration kind (notes/review-config): a YAML file whose mappings each
merge the previous one (``<<: *prev``) made PyYAML copy n²/2 entries while loading (a
180 KB file: 23 s and 0.5 GB; 2.4 MB: out of memory) in backup, fingerprint and health;
and a deeply nested JSON or YAML file made ``health()`` raise RecursionError.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.components.configuration import KEY, MAX_SETTINGS_NODES, ConfigurationComponent, ConfigurationParams
from tests.test_fingerprints import DirRuntime


@contextmanager
def _component(files: dict[str, str]) -> Iterator[ConfigurationComponent]:
    with tempfile.TemporaryDirectory() as d:
        comp = ConfigurationComponent("conf", ConfigurationParams(files=files), DirRuntime(Path(d)))
        comp.provision()
        comp.seed()
        yield comp


def _keys(comp: ConfigurationComponent, rel: str) -> set[str]:
    return {name for name in comp.fingerprint().parts if name.startswith(f"{KEY}{rel}:")}


# -- merge keys --------------------------------------------------------------------------------


def _chained_merges(n: int) -> str:
    """Mapping i merges mapping i-1: n lines, n*(n-1)/2 entries copied by the loader."""
    lines = ["k0: &k0 {x0: 1}"] + [f"k{i}: &k{i} {{<<: *k{i - 1}, x{i}: 1}}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def test_merge_keys_that_copy_too_much_are_refused_while_loading() -> None:
    n = 600  # 180,000 entries copied: over the limit, yet quick enough to load unbounded
    assert n * (n - 1) // 2 > MAX_SETTINGS_NODES
    with _component({"bomb.yaml": _chained_merges(n), "ok.yaml": "port: 1\n"}) as comp:
        health = comp.health()
        assert not health.ok
        assert health.detail == f"bomb.yaml: ConstructorError: merge keys (<<) copy more than {MAX_SETTINGS_NODES} entries"
        assert _keys(comp, "bomb.yaml") == set()  # the file part still covers every byte
        assert {"file bomb.yaml", "key ok.yaml:port"} <= set(comp.fingerprint().parts)


def test_ordinary_merge_keys_keep_their_settings() -> None:
    """Quiet control: defaults merged into a few services, as YAML configs do."""
    text = (
        "defaults: &defaults {timeout: 30, retries: 3}\n"
        "services:\n"
        "  api: {<<: *defaults, port: 80}\n"
        "  worker: {<<: [*defaults], retries: 5}\n"
        "chain: &c1 {<<: *defaults, x: 1}\n"
        "chain2: {<<: *c1, y: 2}\n"
    )
    with _component({"app.yaml": text}) as comp:
        assert comp.health().ok
        keys = _keys(comp, "app.yaml")
        assert {"key app.yaml:services.api.timeout", "key app.yaml:services.worker.retries"} <= keys
        assert {"key app.yaml:chain2.timeout", "key app.yaml:chain2.x", "key app.yaml:chain2.y"} <= keys


# -- nesting -----------------------------------------------------------------------------------


def test_deeply_nested_files_are_unhealthy_not_a_traceback() -> None:
    files = {"deep.json": "[" * 50_000 + "]" * 50_000, "deep.yaml": "a: " + "[" * 50_000 + "]" * 50_000}
    with _component(files) as comp:
        health = comp.health()
        assert not health.ok
        assert health.detail == "deep.json: nested too deeply to parse; deep.yaml: nested too deeply to parse"


def test_a_secret_nested_as_deep_as_the_parser_allows_is_still_masked_in_health() -> None:
    # It parses (the JSON parser spends one frame a level), so its values are masked in
    # the health text of another, broken file: collecting them spent two frames a level.
    deep = '{"password": ' + "[" * 700 + '"hunter2-deep"' + "]" * 700 + "}"
    with _component({"deep-secret.json": deep, "broken.yaml": "a: [1\nnote: hunter2-deep\n"}) as comp:
        health = comp.health()
        assert not health.ok
        assert health.detail == "broken.yaml: ParserError: while parsing a flow sequence"
