"""No secret a scenario holds reaches any output (issue 19).

A scenario can hold secrets wherever it holds text: the configuration files it seeds, an
application's environment, a check's argv or SQL, descriptions, the report's title and
operator. The record keeps the scenario source for the evidence appendix and checks
quote what they ran, so each planted value below is searched for in every file a run
writes. The unit tests pin the masking rules on the source alone; the integration test
runs a real drill that carries a secret in every one of those places.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drills.cli import main
from drills.scrub import redact_source, scenario_secrets, scrub
from engine.journal import ComponentResult, Measured, Objectives, Results, ScenarioInfo
from engine.redaction import holds_secret, mask_settings

# One distinct value per place a scenario can hold text; each is long enough to search for.
PLANTED = {
    "scenario description (URL)": "PLANTEDdescurl1",
    "component description": "PLANTEDcompdesc2",
    "seed file YAML": "PLANTEDyaml3",
    "seed file INI": "PLANTEDini4",
    "seed file .env": "PLANTEDenv5",
    "seed file JSON": "PLANTEDjson6",
    "report title": "PLANTEDtitle7",
    "report operator": "PLANTEDop8",
    "query SQL": "PLANTEDsql9",
    "command argv (flag, value)": "PLANTEDargv10",
    "command argv (--flag=value)": "PLANTEDargv11",
    "application env": "PLANTEDappenv12",
    "short password in a seed file": "pw",
}

APP = "import os, http.server as h; h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), h.BaseHTTPRequestHandler).serve_forever()"

SCENARIO = f"""\
name: planted-secrets
description: >
  Connect with postgres://ops:{PLANTED["scenario description (URL)"]}@db.internal/shop when it breaks.
stack:
  components:
    db:
      kind: postgres
      description: "the admin login is password={PLANTED["component description"]}"
      seed: {{customers: 20, orders_per_customer: 1}}
    app-config:
      kind: configuration
      seed:
        files:
          app.yaml: |
            service: checkout
            session_secret: {PLANTED["seed file YAML"]}
          database.ini: |
            [primary]
            host = db.internal
            password = {PLANTED["seed file INI"]}
          worker.env: |
            LOG_LEVEL=info
            API_TOKEN={PLANTED["seed file .env"]}
          flags.json: |
            {{"api_key": "{PLANTED["seed file JSON"]}", "dark_mode": true}}
          cache.ini: |
            [cache]
            password = {PLANTED["short password in a seed file"]}
    web:
      kind: application
      depends_on: [db]
      run:
        command: ["{{python}}", "-c", "{APP}"]
        env: {{API_TOKEN: {PLANTED["application env"]}, LOG_LEVEL: info}}
        health: {{tcp: true, timeout: 30}}
steps:
  - backup: {{name: nightly}}
  - disaster: {{target: app-config, fault: delete}}
  - restore: {{from: nightly, components: [app-config]}}
assertions:
  - fidelity
  - query: {{target: db, sql: "SELECT count(*) FROM customers WHERE 'password={PLANTED["query SQL"]}' <> ''", expect: "= 20"}}
  - command:
      argv: ["{{python}}", "-c", "import sys; print(sys.argv[1:])", "--token", "{PLANTED["command argv (flag, value)"]}", "--password={PLANTED["command argv (--flag=value)"]}"]
report:
  title: "Planted drill token={PLANTED["report title"]}"
  operator: "ops on call, postgres://alice:{PLANTED["report operator"]}@vault.internal"
