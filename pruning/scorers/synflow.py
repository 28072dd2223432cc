"""SynFlow (Tanaka et al. 2020): data-free iterative synaptic-flow scores.

R = 1^T (prod_l |theta^[l]|) 1 is the summed output of the network whose every parameter *and* buffer
(BatchNorm running statistics included) is replaced by its absolute value, run in eval mode on one all-ones
input. The score of a weight is abs(theta * dR/dtheta). Biases and norm layers take part in the forward as
their absolute values, as in the reference code (the paper's formula ignores them).

The scorer works in place on the copy ``prune_at_init`` hands it, but leaves that copy as it found it:
every floating parameter and buffer gets its exact original value back and every module its train/eval
flag, so a caller that re-copies only the prunable weights between rounds still sees the original biases
and running statistics. No torch function is patched.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Scorer, register_method

if TYPE_CHECKING:  # annotations only: the module imports torch inside the functions that compute
    import torch
    from torch import nn



def _floating_state(model: nn.Module) -> list[torch.Tensor]:
    """Every floating parameter and buffer, each storage once (shared tensors are not abs'ed twice)."""
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


@register_method("synflow", count_rule="complement_floor", description=(
    "abs(θ ⊙ ∂R/∂θ), R = sum of outputs of the network whose parameters and buffers are all replaced "
    "by their absolute values, on an all-ones input, eval mode; 100 rounds"))
class SynFlowScorer(Scorer):
    """abs(theta * dR/dtheta) with R the all-ones output of the absolute-valued net (eval mode)."""

    needs_data = False
    default_rounds = 100

    def score(self, model, params, mask, batches):
        import torch
        state = _floating_state(model)
        saved = [t.detach().clone() for t in state]
        modes = {m: m.training for m in model.modules()}
        targets = list(params.values())
        needed = [p for p in targets if not p.requires_grad]
        try:
            model.eval()
            with torch.no_grad():
                for t in state:
                    t.abs_()
            for p in needed:
                p.requires_grad_(True)
            ref = targets[0]
            x = torch.ones((1, *batches.input_shape), dtype=ref.dtype, device=ref.device)
            with torch.enable_grad():
                r = model(x).sum()
                grads = torch.autograd.grad(r, targets, allow_unused=True)
            scores = {}
            for (name, p), g in zip(params.items(), grads):
                if g is None:  # weight not on any input-output path: it carries no flow
                    scores[name] = torch.zeros_like(p, dtype=torch.float64)
                else:
                    scores[name] = (g.detach() * p.detach()).abs().to(torch.float64)
            return scores
        finally:
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            for p in needed:
                p.requires_grad_(False)
            for m, flag in modes.items():
                m.training = flag
