"""GraSP (Wang, Zhang & Grosse 2020): score = theta * (H g), signed; the caller keeps the largest.

As in the reference implementations (alecwangcq/GraSP, Synaptic-Flow):

1. g = sum over batches of grad_theta CE(f(x) / T, y), detached (T = 200 by default);
2. H g = sum over batches of grad_theta (g . grad_theta CE_b), the inner gradient built with
   ``create_graph=True`` (double backprop, never a materialised Hessian);
3. score = theta * (H g), with no absolute value. Keeping the largest is the paper's rule of removing
   the top entries of -theta * Hg. The reference divides by abs(sum of scores) + eps, a positive
   constant that changes no ranking, so it is left out.

theta is the set of prunable weights only (the reference differentiates w.r.t. its masked weights,
which are the prunable ones): biases and norm parameters are constants here, so g and H g have no
components along them. Like the reference, whose layers compute ``weight * mask``, the weights enter
the net as ``theta * m`` with the current mask m, so the gradient and Hessian are those of the masked
net (g and H g vanish on pruned entries, and H is M H M). For a full mask (the default one round) this
is the plain gradient and Hessian. The model is run through ``torch.func.functional_call``; nothing is
patched globally.
"""
from __future__ import annotations

from pydantic import Field

from ..registry import Scorer, register_method
from .snip import BNModeOptions, batch_to, scoring_mode


class GraSPOptions(BNModeOptions):
    temperature: float = Field(200.0, gt=0, description="softmax temperature of the Hessian-gradient product "
                               "(the paper's 200)")


@register_method("grasp", count_rule="complement_floor", options=GraSPOptions,
                 was={"grasp_temperature": "temperature", "bn_mode": "bn_mode"}, description=(
    "θ ⊙ (H g), signed, logits / `options.temperature` (200), H g by double backprop; BatchNorm in "
    "eval mode, as Synaptic-Flow's GraSP"))
class GraSPScorer(Scorer):
    """GraSP (Wang et al. 2020): theta * (H g), signed, keeping the largest (gradient flow preserved)."""

    needs_data = True
    default_rounds = 1

    def score(self, model, params, mask, batches):
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call
        names = list(params)
        theta = [params[n].detach().clone().requires_grad_(True) for n in names]
        gates = [mask[n].to(device=t.device, dtype=t.dtype) for n, t in zip(names, theta)]
        like = theta[0]

        def loss_on(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x, y = batch_to(x, y, like)
            substituted = {n: t * m for n, t, m in zip(names, theta, gates)}
            return F.cross_entropy(functional_call(model, substituted, (x,)) / self.temperature, y)

        with scoring_mode(model, self.bn_mode):
            g = [torch.zeros_like(t) for t in theta]
            for x, y in batches:
                grads = torch.autograd.grad(loss_on(x, y), theta, allow_unused=True, materialize_grads=True)
                for acc, gr in zip(g, grads):
                    acc += gr
            hg = [torch.zeros_like(t) for t in theta]
            for x, y in batches:
                grads = torch.autograd.grad(
                    loss_on(x, y), theta, create_graph=True, allow_unused=True, materialize_grads=True
                )
                z = sum((gi * gr).sum() for gi, gr in zip(g, grads))
                if not z.requires_grad:  # no second-order dependence at all: H g is zero
                    continue
                second = torch.autograd.grad(z, theta, allow_unused=True, materialize_grads=True)
                for acc, h in zip(hg, second):
                    acc += h
        return {n: (t.detach() * h).to(torch.float64) for n, t, h in zip(names, theta, hg)}
