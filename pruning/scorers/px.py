"""PX (Iurada et al. 2024, "Finding Lottery Tickets in Vision Models via Data-Driven Spectral
Foresight Pruning"): keep the weights the path-eXclusion kernel's trace depends on most. The gating
machinery (ReLU gates and max-pool routing replayed on two weight-squared copies of the net) lives in
``pruning.px_gating``; this module is the method's declaration and entry."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..registry import MethodOptions, Scorer, register_method


class PXOptions(MethodOptions):
    variant: Literal["clean", "official"] = Field(
        "clean", description="the paper's formulation (clean) or its reference code's (official)")


@register_method("px", count_rule="complement_floor", options=PXOptions, was={"px_variant": "variant"}, description=(
    "θ² ⊙ ∂R/∂(θ²), R = Σ_x Σ_k z1_k(x)·z2_k(θ²) (path activations × path kernel), ReLU gating "
    "through a torch function mode scoped to PX's passes (modules, `F.relu`, `torch.relu`, "
    "`Tensor.relu_` alike; GELU, SiLU, LeakyReLU, ReLU6, tanh, ... refused by name), max-pool and "
    "norm gating by forward hooks; `options.variant: clean` (eval BN, all layers alike) or "
    "`official` (the reference code's train-mode BN and unsquared `bn`/`fc`); 100 rounds"))
class PXScorer(Scorer):
    """theta^2 * dR/d(theta^2) with R = sum_x sum_k z1_k(x) z2_k(theta^2): ReLU networks only."""

    needs_data = True
    default_rounds = 100

    @classmethod
    def check_model(cls, model, input_shape: tuple[int, ...]) -> None:
        from ..px_gating import PXComputation

        PXComputation.check_model(model, input_shape)

    def score(self, model, params, mask, batches):
        from ..px_gating import PXComputation

        return PXComputation(self.variant).score(model, params, mask, batches)


def __getattr__(name: str):
    """The gating helpers (``_norm_affine``, ...) are importable from here, as before the split."""
    if name.startswith("__"):  # import machinery probes (__path__, ...): not ours to answer
        raise AttributeError(name)
    from .. import px_gating

    return getattr(px_gating, name)
