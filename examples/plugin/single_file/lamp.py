"""LAMP (Lee, Park, Mo, Ahn, ICLR 2021, "Layer-adaptive sparsity for the magnitude-based pruning"), as a
single-file plugin used through a config's ``plugins: [lamp]``.

Within each layer, sort the weights by magnitude ascending; the score of the weight at position u is
w_u^p / sum_{v >= u} w_v^p (p = 2 in the paper): its share of what remains at least as large as it.
The largest weight of every layer scores 1, so a global selection never empties a layer, and the
per-layer densities come out of the global threshold rather than from a hand-set allocation.
"""
from __future__ import annotations

from pydantic import Field

from pruning.registry import MethodOptions, Scorer, register_method


class LampOptions(MethodOptions):
    power: float = Field(2.0, gt=0, description="exponent p of the magnitudes (the paper's squared weights: 2)")


@register_method("lamp", options=LampOptions)
class LampScorer(Scorer):
    """w_u^p / sum over weights of the same layer at least as large of w_v^p (data-free)."""

    def score(self, model, params, mask, batches):
        import torch

        out = {}
        for name, p in params.items():
            w = p.detach().abs().to(torch.float64).flatten() ** self.power
            order = torch.argsort(w)  # ascending
            sorted_w = w[order]
            tail = torch.flip(torch.cumsum(torch.flip(sorted_w, [0]), 0), [0])  # sum_{v >= u}
            scores = torch.empty_like(w)
            scores[order] = sorted_w / tail.clamp_min(torch.finfo(torch.float64).tiny)
            out[name] = scores.reshape(p.shape)
        return out
