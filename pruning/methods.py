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

from distill.artifact import DistilledSet
from distill.augment import Augment
from distill.methods import DistillConfig
from training.data import DataBundle
from training.identity import content_hash
from training.registry import Registry
from training.trainer import Trainer, TrainState

from .ablations import InvertedScorer, reinitialize, shuffle_mask
from .allocation import allocate, layer_shapes
from .at_init import prune_at_init
from .config import PruneConfig
from .imp import LevelRecord, run_imp
from .mask import Mask
from .pdp import run_pdp
from .scorers import SCORERS, Scorer, ScoringBatches


@dataclass
class SearchContext:
    model: nn.Module  # freshly initialised; its state is theta_0
    trainer: Trainer
    data: DataBundle
    prune: PruneConfig
    seed: int
    store_root: Path | None = None  # where checkpointed units (IMP levels) live; None = no caching
    store_key: dict = field(default_factory=dict)  # settings besides pruning's that fix a unit's result
    model_factory: Callable[[], nn.Module] | None = None  # builds a fresh model (the reinit ablation)
    small_set: Callable[[DistillConfig], DistilledSet] | None = None  # provides distilled sets / subsets
    on_level: Callable[[LevelRecord, Mask], None] | None = None
    log: Callable[[str], None] = lambda msg: None


@dataclass
class MaskSearch:
    mask: Mask
    start: TrainState  # what survivors are reset to before retraining
    levels: list[LevelRecord] = field(default_factory=list)
    sample_passes: int = 0
    wall_time_s: float = 0.0
    trained: bool = False  # the search already trained the masked net (train-time pruning)
    small_set: DistilledSet | None = None  # the distilled set or subset the search trained on
    level_dir: Path | None = None  # where IMP's per-level masks and reports were written


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


# Options each scorer takes from the prune config; scorers without an entry take none.
SCORER_OPTIONS: dict[str, Callable[[PruneConfig], dict]] = {
    "snip": lambda p: {"bn_mode": p.bn_mode},
    "grasp": lambda p: {"temperature": p.grasp_temperature, "bn_mode": p.bn_mode},
    "px": lambda p: {"variant": p.px_variant},
}


def build_scorer(name: str, prune: PruneConfig, seed: int) -> Scorer:
    cls = SCORERS.get(name)
    scorer: Scorer = cls(seed=seed, **SCORER_OPTIONS.get(name, lambda p: {})(prune))
    return InvertedScorer(scorer) if prune.ablation == "invert" else scorer


def _search_at_init(ctx: SearchContext, scorer_name: str) -> MaskSearch:
    t0 = time.perf_counter()
    start, passes = _rewind_point(ctx)
    p = ctx.prune
    scorer = build_scorer(scorer_name, p, ctx.seed)
    batches = scoring_batches(
        ctx.data, p.examples_per_class if scorer.needs_data else None, ctx.seed, ctx.trainer.device
    )
    density = allocate(p.effective_allocation, p.density, layer_shapes(ctx.model, p.ignore), p.layer_densities or None)
    mask = prune_at_init(
        ctx.model,
        scorer,
        density,
        batches,
        rounds=p.rounds or scorer.default_rounds,
        schedule=p.schedule,
        scope="global" if p.effective_allocation == "global" else "layerwise",
        ignore=p.ignore,
    )
    if batches.x is not None:
        passes += len(batches.x) * (p.rounds or scorer.default_rounds)
    return MaskSearch(mask, start, sample_passes=passes, wall_time_s=time.perf_counter() - t0)


def method_names() -> list[str]:
    return sorted(set(METHODS.names()) | set(SCORERS.names()))


def get_method(name: str) -> Callable[[SearchContext], MaskSearch]:
    """Registered methods first; any other registered scorer is a pruning-at-init method."""
    if name in METHODS:
        return METHODS.get(name)
    if name in SCORERS:
        return lambda ctx: _search_at_init(ctx, name)
    raise KeyError(f"unknown pruning method {name!r}; allowed: {', '.join(method_names())}")


def apply_ablation(ctx: SearchContext, search: MaskSearch) -> MaskSearch:
    """Frankle et al. 2021: does the method's mask carry information beyond per-layer densities?"""
    if ctx.prune.ablation == "shuffle":
        search.mask = shuffle_mask(search.mask, seed=ctx.seed + 10_007)
    elif ctx.prune.ablation == "reinit":
        if ctx.model_factory is None:
            raise ValueError("the reinit ablation needs a model factory")
        fresh = reinitialize(ctx.model_factory, seed=ctx.seed + 10_007)
        search.start = TrainState(0, {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}, {})
    return search


def _imp_store(ctx: SearchContext, prune_fraction: float) -> Path | None:
    """Levels depend on these settings only, so IMP trials at different targets share them."""
    if ctx.store_root is None:
        return None
    p = ctx.prune
    key = {**ctx.store_key, "prune_fraction": prune_fraction, "scope": p.scope,
           "ignore": sorted(p.ignore), "rewind_step": p.rewind_step}
    if p.search_epochs is not None:
        key["search_epochs"] = p.search_epochs
    return ctx.store_root / f"imp-{content_hash(key)}"


