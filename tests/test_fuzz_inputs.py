"""Fuzzing every YAML drproof reads: located errors and exit 2, never a traceback.

Mutations of the shipped scenarios and backup-configs (lines dropped, duplicated, swapped,
indented; values replaced by YAML with tags, anchors, merge keys, huge numbers, deep
nesting and binary noise) go through ``drproof validate`` in-process. Every outcome must
be exit 0 or 2 with nothing raised. The default profile runs a few hundred inputs (CI);
``HYPOTHESIS_PROFILE=nightly`` runs thousands (docs/testing.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drills.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").rglob("*.yaml")) + sorted((ROOT / "docs" / "examples").glob("*.yaml"))
SHIPPED = [p for p in SHIPPED if "demo-repository" not in p.parts and "kubernetes" not in p.parts]

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "nightly",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = settings.get_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci") if os.environ.get("HYPOTHESIS_PROFILE") in ("ci", "nightly") else "ci"
)

HOSTILE_VALUES = [
    "!!bool maybe",
    "!!timestamp nope",
    "!!int abc",
    "!!float abc",
    "!!binary ???",
    "!!python/object:os.system 'true'",
    "!foo bar",
    "9" * 5000,
    "-" + "9" * 4400,
    "1e999999",
    "&a [*a]",
    "<<: *nowhere",
    "{<<: [1, 2]}",
    "[" * 80 + "]" * 80,
    "{" * 70 + "}" * 70,
    '"\\ud800"',
    "\x00\x01\x02",
    "~",
    "null",
    "[]",
    "{}",
    "'" + "x" * 300 + "'",
    "0x7fffffffffffffffffff",
    "-.inf",
    ".nan",
    "2026-13-45T99:99:99Z",
    "? [complex, key]\n: value",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(SHIPPED))
    lines = path.read_text(encoding="utf-8").splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "swap", "indent", "value", "key", "noise"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "indent":
            lines[i] = " " * draw(st.integers(0, 8)) + lines[i].lstrip()
        elif action == "value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {draw(st.sampled_from(HOSTILE_VALUES))}"
        elif action == "key":
            lines.insert(i, " " * draw(st.integers(0, 6)) + f"{draw(st.text(min_size=1, max_size=12))}: 1")
        else:
            lines[i] = lines[i] + draw(st.text(max_size=20))
    return "\n".join(lines) + "\n"


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    target = tmp_path / "fuzzed.yaml"
    target.write_text(text, encoding="utf-8", errors="surrogateescape")
    for name in ("backup-config.yaml", "demo-repository"):  # what shipped scenarios refer to
        source = ROOT / "scenarios" / "restore-test" / name
        if source.exists() and not (tmp_path / name).exists() and source.is_file():
            (tmp_path / name).write_text(source.read_text())
    code = main(["validate", str(target)])
    return code, capsys.readouterr().err


@PROFILE
@given(text=mutated())
def test_mutated_shipped_files_get_located_errors_never_a_traceback(
    text: str, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _validate(tmp_path_factory.mktemp("fuzz"), text, capsys)
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("where", ["name", "objectives.rto", "stack.components.db.seed.customers", "steps"])
def test_each_hostile_value_is_a_located_error(
    value: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "name": "n",
        "objectives.rto": "1m",
        "stack.components.db.seed.customers": "10",
        "steps": "[backup, {restore: {}}]",
    }
    base[where] = value
    text = (
        f"name: {base['name']}\nobjectives:\n  rto: {base['objectives.rto']}\nstack:\n  components:\n    db:\n"
        f"      kind: postgres\n      seed:\n        customers: {base['stack.components.db.seed.customers']}\n"
        f"steps: {base['steps']}\nassertions: [fidelity]\n"
    )
    code, err = _validate(tmp_path, text, capsys)
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert "fuzzed.yaml:" in err, err  # every problem names the file (and where it can, the line)


def test_a_backup_config_with_an_impossible_port_or_database_is_refused_before_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cfg.yaml").write_text(
        "repository: {path: repo}\ncomponents:\n"
        "  cache: {kind: redis, url: 'redis://127.0.0.1:70000'}\n"
        "  other: {kind: redis, url: 'redis://127.0.0.1/abc'}\n"
        "  db: {kind: postgres, url: 'postgresql://u@h:99999/app'}\n"
    )
    code = main(["backup", "--config", str(tmp_path / "cfg.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cfg.yaml:3:" in err and "port" in err
    assert "cfg.yaml:4:" in err and "database" in err
    assert "cfg.yaml:5:" in err


def test_a_redis_url_with_a_user_name_is_refused_not_silently_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by review: the user name was dropped and the server's refusal blamed the password."""
    (tmp_path / "cfg.yaml").write_text(
        "repository: {path: repo}\ncomponents:\n  cache: {kind: redis, url: 'redis://backup@127.0.0.1:6379'}\n"
    )
    code = main(["backup", "--config", str(tmp_path / "cfg.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cfg.yaml:3:" in err and "user name in the URL ('backup') is not supported" in err, err
