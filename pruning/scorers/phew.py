"""PHEW (Patil & Dovrolis, ICML 2021, "PHEW: Constructing Sparse Networks that Learn Fast and
Generalize Well without Training Data"): a sparse network built from input-output paths, data-free.

Random walks alternate between starting at an input unit and going forward to the output, and starting
at an output unit (a class) and going backward to the input; start units are taken round-robin (the
reference code's default), so every input channel and every class seeds walks. At a unit, a walk
steps over one weight: for a Linear layer weight (o, c) with probability proportional to abs(W[o, c])
among the unit's weights; for a convolution it first picks the kernel (o, c) in proportion to its L1
norm, then one position inside it in proportion to abs(w), i.e. one weight, not the whole kernel
(the paper's default; whole kernels are its "Kernel-PHEW" ablation). The probabilities come from the
weights the walks start from and never change. Crossing a flatten, a forward walk enters one of the
channel's features uniformly, a backward walk leaves through the feature's channel. Walks run until
``budget`` distinct weights are on some path; a weight's score is how early it was first visited, so
the selection keeps exactly the first ``budget`` (the reference stops after the walk that reaches the
budget, up to depth - 1 weights more). Biases and norm layers are not walked.

The walk follows the prunable layers as a chain (mlp, conv1d, convnet, VGG): a model whose layers do
not feed each other in order (a residual net's shortcut convolutions) is refused by ``check_model``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..registry import Scorer, register_method

if TYPE_CHECKING:  # annotations only: the module imports torch inside the functions that compute
    import torch
    from torch import nn



@dataclass
class _Layer:
    out: int
    inp: int
    k: int  # weights per (out, in) pair: kernel positions, 1 for Linear
    fwd: np.ndarray  # [inp, out] cumulative P(o | c)
    bwd: np.ndarray  # [out, inp] cumulative P(c | o)
    pos: np.ndarray  # [out, inp, k] cumulative P(position | o, c)


def _cumulative(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a, axis=-1)


def _draw(cdf: np.ndarray, u: float) -> int:
    total = cdf[-1]
    if total <= 0:
        return -1
    return min(int(np.searchsorted(cdf, u * total, side="right")), len(cdf) - 1)


def chain_links(weights: list[torch.Tensor], names: list[str]) -> list[int]:
    """Features per channel between consecutive layers (1: same units; S > 1: a flatten of S positions)."""
    links = []
    for (a, wa), (b, wb) in zip(zip(names, weights), zip(names[1:], weights[1:])):
        out_a, in_b = wa.shape[0], wb.shape[1]
        if wb.dim() > 2 and wa.dim() == 2:
            raise ValueError(f"PHEW walks a chain of layers: {b} (a convolution) follows {a} (a Linear layer)")
        if in_b == out_a:
            links.append(1)
        elif wb.dim() == 2 and wa.dim() > 2 and in_b % out_a == 0:
            links.append(in_b // out_a)
        else:
            raise ValueError(f"PHEW walks a chain of layers, but {a} ({out_a} outputs) does not feed {b} ({in_b} "
                             "inputs): residual nets (shortcut convolutions) and branching models are not supported")
    return links


@register_method("phew", description=(
    "PHEW (Patil & Dovrolis 2021): data-free random walks that alternate forward from input units "
    "and backward from classes (start units round-robin), each step picking a weight with "
    "probability ∝ abs(w) (a conv kernel by its L1 norm, then one position in it); walks run until "
    "round(d·N) distinct weights are on some input-output path (kept in first-visit order). Needs a "
    "chain of layers (mlp, conv1d, convnet, VGG; residual nets refused) and global allocation; 1 "
    "round. Differs from the authors' code on purpose: it stops at exactly the budget, where the "
    "reference keeps the whole walk that crosses it (kept sets IoU 1.0000 / 0.9995 / 0.9974 at "
    "densities 0.5 / 0.1 / 0.02 on the same random stream)"))
class PhewScorer(Scorer):
    """First-visit order of path-weighted random walks (higher = visited earlier = kept)."""

    needs_data = False
    needs_budget = True
    default_rounds = 1

    @classmethod
    def check_model(cls, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        from ..mask import prunable_parameters

        params = prunable_parameters(model)
        chain_links([p for p in params.values()], list(params))

    def score(self, model, params, mask, batches):
        import torch

        if self.budget is None:
            raise RuntimeError("PHEW needs its budget (weights to keep) set before scoring")
        names = list(params)
        weights = [params[n].detach().abs().to(torch.float64).cpu() for n in names]
        links = chain_links(weights, names)
        layers = []
        for w in weights:
            a = w.reshape(w.shape[0], w.shape[1], -1).numpy()
            pair = a.sum(axis=2)
            layers.append(_Layer(a.shape[0], a.shape[1], a.shape[2], _cumulative(pair.T), _cumulative(pair),
                                 _cumulative(a)))
        first = [np.full(w.numel(), -1, dtype=np.int64) for w in weights]
        total = sum(w.numel() for w in weights)
        budget = min(self.budget, total)
        rng = np.random.default_rng(self.seed)
        seen = 0
        walks, starts_f, starts_b = 0, 0, 0
        stalled = 0

        def step_over(i: int, o: int, c: int) -> None:
            """Take one weight of kernel (o, c) of layer i, a position drawn by abs(w); note a first visit."""
            nonlocal seen
            layer = layers[i]
            idx = (o * layer.inp + c) * layer.k + _draw(layer.pos[o, c], rng.random())
            if first[i][idx] < 0:
                first[i][idx] = seen
                seen += 1

        while seen < budget:
            before = seen
            if walks % 2 == 0:  # forward, from an input unit
                c = starts_f % layers[0].inp
                starts_f += 1
                for i, layer in enumerate(layers):
                    o = _draw(layer.fwd[c], rng.random())
                    if o < 0:
                        break
                    step_over(i, o, c)
                    if i + 1 < len(layers):
                        s = links[i]
                        c = o * s + (int(rng.integers(s)) if s > 1 else 0)
            else:  # backward, from an output unit (a class)
                o = starts_b % layers[-1].out
                starts_b += 1
                for i in range(len(layers) - 1, -1, -1):
                    c = _draw(layers[i].bwd[o], rng.random())
                    if c < 0:
                        break
                    step_over(i, o, c)
                    if i > 0:
                        o = c // links[i - 1]
            walks += 1
            stalled = 0 if seen > before else stalled + 1
            if stalled > 100 * (layers[0].inp + layers[-1].out) + 10_000:
                raise ValueError(f"PHEW's walks found only {seen} of the {budget} weights to keep (every further "
                                 "walk repeats known paths); use a higher sparsity")
        scores = {}
        for n, w, f in zip(names, weights, first):
            s = np.where(f >= 0, float(total) - f, 0.0)
            scores[n] = torch.from_numpy(s).reshape(w.shape).to(params[n].device)
        return scores
