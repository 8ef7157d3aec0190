"""Turning every problem in a scenario into ``file:line:col: key.path: what (expected)``.

Two passes: pydantic checks shape and types; then cross-references (targets exist and
fit their fault, backups are named before they are restored, objectives exist for the
checks that need them) are checked against the document so that they too carry a line.
All problems are collected and reported together.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from drills import plan
from drills.assertions import assertion_kinds
from drills.controls import control_ids
from drills.crosscheck import CheckContext, as_dict, problem, str_list, suggest
from drills.scenario import ASSERTION_MODELS, NAME_PATTERN, STEP_MODELS, Scenario, Strict
from drills.steps import step_kinds
from drills.yamlsource import Document, PathKey
from engine.components import component_kinds
from engine.errors import Problem, ValidationFailed
from engine.faults import REPOSITORY_TARGET, faults

# -- pass 1: shape and types ---------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return [tp]


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``; best effort, for suggestions."""
    tp: Any = root
    for seg in loc:
        members = _members(tp)
        if len(members) > 1:
            chosen = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel) and _tagged_as(m, seg)]
            if not chosen:
                return None
            tp = chosen[0]
            continue
        tp = members[0]
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = _field_type(tp, str(seg))
            if tp is None:
                return None
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin is list:
            tp = get_args(tp)[0]
        else:
            return None
    final = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return final[0] if len(final) == 1 else None


def _tagged_as(model: type[BaseModel], tag: Any) -> bool:
    """Whether a union member is the one pydantic selected with ``tag``."""
    if isinstance(model, type) and issubclass(model, Strict) and model.drproof_tag == tag:
        return True
    return any(
        get_origin(info.annotation) is Literal and tag in get_args(info.annotation)
        for info in model.model_fields.values()
    )


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _same_key(key: Any, text: str) -> bool:
    """Whether a non-text YAML key is the one pydantic renders as ``text`` (true as "1")."""
    if isinstance(key, str):
        return False
    return str(key) == text or (isinstance(key, bool) and str(int(key)) == text)


def _doc_path(doc: Document, loc: tuple[Any, ...]) -> PathKey:
    """Drop union tags from a pydantic location, keeping only real document keys."""
    node = doc.data
    out: list[Any] = []
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and seg not in node and isinstance(seg, str):
            # pydantic renders non-text keys (null, 1.5, true) as text in locations.
            seg = next((k for k in node if _same_key(k, seg)), seg)
        if (isinstance(node, dict) and seg in node) or (
            isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node)
        ):
            node = node[seg]
            out.append(seg)
        elif out and seg == out[-1] and not (isinstance(node, dict) and seg in node):
            continue  # a wrapper's field named like its tag (`wait: 5s`): already consumed
        elif last and not (isinstance(node, dict) and seg in node.values()):
            out.append(seg)
        # else: a union tag pydantic put in the location (a `kind:` or `fault:` value),
        # not a key of the document
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(doc: Document, err: Any, root: type[BaseModel]) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    path = _doc_path(doc, loc)
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(root, loc[:-1])
        allowed = _keys_of(model) if model else []
        hint = suggest(key, allowed)
        expected = f"(expected one of: {', '.join(allowed)})" if allowed else ""
        return problem(doc, path, f"unknown key {key!r}; {hint}{expected}".rstrip("; "), at_key=True)
    if kind == "missing":
        return problem(doc, path, f"required key {loc[-1]!r} is missing", anchor=path[:-1])
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag = str(ctx.get("tag"))
        expected_tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        field = ctx.get("discriminator", "").strip("'")
        hint = suggest(tag, expected_tags)
        return problem(
            doc,
            _doc_path(doc, (*loc, field)),
            f"unknown {field} {tag!r}; {hint}(expected one of: {', '.join(expected_tags)})",
        )
    if kind == "invalid_key":
        # pydantic reports the key as text; find the real (non-text) key to point at it.
        mapping_path = _doc_path(doc, loc[:-1])
        for candidate in doc.keys:
            if candidate[:-1] == mapping_path and _same_key(candidate[-1], str(loc[-1])):
                key = candidate[-1]
                shown = (
                    {True: "true", False: "false", None: "null"}.get(key, repr(key))
                    if isinstance(key, bool | None)
                    else repr(key)
                )
                hint = (
                    " (YAML reads on/off/yes/no/true/false as booleans: quote the key)" if isinstance(key, bool) else ""
                )
                return problem(doc, candidate, f"keys must be text, got {shown}{hint}", at_key=True)
        return problem(doc, mapping_path, f"keys must be text, got {loc[-1]}")
    if kind == "union_tag_not_found":
        field = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        options = {"fault": faults.names(), "kind": component_kinds.names()}.get(field, [])
        expected = f" (expected one of: {', '.join(options)})" if options else ""
        return problem(doc, path, f"required key {field!r} is missing{expected}")
    if kind in {"step_shape", "assertion_shape"}:
        what, options = ("step", list(STEP_MODELS)) if kind == "step_shape" else ("assertion", list(ASSERTION_MODELS))
        value = err.get("input")
        if isinstance(value, dict) and len(value) == 1:
            key = str(next(iter(value)))
            return problem(
                doc,
                (*path, key),
                f"unknown {what} {key!r}; {suggest(key, options)}(expected one of: {', '.join(options)})",
            )
        if isinstance(value, str):
            return problem(
                doc,
                path,
                f"unknown {what} {value!r}; {suggest(value, options)}(expected one of: {', '.join(options)})",
            )
        return problem(doc, path, msg)
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        msg = f"expected a name of lower-case letters, digits, '-' and '_' (got {_short(err['input'])})"
        return problem(doc, path, msg)
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {_short(err['input'])})"
    # A known kind refused is one the model does not accept there (a foreign format restores
    # into some kinds only): pydantic's "Input should be ..." names the ones it does.
    if kind == "literal_error" and loc and loc[-1] == "kind" and str(err["input"]) not in component_kinds.names():
        msg = (
            f"unknown component kind {err['input']!r}; {suggest(str(err['input']), component_kinds.names())}"
            f"(expected one of: {', '.join(component_kinds.names())})"
        )
    return problem(doc, path, msg)


