"""Configuration fingerprints name the setting that changed, and never show a secret.

A drill report goes to auditors, tickets and chat. It must say ``key app.yaml:database.port``
changed, but the value of ``database.password`` must not appear in anything the
configuration component or the report writer outputs: part names, differences, seed
output, health text, manifests, HTML, JSON and JUnit.
"""

from __future__ import annotations

import html
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.loader import load_scenario
from drills.runner import DrillRunner, Hooks
from engine.components.base import Component
from engine.components.configuration import KEY, ConfigurationComponent, ConfigurationParams
from engine.fingerprint import compare
from engine.redaction import REDACTED, is_secret_key, redact, redact_value
from engine.repository.local import LocalRepository
from reports import write_all
from tests.test_fingerprints import DirRuntime


@contextmanager
def _component(files: dict[str, str] | None = None) -> Iterator[ConfigurationComponent]:
    with tempfile.TemporaryDirectory() as d:
        comp = ConfigurationComponent("conf", ConfigurationParams(files=files), DirRuntime(Path(d)))
        comp.provision()
        comp.seed()
        yield comp


def _keys(comp: ConfigurationComponent) -> set[str]:
    return {name for name in comp.fingerprint().parts if name.startswith(KEY)}


# -- which keys are secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWORD",
        "db.passwd",
        "pgpassword",
        "client_secret",
        "clientSecret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "APIKEY",
        "private_key",
        "AWS_SECRET_ACCESS_KEY",
        "aws_access_key_id",
        "auth",
        "auth_header",
        "oauth_token",
        "credentials",
        "Credential",
        "tokens",
    ],
)
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name", ["port", "host", "author", "authority", "tokenizer", "keys", "monkey", "passenger", "access_log", "user"]
)
def test_not_secret_keys(name: str) -> None:
    assert not is_secret_key(name)


def test_redact_helpers() -> None:
    assert (
        redact_value("could not parse hunter2hunter2 here", ["hunter2hunter2", ""])
        == f"could not parse {REDACTED} here"
    )
    assert redact_value("ab abc", ["abc", "ab abc"]) == REDACTED, "longest first: a secret containing another"
    assert redact("dsn: host=db password=x user=y api_key=z") == "dsn: host=db password=*** user=y api_key=***"
    assert redact("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"


# -- per-key parts, per format -----------------------------------------------------------------


def test_parts_per_format() -> None:
    files = {
        "app.yaml": "database:\n  host: db\n  port: 5432\nservers:\n  - name: a\n  - name: b\n'a.b': 1\n",
        "flags.json": '{"beta": {"enabled": true}, "list": []}',
        "db.ini": "[DEFAULT]\nTimeout = 3\n[primary]\nHost = db\n",
        "legacy.cfg": "# KEY=VALUE, no sections\nexport HOME_DIR=/srv\nMODE='fast'\n",
        ".env": "DATABASE_URL=postgres://app@db/shop\n",
        "nginx.conf": "server { listen 80; }\n",
        "broken.yaml": "a: [1\n",
        "notes.txt": "port: 1\n",
    }
    with _component(files) as comp:
        assert _keys(comp) == {
            "key app.yaml:database.host",
            "key app.yaml:database.port",
            "key app.yaml:servers[0].name",
            "key app.yaml:servers[1].name",
            'key app.yaml:["a.b"]',
            "key flags.json:beta.enabled",
            "key flags.json:list",
            "key db.ini:DEFAULT.Timeout",
            "key db.ini:primary.Host",
            "key legacy.cfg:HOME_DIR",
            "key legacy.cfg:MODE",
            "key .env:DATABASE_URL",
        }
        parts = comp.fingerprint().parts
        assert {"file nginx.conf", "file broken.yaml", "file notes.txt"} <= set(parts), "unparseable: file part only"


def test_a_changed_setting_is_named() -> None:
    with _component() as comp:
        before = comp.fingerprint()
        app = comp.path / "app.yaml"
        app.write_text(app.read_text().replace("port: 5432", "port: 5433"))
        diffs = compare(before, comp.fingerprint())
        assert [(d.part, d.change) for d in diffs] == [
            ("file app.yaml", "changed"),
            ("key app.yaml:database.port", "changed"),
        ]
        assert diffs[1].describe().startswith("key app.yaml:database.port: content differs")


def test_type_changes_count_and_comments_only_change_the_file_part() -> None:
    with _component({"app.yaml": "port: 5432\n"}) as comp:
        before = comp.fingerprint()
        (comp.path / "app.yaml").write_text("# reviewed\nport: 5432   \n")
        assert [d.part for d in compare(before, comp.fingerprint())] == ["file app.yaml"]
        (comp.path / "app.yaml").write_text("port: '5432'\n")
        assert [d.part for d in compare(before, comp.fingerprint())] == ["file app.yaml", "key app.yaml:port"]


def test_everything_under_a_secret_key_is_one_unnamed_part() -> None:
    files = {"app.yaml": "api_keys:\n  sk-live-4242: billing\n  sk-live-9999: search\nport: 1\n"}
    with _component(files) as comp:
        assert _keys(comp) == {"key app.yaml:api_keys", "key app.yaml:port"}
        assert comp.seed()["secret_keys"] == ["app.yaml:api_keys"]
        assert "sk-live" not in json.dumps(comp.fingerprint().model_dump())


def test_hostile_files_get_no_key_parts_and_do_not_hang() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
    )
    files = {"cyclic.yaml": "a: &a [*a]\n", "bomb.yaml": bomb, "deep.json": "[" * 50_000 + "]" * 50_000}
    with _component(files) as comp:
        assert _keys(comp) == set()
        assert {"file cyclic.yaml", "file bomb.yaml", "file deep.json"} <= set(comp.fingerprint().parts)


