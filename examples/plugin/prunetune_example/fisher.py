"""Optimal Brain Damage with the empirical Fisher (LeCun et al. 1990; the diagonal-Fisher saliency of
Theis et al. 2018): the loss increase from removing weight theta_j is about theta_j^2 * F_jj / 2, with
F_jj = mean over scoring groups of (dL_g/dtheta_j)^2, the squared gradient of each group's mean loss.

``microbatch`` examples form a group: 1 is the per-example empirical Fisher; larger groups average
gradients first (cheaper, and closer to the squared mean gradient). A pruning-at-init method, so it
scores theta_k and the pipeline selects, retrains and evaluates it like every other method.
"""
from __future__ import annotations

from pydantic import Field

from pruning.registry import MethodOptions, Scorer, register_method


class FisherOptions(MethodOptions):
    microbatch: int = Field(1, ge=1, description="examples per gradient whose square is averaged (1: per example)")


@register_method("fisher", options=FisherOptions)
class FisherScorer(Scorer):
    """theta^2 * mean_g (dL_g/dtheta)^2: OBD's saliency with the diagonal empirical Fisher."""

    needs_data = True

    def score(self, model, params, mask, batches):
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call

        names = list(params)
        weights = {n: params[n].detach().requires_grad_(True) for n in names}
        fisher = {n: torch.zeros_like(weights[n]) for n in names}
        groups = 0
        model.eval()
        for x, y in batches:
            for i in range(0, len(x), self.microbatch):
                xb = x[i:i + self.microbatch].to(weights[names[0]])
                yb = y[i:i + self.microbatch].to(device=xb.device, dtype=torch.long)
                loss = F.cross_entropy(functional_call(model, weights, (xb,)), yb)
                grads = torch.autograd.grad(loss, [weights[n] for n in names], allow_unused=True,
                                            materialize_grads=True)
                for n, g in zip(names, grads):
                    fisher[n] += g.detach() ** 2
                groups += 1
        return {n: (params[n].detach() ** 2 * fisher[n] / max(groups, 1)).to(torch.float64) for n in names}
