"""NTK-SAP (Wang, Li, Sun, ICLR 2023, "NTK-SAP: Improving Neural Network Pruning by Aligning Training
Dynamics"): keep the weights the NTK's spectrum depends on most, without data.

The NTK's nuclear norm (its trace, for a PSD kernel) is estimated by a finite difference of the output,
E ||f(z; theta0 * m) - f(z; (theta0 + eps * Delta) * m)||^2 with z ~ N(0, I) inputs shaped like the data
and Delta ~ N(0, I), and the score of a mask entry is the magnitude of its gradient,
abs(dE/dm), accumulated over ``draws`` independent draws. Each draw also re-initialises the weights
(theta0 ~ Kaiming normal, fan-in, the reference code's ``_initialize_weights``; norm layers gamma 1,
beta 0), the paper's "new input, new weight" trick: the mask is scored for the initialisation
*distribution*, not for the one set of weights it will train from. Both networks share the mask, so
both contribute to its gradient. BatchNorm, as in the reference: running statistics reset, one
train-mode pass of the clean network with momentum 1 (so they become this batch's), then both
networks evaluated in eval mode with those same statistics.

Defaults follow the reference code's CIFAR-10 script: eps = 0.01 (a standard deviation; the paper's
"variance 1e-4"), 5 draws per round, 20 rounds on the exponential schedule, a batch of 10 inputs per
class. A pruned weight scores 0 (``abs(grad) * (m != 0)``) and stays pruned.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import Field

from ..registry import MethodOptions, Scorer, register_method

if TYPE_CHECKING:  # annotations only: the module imports torch inside the functions that compute
    import torch
    from torch import nn


def _norms() -> tuple:
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.LayerNorm)


def perturbation_grads(model: nn.Module, masks: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
                       delta: dict[str, torch.Tensor], eps: float, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """d/dm of sum_i ||f(z_i; theta * m) - f(z_i; (theta + eps * delta) * m)||^2 (one draw, summed over
    the batch), with ``model``'s other parameters and buffers as they are."""
    import torch
    from torch.func import functional_call
    m = {n: v.detach().clone().requires_grad_(True) for n, v in masks.items()}
    with torch.enable_grad():
        clean = functional_call(model, {n: theta[n] * m[n] for n in m}, (z,))
        noisy = functional_call(model, {n: (theta[n] + eps * delta[n]) * m[n] for n in m}, (z,))
        objective = (clean - noisy).pow(2).flatten(1).sum()
        grads = torch.autograd.grad(objective, list(m.values()), allow_unused=True)
    return {n: torch.zeros_like(m[n]) if g is None else g.detach() for n, g in zip(m, grads)}


class NtkSapOptions(MethodOptions):
    eps: float = Field(0.01, gt=0, description="standard deviation of the weight perturbation (the reference "
                       "code's 0.01)")
    draws: int = Field(5, ge=1, description="fresh (weights, noise input, perturbation) draws per round (the "
                       "reference code's R = 5 for CIFAR-10)")


@register_method("ntksap", count_rule="complement_floor", options=NtkSapOptions, was={"ntksap_epsilon": "eps",
                 "ntksap_draws": "draws"}, description=(
    "NTK-SAP (Wang et al. 2023): abs(∂/∂m Σ_draws ‖f(z; θ₀⊙m) − f(z; (θ₀+εΔ)⊙m)‖²), z ~ N(0, I) "
    "inputs (10 per class), Δ ~ N(0, I), ε = `options.eps` (0.01), θ₀ redrawn (Kaiming normal) for "
    "each of `options.draws` (5) draws, BN on the clean pass's batch statistics (the reference "
    "code's); 20 rounds (its CIFAR-10 script)"))
class NtkSapScorer(Scorer):
    """abs(sum over draws of d ||f(z; theta0 m) - f(z; (theta0 + eps Delta) m)||^2 / dm), data-free."""

    needs_data = False
    default_rounds = 20

    def __init__(self, seed: int = 0, **options) -> None:
        super().__init__(seed, **options)
        self._calls = 0  # each round draws afresh, reproducibly from the seed

    def score(self, model, params, mask, batches):
        import torch
        from torch import nn
        from torch.func import functional_call
        ref = next(iter(params.values()))
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + self._calls)
        self._calls += 1
        net = copy.deepcopy(model)
        bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        for bn in bns:
            bn.momentum = 1.0
        masks = {n: mask[n].to(ref.dtype).to(ref.device) for n in params}
        total = {n: torch.zeros_like(masks[n]) for n in params}
        size = 10 * batches.num_classes
        for _ in range(self.draws):
            theta = {}
            with torch.no_grad():
                for mod in net.modules():
                    if isinstance(mod, _norms()) and getattr(mod, "weight", None) is not None:
                        mod.weight.fill_(1.0)
                        if mod.bias is not None:
                            mod.bias.zero_()
                for n, p in params.items():  # Kaiming normal, fan-in, ReLU gain
                    fan_in = p[0].numel()
                    theta[n] = (torch.randn(p.shape, generator=gen, dtype=ref.dtype) * (2.0 / fan_in) ** 0.5).to(ref.device)
            delta = {n: torch.randn(theta[n].shape, generator=gen, dtype=ref.dtype).to(ref.device) for n in params}
            z = torch.randn((size, *batches.input_shape), generator=gen, dtype=ref.dtype).to(ref.device)
            with torch.no_grad():
                for bn in bns:
                    bn.reset_running_stats()
                net.train()
                functional_call(net, {n: theta[n] * masks[n] for n in params}, (z,))
            net.eval()
            for n, g in perturbation_grads(net, masks, theta, delta, self.eps, z).items():
                total[n] += g
        return {n: (total[n].abs() * (masks[n] != 0)).to(torch.float64) for n in params}
