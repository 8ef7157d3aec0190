"""Heavy optional modules, imported on first use instead of at import time.

Why: every drproof process imports every component kind and fault (the registries
need their names), and faiss with numpy alone is about 30 MB of RSS and a tenth of a
second, paid by a volume backup that never touches a vector; redis (with
redis.asyncio) and psycopg2 cost a fifth of a second more, paid by ``drproof validate``
and ``--help``, which connect to nothing. A module proxy keeps the
``faiss.read_index(...)`` spelling at the call sites and loads the real module the
first time an attribute is asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for a module until an attribute of it is first needed."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        try:
            return getattr(self._module, attribute)
        except AttributeError:
            # A submodule its package does not import itself (``psycopg2.errors``), spelled as
            # the call sites spell it after ``import psycopg2.errors``.
            if attribute.startswith("_"):
                raise
            try:
                return importlib.import_module(f"{self._name}.{attribute}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {self._name!r} has no attribute {attribute!r}") from None

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"


def lazy(name: str) -> Any:
    """A stand-in for module ``name``; typed ``Any``, as the call sites use it like the module."""
    return LazyModule(name)
