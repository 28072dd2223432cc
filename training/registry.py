"""A tiny name -> factory registry, so a new model or dataset is one file plus one line."""
from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``declared``: the names a config may use, known without importing the implementations (see
    ``training.settings``); registering any other name is a programming error caught at import."""

    def __init__(self, kind: str, declared: Iterable[str] | None = None) -> None:
        self.kind = kind
        self.declared = frozenset(declared) if declared is not None else None
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if self.declared is not None and name not in self.declared:
            raise ValueError(f"{self.kind} {name!r} is registered but not declared")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
