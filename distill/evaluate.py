"""Quality of a distilled set: train fresh networks on it, test them on the real test split.

Two protocols, both the papers' ``evaluate_synset`` (SGD momentum 0.9, weight decay 5e-4, the lr x0.1 at
half the epochs, batch 256):

* ``plain``: lr 0.01, 300 epochs without augmentation (SPEC's short protocol, the default);
* ``papers``: what DSA, DM and MTT report: 1000 epochs with DSA augmentation on every batch, drawn per
  sample (DSA's training mode), at lr 0.01, or at the step size an MTT set learned (MTT evaluates its
  sets with ``args.lr_net = syn_lr``). A set judged with ``plain`` scores lower than its paper says; that
  gap is the protocol, not the set.

Networks are seeded 0..nets-1; the reported std is the population std over them (``np.std``, as the
reference code reports).
"""
from __future__ import annotations

import statistics
import time

from training.data import DataBundle
from training.models import ModelConfig
from training.trainer import TrainConfig, Trainer

from .artifact import DistilledSet
from .augment import Augment, default_augment
from .methods import default_network, sample_network

__all__ = ["evaluate_distilled", "papers_protocol", "protocol_train_config"]


def protocol_train_config(epochs: int = 300, **overrides) -> TrainConfig:
    """The distillation literature's evaluation recipe; ``overrides`` replace any TrainConfig field."""
    settings = dict(
        epochs=epochs,
        batch_size=256,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="multistep",
        milestones=[epochs / 2] if epochs > 1 else [],
        gamma=0.1,
        augment="none",
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def papers_protocol(ds: DistilledSet, epochs: int = 1000) -> tuple[TrainConfig, Augment]:
    """The papers' evaluation: ``epochs`` with per-sample DSA, at the set's learned lr where it has one."""
    learned = ds.cost.get("learned_lr")
    lr = float(learned) if learned else 0.01
    return protocol_train_config(epochs, lr=lr), default_augment(ds.input_shape, draw="sample")


def _model_config(ds: DistilledSet, model_cfg: ModelConfig | dict | None) -> ModelConfig:
    if isinstance(model_cfg, ModelConfig):
        return model_cfg
    if isinstance(model_cfg, dict):
        return ModelConfig.model_validate(model_cfg)
    network = ds.recipe.get("network")
    if network:
        return ModelConfig.model_validate(network)
    return default_network(ds.input_shape)


def evaluate_distilled(
    ds: DistilledSet,
    real: DataBundle,
    train_cfg: TrainConfig | None = None,
    nets: int = 3,
    model_cfg: ModelConfig | dict | None = None,
    augment: Augment | None = None,
) -> dict:
    """Train ``nets`` fresh networks (seeds 0..nets-1, init and batch order) on ``ds`` and test each on
    ``real.test``. The network defaults to the one the set was distilled with, else the input kind's
    default. ``augment`` (``papers_protocol``'s) transforms every training batch. Returns ``{"mean", "std",
    "accuracies", "sample_passes", "wall_time_s", "network", "lr", "augment"}`` (accuracies are fractions
    in [0, 1])."""
    if nets < 1:
        raise ValueError(f"nets must be >= 1, got {nets}")
    train_cfg = train_cfg or protocol_train_config()
    net_cfg = _model_config(ds, model_cfg)
    bundle = ds.as_bundle(real)
    t0 = time.perf_counter()
    accuracies, passes = [], 0
    for seed in range(nets):
        model = sample_network(net_cfg, bundle, seed)
        trainer = Trainer(train_cfg, bundle, seed=seed, augment=augment)
        result = trainer.fit(model, eval_every_epoch=False)
        accuracies.append(result.test.accuracy)
        passes += result.sample_passes
    return {
        "mean": statistics.fmean(accuracies),
        "std": statistics.pstdev(accuracies),
        "accuracies": accuracies,
        "sample_passes": passes,
        "wall_time_s": time.perf_counter() - t0,
        "network": net_cfg.model_dump(mode="json"),
        "lr": train_cfg.lr,
        "augment": repr(augment) if augment is not None else "none",
    }
