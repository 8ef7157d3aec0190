"""The sandbox directory a foreign tree (a tar archive, a directory) is restored into."""

from __future__ import annotations

from pathlib import Path

from engine.components.base import Component
from engine.components.configuration import ConfigurationComponent
from engine.components.volumes import VolumesComponent
from engine.errors import ComponentError

TREE_KINDS = ("volumes", "configuration")


def empty_target(component: Component, what: str) -> Path:
    """The component's directory, which must be the fresh, empty one the runtime made."""
    if not isinstance(component, VolumesComponent | ConfigurationComponent):
        raise ComponentError(f"{what} restores into a volumes or configuration component, not a {component.name}")
    target = component.path
    if any(target.iterdir()):
        raise ComponentError(f"{what}: the sandbox directory {target} is not empty; refusing to merge into it")
    return target
