"""Configuration files built to hurt the reader, and keys that are secrets themselves.

Review of the configuration kind (notes/review-config): a YAML file whose mappings each
merge the previous one (``<<: *prev``) made PyYAML copy n²/2 entries while loading (a
180 KB file: 23 s and 0.5 GB; 2.4 MB: out of memory) in backup, fingerprint and health;
a deeply nested JSON or YAML file made ``health()`` raise RecursionError; and a mapping
keyed by a URL or connection string printed its password in part names, hence in every
finding, the seed output and the reports. And a config that is a symbolic link to a file
outside the directory was backed up as the link alone, with nothing said.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.configuration import (
    KEY,
    MAX_SETTINGS_NODES,
    ConfigurationComponent,
    ConfigurationParams,
    secrets_in_text,
)
from engine.components.files import FLAGS_NOT_RECORDED, ROOT_NOT_RECORDED
from engine.errors import FaultError
from engine.faults.base import FaultContext
from engine.faults.files import ConfigFileParams, DeleteConfig
from engine.fingerprint import compare
from engine.repository.local import LocalRepository
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


# -- keys that are credentials -----------------------------------------------------------------

CREDENTIAL_KEYS = {
    "pools.yaml": "pools:\n  'postgres://app:hunter2-pw@db/shop': {size: 10}\n",
    "hooks.json": json.dumps({"hooks": {"https://bot:s3cr3t-tok@hooks.example/x": "on"}}),
    "dsn.ini": "[host=db password=inisecret-9 dbname=x]\nsize = 5\n",
}
SECRETS = ("hunter2-pw", "s3cr3t-tok", "inisecret-9")


def test_a_key_that_is_a_credential_is_named_masked_and_hashed_as_a_secret() -> None:
    with _component(CREDENTIAL_KEYS) as comp:
        before = comp.fingerprint()
        assert {
            "key pools.yaml:pools.postgres://app:***@db/shop",
            'key hooks.json:hooks["https://bot:***@hooks.example/x"]',
            'key dsn.ini:["host=db password=*** dbname=x"]',
        } <= set(before.parts)
        seeded = comp.seed()
        # Only the password in the key changes: the setting is still named as changed.
        for rel, secret in zip(CREDENTIAL_KEYS, SECRETS, strict=True):
            path = comp.path / rel
            path.write_text(path.read_text().replace(secret, secret.upper()))
        diffs = compare(before, comp.fingerprint())
        assert sum(d.part.startswith(KEY) for d in diffs) == 3
        text = "\n".join([before.model_dump_json(), *(d.describe() for d in diffs), json.dumps(seeded)])
        for secret in SECRETS:
            assert secret not in text and secret.upper() not in text


def test_ordinary_keys_are_named_as_written() -> None:
    """Quiet control: URLs as values, and keys with dots, colons or slashes, are not masked keys."""
    files = {"app.yaml": "routes:\n  /api/v1: backend\n  'a.b': 1\nupstream: https://db.internal:5432/x\n"}
    with _component(files) as comp:
        assert _keys(comp, "app.yaml") == {
            "key app.yaml:routes./api/v1",
            'key app.yaml:routes["a.b"]',
            "key app.yaml:upstream",
        }


def test_a_scheme_4_set_naming_credential_keys_as_written_still_restores_and_compares(tmp_path: Path) -> None:
    """Sets written before the keys were masked are proven and compared in their own scheme, in full."""
    with _component(CREDENTIAL_KEYS) as comp:
        old = comp.legacy_fingerprint("configuration/4")
        assert old is not None and old.scheme == "configuration/4"
        assert "key pools.yaml:pools.postgres://app:hunter2-pw@db/shop.size" in old.parts  # as scheme 4 named it
        assert compare(old, comp.fingerprint_like(old)) == []
        assert comp.blind_spot("configuration/4") == f"{FLAGS_NOT_RECORDED}; {ROOT_NOT_RECORDED}"  # flags, and the root
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        source = engine_backup._source(repo, manifest, comp.instance)
        source.fingerprint = old  # the set as an earlier drproof recorded it
        shutil.rmtree(comp.path)
        comp.restore(source)
        assert compare(old, comp.fingerprint_like(old)) == []
        (comp.path / "pools.yaml").write_text(CREDENTIAL_KEYS["pools.yaml"].replace("10", "11"))
        assert {d.part for d in compare(old, comp.fingerprint_like(old))} == {
            "file pools.yaml",
            "key pools.yaml:pools.postgres://app:hunter2-pw@db/shop.size",
        }


# -- symbolic links out of the tree ------------------------------------------------------------


def test_a_link_to_a_config_outside_the_directory_is_named_beside_every_comparison(tmp_path: Path) -> None:
    """The set holds the link, not the shared file: its loss was restored as nothing, and compared "match"."""
    shared = tmp_path / "shared" / "app.yaml"
    shared.parent.mkdir()
    shared.write_text("port: 5432\n")
    with _component({"local.yaml": "a: 1\n"}) as comp:
        (comp.path / "app.yaml").symlink_to(shared)
        (comp.path / "up.yaml").symlink_to("../../shared/app.yaml")  # relative, out of the tree all the same
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp])
        details = manifest.component(comp.instance).details
        assert details["links_outside"] == {
            "count": 2,
            "entries": [f"app.yaml -> {shared}", "up.yaml -> ../../shared/app.yaml"],
        }
        [note] = comp.comparison_notes(details)
        assert note.startswith(f"2 symbolic link(s) point outside the configuration directory (e.g. app.yaml -> {shared})")


def test_links_inside_the_directory_carry_no_note(tmp_path: Path) -> None:
    """Quiet control: sites-enabled -> sites-available, as nginx and Apache trees do."""
    files = {"sites-available/shop.conf": "server { listen 80; }\n", "app.yaml": "a: 1\n"}
    with _component(files) as comp:
        (comp.path / "sites-enabled").mkdir()
        (comp.path / "sites-enabled" / "shop.conf").symlink_to("../sites-available/shop.conf")
        (comp.path / "current.yaml").symlink_to(comp.path / "app.yaml")  # absolute, but inside
        manifest = engine_backup.backup(LocalRepository(tmp_path / "repo"), [comp])
        details = manifest.component(comp.instance).details
        assert "links_outside" not in details
        assert comp.comparison_notes(details) == []


# -- values their tag does not fit -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "error"),
    [("!!int", "ValueError"), ("!!float", "ValueError"), ("!!bool", "KeyError"), ("!!timestamp", "AttributeError")],
)
def test_a_value_its_yaml_tag_does_not_fit_is_a_parse_problem_that_quotes_nothing(tag: str, error: str) -> None:
    secret = "hunter2-tagged"
    text = f"service: x\npassword: {tag} {secret}\n"
    with _component({"app.yaml": text}) as comp:
        health = comp.health()  # ValueError quoted the value; KeyError and AttributeError escaped
        assert not health.ok
        assert health.detail == f"app.yaml: ConstructorError: a value that is not a valid {tag} ({error})"
        assert _keys(comp, "app.yaml") == set()  # a backup took the same path: a traceback
        assert secret in secrets_in_text("app.yaml", text)  # a scenario quoting it still masks it


def test_values_that_fit_their_yaml_tags_are_settings() -> None:
    """Quiet control."""
    text = 'port: !!int "5432"\nratio: !!float "0.5"\nenabled: !!bool yes\nsince: !!timestamp 2024-01-02\n'
    with _component({"app.yaml": text}) as comp:
        assert comp.health().ok
        assert _keys(comp, "app.yaml") == {f"key app.yaml:{k}" for k in ("port", "ratio", "enabled", "since")}


# -- seeded file names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escaped.yaml", "/etc/cron.d/drproof", "a/../../b.yaml", "./app.yaml", "a//b", "dir/"])
def test_seeded_file_names_stay_inside_the_directory(name: str) -> None:
    """They were written as given: ``../x`` next to the directory, ``/etc/cron.d/x`` anywhere."""
    with pytest.raises(ValueError, match="must be a relative path inside the configuration directory"):
        ConfigurationParams(files={name: "a: 1\n"})


def test_seeded_file_names_in_subdirectories_are_fine() -> None:
    """Quiet control."""
    with _component({"nginx/sites-available/shop.conf": "server {}\n", ".env": "A=1\n", "a..b.yaml": "x: 1\n"}) as comp:
        assert sorted(p.relative_to(comp.path).as_posix() for p in comp.files()) == [
            ".env",
            "a..b.yaml",
            "nginx/sites-available/shop.conf",
        ]


# -- extensions in capitals ---------------------------------------------------------------------


def test_health_parses_files_whose_extension_is_in_capitals() -> None:
    """Key parts read APP.YAML as YAML; health only looked at lower-case suffixes: broken ones were healthy."""
    with _component({"APP.YAML": "a: [1\n", "Flags.JSON": "{", "DB.INI": "x = 1\n", "ok.Yml": "a: 1\n"}) as comp:
        health = comp.health()
        assert not health.ok
        assert [p.split(":")[0] for p in health.detail.split("; ")] == ["APP.YAML", "DB.INI", "Flags.JSON"]


def test_files_in_capitals_that_parse_are_healthy() -> None:
    """Quiet control."""
    with _component({"APP.YAML": "a: 1\n", "Flags.JSON": "{}", "DB.INI": "[s]\nx = 1\n"}) as comp:
        assert comp.health().ok


# -- the delete fault --------------------------------------------------------------------------


def _delete(comp: ConfigurationComponent, rel: str) -> dict[str, object]:
    ctx = FaultContext(component=comp, repository=None, find_backup=None, rng=random.Random(0))  # type: ignore[arg-type]
    return DeleteConfig(ConfigFileParams(file=rel)).inject(ctx)


def test_the_delete_fault_deletes_the_link_it_names_not_its_target() -> None:
    with _component({"sites-available/shop.conf": "server {}\n"}) as comp:
        (comp.path / "sites-enabled").mkdir()
        link = comp.path / "sites-enabled" / "shop.conf"
        link.symlink_to("../sites-available/shop.conf")
        assert _delete(comp, "sites-enabled/shop.conf") == {"files_deleted": ["sites-enabled/shop.conf"]}
        assert not link.is_symlink()
        assert (comp.path / "sites-available" / "shop.conf").read_text() == "server {}\n"


def test_the_delete_fault_still_refuses_what_is_outside() -> None:
    """Quiet control: a plain file is deleted; a link out of the tree, or ../x, is refused."""
    with tempfile.TemporaryDirectory() as outside, _component({"app.yaml": "a: 1\n", "b.yaml": "b: 1\n"}) as comp:
        shared = Path(outside) / "shared.yaml"
        shared.write_text("s: 1\n")
        (comp.path / "shared.yaml").symlink_to(shared)
        assert _delete(comp, "app.yaml") == {"files_deleted": ["app.yaml"]}
        for rel in ("shared.yaml", "../b.yaml", f"../{comp.path.name}/../x.yaml"):
            with pytest.raises(FaultError, match="outside the component's directory"):
                _delete(comp, rel)
        assert shared.read_text() == "s: 1\n" and (comp.path / "b.yaml").exists()
