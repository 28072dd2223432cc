"""SNIP (Lee et al. 2019): connection sensitivity abs(dL/dm) at the current mask; and its iterative
forms, iterative SNIP and FORCE (de Jorge et al. 2021), at the end of this module.

The weight is reparametrised as ``w * m`` with ``m`` a float64 tensor of ones that requires grad, and
the model is run through ``torch.func.functional_call`` with those products substituted for the
prunable weights (nothing is patched globally and the model's own parameters are never replaced).
``dL/dm = w * dL/d(w*m)`` at m = 1, so the score equals abs(theta * dL/dtheta). The scorer receives
the weights with the current mask already applied, so a pruned weight (theta = 0) scores 0; the
selection keeps it pruned anyway (it sets pruned entries to -inf).

L is the cross-entropy (batch mean) summed over the scoring batches, as in the reference
implementations, whose gradients accumulate over batches. The reference code further divides by the
sum of all scores; that positive constant changes no ranking, so it is left out.

``scoring_mode`` below is shared with GraSP: it puts the model in the requested BatchNorm mode for the
duration of scoring and then restores both the train/eval flags and every buffer, so BatchNorm running
statistics are unchanged by scoring in either mode (an iterative round never sees statistics updated
by the previous round's scoring batches).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Literal

from pydantic import Field

from ..registry import MethodOptions, Scorer, register_method

if TYPE_CHECKING:  # annotations only: the module imports torch inside the functions that compute
    import torch
    from torch import nn


BNMode = Literal["eval", "train"]
BN_MODES = ("eval", "train")


class BNModeOptions(MethodOptions):
    bn_mode: BNMode = Field("eval", description="BatchNorm mode while scoring: eval (running statistics) or "
                            "train (the scoring batch's statistics; the running ones are restored afterwards); "
                            "eval as in Synaptic-Flow's SNIP and GraSP")


class TrainBNModeOptions(BNModeOptions):
    bn_mode: BNMode = Field("train", description="BatchNorm mode while scoring: train (the scoring batch's "
                            "statistics, as the authors' code scores; the running ones are restored afterwards) "
                            "or eval (running statistics)")


def check_bn_mode(bn_mode: str) -> str:
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; allowed: {', '.join(BN_MODES)}")
    return bn_mode


@contextmanager
def scoring_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """Run the body with ``model`` in train (``bn_mode="train"``) or eval mode, then restore it.

    Every module's ``training`` flag and every buffer (BatchNorm running mean/var, batch counters)
    is put back afterwards, so scoring leaves the model exactly as it found it.
    """
    import torch
    check_bn_mode(bn_mode)
    flags = [(m, m.training) for m in model.modules()]
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    model.train(bn_mode == "train")
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def batch_to(x: torch.Tensor, y: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs cast to the scoring dtype (float64) and device of ``like``; labels as int64 there."""
    import torch
    return x.to(device=like.device, dtype=like.dtype), y.to(device=like.device, dtype=torch.long)


@register_method("snip", count_rule="complement_floor", options=BNModeOptions, was={"bn_mode": "bn_mode"},
                 description=(
    "abs(θ ⊙ ∂L/∂θ) = abs(∂L/∂m) at m = 1, summed over batches; BatchNorm in eval mode, as "
    "Synaptic-Flow's SNIP"))
class SNIPScorer(Scorer):
    """SNIP (Lee et al. 2019): abs(dL/dm) at m = 1 = abs(theta * dL/dtheta), L = summed batch-mean CE."""

    needs_data = True
    default_rounds = 1

    def score(self, model, params, mask, batches):
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call
        names = list(params)
        weights = {n: params[n].detach() for n in names}
        # The gate is the mask variable itself, at its current value: with masked weights (SNIP) the products
        # are unchanged and a pruned weight scores 0; with original weights (FORCE) it scores theta * dL/dw.
        gates = {n: mask[n].to(device=weights[n].device, dtype=weights[n].dtype).requires_grad_(True)
                 for n in names}
        like = weights[names[0]]
        total = {n: torch.zeros_like(gates[n]) for n in names}
        with scoring_mode(model, self.bn_mode):
            for x, y in batches:
                x, y = batch_to(x, y, like)
                substituted = {n: weights[n] * gates[n] for n in names}
                out = functional_call(model, substituted, (x,))
                loss = F.cross_entropy(out, y)
                grads = torch.autograd.grad(
                    loss, [gates[n] for n in names], allow_unused=True, materialize_grads=True
                )
                for n, g in zip(names, grads):
                    total[n] += g
        return {n: total[n].abs().to(torch.float64) for n in names}


@register_method("iter_snip", count_rule="floor", version=2, options=TrainBNModeOptions, was={"bn_mode": "bn_mode"},
                 description=(
    "iterative SNIP (de Jorge et al. 2021): SNIP re-scored on the masked net each round; a pruned "
    "weight stays pruned; 100 rounds; BatchNorm in train mode, as the authors' code (naver/force)"))
class IterativeSNIPScorer(SNIPScorer):
    """Iterative SNIP (de Jorge et al. 2021, "Progressive Skeletonization"): SNIP re-scored on the masked
    net over rounds (exponential schedule); a weight once pruned stays pruned."""

    default_rounds = 100


@register_method("force", count_rule="floor", version=2, options=TrainBNModeOptions, was={"bn_mode": "bn_mode"},
                 description=(
    "FORCE (de Jorge et al. 2021): abs(θ ⊙ ∂L/∂w) of every weight at the masked net w = θ ⊙ m, "
    "pruned weights included (scored at their original θ), selection over all weights each round, so "
    "a pruned weight can come back; 100 rounds; BatchNorm in train mode, as the authors' code "
    "(naver/force)"))
class FORCEScorer(SNIPScorer):
    """FORCE (de Jorge et al. 2021): connection sensitivity abs(theta * dL/dw) of every weight, pruned
    ones included, at the current masked net w = theta * m; each round selects among all weights, so a
    weight pruned earlier can come back."""

    default_rounds = 100
    revives = True
