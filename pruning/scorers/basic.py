"""Data-free baselines: random and magnitude."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..registry import MethodOptions, Scorer, register_method


@register_method("random", count_rule="complement_floor", description=(
    "i.i.d. uniform scores"))
class RandomScorer(Scorer):
    """I.i.d. uniform scores: the control every other method must beat."""

    def score(self, model, params, mask, batches):
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        return {
            n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device)
            for n, p in params.items()
        }


class MagnitudeOptions(MethodOptions):
    at: Literal["init", "trained"] = Field(
        "init", description="score the initial weights, or the weights after dense training (one-shot IMP: "
        "prune straight to the target, rewind to theta_k)")


@register_method("magnitude", count_rule="complement_floor", options=MagnitudeOptions, was={"magnitude_at": "at"},
                 description=(
    "abs(θ) at init (`options.at: init`), or after dense training, then rewind (`trained`: one-shot "
    "IMP)"))
class MagnitudeScorer(Scorer):
    """abs(theta): the largest weights at init (or, with ``at: trained``, after dense training)."""

    plan = "pruning.methods:plan_magnitude"

    def score(self, model, params, mask, batches):
        import torch

        return {n: p.detach().abs().to(torch.float64) for n, p in params.items()}