# -- pass 2: cross-references --------------------------------------------------------------
# Run on the raw document, defensively, so that they are reported even when pass 1 found
# problems elsewhere: users get every problem in one go.


_KNOWN = {"backup", "wait", "disaster", "restore", "fidelity", "rto", "backup_integrity"}  # a malformed entry counts as these


def _single(value: Any) -> tuple[str | None, dict[str, Any]]:
    """The step or assertion a raw entry stands for; a malformed entry still counts as
    its first known key, so that one mistake does not cause misleading follow-on errors."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict):
        for key, inner in value.items():
            if len(value) == 1 or key in _KNOWN:
                return str(key), as_dict(inner)
    return None, {}


def _cross_checks(doc: Document) -> list[Problem]:
    ctx = CheckContext.of(doc)
    data = as_dict(doc.data)
    if REPOSITORY_TARGET in ctx.components:
        ctx.add(
            ("stack", "components", REPOSITORY_TARGET),
            f"{REPOSITORY_TARGET!r} is reserved for faults on the backup repository",
        )
    for name, spec in ctx.components.items():
        sql_file = as_dict(as_dict(spec).get("seed")).get("sql_file")
        if isinstance(sql_file, str):
            resolved = Path(sql_file) if Path(sql_file).is_absolute() else Path(doc.file).parent / sql_file
            if not resolved.is_file():
                ctx.add(("stack", "components", name, "seed", "sql_file"), f"SQL file not found: {resolved}")
    _check_source(ctx, data)
    _check_dependencies(ctx)
    steps = data["steps"] if isinstance(data.get("steps"), list) else []
    _check_steps(ctx, steps)
    if ctx.source is not None and not steps:
        ctx.steps_seen.add("restore")  # the implicit `restore: {from: source}`
    for i, raw in enumerate(data["assertions"] if isinstance(data.get("assertions"), list) else []):
        tag, params = _single(raw)
        if tag is not None and tag in assertion_kinds:
            assertion_kinds.get(tag)().cross_check(ctx, i, params)
    ctx.problems.extend(_control_checks(doc, data.get("controls")))
    return ctx.problems


def _check_dependencies(ctx: CheckContext) -> None:
    """``depends_on`` names components of this scenario, never itself, and makes no cycle."""
    deps: dict[str, set[str]] = {}
    for name, spec in as_dict(as_dict(as_dict(ctx.doc.data).get("stack")).get("components")).items():
        listed = str_list(as_dict(spec).get("depends_on"))
        path = ("stack", "components", name, "depends_on")
        for j, dep in listed:
            if dep == name:
                ctx.add((*path, j), f"{name!r} cannot depend on itself")
            else:
                ctx.check_component((*path, j), dep)
        deps[str(name)] = {d for _, d in listed if d != name}
    found = plan.cycle(deps)
    if found:
        ctx.add(("stack", "components", found[0], "depends_on"), "depends_on makes a cycle: " + " → ".join(found))


def _check_source(ctx: CheckContext, data: dict[str, Any]) -> None:
    """A scenario restores something: a seeded stack, or a source of real backups; the
    source's backup-config exists and is valid, and its components do not clash."""
    if ctx.source is None:
        why = "(a drill seeds components and runs steps; a restore test names a `source:` instead)"
        if "stack" not in data:
            ctx.add(("stack",), f"required key 'stack' is missing {why}")
        elif not as_dict(as_dict(data.get("stack")).get("components")):
            ctx.add(("stack", "components"), f"a drill needs at least one component {why}")
        if "steps" not in data:
            ctx.add(("steps",), f"required key 'steps' is missing {why}")
        elif isinstance(data["steps"], list) and not data["steps"]:
            ctx.add(("steps",), "a drill needs at least one step")
        return
    seeded = as_dict(as_dict(data.get("stack")).get("components"))
    for i, name in str_list(ctx.source.get("components")):
        if name in seeded:
            ctx.add(
                ("source", "components", i),
                f"{name!r} is both a seeded component of the stack and a component of the source; rename one",
            )
    # Found by review: a foreign backup named like a seeded component was restored into it,
    # refused (not empty), and fidelity called the seeded data "the restored state".
    for name in as_dict(ctx.source.get("backups")):
        if name in seeded:
            ctx.add(
                ("source", "backups", name),
                f"{name!r} is both a seeded component of the stack and a backup of the source; rename one",
            )
    config = ctx.source.get("config")
    if isinstance(config, str):
        path = Path(config) if Path(config).is_absolute() else Path(ctx.doc.file).parent / config
        if not path.is_file():
            ctx.add(("source", "config"), f"backup-config not found: {path}")
        else:
            ctx.problems.extend(_backup_config_problems(path))


