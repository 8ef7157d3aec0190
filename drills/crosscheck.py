"""What the cross-reference pass of validation knows while it walks a scenario.

Pass 2 of validation runs on the raw document, defensively, so that its problems are
reported even when pass 1 found others: users get every problem in one go. Each step
kind and each assertion checks its own references (a restore names an earlier backup, an
rto has an objective) through the :class:`CheckContext` it is handed, so a new kind brings
its own checks and validation itself has no list of kinds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from drills.yamlsource import Document, PathKey, render_path
from engine.components import component_kinds
from engine.errors import Problem


def problem(doc: Document, path: PathKey, message: str, anchor: PathKey | None = None, at_key: bool = False) -> Problem:
    """A problem at ``path`` (or the nearest located ancestor of ``anchor``) of ``doc``."""
    mark = None
    probe = anchor if anchor is not None else path
    while mark is None:
        mark = doc.locate(probe, prefer_key=at_key)
        if mark is None and not probe:
            break
        if mark is None:
            probe = probe[:-1]
    message = message.replace("; (", " (")  # no suggestion: keep the sentence tidy
    return Problem(doc.file, mark.line if mark else None, mark.column if mark else None, render_path(path), message)


def suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def str_list(value: Any) -> list[tuple[int, str]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, str)] if isinstance(value, list) else []


def built_on(kind: str, base: str) -> bool:
    """Whether component kind ``kind`` is ``base`` or built on it (an unknown kind counts: it is reported on its own)."""
    if kind not in component_kinds:
        return True
    return any(c.__dict__.get("name") == base for c in component_kinds.get(kind).__mro__)


def _foreign_kind(spec: dict[str, Any]) -> str | None:
    from engine.foreign import foreign_formats

    kind, fmt = spec.get("kind"), spec.get("format")
    if isinstance(kind, str):
        return kind
    return foreign_formats.get(fmt).kinds[0] if isinstance(fmt, str) and fmt in foreign_formats else None


@dataclass
class CheckContext:
    """The scenario as the cross-reference pass has read it so far, and the problems found.

    Steps are checked in order, so ``backups`` holds the backups taken *before* the step
    being checked; assertions are checked after every step.
    """

    doc: Document
    components: dict[str, Any]
    kinds: dict[str, Any]
    objectives: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    steps_seen: set[str] = field(default_factory=set)  # step kinds met so far
    # A restore test's `source:` (raw), when the scenario has one. Its components are known
    # only when it lists them; otherwise they are whatever the chosen set holds, found at
    # run time, and names cannot be checked here.
    source: dict[str, Any] | None = None

    @classmethod
    def of(cls, doc: Document) -> CheckContext:
        data = as_dict(doc.data)
        comps = dict(as_dict(as_dict(data.get("stack")).get("components")))
        kinds = {str(n): as_dict(c).get("kind") for n, c in comps.items()}
        source = as_dict(data["source"]) if "source" in data else None
        for _, name in str_list(as_dict(source).get("components")):
            comps.setdefault(name, None)
            kinds.setdefault(name, None)  # known from the backup only at run time
        for name, spec in as_dict(as_dict(source).get("backups")).items():
            comps.setdefault(str(name), None)
            kinds.setdefault(str(name), _foreign_kind(as_dict(spec)))
        ctx = cls(doc=doc, components=comps, kinds=kinds, objectives=as_dict(data.get("objectives")), source=source)
        if source is not None:
            ctx.backups.append("source")
        return ctx

    @property
    def names_unknown(self) -> bool:
        """Whether component names cannot be checked: a source restoring every component of its set."""
        if self.source is None or isinstance(self.source.get("backups"), dict):
            return False
        return not isinstance(self.source.get("components"), list)

    @property
    def foreign(self) -> bool:
        """Whether the source is backups other tools made (no repository, no fingerprints)."""
        return self.source is not None and "backups" in self.source

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.components]

    def stateless(self, name: str) -> bool:
        """Whether component ``name`` is of a kind that holds no data (a service)."""
        kind = self.kinds.get(name)
        return isinstance(kind, str) and kind in component_kinds and not component_kinds.get(kind).stateful

    def add(self, path: PathKey, message: str, anchor: PathKey | None = None) -> None:
        self.problems.append(problem(self.doc, path, message, anchor))

    def bad_component(self, path: PathKey, name: str, what: str = "component") -> None:
        if self.names_unknown:
            return
        names = self.names
        self.add(path, f"no {what} named {name!r}; {suggest(name, names)}(components: {', '.join(names)})")

    def check_components(self, path: PathKey, value: Any) -> None:
        """Every name listed at ``path`` is a component of the stack."""
        for j, c in str_list(value):
            if c not in self.components:
                self.bad_component((*path, j), c)

    def check_component(self, path: PathKey, value: Any, what: str = "component") -> None:
        if isinstance(value, str) and value not in self.components:
            self.bad_component(path, value, what)

    def check_component_of(self, path: PathKey, value: Any, base: str, label: str) -> None:
        """``value`` names a component of the stack whose kind is ``base`` or built on it.

        Why one place: checks and steps that talk to a server (a SQL query, a Redis
        command) must refuse a target of another kind at validation, not at run time.
        """
        self.check_component(path, value)
        kind = self.kinds.get(value) if isinstance(value, str) else None
        if isinstance(value, str) and value in self.components and isinstance(kind, str) and not built_on(kind, base):
            self.add(path, f"{value!r} is a {kind}, not a {label} component")

    def check_backup_ref(self, path: PathKey, ref: Any, what: str = "earlier backup step") -> None:
        """A named backup must be one taken before."""
        if isinstance(ref, str) and ref not in self.backups:
            self.add(
                path,
                f"no {what} named {ref!r}; {suggest(ref, self.backups)}"
                f"(earlier backups: {', '.join(self.backups) or 'none'})",
            )
