"""Pruning methods: one registration each, saying what the method reads and how its stages connect.

A method's ``plan`` turns a trial's settings into stages (``pruning.stages``, ``training.stage``): the
stage that produces its mask, the state the survivors are rewound to, and the stages whose cost is
the search's. The pipeline then retrains and evaluates every method the same way, which is what makes
them comparable, and never looks inside a method. Validation (which ablations apply), the stage keys
(which prune fields a mask reads) and ``prunetune prune`` all derive from the registration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from distill.methods import DistillConfig
from distill.stage import Distill
from training.data import DataBundle, DataConfig
from training.models import ModelConfig
from training.registry import Registry
from training.stage import Stage
from training.trainer import TrainConfig

from .ablations import InvertedScorer
from .config import METHOD_ABLATIONS, PruneConfig, method_names  # noqa: F401 (method_names re-exported)
from .imp import level_densities
from .scorers import SCORERS, Scorer, ScoringBatches
from .stages import (  # noqa: F401
    ImpLevel, ImpMask, PdpMask, PostTrainMask, Pretrain, ScoreMask, small_set_augment,
)

# What every pruning-at-init mask reads besides its scorer's own options.
AT_INIT_FIELDS = ("sparsity", "scope", "ignore", "allocation", "layer_densities", "channel_keep", "head_keep",
                  "rounds",
                  "schedule", "ablation")


@dataclass(frozen=True)
class TrialSettings:
    """The result settings of one trial, as the methods see them (no sweep, tracking or resources)."""

    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig


@dataclass
class MethodPlan:
    mask: Stage  # writes mask.pt (and model.pt when the method trains the masked net itself)
    start: Pretrain | None  # what survivors are rewound to; None: the mask stage already trained them
    start_mode: Literal["resume", "weights", "restart"] = "resume"
    levels: list[Stage] = field(default_factory=list)  # stages with record.json, one per IMP level
    search: list[Stage] = field(default_factory=list)  # the stages whose cost is the search's
    small_set: Stage | None = None  # the distilled set or subset the search trains on

    @property
    def trained(self) -> bool:
        return self.start is None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    plan: Callable[[TrialSettings], MethodPlan]
    needs_data: bool = False  # scores with training examples

    def ablations(self, prune: PruneConfig) -> frozenset[str]:
        """The sanity-check ablations that change this method's result (declared in ``pruning.config``)."""
        return METHOD_ABLATIONS[self.name]
    trains: bool = False  # train-time pruning: its training is the final one
    small_set: bool = False  # searches on a distilled set or subset


METHODS: Registry[MethodSpec] = Registry("pruning method", declared=METHOD_ABLATIONS)


def register(spec: MethodSpec) -> MethodSpec:
    METHODS.register(spec.name)(spec)
    return spec




def get_method(name: str) -> MethodSpec:
    """Registered methods first; any other registered scorer is a pruning-at-init method."""
    if name in METHODS:
        return METHODS.get(name)
    if name in SCORERS:
        cls = SCORERS.get(name)
        return MethodSpec(name, lambda t: _plan_at_init(t, name), needs_data=cls.needs_data)
    raise KeyError(f"unknown pruning method {name!r}; allowed: {', '.join(method_names())}")


def allowed_ablations(prune: PruneConfig) -> frozenset[str]:
    return METHOD_ABLATIONS[prune.method]


def plan_method(t: TrialSettings) -> MethodPlan:
    return get_method(t.prune.method).plan(t)


# ------------------------------------------------------------------------------------------ plans
def _pretrain(t: TrialSettings, until: str, train: TrainConfig | None = None, rewind_step: int | None = None,
              small_set: Stage | None = None) -> Pretrain:
    return Pretrain(data=t.data, model=t.model, train=train or t.train, seed=t.seed,
                    rewind_step=t.prune.rewind_step if rewind_step is None else rewind_step, until=until,
                    small_set=small_set, augment=t.prune.small_augment if small_set is not None else "none")


def scorer_fields(name: str) -> tuple[str, ...]:
    cls = SCORERS.get(name)
    extra = tuple(cls.prune_options.values()) + (("examples_per_class",) if cls.needs_data else ())
    return AT_INIT_FIELDS + extra


def _plan_at_init(t: TrialSettings, scorer: str) -> MethodPlan:
    start = _pretrain(t, "rewind")
    mask = ScoreMask(method=scorer, start=start, prune=t.prune, seed=t.seed, fields=scorer_fields(scorer))
    return MethodPlan(mask, start, search=[start, mask])


