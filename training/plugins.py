"""User code named in a config (``plugins: [my_module, pkg.sub]``): imported before the config is
validated, in the driver and in every Ray worker that runs stages, so their registrations exist
wherever a trial or a shared stage needs them.

Modules are looked up on ``PYTHONPATH`` (where Ray puts the shipped ones on a node), then in the
config's ``plugin_paths`` (its own directory by default). Those that are not
installed packages are shipped to the cluster's nodes with Ray's ``runtime_env`` (``py_modules``): a
sweep on a cluster needs no manual copying. Installed packages register through entry points instead
(``training.registry``) and need no ``plugins:`` line.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import sysconfig
from pathlib import Path

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ENV_PATHS = "PRUNETUNE_PLUGIN_PATHS"


class PluginError(ValueError):
    """A plugin that cannot be imported, phrased for the user (which entry, which module, why)."""


def check_names(modules: object) -> list[str]:
    if modules is None:
        return []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise PluginError(f"plugins: expected a list of module names (e.g. [my_scorer, mypkg.models]), got {modules!r}")
    for i, m in enumerate(modules):
        if not _MODULE.match(m):
            raise PluginError(f"plugins[{i}]: {m!r} is not a module name (dotted Python identifiers, no '.py')")
    return list(modules)


def load_plugins(modules: object, search_paths: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import each module (once per process); ``search_paths`` (the config's directory) are searched after
    ``sys.path``, so on a node the copy Ray shipped wins. Raises ``PluginError`` naming the failing entry."""
    names = check_names(modules)
    for p in search_paths:
        if p and p not in sys.path:
            sys.path.append(p)
    for i, name in enumerate(names):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                where = ", ".join(p for p in search_paths if p)
                looked = f"looked on PYTHONPATH, then in {where}" if where else "looked on PYTHONPATH"
                raise PluginError(f"plugins[{i}]: no module named {name!r} ({looked})") from None
            raise PluginError(f"plugins[{i}] {name!r} failed to import: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # the user's module raised while importing
            raise PluginError(f"plugins[{i}] {name!r} failed to import: {type(exc).__name__}: {exc}") from None
    return names


def shippable_paths(modules: list[str]) -> list[str]:
    """The files or package directories of already-imported plugin modules that live outside the
    installed packages (those must reach the nodes through ``runtime_env``)."""
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    from .registry import BUILTIN_PACKAGES
    out: list[str] = []
    for name in modules:
        top = name.split(".")[0]
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).resolve()
        root = path.parent if path.name == "__init__.py" else path
        if top in BUILTIN_PACKAGES or any(root.is_relative_to(p) for p in installed):
            continue
        if str(root) not in out:
            out.append(str(root))
    return out
