"""How a target density is shared among the prunable layers.

=========  =================================================================================
kind       per-layer budget
=========  =================================================================================
global     none: one selection over all layers keeps round(d*N) (``allocate`` returns d itself)
uniform    every layer keeps round(d*N_l), the layerwise convention of SPEC (the total may differ
           from round(d*N) by the per-layer rounding, at most half a weight per layer)
erk        Erdos-Renyi-Kernel (RigL, Evci et al. 2020): d_l = eps * (sum of dims)/(product of dims)
           of the weight tensor (kernel dims included), eps fixed by the total budget; a layer whose
           d_l would exceed 1 is made dense and eps recomputed over the rest, until none exceeds 1.
           Counts are then rounded per layer and the remainder fixed up (below) so the total is
           exactly round(d*N).
explicit   a user mapping name -> density in (0, 1]; every prunable layer must be named (a layer
           left out is an error, because silently keeping it dense or pruning it uniformly would
           change the experiment; use density 1.0, or ``prune.ignore``, to keep a layer dense).
           Each layer keeps round(d_l*N_l); the global ``density`` argument is not used.
scaled     the same mapping read as relative densities: d_l = min(1, c * w_l), with c fixed so that
           the total is exactly round(d*N) (layers that would exceed 1 are dense, the rest share the
           remainder, then the rounding is fixed up as for ERK). What a per-layer density search
           proposes: any point of its space is a valid allocation at exactly the target density.
=========  =================================================================================

ERK exactness: after rounding each layer to round(d_l*N_l), the difference r = round(d*N) - sum is
at most half a weight per non-dense layer. It is given to the non-dense layers in order of size
(largest first, ties by name), each taking as much as fits in [0, N_l]. So the total is exact, and a
layer's count differs from its real-valued ERK budget d_l*N_l by less than 0.5 + |r|, with |r| <=
(number of non-dense layers)/2; in practice only the largest layer moves, by a relative amount of
order (number of layers)/N_l.

The per-layer densities returned are k_l / N_l exactly, so ``select.select_topk`` (which keeps
round(d_l * N_l)) keeps exactly k_l in each layer.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Literal, Mapping

import torch
from torch import nn

from .mask import prunable_parameters
from .select import kept_count

Allocation = Literal["global", "uniform", "erk", "explicit", "scaled"]
ALLOCATIONS: tuple[str, ...] = ("global", "uniform", "erk", "explicit", "scaled")


def layer_shapes(model: nn.Module, ignore: Iterable[str] = ()) -> dict[str, torch.Size]:
    """Shapes of the prunable weights of ``model``, in module order."""
    return {n: p.shape for n, p in prunable_parameters(model, ignore).items()}


def _check_density(density: float) -> float:
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return density


def erk_densities(density: float, shapes: Mapping[str, torch.Size]) -> dict[str, float]:
    """Real-valued (unrounded) ERK densities, with sum_l d_l * N_l == density * N."""
    density = _check_density(density)
    if not shapes:
        raise ValueError("no prunable layers to allocate a density over")
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    target = density * sum(numel.values())
    dense: set[str] = set()
    if density == 1.0:
        return {n: 1.0 for n in shapes}
    while True:
        rest = [n for n in shapes if n not in dense]
        if not rest:  # only reachable through float round-off at a density of about 1
            break
        budget = target - sum(numel[n] for n in dense)
        eps = budget / sum(raw[n] * numel[n] for n in rest)
        top = max(raw[n] for n in rest)
        if eps * top <= 1.0:
            break
        # Making the densest layers dense only raises eps for the others, so layers that exceed 1
        # now would exceed it later too; one group per pass follows RigL's loop.
        dense.update(n for n in rest if raw[n] == top)
    return {n: 1.0 if n in dense else min(1.0, eps * raw[n]) for n in shapes}


def _fix_total(counts: dict[str, int], numel: Mapping[str, int], movable: list[str], target: int) -> dict[str, int]:
    remainder = target - sum(counts.values())
    for n in sorted(movable, key=lambda n: (-numel[n], n)):
        if remainder == 0:
            break
        new = min(numel[n], max(0, counts[n] + remainder))
        remainder -= new - counts[n]
        counts[n] = new
    if remainder != 0:
        raise RuntimeError(f"cannot place {remainder} weights within the layers' sizes")
    return counts


def exact_uniform_counts(density: float, shapes: Mapping[str, torch.Size]) -> dict[str, int]:
    """The same density in every layer, rounded so that the total is exactly kept_count(density, all
    weights): the largest layers absorb the rounding (by at most one weight each)."""
    d = _check_density(density)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    counts = {n: kept_count(d, numel[n]) for n in shapes}
    return _fix_total(counts, numel, list(shapes), kept_count(d, sum(numel.values())))


def allocate_counts(
    kind: str,
    density: float | None,
    shapes: Mapping[str, torch.Size],
    explicit: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """Weights kept per layer for ``uniform``, ``erk`` and ``explicit`` (``global`` has no per-layer
    budget: use ``allocate``)."""
    if not shapes:
        raise ValueError("no prunable layers to allocate a density over")
    numel = {n: math.prod(s) for n, s in shapes.items()}
    if kind == "uniform":
        d = _check_density(density)
        return {n: kept_count(d, numel[n]) for n in shapes}
    if kind == "erk":
        d = _check_density(density)
        real = erk_densities(d, shapes)
        counts = {n: numel[n] if real[n] >= 1.0 else kept_count(real[n], numel[n]) for n in shapes}
        movable = [n for n in shapes if real[n] < 1.0]
        return _fix_total(counts, numel, movable, kept_count(d, sum(numel.values())))
    if kind == "explicit":
        per_layer = validate_explicit(explicit, shapes)
        return {n: kept_count(per_layer[n], numel[n]) for n in shapes}
    if kind == "scaled":
        return _scaled_counts(validate_explicit(explicit, shapes), _check_density(density), numel)
    if kind == "global":
        raise ValueError("'global' allocation has no per-layer counts; selection is over all layers")
    raise ValueError(f"unknown allocation {kind!r}; allowed: {', '.join(ALLOCATIONS)}")


def allocate(
    kind: str,
    density: float | None,
    shapes: Mapping[str, torch.Size],
    explicit: Mapping[str, float] | None = None,
) -> float | dict[str, float]:
    """The density argument for ``select_topk`` / ``prune_at_init``.

    ``global`` returns ``density`` (one global selection); the other kinds return per-layer
    densities k_l / N_l, which ``select_topk`` turns back into exactly k_l kept weights per layer.
    """
    if kind == "global":
        return _check_density(density)
    counts = allocate_counts(kind, density, shapes, explicit)
    return {n: counts[n] / math.prod(shapes[n]) for n in shapes}


def _scaled_counts(weights: Mapping[str, float], density: float, numel: Mapping[str, int]) -> dict[str, int]:
    """min(1, c * w_l) per layer with the total exactly kept_count(density, N): c by bisection (the
    kept total is monotone in c), then counts rounded and fixed up."""
    target = kept_count(density, sum(numel.values()))
    kept = lambda c: sum(min(1.0, c * weights[n]) * numel[n] for n in numel)  # noqa: E731
    lo, hi = 0.0, 1.0 / min(weights.values())  # kept(hi) is every weight
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < target else (lo, mid)
    real = {n: min(1.0, hi * weights[n]) for n in numel}
    counts = {n: min(numel[n], kept_count(real[n], numel[n])) for n in numel}
    return _fix_total(counts, numel, [n for n in numel if real[n] < 1.0] or list(numel), target)


def validate_explicit(explicit: Mapping[str, float] | None, shapes: Mapping[str, torch.Size]) -> dict[str, float]:
    """Every prunable layer named exactly once, each density in (0, 1]."""
    if explicit is None:
        raise ValueError("'explicit' allocation needs a mapping of prunable layer name -> density")
    unknown = sorted(set(explicit) - set(shapes))
    if unknown:
        raise ValueError(
            f"explicit densities name {unknown}, which are not prunable weights; prunable: {list(shapes)}"
        )
    missing = [n for n in shapes if n not in explicit]
    if missing:
        raise ValueError(
            f"explicit densities are missing prunable layers {missing}; give each a density "
            "(1.0 keeps it dense) or list it in prune.ignore"
        )
    out = {}
    for n in shapes:
        d = explicit[n]
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0.0 < float(d) <= 1.0:
            raise ValueError(f"explicit density for {n!r} must be a number in (0, 1], got {d!r}")
        out[n] = float(d)
    return out
