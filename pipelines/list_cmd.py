"""``prunetune list``: every method, model, dataset and distiller, where it comes from (built in, or
which plugin) and its options with their defaults. Read from the registries, so a plugin shows up the
moment it is installed (entry points) or named with ``--plugin``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

KINDS = ("methods", "models", "datasets", "distillers")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="list every method, model, dataset and distiller, with its options",
                              description="Every registered method, model, dataset and distiller: where it comes "
                              "from (built-in or which plugin) and its options with their defaults.")
    p.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import this module first (repeatable)")
    p.set_defaults(func=cmd_list)
    return p


def _options(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    out = []
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            default: Any = info.default_factory()
        elif info.default is PydanticUndefined:
            default = "required"
        else:
            default = info.default
        out.append(f"      {name} = {default!r}" + (f"  # {info.description}" if info.description else ""))
    return out


def _resolve(options: Any) -> type[BaseModel] | None:
    if isinstance(options, str):  # a built-in distiller's "module:Class", imported only here
        module, _, attr = options.partition(":")
        return getattr(importlib.import_module(module), attr)
    return options


def entries(kind: str) -> list[tuple[str, str, str, type[BaseModel] | None]]:
    """(name, origin, one-line summary, options model) for every registered entry of a kind."""
    if kind == "methods":
        from pruning.registry import METHODS

        rows = []
        for n in METHODS.names(installed=True):
            spec = METHODS.get(n)
            caps = [c for c, on in (("at init", spec.at_init), ("needs data", spec.needs_data),
                                    ("trains", spec.trains), ("small set", spec.small_set)) if on]
            caps.append("ablations: " + (", ".join(sorted(spec.ablations)) or "none"))
            if spec.structured:
                caps.append("structured: " + ", ".join(sorted(spec.structured)))
            if spec.version > 1:
                caps.append(f"version {spec.version}")
            rows.append((n, METHODS.origin(n), "; ".join(caps), spec.options))
        return rows
    if kind in ("models", "datasets"):
        from training.settings import DATASET_DECLS, MODEL_DECLS

        reg = MODEL_DECLS if kind == "models" else DATASET_DECLS
        rows = [(n, reg.origin(n), "", reg.get(n).options) for n in reg.names(installed=True)]
        if kind == "models":
            rows.append(("tv:<name>", "torchvision", "any torchvision classification model", None))
        return rows
    from distill.config import DISTILLER_DECLS

    return [(n, DISTILLER_DECLS.origin(n), "", _resolve(DISTILLER_DECLS.get(n)))
            for n in DISTILLER_DECLS.names(installed=True)]


def cmd_list(args: argparse.Namespace) -> int:
    from training.plugins import PluginError, load_plugins

    try:
        load_plugins(args.plugin or [], ["."])
        for kind in [args.kind] if args.kind else KINDS:
            print(f"{kind}:")
            for name, origin, summary, options in entries(kind):
                print(f"  {name}  [{origin}]" + (f"  {summary}" if summary else ""))
                for line in _options(options):
                    print(line)
    except (PluginError, ImportError) as exc:
        print(f"prunetune: error: {exc}", file=sys.stderr)
        return 2
    return 0
