"""Sanity-check ablations of pruning at initialisation (Frankle et al. 2021, "Missing the Mark").

* ``shuffle_mask``: keep how many weights each layer has, forget which (a random permutation of each
  layer's mask). If accuracy survives, the method only chose per-layer densities.
* ``invert_scores`` / ``InvertedScorer``: keep the lowest-scoring weights instead of the highest.
* ``reinitialize``: train the mask from fresh weights instead of the ones it was found on.
"""
from __future__ import annotations

from typing import Callable, Literal, Mapping

import torch
from torch import nn

from .mask import Mask
from .scorers.base import Scorer


def shuffle_mask(mask: Mask, seed: int, scope: Literal["layerwise", "global"] = "layerwise") -> Mask:
    """Randomly permute the mask: within each layer (default, per-layer counts kept exactly) or over
    all layers at once (``global``: only the total count is kept). Deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    if scope == "layerwise":
        out = Mask()
        for name, m in mask.items():
            perm = torch.randperm(m.numel(), generator=gen).to(m.device)
            out[name] = m.flatten()[perm].view(m.shape)
        return out
    if scope == "global":
        names = list(mask)
        cat = torch.cat([mask[n].flatten().cpu() for n in names])
        cat = cat[torch.randperm(cat.numel(), generator=gen)]
        out, offset = Mask(), 0
        for name in names:
            m = mask[name]
            out[name] = cat[offset : offset + m.numel()].view(m.shape).to(m.device)
            offset += m.numel()
        return out
    raise ValueError(f"unknown shuffle scope {scope!r}; allowed: layerwise, global")


def invert_scores(scores: Mapping[str, torch.Tensor], mask: Mask | None = None) -> dict[str, torch.Tensor]:
    """Negated scores, so a keep-the-highest selection keeps the lowest.

    Pruned entries must stay pruned: a plain negation would turn a -inf "pruned" score into +inf
    (kept first), and would rank the 0 that gradient scorers give pruned weights above every
    negative score. So entries at -inf stay at -inf, and with ``mask`` given every entry it prunes
    becomes -inf. (``select_topk(..., current=mask)`` also sets them to -inf; this keeps inverted
    scores safe when a caller selects without ``current``.) NaN stays NaN, which the selection rejects.
    """
    out = {}
    for name, s in scores.items():
        s = s.detach().to(torch.float64)
        inv = -s
        inv[s == float("-inf")] = float("-inf")
        if mask is not None:
            inv[~mask[name].to(inv.device)] = float("-inf")
        out[name] = inv
    return out


class InvertedScorer(Scorer):
    """Wraps a scorer so ``prune_at_init`` keeps its lowest scores (the "inverted" ablation)."""

    def __init__(self, inner: Scorer) -> None:
        super().__init__(inner.seed)
        self.inner = inner
        self.needs_data = inner.needs_data
        self.default_rounds = inner.default_rounds
        self.needs_budget = inner.needs_budget

    def score(self, model, params, mask, batches):
        self.inner.budget = self.budget
        return invert_scores(self.inner.score(model, params, mask, batches), mask)


def reinitialize(model_factory: Callable[[], nn.Module], seed: int, mask: Mask | None = None) -> nn.Module:
    """A freshly initialised model, as ``torch.manual_seed(seed); model_factory()`` builds it, with
    ``mask`` applied.

    Re-running the model's own builder (e.g. ``lambda: create_model(name, shape, classes)``) gives
    every family its own initialisation (OpenLTH Kaiming-normal for ours, torchvision's for ``tv:``
    models), biases and norm layers included, rather than a second copy of one init rule. The
    caller's global RNG state is saved and restored, so calling this changes no other random stream.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_factory()
    if mask is not None:
        mask.apply_(model)
    return model
