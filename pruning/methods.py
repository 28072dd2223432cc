"""The plans of the built-in methods that are not plain pruning at init, and what every plan shares.

Each method is registered (``pruning.registry.register_method``: built-ins in ``pruning.builtin_methods``
and ``pruning/scorers/``); a method's ``plan`` turns a trial's settings into stages (``pruning.stages``): the
stage that produces its mask, the state the survivors are rewound to, and the stages whose cost is
the search's. The pipeline then retrains and evaluates every method the same way, which is what makes
them comparable, and never looks inside a method. Validation (which ablations apply), the stage keys
(which prune fields a mask reads) and ``prunetune prune`` all derive from the registration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill.methods import DistillConfig
from distill.stage import Distill
from training.data import DataConfig
from training.models import ModelConfig
from training.stage import Stage
from training.trainer import TrainConfig

from .config import PruneConfig
from .imp import level_densities
from .at_init import build_scorer, mask_at_init, scoring_batches  # noqa: F401 (re-exported)
from .registry import METHODS, MethodSpec, get_method, method_names  # noqa: F401 (re-exported)
from .stages import (  # noqa: F401
    AT_INIT_FIELDS, ImpLevel, ImpMask, PdpMask, PostTrainMask, Pretrain, ScoreMask, small_set_augment,
)


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
    keep_trained: Stage | None = None  # rewind weights only: the stage whose biases and norms the retrain keeps

    @property
    def trained(self) -> bool:
        return self.start is None


def plan_method(t: TrialSettings) -> MethodPlan:
    spec = get_method(t.prune.method)
    if spec.plan is not None:
        return spec.resolve_plan()(t)
    return plan_at_init(t)


# ------------------------------------------------------------------------------------------ plans
def _pretrain(t: TrialSettings, until: str, train: TrainConfig | None = None, rewind_step: int | None = None,
              small_set: Stage | None = None) -> Pretrain:
    return Pretrain(data=t.data, model=t.model, train=train or t.train, seed=t.seed,
                    rewind_step=t.prune.rewind_step if rewind_step is None else rewind_step, until=until,
                    small_set=small_set, augment=t.prune.small_augment if small_set is not None else "none",
                    augment_draw=t.prune.small_augment_draw)


def scorer_fields(name: str) -> tuple[str, ...]:
    """The shared prune fields a pruning-at-init mask reads (its own options are keyed apart)."""
    return AT_INIT_FIELDS + (("examples_per_class",) if get_method(name).needs_data else ())


def plan_at_init(t: TrialSettings) -> MethodPlan:
    """Score theta_k with the method's scorer and select: every registered scorer's plan."""
    start = _pretrain(t, "rewind")
    mask = ScoreMask(method=t.prune.method, start=start, prune=t.prune, seed=t.seed,
                     fields=scorer_fields(t.prune.method))
    return MethodPlan(mask, start, search=[start, mask])


def _imp_chain(t: TrialSettings, pretrain: Pretrain, prune: PruneConfig) -> tuple[ImpMask, list[Stage]]:
    """Levels 1..L-1 trained (shared by every target), then the target's mask from the last one."""
    levels: list[Stage] = [pretrain]
    for level in range(1, len(level_densities(prune.density, prune.prune_fraction))):
        levels.append(ImpLevel(level=level, previous=levels[-1], pretrain=pretrain, prune=prune))
    return ImpMask(source=levels[-1], prune=prune, seed=t.seed), levels


def plan_imp(t: TrialSettings, prune: PruneConfig | None = None) -> MethodPlan:
    """IMP on the real data. With ``prune.search_epochs`` the levels train shorter than the final run:
    a cost-matched control for Distilled Pruning (is a small set better than a short schedule?)."""
    prune = prune or t.prune
    # k = 0: no optimizer state to restore, and 'resume' keeps the keys of runs made before the option.
    fresh = prune.rewind_optimizer == "fresh" and prune.rewind_step > 0
    train, mode = t.train, ("weights" if fresh else "resume")
    if prune.search_epochs is not None:
        scale = prune.search_epochs / t.train.epochs  # the schedule's shape is kept, compressed
        train = t.train.model_copy(
            update={"epochs": prune.search_epochs, "milestones": [m * scale for m in t.train.milestones]})
        mode = "weights"  # the final run has its own optimizer and schedule
    pretrain = _pretrain(t, "end", train=train)
    mask, levels = _imp_chain(t, pretrain, prune)
    return MethodPlan(mask, pretrain, mode, levels=levels, search=list(levels), keep_trained=_kept(prune, mask))


def _kept(prune: PruneConfig, mask: ImpMask) -> Stage | None:
    """A weights-only rewind keeps the biases and norms of the net the final mask was taken from."""
    return mask.source if prune.rewind_mode == "weights" else None


def _plan_small_set_imp(t: TrialSettings, dcfg: DistillConfig) -> MethodPlan:
    """IMP whose per-level training runs on a small set (Distilled Pruning); survivors are reset to
    theta_k of that run and the retrain stage trains them on the real data from step 0."""
    small = Distill(data=t.data, cfg=dcfg)
    small_train = t.prune.small_train.model_copy(update={"device": t.train.device})  # one device per trial
    pretrain = _pretrain(t, "end", train=small_train, small_set=small)
    mask, levels = _imp_chain(t, pretrain, t.prune)
    return MethodPlan(mask, pretrain, "restart", levels=levels, search=list(levels), small_set=small,
                      keep_trained=_kept(t.prune, mask))


def plan_magnitude(t: TrialSettings) -> MethodPlan:
    if t.prune.method_options().at == "trained":
        # One-shot IMP: train dense, prune straight to the target, rewind to theta_k.
        return plan_imp(t, t.prune.model_copy(update={"prune_fraction": t.prune.sparsity}))
    return plan_at_init(t)


def plan_dense(t: TrialSettings) -> MethodPlan:
    start = _pretrain(t, "rewind", rewind_step=0)  # the dense baseline trains its whole run from theta_0
    return MethodPlan(ScoreMask(method="dense", start=start, prune=t.prune, seed=t.seed, fields=("ignore",)), start)


def plan_pdp(t: TrialSettings) -> MethodPlan:
    mask = PdpMask(start=_pretrain(t, "rewind", rewind_step=0), prune=t.prune, seed=t.seed)
    return MethodPlan(mask, None, search=[mask])


def plan_post_training(t: TrialSettings) -> MethodPlan:
    """Prune the dense trained net from calibration examples; evaluate that (one-shot, the default) or
    retrain the mask from theta_k like every other method (``prune.retrain: true``)."""
    pretrain = _pretrain(t, "end")
    mask = PostTrainMask(method=t.prune.method, trained=pretrain, prune=t.prune, seed=t.seed)
    return MethodPlan(mask, pretrain if t.prune.retrain else None, search=[pretrain, mask])


def plan_distilled_imp(t: TrialSettings) -> MethodPlan:
    return _plan_small_set_imp(t, t.prune.distill)


def plan_imp_subset(t: TrialSettings) -> MethodPlan:
    return _plan_small_set_imp(t, subset_config(t.prune.distill))


def subset_config(dcfg: DistillConfig) -> DistillConfig:
    return DistillConfig(method="random", ipc=dcfg.ipc, seed=dcfg.seed)


def small_set_config(prune: PruneConfig) -> DistillConfig | None:
    """The small set a trial with this config trains on, if any."""
    if prune.method == "distilled_imp":
        return prune.distill
    if prune.method == "imp_subset":
        return subset_config(prune.distill)
    return None
