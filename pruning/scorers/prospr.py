"""ProsPr (Alizadeh et al. 2022, "Prospect Pruning: Finding Trainable Weights at Initialization using
Meta-Gradients"): how much the loss *after a few steps of training* depends on each weight's mask.

With w_0 = theta * m, K steps of SGD on the scoring batches, w_{k+1} = w_k - lr * dL(w_k; B_k)/dw_k, and
the score is abs(dL(w_K; B_K) / dm) at the current mask: the meta-gradient through the unrolled steps
(second order, ``create_graph``). K = 0 is SNIP. Every trainable parameter takes the inner steps
(biases and normalisation affine too), as the authors' code does with an SGD optimizer over
``net.parameters()``; ``inner: prunable`` steps only the prunable weights (the others stay at their
initial values; measured against the reference: scores rho 0.976, kept sets IoU 0.92-0.95). The net
scores in train-mode BatchNorm, as the reference's ``prune()`` sets it. Batches are used in order,
cycling when there are fewer than K + 1.
"""
from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field

from ..registry import Scorer, register_method
from .snip import TrainBNModeOptions, batch_to, scoring_mode


class ProsPrOptions(TrainBNModeOptions):
    steps: int = Field(3, ge=0, description="unrolled SGD steps the meta-gradient goes through (the paper's 3; "
                       "0 is SNIP)")
    lr: float = Field(0.1, gt=0, description="learning rate of the unrolled steps")
    inner: Literal["all", "prunable"] = Field("all", description="which parameters the unrolled steps update: "
                                              "every trainable one (biases, norm affine; the authors' code) or "
                                              "only the prunable weights")


@register_method("prospr", count_rule="ceil", version=2, options=ProsPrOptions,
                 was={"prospr_steps": "steps", "prospr_lr": "lr", "bn_mode": "bn_mode"}, description=(
    "ProsPr (Alizadeh et al. 2022): abs(∂L(w_K)/∂m), the meta-gradient through `options.steps` (3) "
    "unrolled SGD steps (lr `options.lr`, 0.1) from w_0 = θ ⊙ m, updating every trainable parameter "
    "(`options.inner: all`, as the authors' code; `prunable`: the weights only); BatchNorm in train "
    "mode as in the authors' `prune()`; 0 steps is SNIP"))
class ProsPrScorer(Scorer):
    """ProsPr (Alizadeh et al. 2022): abs(d loss after K unrolled SGD steps / dm), a meta-gradient."""

    needs_data = True
    default_rounds = 1

    def score(self, model, params, mask, batches):
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call
        names = list(params)
        like = params[names[0]].detach()
        weights = {n: params[n].detach() for n in names}
        gates = {n: mask[n].to(device=like.device, dtype=like.dtype).requires_grad_(True) for n in names}
        data = list(batches)
        if not data:
            raise ValueError("ProsPr needs scoring examples, but the batches were empty")
        stream = itertools.cycle(data)
        others = {} if self.inner == "prunable" else {  # biases, norm affine: stepped too, as the reference does
            n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()
            if n not in params and p.is_floating_point()}
        with scoring_mode(model, self.bn_mode):
            w = {**{n: weights[n] * gates[n] for n in names}, **others}
            for _ in range(self.steps):
                x, y = batch_to(*next(stream), like)
                loss = F.cross_entropy(functional_call(model, w, (x,)), y)
                grads = torch.autograd.grad(loss, list(w.values()), create_graph=True, allow_unused=True,
                                            materialize_grads=True)
                w = {n: v - self.lr * g for (n, v), g in zip(w.items(), grads)}
            x, y = batch_to(*next(stream), like)
            loss = F.cross_entropy(functional_call(model, w, (x,)), y)
            meta = torch.autograd.grad(loss, [gates[n] for n in names], allow_unused=True, materialize_grads=True)
        return {n: g.abs().to(torch.float64) for n, g in zip(names, meta)}
