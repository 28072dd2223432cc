"""Imports every built-in method's registration (torch-free): the scorers' modules, then the methods
whose mask comes from a plan of stages (``pruning.methods`` holds the plans; they load on first use)."""
from __future__ import annotations

from . import scorers  # noqa: F401 (each scorer module registers its method)
from .registry import IMP_ABLATIONS, NO_ABLATIONS, register_method

_PLANS = "pruning.methods"


register_method("dense", plan=f"{_PLANS}:plan_dense", ablations=NO_ABLATIONS, description=(
    "no pruning (sparsity 0)"))
register_method("imp", plan=f"{_PLANS}:plan_imp", ablations=IMP_ABLATIONS, description=(
    "iterative magnitude pruning with rewinding (OpenLTH semantics): level 0 trains dense and keeps "
    "θ_k (`rewind_step`); each level prunes `prune_fraction` of the remaining weights by abs(θ) of "
    "the previous level's trained net, resets survivors to θ_k (`rewind`: the whole state by "
    "default) and retrains from iteration k (LR schedule at k; `rewind_optimizer`: a fresh optimizer as "
    "OpenLTH by default, or the state saved at k); density 0.8^L, the last level lands exactly on the target. Levels "
    "are stages (`imp_level`), shared by every target and resumed after a kill"))
register_method("pdp", plan=f"{_PLANS}:plan_pdp", ablations=NO_ABLATIONS, trains=True, description=(
    "train-time, parameter-free differentiable pruning (Cho et al. 2023): soft mask sigmoid((w² − "
    "t²)/τ) per layer with t the midpoint between the smallest kept and largest pruned abs(w); dense "
    "warm-up, per-layer budgets from one global sort, ramped; hard mask at the end. `prune.pdp`: "
    "`tau`, `tau_mode` (absolute or relative to t²), `epsilon`, `warmup_fraction`, "
    "`ramp_end_fraction`, `structure` (`unstructured`, `nm` with `n`/`m`, e.g. 2:4, 1:4, `channel`, "
    "or `head`: whole attention heads of a `vit`, their q/k/v rows under one soft mask, every other "
    "layer by channel)"))
register_method("distilled_imp", plan=f"{_PLANS}:plan_distilled_imp", ablations=IMP_ABLATIONS, small_set=True, description=(
    "Distilled Pruning: IMP whose per-level training (`prune.small_train`) runs on a distilled set "
    "(`prune.distill`, DM by default; by default the authors' 1000 epochs, SGD 0.01, batch 512, DSA drawn per "
    "sample), rewinding only the Conv/Linear weights to θ_0 (`rewind: weights`, the authors' code); the final "
    "mask is trained on the real data"))
register_method("imp_subset", plan=f"{_PLANS}:plan_imp_subset", ablations=IMP_ABLATIONS, small_set=True, description=(
    "the control arm: the same on a random real subset of the same size"))
register_method("wanda", plan=f"{_PLANS}:plan_post_training", ablations=NO_ABLATIONS, needs_data=True, description=(
    "post-training (Sun et al. 2024): the dense net trains to the end, then each layer in turn keeps "
    "the highest abs(W_ij)·‖X_j‖₂ (X_j: input feature j over `examples_per_class` calibration "
    "examples, conv inputs unfolded into patches) per output row (`post.group: row`) or per layer; "
    "or N:M (`post.structure: nm`, `n`, `m`)"))
register_method("sparsegpt", plan=f"{_PLANS}:plan_post_training", ablations=NO_ABLATIONS, needs_data=True,
                version=2, description=(  # 2: block-wide mask selection (was an equal share per row)
    "post-training (Frantar & Alistarh 2023): per layer, H = 2XXᵀ/n + λI (λ = `post.damp` · mean "
    "diag); columns in blocks of `post.blocksize` (128), each pruned weight's error spread over the "
    "columns not yet visited through the Cholesky factor of H⁻¹ (OBS), so the surviving weights "
    "change; adaptive mask: each block prunes the lowest w²/[H⁻¹]_jj² over all its rows together, "
    "as the paper and IST-DASLab/sparsegpt (`post.selection: block`; `row`: an equal share per "
    "row), or N:M. Deliberate difference: each block prunes exactly its column share of the layer's "
    "count, the reference int(block·s) + 1"))