"""


def test_every_planted_secret_is_masked_in_the_source() -> None:
    masked = redact_source(SCENARIO)
    for place, value in PLANTED.items():
        if len(value) >= 4:
            assert value not in masked, place
    assert "password = ***" in masked  # the two-letter password, masked by its key
    assert "session_secret: ***" in masked
    assert "API_TOKEN: ***" in masked  # the application env, where it is written
    assert "LOG_LEVEL: info" in masked and "dark_mode" in masked  # everything else stays readable


def test_the_unmasked_source_does_hold_them() -> None:
    """Negative control: the planted values are really in the text the masking works on."""
    for value in PLANTED.values():
        assert value in SCENARIO


def test_a_scenario_without_secrets_is_unchanged() -> None:
    """Quiet control: nothing to mask, nothing masked (a report must still read as written)."""
    plain = (Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml").read_text(encoding="utf-8")
    assert redact_source(plain) == plain


def test_names_of_secret_variables_and_files_are_not_secrets() -> None:
    assert not holds_secret("password_env") and not holds_secret("token_file") and holds_secret("db_password")
    text = "password_env: PGPASSWORD\npassword: hunter2\n"
    assert redact_source(text) == "password_env: PGPASSWORD\npassword: ***\n"


def test_argv_flags_and_aliases() -> None:
    values, _ = scenario_secrets('argv: ["tool", "--api-key", "k3y-value", "-v"]\na: &x {token: abcd1234}\nb: *x\n')
    assert values == {"k3y-value", "abcd1234"}


def test_setting_lines_are_masked_with_any_quoting() -> None:
    text = 'password = a\n  "api_key": "b",\nexport DB_TOKEN=c\nsecret: |\nport: 5432\n'
    assert mask_settings(text) == 'password = ***\n  "api_key": "***",\nexport DB_TOKEN=***\nsecret: |\nport: 5432\n'


def _results(source: str, **scenario: str) -> Results:
    from datetime import UTC, datetime

    t = datetime(2026, 1, 1, tzinfo=UTC)
    return Results(
        drproof_version="0",
        scenario=ScenarioInfo(name="s", file="s.yaml", sha256="0" * 64, source=source, **scenario),
        verdict="pass",
        exit_code=0,
        runtime={"runtime": "local"},
        repository={},
        environment={},
        started_at=t,
        finished_at=t,
        objectives=Objectives(),
        measured=Measured(rto_seconds=None, components={}, drill_seconds=0.0),
        components=[],
        phases=[],
        backups=[],
        disasters=[],
        assertions=[],
        report={"title": "t", "operator": "x"},
    )


def test_scrub_masks_every_string_of_the_record_and_is_idempotent() -> None:
    source = "stack: {components: {c: {kind: configuration, seed: {files: {a.yaml: 'token: s3cr3t-tok'}}}}}\n"
    results = _results(source, description="it echoes s3cr3t-tok")
    results.error = "the check printed s3cr3t-tok"
    once = scrub(results)
    text = once.model_dump_json()
    assert "s3cr3t-tok" not in text
    assert scrub(once).model_dump_json() == text


def test_structural_fields_are_never_garbled() -> None:
    """A password that happens to be a word drproof uses ("postgres") leaves kinds and statuses alone."""
    source = "stack: {components: {db: {kind: postgres}}}\nrun: {env: {DB_PASSWORD: postgres}}\n"
    results = _results(source)
    results.components = [ComponentResult(name="db", kind="postgres", fingerprint_final="postgres")]
    out = scrub(results)
    assert out.verdict == "pass" and out.components[0].kind == "postgres"
    assert out.components[0].fingerprint_final == "postgres"
    # In the source the value is masked wherever it recurs: a secret wins over readability.
    assert "DB_PASSWORD: ***" in out.scenario.source and "postgres" not in out.scenario.source


@pytest.mark.integration
def test_no_planted_secret_reaches_any_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "planted.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["run", str(scenario), "--report-dir", str(out), "--json"])
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert code == 0, (results["error"], [(a["id"], a["status"], a["findings"]) for a in results["assertions"]])
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"results.json", "junit.xml", "report.html"}
    for value in PLANTED.values():
        if len(value) >= 4:
            assert value not in printed.out + printed.err, "a planted secret was printed"
    for path in files:
        data = path.read_bytes()
        for place, value in PLANTED.items():
            if len(value) >= 4:
                assert value.encode() not in data, f"{place} leaks into {path.name}"
    # The masked places are still there, so the test searched text that echoes the scenario.
    source = results["scenario"]["source"]
    assert "session_secret: ***" in source and "password = ***" in source and "--token" in source
    assert [a["status"] for a in results["assertions"]].count("pass") == len(results["assertions"]) == 5


@pytest.mark.parametrize(
    "secret",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "x_Y9" * 10,
        "glpat-" + "Ab-9" * 6,
        "xoxb-1234567890-abcdefghij",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_credentials_known_by_their_shape_are_masked_in_free_text(secret: str) -> None:
    """A sign-off note kept a GitHub token in clear, signed into the evidence (review)."""
    from engine.redaction import redact

    masked = redact(f"restore approved; token {secret} rotated afterwards")
    assert secret not in masked and "***" in masked
    assert masked.startswith("restore approved; token ") and masked.endswith(" rotated afterwards")


def test_bearer_credentials_are_masked_and_ordinary_words_are_not() -> None:
    from engine.redaction import redact

    assert redact("Authorization: Bearer abc.def-123456") == "Authorization: Bearer ***"
    quiet = "the bearer of bad news, sk-learn, ghp_short, AKIA12, Basic authentication, Bearer tokens, eyJ alone"
    assert redact(quiet) == quiet
