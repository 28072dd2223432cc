"""Imports every built-in method's registration (torch-free): the scorers' modules, then the methods
whose mask comes from a plan of stages (``pruning.methods`` holds the plans; they load on first use)."""
from __future__ import annotations

from . import scorers  # noqa: F401 (each scorer module registers its method)
from .registry import IMP_ABLATIONS, NO_ABLATIONS, MethodOptions, register_method

_PLANS = "pruning.methods"


class _NoOptions(MethodOptions):
    """Settings live in the shared prune fields (and its own section, where it has one)."""


register_method("dense", plan=f"{_PLANS}:plan_dense", ablations=NO_ABLATIONS)
register_method("imp", plan=f"{_PLANS}:plan_imp", ablations=IMP_ABLATIONS)
register_method("pdp", plan=f"{_PLANS}:plan_pdp", ablations=NO_ABLATIONS, trains=True)
register_method("distilled_imp", plan=f"{_PLANS}:plan_distilled_imp", ablations=IMP_ABLATIONS, small_set=True)
register_method("imp_subset", plan=f"{_PLANS}:plan_imp_subset", ablations=IMP_ABLATIONS, small_set=True)
register_method("wanda", plan=f"{_PLANS}:plan_post_training", ablations=NO_ABLATIONS, needs_data=True)
register_method("sparsegpt", plan=f"{_PLANS}:plan_post_training", ablations=NO_ABLATIONS, needs_data=True)
