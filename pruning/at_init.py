"""Pruning at initialisation: iterative re-scoring on a float64 copy of the model."""
from __future__ import annotations

import copy
from typing import Iterable, Literal, Mapping

import torch
from torch import nn

from .config import PruneConfig
from .mask import Mask, prunable_parameters
from .registry import get_method
from .structure import attention_heads
from .scorers import SCORERS, Scorer, ScoringBatches
from .select import Scope, density_schedule, kept_count, select_channels, select_topk

ABLATION_SEED_OFFSET = 10_007  # shuffle and reinit draw from seed + this, apart from the init's stream


def scoring_batches(data, per_class: int | None, seed: int, device: torch.device) -> ScoringBatches:
    """A class-balanced sample of the training split (``per_class`` examples of each class)."""
    if per_class is None:
        return ScoringBatches(None, None, data.input_shape, data.num_classes)
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(data.num_classes):
        idx = (data.train.y == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} training examples; {per_class} requested")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    idx = torch.cat(picks)
    return ScoringBatches(
        data.train.x[idx].to(device), data.train.y[idx].to(device), data.input_shape, data.num_classes
    )


def build_scorer(name: str, prune: PruneConfig, seed: int) -> Scorer:
    """The method's scorer with its options (``prune.options``), inverted for the 'invert' ablation."""
    from .ablations import InvertedScorer

    scorer: Scorer = SCORERS.get(name)(seed=seed, **get_method(name).parse_options(prune.options).model_dump())
    return InvertedScorer(scorer) if prune.ablation == "invert" else scorer


def count_rule_of(prune: PruneConfig) -> str:
    """``round`` (exactly round(d*N)), or with ``count_rule: reference`` the method's published rule."""
    return get_method(prune.method).count_rule if prune.count_rule == "reference" else "round"


def mask_at_init(model: nn.Module, prune: PruneConfig, seed: int, data=None,
                 input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                 device: torch.device | str = "cpu") -> tuple[Mask, int, int]:
    """The one function that builds a pruning-at-init mask (the sweep's ``mask`` stage and ``prunetune
    prune`` both call it): the method's scorer with its options, the allocation, the rounds, structured
    selection (``channel_keep``, ``head_keep``) and the mask ablations (``invert``, ``shuffle``).

    ``model`` holds the weights to score (theta_k); ``data`` (a ``DataBundle``) is needed by data-driven
    methods, otherwise ``input_shape`` and ``num_classes`` suffice. Returns (mask, rounds, sample passes)."""
    from .ablations import shuffle_mask
    from .allocation import allocate, layer_shapes

    scorer = build_scorer(prune.method, prune, seed)
    if scorer.needs_data and data is None:
        raise ValueError(f"method {prune.method!r} scores with training examples: it needs a dataset")
    if data is not None:
        batches = scoring_batches(data, prune.examples_per_class if scorer.needs_data else None, seed, device)
    else:
        batches = ScoringBatches(None, None, tuple(input_shape), int(num_classes))
    density = allocate(prune.effective_allocation, prune.density, layer_shapes(model, prune.ignore),
                       prune.layer_densities or None)
    rounds = prune.rounds or scorer.default_rounds
    mask = prune_at_init(model, scorer, density, batches, rounds=rounds, schedule=prune.schedule,
                         scope="global" if prune.effective_allocation == "global" else "layerwise",
                         ignore=prune.ignore, channel_keep=prune.channel_keep or None, head_keep=prune.head_keep,
                         count_rule=count_rule_of(prune))
    if prune.ablation == "shuffle":
        mask = shuffle_mask(mask, seed=seed + ABLATION_SEED_OFFSET)
    passes = len(batches.x) * rounds if batches.x is not None else 0
    return mask.cpu(), rounds, passes


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
    count_rule: str = "round",
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
    groups = []
    if structured:
        steps = _per_layer_schedule(channel_keep, rounds, schedule)
        if channel_keep:  # coupled layers keep the same channels, so the export can remove them
            from .channel_groups import channel_groups

            rows_are_heads = {n for g in attention_heads(work).values() for n in g.rows}
            groups = channel_groups(work, list(params), batches.input_shape, skip=rows_are_heads)
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
            scorer.budget = kept_count(d_e, sum(p.numel() for p in params.values()), count_rule)
        scores = scorer.score(work, params, mask, batches)
        missing = set(params) - set(scores)
        if missing:
            raise RuntimeError(f"scorer {type(scorer).__name__} returned no scores for {sorted(missing)}")
        current = None if scorer.revives else mask
        if structured:
            mask = select_channels(scores, d_e, current=current, heads=heads, head_keep=h_e, groups=groups)
        else:
            mask = select_topk(scores, d_e, scope=scope, current=current, rule=count_rule)
    return mask.cpu()


def _per_layer_schedule(final: Mapping[str, float], rounds: int, schedule: str) -> list[dict[str, float]]:
    """Each layer's own ``density_schedule``, as one mapping per round."""
    per_layer = {n: density_schedule(f, rounds, schedule) for n, f in final.items()}
    return [{n: s[e] for n, s in per_layer.items()} for e in range(rounds)]