def _imp_chain(t: TrialSettings, pretrain: Pretrain, prune: PruneConfig) -> tuple[ImpMask, list[Stage]]:
    """Levels 1..L-1 trained (shared by every target), then the target's mask from the last one."""
    levels: list[Stage] = [pretrain]
    for level in range(1, len(level_densities(prune.density, prune.prune_fraction))):
        levels.append(ImpLevel(level=level, previous=levels[-1], pretrain=pretrain, prune=prune))
    return ImpMask(source=levels[-1], prune=prune, seed=t.seed), levels


def _plan_imp(t: TrialSettings, prune: PruneConfig | None = None) -> MethodPlan:
    """IMP on the real data. With ``prune.search_epochs`` the levels train shorter than the final run:
    a cost-matched control for Distilled Pruning (is a small set better than a short schedule?)."""
    prune = prune or t.prune
    train, mode = t.train, "resume"
    if prune.search_epochs is not None:
        scale = prune.search_epochs / t.train.epochs  # the schedule's shape is kept, compressed
        train = t.train.model_copy(
            update={"epochs": prune.search_epochs, "milestones": [m * scale for m in t.train.milestones]})
        mode = "weights"  # the final run has its own optimizer and schedule
    pretrain = _pretrain(t, "end", train=train)
    mask, levels = _imp_chain(t, pretrain, prune)
    return MethodPlan(mask, pretrain, mode, levels=levels, search=list(levels))


def _plan_small_set_imp(t: TrialSettings, dcfg: DistillConfig) -> MethodPlan:
    """IMP whose per-level training runs on a small set (Distilled Pruning); survivors are reset to
    theta_k of that run and the retrain stage trains them on the real data from step 0."""
    small = Distill(data=t.data, cfg=dcfg)
    small_train = t.prune.small_train.model_copy(update={"device": t.train.device})  # one device per trial
    pretrain = _pretrain(t, "end", train=small_train, small_set=small)
    mask, levels = _imp_chain(t, pretrain, t.prune)
    return MethodPlan(mask, pretrain, "restart", levels=levels, search=list(levels), small_set=small)


def _plan_magnitude(t: TrialSettings) -> MethodPlan:
    if t.prune.magnitude_at == "trained":
        # One-shot IMP: train dense, prune straight to the target, rewind to theta_k.
        return _plan_imp(t, t.prune.model_copy(update={"prune_fraction": t.prune.sparsity}))
    return _plan_at_init(t, "magnitude")


def _plan_dense(t: TrialSettings) -> MethodPlan:
    start = _pretrain(t, "rewind", rewind_step=0)  # the dense baseline trains its whole run from theta_0
    return MethodPlan(ScoreMask(method="dense", start=start, prune=t.prune, seed=t.seed, fields=("ignore",)), start)


def _plan_pdp(t: TrialSettings) -> MethodPlan:
    mask = PdpMask(start=_pretrain(t, "rewind", rewind_step=0), prune=t.prune, seed=t.seed)
    return MethodPlan(mask, None, search=[mask])


def _plan_post_training(t: TrialSettings) -> MethodPlan:
    """Prune the dense trained net from calibration examples; evaluate that (one-shot, the default) or
    retrain the mask from theta_k like every other method (``prune.retrain: true``)."""
    pretrain = _pretrain(t, "end")
    mask = PostTrainMask(method=t.prune.method, trained=pretrain, prune=t.prune, seed=t.seed)
    return MethodPlan(mask, pretrain if t.prune.retrain else None, search=[pretrain, mask])


register(MethodSpec("dense", _plan_dense))
register(MethodSpec("imp", _plan_imp))
register(MethodSpec("magnitude", _plan_magnitude))
register(MethodSpec("pdp", _plan_pdp, trains=True))
register(MethodSpec("distilled_imp", lambda t: _plan_small_set_imp(t, t.prune.distill), small_set=True))
register(MethodSpec("wanda", _plan_post_training, needs_data=True))
register(MethodSpec("sparsegpt", _plan_post_training, needs_data=True))
register(MethodSpec("imp_subset", lambda t: _plan_small_set_imp(t, subset_config(t.prune.distill)), small_set=True))


# ---------------------------------------------------------------------------------------- scoring
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


def build_scorer(name: str, prune: PruneConfig, seed: int) -> Scorer:
    cls = SCORERS.get(name)
    scorer: Scorer = cls(seed=seed, **{arg: getattr(prune, f) for arg, f in cls.prune_options.items()})
    return InvertedScorer(scorer) if prune.ablation == "invert" else scorer


def subset_config(dcfg: DistillConfig) -> DistillConfig:
    return DistillConfig(method="random", ipc=dcfg.ipc, seed=dcfg.seed)


def small_set_config(prune: PruneConfig) -> DistillConfig | None:
    """The small set a trial with this config trains on, if any."""
    if prune.method == "distilled_imp":
        return prune.distill
    if prune.method == "imp_subset":
        return subset_config(prune.distill)
    return None