def test_the_default_seed_holds_secrets() -> None:
    with _component() as comp:
        assert comp.seed()["secret_keys"] == ["app.yaml:session_secret", "database.ini:primary.password"]
        assert comp.health().ok


def test_a_secret_in_a_url_is_hashed_as_a_secret_but_named_by_its_key() -> None:
    with _component({".env": "DATABASE_URL=postgres://app:pw-4242@db/shop\n"}) as comp:
        assert comp.seed()["secret_keys"] == [".env:DATABASE_URL"]


# -- secrets never reach any output: property tests ------------------------------------------

SECRET_NAMES = st.sampled_from(["password", "DB_PASSWORD", "apiKey", "client_secret", "auth_token", "credentials"])
# A prefix no digest, key name or message contains, then arbitrary printable text.
MARKER_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"], exclude_characters="#'\"\\"),
    min_size=6,
    max_size=40,
)
MARKER = MARKER_TEXT.map(lambda s: "ZQXV" + s)


def _forms(secret: str) -> list[str]:
    """The secret as it would appear raw, HTML-escaped or JSON-escaped."""
    return [secret, html.escape(secret), json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]


def _files(name: str, secrets: list[str]) -> dict[str, str]:
    return {
        "app.yaml": yaml.safe_dump({"service": "x", "database": {"port": 5432, name: secrets[0]}}),
        "flags.json": json.dumps({"beta": True, "nested": {name: secrets[1]}}),
        "db.ini": f"[primary]\nhost = db\n{name} = {secrets[2]}\n",
        ".env": f"MODE=fast\n{name}={secrets[3]}\n",
        "broken.yaml": f"{name}: {secrets[4]}\nlist: [1\n",
    }


def _assert_absent(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        for form in _forms(secret):
            assert form not in text


@settings(max_examples=25, deadline=None)
@given(SECRET_NAMES, st.lists(MARKER, min_size=9, max_size=9, unique=True))
def test_component_outputs_never_contain_secret_values(name: str, markers: list[str]) -> None:
    old, new = markers[:5], markers[5:]
    with _component(_files(name, old)) as comp, tempfile.TemporaryDirectory() as repo_dir:
        outputs = [json.dumps(comp.seed())]
        before = comp.fingerprint()
        repo = LocalRepository(Path(repo_dir))
        writer = repo.begin()
        outputs.append(json.dumps(comp.backup(writer)))
        writer.abort()
        health = comp.health()
        assert not health.ok and "broken.yaml" in health.detail
        outputs.append(health.detail)
        for rel, content in _files(name, [*new, old[4]]).items():
            (comp.path / rel).write_text(content)
        after = comp.fingerprint()
        diffs = compare(before, after)
        changed = {d.part for d in diffs}
        for where in ("app.yaml:database", "flags.json:nested", "db.ini:primary", ".env:"):
            sep = "" if where.endswith(":") else "."
            assert f"{KEY}{where}{sep}{name}" in changed, "a changed secret is still detected"
        outputs += [d.describe() for d in diffs]
        outputs += [before.model_dump_json(), after.model_dump_json(), comp.health().detail]
        _assert_absent("\n".join(outputs), [*old, *new])


@pytest.fixture(scope="module")
def drill_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "config-secrets.yaml"
    path.write_text(
        "name: config-secrets\n"
        "stack:\n  components:\n    app-config: {kind: configuration}\n"
        "steps:\n"
        "  - backup: {name: release}\n"
        "  - disaster: {target: app-config, fault: delete}\n"
        "  - restore: {from: release}\n"
        "assertions:\n  - fidelity\n"
    )
    return path


@pytest.mark.integration
@settings(max_examples=10, deadline=None)
@given(st.lists(MARKER, min_size=3, max_size=3, unique=True))
def test_drill_reports_never_contain_secret_values(drill_scenario: Path, markers: list[str]) -> None:
    seeded: list[str] = []

    def sabotage(comp: Component) -> None:
        # After a good restore: the seeded secrets change and a new one appears.
        assert isinstance(comp, ConfigurationComponent)
        for f in ("app.yaml", "database.ini"):
            text = (comp.path / f).read_text()
            for line in text.splitlines():
                if line.startswith(("session_secret:", "password =")):
                    seeded.append(line.split(":" if f == "app.yaml" else "=", 1)[1].strip())
        app = comp.path / "app.yaml"
        line = yaml.safe_dump({"session_secret": markers[0]}, width=10**6, allow_unicode=True).strip()
        app.write_text(app.read_text().replace(f"session_secret: {seeded[0]}", line))
        ini = comp.path / "database.ini"
        ini.write_text(ini.read_text().replace(seeded[1], markers[1]))
        (comp.path / ".env").write_text(f"API_TOKEN={markers[2]}\n")
        # No broken file here: the runner would poll its health for 30 s. Health texts are
        # covered by the component-level property above.

    with tempfile.TemporaryDirectory() as out:
        results = DrillRunner(load_scenario(drill_scenario), hooks=Hooks(after_restore=sabotage)).run()
        assert results.verdict == "fail"
        assert results.components[0].healthy, "the sabotage keeps every file parseable"
        [fidelity] = [a for a in results.assertions if a.id == "fidelity[app-config]"]
        named = "\n".join(fidelity.findings)
        for part in ("key app.yaml:session_secret", "key database.ini:primary.password", "key .env:API_TOKEN"):
            assert part in named
        paths = write_all(results, Path(out), formats=("html", "json", "junit"))
        text = "\n".join(p.read_text(encoding="utf-8") for p in paths.values())
        assert "key database.ini:primary.password" in text
        _assert_absent(text, [*markers, *seeded])
