"""Built-in pruning-at-init scorers: one module per method, each registering itself
(``pruning.registry.register_method``). Every module in this package is imported; none imports torch
at import time, so discovering them costs no torch."""
import importlib
import pkgutil

from .base import SCORERS, Scorer, ScoringBatches

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["SCORERS", "Scorer", "ScoringBatches"]
