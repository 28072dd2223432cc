"""``prunetune list``: every method, model, dataset and distiller, where it comes from (built in, or
which plugin) and its options with their defaults. Read from the registries, so a plugin shows up the
moment it is installed (entry points) or named with ``--plugin``."""
from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .cli_errors import fail

KINDS = ("methods", "models", "datasets", "distillers")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="list every method, model, dataset and distiller, with its options",
                              description="Every registered method, model, dataset and distiller: where it comes "
                              "from (built-in or which plugin) and its options with their defaults.")
    p.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import this module first (repeatable)")
    p.set_defaults(func=cmd_list)
    return p


def option_rows(model: type[BaseModel] | None) -> list[tuple[str, Any, str]]:
    """(name, default, description) of each option ("required" where there is no default)."""
    from .config_reference import field_default

    rows = []
    for name, info in (model.model_fields if model is not None else {}).items():
        default = field_default(info)
        rows.append((name, "required" if default is PydanticUndefined else default, info.description or ""))
    return rows


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
    from training.registry import load_attr

    return [(n, DISTILLER_DECLS.origin(n), "", load_attr(DISTILLER_DECLS.get(n)))
            for n in DISTILLER_DECLS.names(installed=True)]


def cmd_list(args: argparse.Namespace) -> int:
    from training.plugins import PluginError, load_plugins

    try:
        load_plugins(args.plugin or [], ["."])
        for kind in [args.kind] if args.kind else KINDS:
            print(f"{kind}:")
            for name, origin, summary, options in entries(kind):
                print(f"  {name}  [{origin}]" + (f"  {summary}" if summary else ""))
                for option, default, doc in option_rows(options):
                    print(f"      {option} = {default!r}" + (f"  # {doc}" if doc else ""))
    except (PluginError, ImportError) as exc:
        return fail(str(exc))
    return 0
