"""The base of every model a user writes in YAML, shared by scenarios, steps and backup-config.

Its own module so that step kinds, the scenario schema and the standalone engine's
configuration can all build on it without importing one another.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="Lower-case letters, digits, - and _.")]


class Strict(BaseModel):
    # defer_build: a model's validator is built when first used, not at import. Every kind's
    # models are defined at import (the registries need them), and building them all cost
    # `drproof validate` about a third of its CPU; a scenario uses a few. Safe with threads
    # from pydantic 2.14, whose rebuild takes a lock (hence the floor in pyproject.toml).
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=False)

    # The YAML key or literal value that selects this model inside a union; used to
    # find the model for a precise "unknown key" message.
    drproof_tag: ClassVar[str | None] = None


def literal(value: str) -> Any:
    """``Literal[value]`` for a value known only at run time."""
    return Literal.__getitem__(value)


def tagged(model: type[Strict], tag: str) -> type[Strict]:
    model.drproof_tag = tag
    return model


def none_is_empty(value: Any) -> Any:
    """`backup:` with nothing after it means `backup: {}`."""
    return {} if value is None else value
