"""The ``repository:`` mapping of scenarios and backup-config.yaml, built from the backend registry.

Each registered backend (engine.repository) contributes its settings model; this module
adds the ``type:`` key that selects it and whatever the file kind adds (a drill's offsite
copy and throwaway encryption), and returns the discriminated union. A backend
registered in the engine is therefore valid in both files, documented, and opened the
same way by drills and the standalone engine.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Field, create_model

from drills.strict import Strict, literal, tagged
from engine.repository import repositories


def backend_models(
    name: str, common: type[Strict] = Strict, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, type[Strict]]:
    """One model per registered backend: ``type:``, the backend's settings and ``common``'s keys.

    ``overrides`` replaces fields of one backend's model for this file kind, e.g. a path
    that is optional in a drill but required in backup-config.yaml.
    """
    models: dict[str, type[Strict]] = {}
    for backend in repositories:
        fields: dict[str, Any] = {
            "type": (literal(backend.name), Field(description=f"`{backend.name}`: {_what(backend)}"))
        }
        fields.update((overrides or {}).get(backend.name, {}))
        model = create_model(
            f"{backend.name.capitalize()}{name}",
            __base__=(common, backend.Settings),
            __doc__=backend.__doc__,
            **fields,
        )
        models[backend.name] = tagged(model, backend.name)  # type: ignore[arg-type]
    return models


def _what(backend: Any) -> str:
    """What the backend stores into, from its module docstring's first sentence ("A backup repository in ...")."""
    doc = sys.modules[backend.__module__].__doc__ or ""
    first = " ".join(doc.strip().split("\n\n", 1)[0].split()).replace("``", "`")
    return first.removeprefix("A backup repository in ").rstrip(".")


def _default_type(value: Any) -> Any:
    """A mapping without ``type:`` is a local repository, as it always was."""
    if value is None:
        return {"type": "local"}
    if isinstance(value, dict) and "type" not in value:
        return {**value, "type": "local"}
    return value


def union(models: dict[str, type[Strict]]) -> Any:
    """The annotation of a ``repository:`` key taking any of ``models`` (by ``type:``, default local)."""
    return Annotated[
        Union[tuple(models.values())],  # noqa: UP007
        Discriminator("type"),
        BeforeValidator(_default_type),
    ]
