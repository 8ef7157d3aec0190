"""One tiny registry type, used for every extension point.

Component kinds, runtimes, faults, repositories and assertions are each looked up by the
name users write in YAML. Keeping a single implementation means adding a new kind is one
module plus one ``register`` line, and an unknown name always fails the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Maps user-facing names to plugin classes."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        if item.name in self._items:
            raise ValueError(f"{self.what} {item.name!r} is registered twice")
        self._items[item.name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise KeyError(f"unknown {self.what} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[k] for k in sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items
