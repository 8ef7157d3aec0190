"""Whatever a user writes, the loader and validator must answer with located problems,
never a traceback: any other exception escaping them is a bug by the contract in
engine/errors.py. These properties throw arbitrary text and arbitrary YAML-shaped data
(including mutations of a real scenario) at them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.scenario import ASSERTION_MODELS, STEP_MODELS
from drills.validation import validate
from drills.yamlsource import Document, PathKey, parse, render_path
from engine.components import component_kinds
from engine.errors import ValidationFailed
from engine.faults import faults

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"
FILE = "x.yaml"

# -- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["5m", "90s", "local", "nightly", "orders-db", "x", "", "repository"])
)
# Float keys are left out: they crash validate (see test_float_key_does_not_crash_validate).
# Text keys spelled like the bool/null keys are left out too: the duplicate check confuses
# them (see test_quoted_true_and_bool_true_are_distinct_keys).
keys = (
    st.text(max_size=15).filter(lambda k: k not in {"true", "false", "null"})
    | st.integers(min_value=-5, max_value=5)
    | st.booleans()
    | st.none()
)
yaml_data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
names = st.sampled_from(["orders-db", "uploads", "app-config", "nightly", "Bad Name", "repository", "x" * 70])
component_like = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(component_kinds.names()) | scalars,
        "description": scalars,
        "seed": st.fixed_dictionaries({}, optional={"sql_file": scalars, "files": yaml_data, "random_seed": scalars})
        | yaml_data,
    },
)
step_params = st.fixed_dictionaries(
    {},
    optional={
        "name": names | scalars,
        "from": names | scalars,
        "components": st.lists(names | scalars, max_size=3),
        "fault": st.sampled_from(faults.names()) | scalars,
        "target": names | scalars,
        "backup": names | scalars,
        "component": names | scalars,
        "count": scalars,
    },
)
step_like = (
    st.sampled_from([*STEP_MODELS, "bogus"])
    | st.dictionaries(st.sampled_from([*STEP_MODELS, "bogus"]), step_params | yaml_data, min_size=1, max_size=2)
    | yaml_data
)
assertion_like = (
    st.sampled_from([*ASSERTION_MODELS, "fidelty"])
    | st.dictionaries(st.sampled_from([*ASSERTION_MODELS, "fidelty"]), step_params | yaml_data, min_size=1, max_size=2)
    | yaml_data
)
scenario_like = st.fixed_dictionaries(
    {},
    optional={
        "name": names | scalars,
        "objectives": st.fixed_dictionaries({}, optional={"rto": scalars, "rpo": scalars}) | yaml_data,
        "stack": st.fixed_dictionaries(
            {}, optional={"runtime": scalars, "components": st.dictionaries(names | keys, component_like, max_size=3)}
        )
        | yaml_data,
        "steps": st.lists(step_like, max_size=5) | yaml_data,
        "assertions": st.lists(assertion_like, max_size=3) | yaml_data,
        "report": yaml_data,
        "bogus": yaml_data,
    },
)


def _dump(data: Any) -> str:
    # sort_keys=False: mixed key types (str, int, None) cannot be sorted.
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _quickstart() -> dict[str, Any]:
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _paths(node: Any, prefix: PathKey = ()) -> list[PathKey]:
    out: list[PathKey] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_quickstart(draw: st.DrawFn) -> dict[str, Any]:
    data = _quickstart()
    for _ in range(draw(st.integers(1, 3), label="mutations")):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths), label="path")
        parent: Any = data
        for seg in path[:-1]:
            parent = parent[seg]
        last = path[-1]
        op = draw(st.sampled_from(["drop", "rename", "replace", "replace-tree"]), label="op")
        if op == "drop":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(
                (st.text(max_size=12) | st.sampled_from(["nmae", "stepz", "kind", "seeds", "from", "fault"])).filter(
                    lambda k, taken=parent: k not in taken
                ),
                label="new key",
            )
            parent[new] = parent.pop(last)
        elif op == "replace-tree":
            parent[last] = draw(yaml_data, label="tree")
        else:
            parent[last] = draw(scalars, label="scalar")
    return data


# -- helpers -------------------------------------------------------------------------------------


def _validate_and_check(text: str) -> list[Any]:
    try:
        doc = parse(text, FILE)
    except ValidationFailed as exc:
        pytest.fail(f"safe_dump output did not parse: {exc}\n{text}")
    scenario, problems = validate(doc)
    assert (scenario is None) == bool(problems)
    n_lines = 1 + sum(text.count(c) for c in "\n\r\x85\u2028\u2029")  # PyYAML's line breaks
    # A key such as "a.b" or "" renders like another path; skip the line check then.
    ambiguous = any(isinstance(seg, str) and (seg == "" or any(c in seg for c in ".[]")) for k in doc.keys for seg in k)
    # Not doc.locate(): it raises KeyError for paths through non-string keys (reported bug).
    located: dict[str, set[int]] = {}
    for marks in (doc.keys, doc.values):
        for key, mark in marks.items():
            located.setdefault(render_path(key), set()).add(mark.line)
    for p in problems:
        assert p.file == FILE
        assert p.message
        # The document root always has a mark, so every problem can point at a line.
        assert p.line is not None, p
        assert p.column is not None, p
        assert 1 <= p.line <= n_lines, (p, text)
        if p.path in located and not ambiguous:
            assert p.line in located[p.path], (str(p), located[p.path], text)
    return problems


# -- parse ---------------------------------------------------------------------------------------

# '*' (aliases) is excluded here: a self-referencing anchor crashes parse, which has its own
# xfail test below; aliases without cycles are exercised via safe_dump of shared objects.
yamlish_text = st.text(alphabet=list(":-[]{}&!|>'\"#%@`,?. \n\tab0"), max_size=120)
# Characters PyYAML's reader rejects are left out too (reported bug, own xfail test).
printable_text = st.text(
    st.characters(blacklist_categories=["Cs"]).filter(
        lambda c: (
            c in "\t\n\r"
            or "\x20" <= c <= "\x7e"
            or c == "\x85"
            or "\xa0" <= c <= "\ud7ff"
            or "\ue000" <= c <= "\ufffd"
            or c >= "\U00010000"
        )
    ),
    max_size=200,
)


@settings(max_examples=400, deadline=None)
@given(printable_text | yamlish_text)
def test_parse_returns_document_or_validation_failed(text: str) -> None:
    try:
        doc = parse(text, FILE)
    except ValidationFailed as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == FILE
            assert p.message.startswith(("invalid YAML", "duplicate key"))
        return
    assert isinstance(doc, Document)
    assert doc.text == text
    assert doc.file == FILE
    if doc.data is not None:
        assert () in doc.values


@settings(max_examples=200, deadline=None)
@given(yaml_data)
def test_parse_round_trips_safe_dump(data: Any) -> None:
    shared = [data, data]  # the same object twice: safe_dump emits an anchor and an alias
    text = _dump({"a": data, "b": shared})
    doc = parse(text, FILE)
    # PyYAML itself is the oracle (it does not round-trip everything, e.g. U+0085 in keys).
    assert _dump(doc.data) == _dump(yaml.safe_load(text))
    assert set(doc.keys) >= {("a",), ("b",), ("b", 0), ("b", 1)}


def test_duplicate_keys_are_located() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse("name: a\nsteps: []\nname: b\n", FILE)
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (3, 1, "name")
    assert "first defined at line 1" in problem.message


def test_syntax_error_is_located() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse("name: x\nsteps: [a, b\n", FILE)
    (problem,) = info.value.problems
    assert problem.line is not None
    assert problem.message.startswith("invalid YAML")


@pytest.mark.parametrize("text", ["\x1f", "name: x\x00\n", "a: \x07"])
def test_unprintable_characters_are_a_validation_failure(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse(text, FILE)


def test_recursive_alias_is_a_validation_failure() -> None:
    with pytest.raises(ValidationFailed):
        parse("&a [*a]\n", FILE)


def test_deep_nesting_is_a_validation_failure() -> None:
    with pytest.raises(ValidationFailed):
        parse("[" * 5000, FILE)


# -- validate ------------------------------------------------------------------------------------


def test_quickstart_is_valid() -> None:
    scenario, problems = validate(parse(_dump(_quickstart()), FILE))
    assert problems == []
    assert scenario is not None
    assert scenario.name == "quickstart"


@settings(max_examples=300, deadline=None)
@given(yaml_data | scenario_like)
def test_validate_never_raises_on_arbitrary_data(data: Any) -> None:
    problems = _validate_and_check(_dump(data))
    if not isinstance(data, dict):
        assert len(problems) == 1
        assert problems[0].line == 1


@settings(max_examples=300, deadline=None)
@given(mutated_quickstart())
def test_validate_never_raises_on_mutated_quickstart(data: dict[str, Any]) -> None:
    _validate_and_check(_dump(data))


@pytest.mark.parametrize("key", ["name", "stack", "steps", "assertions"])
def test_dropped_required_key_is_reported_at_its_parent(key: str) -> None:
    data = _quickstart()
    del data[key]
    problems = _validate_and_check(_dump(data))
    missing = [p for p in problems if p.path == key]
    assert missing, problems
    assert f"required key {key!r} is missing" in missing[0].message


def test_renamed_key_gets_a_suggestion_at_its_line() -> None:
    data = _quickstart()
    text = _dump(data).replace("\nsteps:", "\nstepz:")
    problems = _validate_and_check(text)
    unknown = [p for p in problems if p.path == "stepz"]
    assert len(unknown) == 1
    assert "did you mean 'steps'" in unknown[0].message
    assert unknown[0].line == text.splitlines().index("stepz:") + 1


def test_replaced_value_is_reported_at_the_value() -> None:
    data = copy.deepcopy(_quickstart())
    data["steps"][2]["disaster"]["target"] = "orders-bd"
    text = _dump(data)
    problems = _validate_and_check(text)
    (problem,) = problems
    assert problem.path == "steps[2].disaster.target"
    assert "did you mean 'orders-db'" in problem.message
    assert "orders-bd" in text.splitlines()[problem.line - 1]


def test_float_key_does_not_crash_validate() -> None:
    _validate_and_check("1.5: x\nname: q\n")


def test_quoted_true_and_bool_true_are_distinct_keys() -> None:
    doc = parse("'true': a\ntrue: b\n", FILE)
    assert doc.data == {"true": "a", True: "b"}


@pytest.mark.parametrize("text", ["null: a\n~: b\n", "1.0: a\n1.00: b\n"])
def test_differently_spelled_duplicate_keys_are_refused(text: str) -> None:
    with pytest.raises(ValidationFailed, match="duplicate key"):
        parse(text, FILE)
