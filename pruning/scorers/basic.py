"""Data-free baselines: random and magnitude."""
from __future__ import annotations

import torch

from .base import SCORERS, Scorer


@SCORERS.register("random")
class RandomScorer(Scorer):
    """I.i.d. uniform scores: the control every other method must beat."""

    def score(self, model, params, mask, batches):
        gen = torch.Generator().manual_seed(self.seed)
        return {
            n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device)
            for n, p in params.items()
        }


@SCORERS.register("magnitude")
class MagnitudeScorer(Scorer):
    def score(self, model, params, mask, batches):
        return {n: p.detach().abs().to(torch.float64) for n, p in params.items()}
