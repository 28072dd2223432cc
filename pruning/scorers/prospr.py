"""ProsPr (Alizadeh et al. 2022, "Prospect Pruning: Finding Trainable Weights at Initialization using
Meta-Gradients"): how much the loss *after a few steps of training* depends on each weight's mask.

With w_0 = theta * m, K steps of SGD on the scoring batches, w_{k+1} = w_k - lr * dL(w_k; B_k)/dw_k, and
the score is abs(dL(w_K; B_K) / dm) at the current mask: the meta-gradient through the unrolled steps
(second order, ``create_graph``). K = 0 is SNIP. Only the prunable weights take the inner steps
(biases and normalisation parameters stay at their initial values), which keeps the unrolled graph
to what the mask acts on. Batches are used in order, cycling when there are fewer than K + 1.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .base import SCORERS, Scorer
from .snip import BNMode, batch_to, check_bn_mode, scoring_mode


@SCORERS.register("prospr")
class ProsPrScorer(Scorer):
    needs_data = True
    default_rounds = 1
    prune_options = {"bn_mode": "bn_mode", "steps": "prospr_steps", "lr": "prospr_lr"}

    def __init__(self, seed: int = 0, bn_mode: BNMode = "eval", steps: int = 3, lr: float = 0.1) -> None:
        super().__init__(seed)
        self.bn_mode = check_bn_mode(bn_mode)
        if steps < 0 or lr <= 0:
            raise ValueError(f"ProsPr needs steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
        self.steps, self.lr = steps, lr

    def score(self, model, params, mask, batches):
        names = list(params)
        like = params[names[0]].detach()
        weights = {n: params[n].detach() for n in names}
        gates = {n: mask[n].to(device=like.device, dtype=like.dtype).requires_grad_(True) for n in names}
        data = list(batches)
        if not data:
            raise ValueError("ProsPr needs scoring examples, but the batches were empty")
        stream = itertools.cycle(data)
        with scoring_mode(model, self.bn_mode):
            w = {n: weights[n] * gates[n] for n in names}
            for _ in range(self.steps):
                x, y = batch_to(*next(stream), like)
                loss = F.cross_entropy(functional_call(model, w, (x,)), y)
                grads = torch.autograd.grad(loss, [w[n] for n in names], create_graph=True)
                w = {n: w[n] - self.lr * g for n, g in zip(names, grads)}
            x, y = batch_to(*next(stream), like)
            loss = F.cross_entropy(functional_call(model, w, (x,)), y)
            meta = torch.autograd.grad(loss, [gates[n] for n in names], allow_unused=True, materialize_grads=True)
        return {n: g.abs().to(torch.float64) for n, g in zip(names, meta)}