def _search_imp(ctx: SearchContext, prune_fraction: float) -> MaskSearch:
    """IMP on the real data. With ``prune.search_epochs`` the levels train shorter than the final run:
    a cost-matched control for Distilled Pruning (is a small set better than a short schedule?)."""
    p = ctx.prune
    trainer = ctx.trainer
    if p.search_epochs is not None:
        scale = p.search_epochs / trainer.cfg.epochs  # the schedule's shape is kept, compressed
        short = trainer.cfg.model_copy(
            update={"epochs": p.search_epochs, "milestones": [m * scale for m in trainer.cfg.milestones]}
        )
        trainer = Trainer(short, ctx.data, seed=ctx.seed, device=ctx.trainer.device)
    store = _imp_store(ctx, prune_fraction)
    result = run_imp(ctx.model, trainer, p.density, prune_fraction=prune_fraction, rewind_step=p.rewind_step,
                     scope=p.scope, ignore=p.ignore, store_dir=store, on_level=ctx.on_level)
    start = result.rewind
    if p.search_epochs is not None:  # the final run has its own optimizer and schedule
        start = TrainState(result.rewind.step, result.rewind.model, {})
    return MaskSearch(result.mask, start, result.levels, result.sample_passes, result.wall_time_s, level_dir=store)


@METHODS.register("magnitude")
def search_magnitude(ctx: SearchContext) -> MaskSearch:
    if ctx.prune.magnitude_at == "trained":
        # One-shot IMP: train dense, prune straight to the target, rewind to theta_k.
        return _search_imp(ctx, prune_fraction=ctx.prune.sparsity)
    return _search_at_init(ctx, "magnitude")


@METHODS.register("imp")
def search_imp(ctx: SearchContext) -> MaskSearch:
    return _search_imp(ctx, ctx.prune.prune_fraction)


@METHODS.register("pdp")
def search_pdp(ctx: SearchContext) -> MaskSearch:
    """Train-time pruning: the search is the training run; its hard-masked net is the result."""
    result = run_pdp(ctx.model, ctx.trainer, None if ctx.prune.pdp.structure == "nm" else ctx.prune.sparsity,
                     ctx.prune.pdp, ignore=ctx.prune.ignore)
    ctx.log(f"pdp: soft-mask test acc {result.soft_test_accuracy:.4f}, hard-mask {result.test_accuracy:.4f}")
    return MaskSearch(result.mask, TrainState(ctx.trainer.total_steps, result.trained_state, {}),
                      sample_passes=result.sample_passes, wall_time_s=result.wall_time_s, trained=True)


def _search_small_set_imp(ctx: SearchContext, dcfg: DistillConfig) -> MaskSearch:
    """IMP whose per-level training runs on a small set (Distilled Pruning); survivors are reset to
    theta_k of that run and the caller's retrain stage trains them on the real data."""
    if ctx.small_set is None:
        raise ValueError("this method needs a distilled set provider (run it through the pipeline)")
    small = ctx.small_set(dcfg)
    p = ctx.prune
    inner = Trainer(p.small_train, small.as_bundle(ctx.data), seed=ctx.seed, device=ctx.trainer.device,
                    augment=small_set_augment(p.small_augment, ctx.data.input_shape))
    store = None
    if ctx.store_root is not None:
        key = {**ctx.store_key, "small_set": small.content_hash, "small_train": p.small_train.model_dump(mode="json"),
               "small_augment": p.small_augment,
               "prune_fraction": p.prune_fraction, "scope": p.scope, "ignore": sorted(p.ignore),
               "rewind_step": p.rewind_step}
        store = ctx.store_root / f"small-imp-{content_hash(key)}"
    result = run_imp(ctx.model, inner, p.density, prune_fraction=p.prune_fraction, rewind_step=p.rewind_step,
                     scope=p.scope, ignore=p.ignore, store_dir=store, on_level=ctx.on_level)
    # The real run starts afresh at step 0 from the rewound weights (its own optimizer and schedule).
    start = TrainState(0, result.rewind.model, {})
    return MaskSearch(result.mask, start, result.levels, result.sample_passes, result.wall_time_s,
                      small_set=small, level_dir=store)


@METHODS.register("distilled_imp")
def search_distilled_imp(ctx: SearchContext) -> MaskSearch:
    return _search_small_set_imp(ctx, ctx.prune.distill)


@METHODS.register("imp_subset")
def search_imp_subset(ctx: SearchContext) -> MaskSearch:
    """The control arm: the same search on a random real subset of the same size."""
    return _search_small_set_imp(ctx, subset_config(ctx.prune.distill))


def small_set_augment(strategy: str, input_shape: tuple[int, ...]):
    if strategy == "none":
        return None
    kind = "image" if len(input_shape) == 3 else "signal"
    return Augment(None if strategy == "default" else strategy, kind=kind)


def subset_config(dcfg: DistillConfig) -> DistillConfig:
    return DistillConfig(method="random", ipc=dcfg.ipc, seed=dcfg.seed)


def small_set_config(prune: PruneConfig) -> DistillConfig | None:
    """The small set a trial with this config trains on, if any."""
    if prune.method == "distilled_imp":
        return prune.distill
    if prune.method == "imp_subset":
        return subset_config(prune.distill)
    return None
