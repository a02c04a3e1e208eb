"""Name -> factory registries. An unknown name gets an error that lists the valid ones."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from gankit.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """A ' (did you mean X?)' hint for a mistyped name, or ''."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """A named collection of factories, e.g. datasets or losses."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "", replace: bool = False) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            self._help[name] = help or (getattr(item, "__doc__", "") or "").strip().split("\n")[0]
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; valid: {valid}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> Iterator[tuple[str, str]]:
        for name in self.names():
            yield name, self._help[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items
