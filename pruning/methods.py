"""The mask-search stage of a trial, one entry per ``prune.method``.

Every method returns the same thing, a ``MaskSearch``: the mask, the training state the survivors
are rewound to, and what the search cost. The pipeline then rewinds, retrains and evaluates the
same way for all of them, which is what makes the methods comparable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from training.data import DataBundle
from training.identity import content_hash
from training.registry import Registry
from training.trainer import Trainer, TrainState

from .at_init import prune_at_init
from .config import PruneConfig
from .imp import LevelRecord, run_imp
from .mask import Mask
from .scorers import SCORERS, ScoringBatches


@dataclass
class SearchContext:
    model: nn.Module  # freshly initialised; its state is theta_0
    trainer: Trainer
    data: DataBundle
    prune: PruneConfig
    seed: int
    store_root: Path | None = None  # where checkpointed units (IMP levels) live; None = no caching
    store_key: dict = field(default_factory=dict)  # settings besides pruning's that fix a unit's result
    on_level: Callable[[LevelRecord, Mask], None] | None = None
    log: Callable[[str], None] = lambda msg: None


@dataclass
class MaskSearch:
    mask: Mask
    start: TrainState  # what survivors are reset to before retraining
    levels: list[LevelRecord] = field(default_factory=list)
    sample_passes: int = 0
    wall_time_s: float = 0.0


METHODS: Registry[Callable[[SearchContext], MaskSearch]] = Registry("pruning method")


def _state_of(model: nn.Module) -> TrainState:
    return TrainState(0, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, {})


def _rewind_point(ctx: SearchContext) -> tuple[TrainState, int]:
    """theta_k for pruning-at-init methods: init itself, or the dense net after k iterations."""
    init = _state_of(ctx.model)
    k = ctx.prune.rewind_step
    if k == 0:
        return init, 0
    result = ctx.trainer.fit(ctx.model, start=init, stop_at=k, eval_every_epoch=False)
    return result.final_state, result.sample_passes


@METHODS.register("dense")
def search_dense(ctx: SearchContext) -> MaskSearch:
    return MaskSearch(Mask.ones(ctx.model, ctx.prune.ignore), _state_of(ctx.model))


def scoring_batches(data: DataBundle, per_class: int | None, seed: int, device: torch.device) -> ScoringBatches:
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


def _search_at_init(ctx: SearchContext, scorer_name: str, per_class: int | None = None) -> MaskSearch:
    t0 = time.perf_counter()
    start, passes = _rewind_point(ctx)
    scorer_cls = SCORERS.get(scorer_name)
    scorer = scorer_cls(seed=ctx.seed)
    batches = scoring_batches(ctx.data, per_class if scorer_cls.needs_data else None, ctx.seed, ctx.trainer.device)
    mask = prune_at_init(
        ctx.model,
        scorer,
        ctx.prune.density,
        batches,
        rounds=ctx.prune.rounds or scorer_cls.default_rounds,
        schedule=ctx.prune.schedule,
        scope=ctx.prune.scope,
        ignore=ctx.prune.ignore,
    )
    return MaskSearch(mask, start, sample_passes=passes, wall_time_s=time.perf_counter() - t0)


@METHODS.register("random")
def search_random(ctx: SearchContext) -> MaskSearch:
    return _search_at_init(ctx, "random")


def _imp_store(ctx: SearchContext, prune_fraction: float) -> Path | None:
    """Levels depend on these settings only, so IMP trials at different targets share them."""
    if ctx.store_root is None:
        return None
    p = ctx.prune
    key = {**ctx.store_key, "prune_fraction": prune_fraction, "scope": p.scope,
           "ignore": sorted(p.ignore), "rewind_step": p.rewind_step}
    return ctx.store_root / f"imp-{content_hash(key)}"


def _search_imp(ctx: SearchContext, prune_fraction: float) -> MaskSearch:
    t0 = time.perf_counter()
    result = run_imp(
        ctx.model,
        ctx.trainer,
        ctx.prune.density,
        prune_fraction=prune_fraction,
        rewind_step=ctx.prune.rewind_step,
        scope=ctx.prune.scope,
        ignore=ctx.prune.ignore,
        store_dir=_imp_store(ctx, prune_fraction),
        on_level=ctx.on_level,
    )
    return MaskSearch(
        result.mask, result.rewind, result.levels, result.sample_passes, time.perf_counter() - t0
    )


@METHODS.register("magnitude")
def search_magnitude(ctx: SearchContext) -> MaskSearch:
    if ctx.prune.magnitude_at == "trained":
        # One-shot IMP: train dense, prune straight to the target, rewind to theta_k.
        return _search_imp(ctx, prune_fraction=ctx.prune.sparsity)
    return _search_at_init(ctx, "magnitude")


@METHODS.register("imp")
def search_imp(ctx: SearchContext) -> MaskSearch:
    return _search_imp(ctx, ctx.prune.prune_fraction)
