"""Pruning at initialisation: iterative re-scoring on a float64 copy of the model."""
from __future__ import annotations

import copy
from typing import Iterable, Literal, Mapping

import torch
from torch import nn

from .mask import Mask, prunable_parameters
from .structure import attention_heads
from .scorers import Scorer, ScoringBatches
from .select import Scope, density_schedule, kept_count, select_channels, select_topk


def prune_at_init(
    model: nn.Module,
    scorer: Scorer,
    density: float | Mapping[str, float],
    batches: ScoringBatches,
    rounds: int = 1,
    schedule: Literal["exponential", "linear"] = "exponential",
    scope: Scope = "global",
    ignore: Iterable[str] = (),
    start: Mask | None = None,
    channel_keep: Mapping[str, float] | None = None,
    head_keep: float | None = None,
) -> Mask:
    """Score, keep the top round(d_e*N), repeat for each round e with the mask applied.

    With ``channel_keep`` (layer -> fraction of output channels) whole rows are selected instead, each
    layer reaching its fraction on the same schedule; ``head_keep`` (a fraction of every attention
    module's heads) drops whole heads the same way. In this structured mode ``density`` is not used.

    The scorer sees a float64 deep copy, so deep products neither overflow nor tie, and the
    caller's model (its weights, BatchNorm statistics, grads) is left untouched.
    """
    work = copy.deepcopy(model).to(torch.float64)
    for p in work.parameters():
        p.grad = None
    params = prunable_parameters(work, ignore)
    original = {n: p.detach().clone() for n, p in params.items()}
    mask = start.to(next(iter(params.values())).device) if start is not None else Mask.ones(work, ignore)
    heads = attention_heads(work) if head_keep is not None else {}
    if head_keep is not None and not heads:
        raise ValueError("head_keep: the model has no attention heads (modules with q, k, v, proj, heads, head_dim)")
    structured = bool(channel_keep) or head_keep is not None
    head_steps = density_schedule(head_keep, rounds, schedule) if head_keep is not None else [None] * rounds
    channel_keep = channel_keep or {}
    if structured:
        steps = _per_layer_schedule(channel_keep, rounds, schedule)
    elif isinstance(density, Mapping):
        steps = _per_layer_schedule(density, rounds, schedule)
    else:
        steps = density_schedule(density, rounds, schedule)
    for d_e, h_e in zip(steps, head_steps):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(original[n] if scorer.revives else original[n] * mask[n])
        if scorer.needs_budget:
            if not isinstance(d_e, float) or structured:
                raise ValueError(f"{type(scorer).__name__} builds one mask for the whole network: it needs "
                                 "allocation 'global' (not per-layer densities, channel_keep or head_keep)")
            scorer.budget = kept_count(d_e, sum(p.numel() for p in params.values()))
        scores = scorer.score(work, params, mask, batches)
        missing = set(params) - set(scores)
        if missing:
            raise RuntimeError(f"scorer {type(scorer).__name__} returned no scores for {sorted(missing)}")
        current = None if scorer.revives else mask
        if structured:
            mask = select_channels(scores, d_e, current=current, heads=heads, head_keep=h_e)
        else:
            mask = select_topk(scores, d_e, scope=scope, current=current)
    return mask.cpu()


def _per_layer_schedule(final: Mapping[str, float], rounds: int, schedule: str) -> list[dict[str, float]]:
    """Each layer's own ``density_schedule``, as one mapping per round."""
    per_layer = {n: density_schedule(f, rounds, schedule) for n, f in final.items()}
    return [{n: s[e] for n, s in per_layer.items()} for e in range(rounds)]
