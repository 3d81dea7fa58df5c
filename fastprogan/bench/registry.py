"""Name -> factory registries: the providers and problems the bench measures.

Each later fast path adds itself with one ``register`` call (docs/benchmarks.md shows the entries), so the
harness never needs editing to measure something new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    description: str


class Registry(Generic[T]):
    """An ordered name -> factory map; the order of registration is the order of measurement."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", "what it is")`` over the factory."""

        def add(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, description)
            return factory

        return add

    def __getitem__(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))

    def names(self) -> list[str]:
        return list(self._entries)
