"""Name -> thing registries that users extend the same way the built-ins are registered.

A registry knows where each entry came from (built in, or which plugin module), and finds names it
does not hold among installed packages' entry points (group ``prunetune.<kind>s``): the entry point
named like the requested thing is imported, and importing it registers it. So a config that uses only
built-ins imports no plugin, and a plugin that is installed needs no line in the config.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

BUILTIN_PACKAGES = frozenset({"training", "pruning", "distill", "search", "pipelines"})


def origin_of(module: str | None) -> str:
    """'built-in' for this project's packages, else 'plugin <module>' (what ``prunetune list`` shows)."""
    top = (module or "").split(".")[0]
    return "built-in" if top in BUILTIN_PACKAGES else f"plugin {module}"


class Registry(Generic[T]):
    """``entry_points``: the group searched for a name not registered yet. ``builtins``: a module whose
    import registers the built-in entries, imported on the first lookup (so declaring a registry never
    imports its implementations, and no import order can leave it half-filled)."""

    def __init__(self, kind: str, entry_points: str | None = None, builtins: str | None = None) -> None:
        self.kind = kind
        self.entry_points = entry_points
        self.builtins = builtins
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded_builtins = builtins is None

    def register(self, name: str, origin: str | None = None) -> Callable[[T], T]:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string without surrounding spaces, got {name!r}")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self._origin[name]}, and now "
                                 f"{origin or origin_of(getattr(obj, '__module__', None))})")
            self._items[name] = obj
            self._origin[name] = origin or origin_of(getattr(obj, "__module__", None))
            return obj

        return deco

    def _ensure_builtins(self) -> None:
        if not self._loaded_builtins:
            self._loaded_builtins = True
            importlib.import_module(self.builtins)

    def _from_entry_point(self, name: str) -> None:
        if self.entry_points is None or name in self._items:
            return
        for ep in entry_points(self.entry_points):
            if ep.name == name:
                load_entry_point(ep, self.kind)
                return

    def get(self, name: str) -> T:
        self._ensure_builtins()
        self._from_entry_point(name)
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}") from None

    def require(self, name: str, hint: str = "") -> str:
        """``name`` if it is registered (or an installed plugin registers it), else a ``ValueError`` that
        lists what is (a validator's message; a plugin that fails to import is named)."""
        try:
            if name in self:
                return name
        except ImportError as exc:
            raise ValueError(str(exc)) from None
        raise ValueError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}{hint}")

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def names(self, installed: bool = False) -> list[str]:
        """Registered names; with ``installed``, every entry point of the group is imported first."""
        self._ensure_builtins()
        if installed and self.entry_points is not None:
            for ep in entry_points(self.entry_points):
                if ep.name not in self._items:
                    load_entry_point(ep, self.kind)
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure_builtins()
        self._from_entry_point(name)
        return name in self._items


def load_attr(ref: Any) -> Any:
    """A "module:attr" reference imported (a lazily declared built-in), or the object itself."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def entry_points(group: str) -> list:
    from importlib.metadata import entry_points as _eps

    return list(_eps(group=group))


def load_entry_point(ep, kind: str) -> None:
    """Import an entry point (its import registers it); a broken plugin says which one it is."""
    try:
        ep.load()
    except Exception as exc:
        raise ImportError(f"the {kind} plugin {ep.name!r} (entry point {ep.value!r} of "
                          f"{getattr(ep.dist, 'name', '?')}) failed to import: {type(exc).__name__}: {exc}") from exc
