"""Generate docs/scenario-reference.md from the scenario models and the registries.

The reference is built from the same pydantic models and registries that validate a
scenario, so a parameter, default or fault that exists in code cannot be missing from
the page, and a page that was not regenerated after a change is caught by ``--check``
and by tests/test_docs.py. Prose that explains *how* things work lives in the
hand-written pages next to it; this page only says what may be written and what it means.

Usage::

    python -m drills.docgen            # rewrite docs/scenario-reference.md
    python -m drills.docgen --check    # exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ByteSize
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from drills.assertions import assertion_kinds
from drills.durations import parse_duration
from drills.foreign_source import FOREIGN_MODELS, S3Spec
from drills.scenario import (
    ASSERTION_MODELS,
    NAME_PATTERN,
    REPOSITORY_MODELS,
    STEP_MODELS,
    BackupSpec,
    DisasterCommon,
    DrillRepositoryCommon,
    Objectives,
    OffsiteSpec,
    ReportSpec,
    RestoreSpec,
    Scenario,
    SqlSpec,
    Stack,
    Strict,
    WorkloadSpec,
)
from drills.source import SourceSpec
from engine.components import component_kinds
from engine.faults import REPOSITORY_TARGET, FaultParams, faults, fits
from engine.foreign import foreign_formats
from engine.repository.s3 import ObjectLockSettings

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "scenario-reference.md"

# Fields whose model gives no description of its own (or only the generic one of the
# `Name` type). Keyed by the class that declares the field, so every subclass inherits
# the text. The generator refuses to run when a field has no description at all: an
# undocumented parameter is a documentation bug, and it should fail loudly, not leave
# an empty cell.
_FALLBACK_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("Scenario", "name"): "Identifies the drill in reports and in the default report directory name.",
    ("Scenario", "description"): "Free text shown in the reports.",
    ("Scenario", "objectives"): "Recovery objectives the assertions measure against.",
    ("Scenario", "stack"): "The components to seed, back up, break and restore, and where they run.",
    ("Scenario", "repository"): "Where backup sets are written.",
    ("Scenario", "report"): "Options for the report files.",
    ("ReportSpec", "formats"): "Report files to write (report.html, results.json, junit.xml). "
    "results.json is written even when `json` is not listed.",
    ("WaitStep", "wait"): "How long to pause, e.g. `30s`.",
    ("SeedParams", "random_seed"): "Seed of the generated data: the same seed gives the same data on every run.",
    ("FaultParams", "random_seed"): "Seed of the fault's random choices (which files, offsets or artifact), "
    "so a rerun damages the same things. Faults that choose nothing ignore it.",
}

# Models that have a section of their own on the page; a field of that type links to it.
_SECTIONS: dict[type[BaseModel], str] = {
    Objectives: "objectives",
    Stack: "stack",
    **dict.fromkeys(REPOSITORY_MODELS.values(), "repository"),
    OffsiteSpec: "repository.offsite",
    ObjectLockSettings: "repository.object_lock",
    ReportSpec: "report",
    SourceSpec: "source",
    S3Spec: "source.s3",
}

_SCALARS: dict[Any, str] = {
    Any: "any value",
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    Path: "path",
    ByteSize: "size (`4096`, `4KiB`, `1MB`)",
}


# -- describing a field ----------------------------------------------------------------------


def _is_duration(metadata: Iterable[Any]) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in metadata)


def _pattern(metadata: Iterable[Any]) -> str | None:
    for m in metadata:
        if isinstance(m, FieldInfo):
            found = _pattern(m.metadata)
            if found:
                return found
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            return pattern
    return None


def _type_text(tp: Any, metadata: Sequence[Any] = ()) -> str:
    """A reader's name for an annotation: `list of name`, not `list[Annotated[str, ...]]`."""
    if _is_duration(metadata):
        return "duration"
    if _pattern(metadata) == NAME_PATTERN:
        return "name"
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        if _is_duration(meta):
            return "duration"
        if _pattern(meta) == NAME_PATTERN:
            return "name"
        return _type_text(base)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        family = _family(members)
        return family or " or ".join(_type_text(a) for a in members)
    if origin is Literal:
        values = [f"`{_yaml_scalar(v)}`" for v in get_args(tp)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin is list:
        return "list of " + _type_text(get_args(tp)[0])
    if origin is dict:
        key, value = get_args(tp)
        return f"mapping of {_type_text(key)} → {_type_text(value)}"
    if isinstance(tp, type) and tp in _SECTIONS:
        # A dotted title's anchor drops the dot, as Markdown renderers make it.
        return f"mapping (see [{_SECTIONS[tp]}](#{_SECTIONS[tp].replace('.', '')}))"
    if tp in _SCALARS:
        return _SCALARS[tp]
    if (family := _family([tp])) is not None:  # a tagged union of one member so far
        return family
    if isinstance(tp, type) and issubclass(tp, BaseModel) and len(tp.model_fields) <= 4:
        # A small mapping written inline (a pick rule): its keys and their types.
        keys = [f"{info.alias or name}: {_type_text(info.annotation, info.metadata)}" for name, info in tp.model_fields.items()]
        return "mapping `{" + ", ".join(keys) + "}`"
    raise TypeError(f"docgen does not know how to describe the type {tp!r}; teach _type_text")


def _family(members: Sequence[Any]) -> str | None:
    """Steps, assertions and components are tagged unions; name them by what they are."""
    models = [get_args(m)[0] if get_origin(m) is Annotated else m for m in members]
    if all(m in STEP_MODELS.values() for m in models):
        return "step (see [Steps](#steps))"
    if all(m in ASSERTION_MODELS.values() for m in models):
        return "assertion (see [Assertions](#assertions))"
    if all(m in REPOSITORY_MODELS.values() for m in models):
        return "mapping (see [repository](#repository))"
    if all(m in FOREIGN_MODELS for m in models):
        return "foreign backup (see [Foreign backup formats](#foreign-backup-formats))"
    if all(isinstance(m, type) and issubclass(m, Strict) and m.drproof_tag in component_kinds for m in models):
        return "component (see below)"
    return None


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _constraints(metadata: Iterable[Any]) -> list[str]:
    """Limits a value must respect, so readers learn them here rather than from an error."""
    out: list[str] = []
    for m in metadata:
        for attr, symbol in _BOUNDS:
            bound = getattr(m, attr, None)
            if isinstance(bound, int | float):
                out.append(f"{symbol} {_number(bound)}")
        least = getattr(m, "min_length", None)
        if isinstance(least, int):
            out.append(f"at least {least} {'entry' if least == 1 else 'entries'}")
        most = getattr(m, "max_length", None)
        if isinstance(most, int):
            out.append(f"at most {most} entries")
        pattern = _pattern([m])
        if pattern and pattern != NAME_PATTERN:
            out.append(f"matching `{pattern}`")
    return out


def _number(value: Any) -> str:
    """Large limits with digit separators (valid YAML 1.1 too), so 10_000_000 is not misread."""
    return f"{value:_}" if isinstance(value, int) else repr(value)


def _yaml_scalar(value: Any) -> str:
    """A default as it would be written in the scenario, quoted only where YAML needs it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = bool(value) and value == value.strip() and not any(c in value for c in "\n#:{}[],&*!|>'\"%@`")
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml_scalar(k)}: {_yaml_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"docgen does not know how to show the default {value!r}")


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        return "all defaults"
    if _is_duration(info.metadata) and isinstance(value, int | float):
        from drills.durations import format_duration

        return f"`{format_duration(value)}`"
    return f"`{_yaml_scalar(value)}`"


def _description(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    """The field's own description unless a fallback exists; never an empty cell."""
    for cls in model.__mro__:
        text = _FALLBACK_DESCRIPTIONS.get((cls.__name__, name))
        if text is not None:
            return text
    if info.description:
        return info.description
    raise LookupError(
        f"{model.__name__}.{name} has no description: add Field(description=...) or an entry in "
        "drills/docgen.py's _FALLBACK_DESCRIPTIONS"
    )


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(
    model: type[BaseModel],
    *,
    skip: Iterable[str] = (),
    before: Sequence[Sequence[str]] = (),
    after: Sequence[Sequence[str]] = (),
    empty: str = "No parameters.",
) -> list[str]:
    """A markdown table of the YAML keys of ``model`` plus any extra rows given."""
    cells = [*before, *_rows_of(model, skip), *after]
    if not cells:
        return [empty]
    return [_row(["key", "type", "default", "description"]), "|---|---|---|---|", *(_row(c) for c in cells)]


def _rows_of(model: type[BaseModel], skip: Iterable[str] = ()) -> list[list[str]]:
    """One row per YAML key of ``model`` (aliases as written in YAML), in declaration order."""
    skipped = set(skip)
    rows: list[list[str]] = []
    for name, info in model.model_fields.items():
        if name in skipped:
            continue
        kind = _type_text(info.annotation, info.metadata)
        limits = _constraints(info.metadata)
        if limits:
            kind += " (" + ", ".join(limits) + ")"
        rows.append([f"`{info.alias or name}`", kind, _default_text(info), _description(model, name, info)])
    return rows


# -- the page --------------------------------------------------------------------------------


def _section(level: int, title: str, *body: str | list[str]) -> list[str]:
    out = ["#" * level + " " + title, ""]
    for part in body:
        out += [*part, ""] if isinstance(part, list) else [part, ""]
    return out


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _faults_for(kind: str) -> str:
    names = [f"[`{f.name}`](#{f.name})" for f in faults if fits(f, kind)]
    return ", ".join(names) if names else "none"


def render() -> str:
    """The whole page as a string; the same input always gives the same bytes."""
    out: list[str] = [
        "<!-- Generated by `python -m drills.docgen` from the scenario models and registries. "
        "Do not edit by hand: change the code and regenerate. -->",
        "",
        "# Scenario reference",
        "",
        "A scenario is one YAML file that describes a drill: the stack to build, the timeline of backups, "
        "disasters and restores, and the assertions that decide the verdict. `drproof validate FILE` checks "
        "a file without running it, and `drproof schema` prints the same rules as JSON Schema for editors.",
        "",
        "Conventions used below:",
        "",
        "- **Unknown keys are errors** everywhere, so a misspelt check can never silently not run.",
        "- A **duration** is a number with a unit: `250ms`, `90s`, `5m`, `1h30m`, `1d`. A bare number is "
        "refused, because `rto: 5` could mean seconds or minutes.",
        "- A **name** is 1 to 63 lower-case letters, digits, `-` and `_`, starting with a letter or digit.",
        "- **—** as a default means the key is unset; the description says what happens then.",
        "",
        "How each component is backed up and fingerprinted is explained in [components.md](components.md), "
        "faults in [faults.md](faults.md), assertions and verdicts in [assertions.md](assertions.md).",
        "",
    ]
    out += _section(2, "Top-level keys", _table(Scenario))
    out += _section(2, "objectives", _table(Objectives))
    out += _section(
        2,
        "source",
        "A restore test of real backups (see [restore tests](restore-tests.md)): the set is read, read-only, "
        "from the repository a backup-config names and restored into a sandbox; steps may then be left out.",
        _table(SourceSpec),
    )
    out += _section(3, "source.s3", _table(S3Spec))
    out += _section(
        2,
        "stack",
        _table(Stack),
        "Each entry of `components` maps a name of your choice to a component:",
        _component_entry_table(),
    )
    out += _repository_sections()
    out += _section(2, "report", _table(ReportSpec))

    out += _section(
        2,
        "Steps",
        "`steps` is the timeline, run in order. Each step is a mapping with exactly one key, the step type. "
        "A step whose options are all defaults may be written as its bare name (`- backup`).",
    )
    for tag, model in STEP_MODELS.items():
        out += _step_section(tag, model)

    out += _section(
        2,
        "Component kinds",
        "The value of a component's `kind:`; its `seed:` mapping (`run:` for a service) takes the parameters listed.",
    )
    for kind in component_kinds:
        out += _section(
            3,
            kind.name,
            kind.description,
            f"Faults that can hit it: {_faults_for(kind.name)}.",
            f"`{kind.params_key}:` parameters:",
            _table(kind.Params, skip=() if kind.stateful else ("random_seed",)),
        )

    out += _section(
        2,
        "Faults",
        "The value of a disaster step's `fault:`. Besides the keys common to every disaster "
        "(see [disaster](#disaster)), each fault takes the parameters listed.",
    )
    for fault in faults:
        targets = ", ".join(
            "`repository` (the backup repository)" if t == REPOSITORY_TARGET else f"[`{t}`](#{t}) components"
            for t in sorted(fault.targets)
        )
        table = _table(fault.Params, skip=FaultParams.model_fields, empty="No parameters of its own.")
        out += _section(3, fault.name, fault.description, f"Targets: {targets}.", table)

    out += _section(
        2,
        "Foreign backup formats",
        "The value of a `source.backups` entry's `format:`: backups drproof did not make, restored into a fresh "
        "sandbox component (see [restore tests](restore-tests.md#backups-not-made-by-drproof)).",
    )
    for model, fmt in zip(FOREIGN_MODELS, foreign_formats, strict=True):
        out += _section(3, fmt.name, fmt.description, _table(model))

    out += _section(
        2,
        "Assertions",
        "`assertions` lists what must hold for the drill to pass. Each entry is an assertion name "
        "(`- fidelity`) or a mapping from the name to its parameters (`- rto: {max: 2m}`). "
        "A `timeline` check is always added; see [assertions.md](assertions.md#timeline).",
    )
    for assertion in assertion_kinds:
        # `redis` is both a component kind and a check: the check's heading says which it is.
        heading = f"{assertion.name} (check)" if assertion.name in component_kinds else assertion.name
        out += _section(3, heading, assertion.description, _table(assertion.Params))

    while out and out[-1] == "":
        out.pop()
    _check_unique_headings(out)
    return "\n".join(out) + "\n"


def _repository_sections() -> list[str]:
    """`type` picks a backend (engine.repository's registry); common keys, then each backend's own."""
    common = list(DrillRepositoryCommon.model_fields)
    types = [m.model_fields["type"] for m in REPOSITORY_MODELS.values()]
    type_row = [
        "`type`",
        "one of " + ", ".join(f"`{name}`" for name in REPOSITORY_MODELS),
        "`local`",
        "The storage backend, " + "; ".join(t.description or "" for t in types) + ". Its own keys are below.",
    ]
    out = _section(
        2,
        "repository",
        "Where backup sets are written. Keys every backend takes:",
        _table(DrillRepositoryCommon, before=[type_row]),
    )
    out += _section(3, "repository.offsite", _table(OffsiteSpec))
    for name, model in REPOSITORY_MODELS.items():
        own = _table(model, skip=[*common, "type"], empty="No keys of its own.")
        out += _section(3, f"repository type {name}", f"Keys of `type: {name}`:", own)
    out += _section(
        3,
        "repository.object_lock",
        "S3 Object Lock on every object written (see [backup-engine.md](backup-engine.md#immutable-storage-s3-object-lock)).",
        _table(ObjectLockSettings),
    )
    return out


def _check_unique_headings(lines: Sequence[str]) -> None:
    """Links on the page use heading anchors; a fault named like a step would break them silently."""
    seen: set[str] = set()
    for line in lines:
        if line.startswith("#"):
            anchor = line.lstrip("#").strip().lower().replace(" ", "-")
            if anchor in seen:
                raise ValueError(f"two headings would share the anchor #{anchor}; rename one")
            seen.add(anchor)


def _component_entry_table() -> list[str]:
    """The keys of one `stack.components` entry: shared by every kind except for `seed`'s content."""
    annotation = Stack.model_fields["components"].annotation
    union = get_args(get_args(annotation)[1])[0]
    member: type[BaseModel] = next(m for m in get_args(union) if "seed" in m.model_fields)
    fields = member.model_fields
    kinds = ", ".join(f"[`{n}`](#{n})" for n in component_kinds.names())
    kind_row = ["`kind`", "one of " + kinds, "required", fields["kind"].description or ""]
    seed_row = [
        "`seed`",
        "mapping",
        "all defaults",
        (fields["seed"].description or "") + " Its keys depend on the kind; see [Component kinds](#component-kinds).",
    ]
    run_row = [
        "`run`",
        "mapping",
        "required",
        "Instead of `seed`, for a service kind ([`application`](#application)): how to start and check it.",
    ]
    return _table(member, skip=("kind", "seed"), before=[kind_row], after=[seed_row, run_row])


def _step_section(tag: str, model: type[BaseModel]) -> list[str]:
    if tag == "backup":
        return _section(
            3,
            "backup",
            _doc(model),
            "```yaml\n- backup: {name: nightly}\n```",
            "Without a name, a backup is called `step<N>-backup` (N counts steps from 1).",
            _table(BackupSpec),
        )
    if tag == "wait":
        return _section(3, "wait", _doc(model), "```yaml\n- wait: 30s\n```", _table(model))
    if tag == "disaster":
        fault_row = [
            "`fault`",
            "string",
            "required",
            "Which fault to inject: " + ", ".join(f"[`{f.name}`](#{f.name})" for f in faults) + ".",
        ]
        return _section(
            3,
            "disaster",
            _doc(model),
            "```yaml\n- disaster: {target: orders-db, fault: drop_table, table: orders}\n```",
            "Keys every disaster takes; the fault's own parameters go in the same mapping:",
            _table(DisasterCommon, after=[fault_row, *_rows_of(FaultParams)]),
        )
    if tag == "failover":
        from drills.steps.failover import PRIMARY_FAULTS, FailoverCommon

        fault_row = [
            "`fault`",
            "string",
            "required",
            "Which fault takes the primary away: "
            + ", ".join(f"[`{f.name}`](#{f.name})" for f in PRIMARY_FAULTS)
            + ".",
        ]
        return _section(
            3,
            "failover",
            _doc(model),
            "```yaml\n- failover: {target: orders-db, fault: kill_primary, strategy: promote, rejoin: true}\n```",
            "See [failover.md](failover.md) for what is measured. The fault's own parameters go in the same mapping:",
            _table(FailoverCommon, after=[fault_row, *_rows_of(FaultParams)]),
        )
    if tag == "restore":
        return _section(
            3,
            "restore",
            _doc(model),
            "```yaml\n- restore: {from: nightly, components: [orders-db]}\n```",
            _table(RestoreSpec),
        )
    if tag == "workload":
        return _section(
            3,
            "workload",
            _doc(model),
            "```yaml\n- workload: {rate: 20}\n```",
            "See [rpo.md](rpo.md) for what is recorded and how the recovery point is measured.",
            _table(WorkloadSpec),
        )
    if tag == "sql":
        return _section(
            3,
            "sql",
            _doc(model),
            '```yaml\n- sql: {target: orders-db, statement: "ALTER TABLE orders ADD COLUMN note text"}\n```',
            _table(SqlSpec),
        )
    if tag == "prune":
        from drills.steps.prune import PruneSpec

        return _section(
            3,
            "prune",
            _doc(model),
            "```yaml\n- prune: {keep_last: 1}\n```",
            "The same retention as `drproof recovery prune`: newest by the chain, never by the clock; each deleted "
            "set leaves a signed tombstone.",
            _table(PruneSpec),
        )
    raise LookupError(f"docgen has no section for step type {tag!r}; add one to _step_section")


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Write the page, or with ``--check`` compare it, so CI can fail on a stale reference."""
    parser = argparse.ArgumentParser(
        prog="python -m drills.docgen", description="Generate docs/scenario-reference.md from the code."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    text = render()
    path: Path = args.output
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "generated"
        )
        sys.stderr.writelines(list(diff)[:60])
        sys.stderr.write(f"\n{path} is out of date; regenerate it with: python -m drills.docgen\n")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
