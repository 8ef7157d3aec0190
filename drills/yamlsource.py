"""YAML loading that remembers where every key and value came from.

Validation errors are only useful if they point at the line to fix, so the loader keeps
PyYAML's marks for every key and value, keyed by their path in the document. It also
rejects duplicate keys, which PyYAML would otherwise silently resolve by keeping the
last one — a typo'd copy of a check would then quietly replace the original.
"""

from __future__ import annotations

import re
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


MAX_NODES = 50_000  # far beyond any real scenario (a 1,000-component config is ~10k); stops alias "billion laughs" expansion and bounds the CPU any 2 MiB input costs (about 1.3 s)
MAX_DEPTH = 64


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 6x faster on 2 MiB


class _Loader(_Base):  # type: ignore[misc]
    """PyYAML's safe loader whose constructors never raise anything but a located YAML error.

    Why: a tag with a value it cannot hold (``!!bool maybe``, ``!!int abc``,
    ``!!timestamp nope``, an integer of more than 4,300 digits) made SafeConstructor raise
    KeyError, ValueError or AttributeError: a traceback and exit 1 where a user needs the
    line to fix (seen by fuzzing 5,000 mutated files).
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError, RecursionError) as exc:
            shown = node.value if isinstance(node.value, str) else f"a {type(node).__name__}"
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            why = str(exc) if isinstance(exc, ValueError) and "limit" in str(exc) else "not a valid value for it"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as {node.tag.replace('tag:yaml.org,2002:', '!!')}: {why}", node.start_mark
            ) from None


def _scalar_key(node: yaml.Node) -> Any:
    """The key exactly as the data holds it (str, int, float, bool, None), so paths match."""
    if isinstance(node, yaml.ScalarNode):
        try:
            value = yaml.SafeLoader("").construct_object(node)
            hash(value)
            return value
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, yaml.YAMLError):
            return node.value  # a key the data cannot hold either: parsing reports it
    return f"<{node.tag}>"


class WrittenFloat(float):
    """A float that keeps the decimal it was written as (``0.10000000000000001``, not ``0.1``).

    Why: a check's ``{equals: 0.1}`` is compared with a database's exact numeric, and a
    binary float is not what the user wrote (``9007199254740993.0`` is read as ...992,
    ``0.10000000000000001`` as ``0.1``): compared as the float, one number would equal
    its neighbour. Everything else sees a float.
    """

    written: str

    def __new__(cls, value: float, written: str) -> WrittenFloat:
        made = super().__new__(cls, value)
        made.written = written
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (WrittenFloat, (float(self), self.written))

    @classmethod
    def parse(cls, written: str) -> WrittenFloat:
        """For ``json.loads(parse_float=...)``: a JSON number with a fraction or an exponent."""
        return cls(float(written), written)


_DECIMAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _construct_float(loader: Any, node: yaml.ScalarNode) -> float:
    """A YAML float, as a :class:`WrittenFloat` when written as a plain decimal (not ``.inf``, ``1_0.5``, ``1:30.5``)."""
    value: float = yaml.SafeLoader.construct_yaml_float(loader, node)
    written = str(node.value)
    return WrittenFloat(value, written) if _DECIMAL.match(written) else value


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _represent_float(dumper: Any, data: WrittenFloat) -> Any:
    """Dumped as written: a parsed document dumps back to the same numbers (PyYAML looks up exact types)."""
    return dumper.represent_scalar("tag:yaml.org,2002:float", data.written)


for _representer in (yaml.representer.SafeRepresenter, yaml.representer.Representer):
    _representer.add_representer(WrittenFloat, _represent_float)


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
    loader: Any = None
    doc = Document(file=file, text=text, data=None)
    problems: list[Problem] = []
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is not None:
            # Counted and located before anything is built: an alias bomb or a huge
            # document is refused at the cost of walking its nodes, not of building it.
            _walk(node, (), doc, problems, _Budget())
            doc.data = loader.construct_document(node)
    except _TooBig as exc:
        raise ValidationFailed([Problem(file, None, None, "", str(exc))]) from None
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