def _backup_config_problems(path: Path) -> list[Problem]:
    """The source's backup-config, validated where it is: its problems carry its own file and line."""
    from drills import yamlsource
    from drills.backup_config import BackupConfig

    try:
        doc = yamlsource.load(path)
    except ValidationFailed as exc:
        return list(exc.problems)
    return model_problems(doc, BackupConfig)[1]


def _check_steps(ctx: CheckContext, steps: list[Any]) -> None:
    """Each step checks its own references; step names must be unique."""
    step_names: dict[str, int] = {}
    for i, raw in enumerate(steps):
        kind, spec = _single(raw)
        step_name: str | None = spec["name"] if isinstance(spec.get("name"), str) else None
        if step_name:
            if step_name in step_names:
                ctx.add(
                    ("steps", i, kind or "", "name"),
                    f"step name {step_name!r} already used by step {step_names[step_name] + 1}",
                )
            step_names[step_name] = i
        if kind is not None and kind in step_kinds:
            step_kinds.get(kind)().cross_check(ctx, i, spec)
            ctx.steps_seen.add(kind)


def _control_checks(doc: Document, declared: Any) -> list[Problem]:
    """Unknown control ids are errors: a misspelt id would otherwise drop a control from
    the report without a word, and the auditor would never see it was asked for."""
    known = control_ids()
    problems = []
    for i, value in str_list(declared):
        if value not in known:
            problems.append(
                problem(
                    doc,
                    ("controls", i),
                    f"unknown control {value!r}; {suggest(value, known)}(known controls: {', '.join(known)})",
                )
            )
    return problems


def model_problems(doc: Document, model: type[BaseModel]) -> tuple[BaseModel | None, list[Problem]]:
    """Validate a document against any drproof model; problems located in the file."""
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        return None, [Problem(doc.file, 1, 1, "", f"expected a mapping of keys; got {got}")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, [_translate(doc, e, model) for e in exc.errors()]


def validate(doc: Document) -> tuple[Scenario | None, list[Problem]]:
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        return None, [
            Problem(doc.file, 1, 1, "", f"a scenario is a mapping with keys name, stack, steps, ...; got {got}")
        ]
    scenario: Scenario | None = None
    problems: list[Problem] = []
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        problems = [_translate(doc, e, Scenario) for e in exc.errors()]
    for p in _cross_checks(doc):
        if p not in problems:
            problems.append(p)
    problems.sort(key=lambda p: (p.file != doc.file, p.file, p.line or 0, p.column or 0, p.path))
    return (scenario if not problems else None), problems
