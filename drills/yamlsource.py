"""YAML loading that remembers where every key and value came from.

Validation errors are only useful if they point at the line to fix, so the loader keeps
PyYAML's marks for every key and value, keyed by their path in the document. It also
rejects duplicate keys, which PyYAML would otherwise silently resolve by keeping the
last one — a typo'd copy of a check would then quietly replace the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import Problem, ValidationFailed

PathKey = tuple[Any, ...]
MAX_SCENARIO_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """Parsed YAML plus the location of every key and value in it."""

    file: str
    text: str
    data: Any
    keys: dict[PathKey, Mark] = field(default_factory=dict)
    values: dict[PathKey, Mark] = field(default_factory=dict)

    def locate(self, path: PathKey, prefer_key: bool = False) -> Mark | None:
        """The most precise mark for ``path``: the value for scalars, else the key."""
        if prefer_key and path in self.keys:
            return self.keys[path]
        if path in self.values and not isinstance(self._get(path), dict | list):
            return self.values[path]
        if path in self.keys:
            return self.keys[path]
        if path in self.values:
            return self.values[path]
        return None

    def _get(self, path: PathKey) -> Any:
        node = self.data
        for seg in path:
            node = node[seg]
        return node


def _mark(m: yaml.Mark) -> Mark:
    return Mark(m.line + 1, m.column + 1)


MAX_NODES = 100_000  # far beyond any real scenario; stops alias "billion laughs" expansion
MAX_DEPTH = 64


def _scalar_key(node: yaml.Node) -> Any:
    """The key exactly as the data holds it (str, int, float, bool, None), so paths match."""
    if isinstance(node, yaml.ScalarNode):
        value = yaml.SafeLoader("").construct_object(node)
        try:
            hash(value)
            return value
        except TypeError:
            pass
    return f"<{node.tag}>"


class _TooBig(Exception):
    pass


@dataclass
class _Budget:
    nodes: int = 0
    active: set[int] = field(default_factory=set)  # ids of nodes on the current path


def _walk(node: yaml.Node, path: PathKey, doc: Document, problems: list[Problem], budget: _Budget) -> None:
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise _TooBig(f"the document expands to more than {MAX_NODES} values (through aliases?)")
    if len(path) > MAX_DEPTH:
        raise _TooBig(f"the document nests deeper than {MAX_DEPTH} levels")
    if id(node) in budget.active:
        mark = _mark(node.start_mark)
        problems.append(Problem(doc.file, mark.line, mark.column, render_path(path), "an alias refers to itself"))
        return
    doc.values[path] = _mark(node.start_mark)
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    budget.active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            mark = _mark(key_node.start_mark)
            if key in seen:
                first = seen[key]
                problems.append(
                    Problem(
                        doc.file,
                        mark.line,
                        mark.column,
                        render_path((*path, key)),
                        f"duplicate key (first defined at line {first.line})",
                    )
                )
                continue
            seen[key] = mark
            doc.keys[(*path, key)] = mark
            _walk(value_node, (*path, key), doc, problems, budget)
    else:
        for i, item in enumerate(node.value):
            doc.keys[(*path, i)] = _mark(item.start_mark)
            _walk(item, (*path, i), doc, problems, budget)
    budget.active.discard(id(node))


def render_path(path: PathKey) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out += f"[{seg}]"
        else:
            text = {True: "true", False: "false", None: "null"}.get(seg, seg) if isinstance(seg, bool | None) else seg
            out += ("." if out else "") + str(text)
    return out


def parse(text: str, file: str) -> Document:
    """Parse YAML text; raise ValidationFailed with located problems on syntax errors."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise ValidationFailed([Problem(file, None, None, "", "invalid YAML: nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or ""
        if exc.context:
            opened = exc.context_mark
            where = f" (opened at line {opened.line + 1}, column {opened.column + 1})" if opened else ""
            what = f"{exc.context}{where}: {what}"
        raise ValidationFailed(
            [
                Problem(
                    file,
                    mark.line + 1 if mark else None,
                    mark.column + 1 if mark else None,
                    "",
                    f"invalid YAML: {what}",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationFailed([Problem(file, None, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    doc = Document(file=file, text=text, data=data)
    problems: list[Problem] = []
    if node is not None:
        try:
            _walk(node, (), doc, problems, _Budget())
        except _TooBig as exc:
            raise ValidationFailed([Problem(file, None, None, "", str(exc))]) from None
    if problems:
        raise ValidationFailed(problems)
    return doc


def load(path: Path) -> Document:
    try:
        size = path.stat().st_size
        if size > MAX_SCENARIO_BYTES:
            raise ValidationFailed([Problem(str(path), None, None, "", f"file is {size} bytes; the limit is 2 MiB")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValidationFailed([Problem(str(path), None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ValidationFailed([Problem(str(path), None, None, "", "is a directory, expected a YAML file")]) from None
    except PermissionError:
        raise ValidationFailed([Problem(str(path), None, None, "", "permission denied")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([Problem(str(path), None, None, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse(text, str(path))
