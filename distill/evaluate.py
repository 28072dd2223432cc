"""Quality of a distilled set: train fresh networks on it, test them on the real test split.

The protocol (DC/DSA/DM/MTT ``evaluate_synset``): SGD lr 0.01, momentum 0.9, weight decay 5e-4, the lr
multiplied by 0.1 at half the epochs, batch 256, 300 epochs without augmentation. Networks are seeded
0..nets-1; the reported std is the population std over them (``np.std``, as the reference code reports).
"""
from __future__ import annotations

import statistics
import time

from training.data import DataBundle
from training.models import ModelConfig
from training.trainer import TrainConfig, Trainer

from .artifact import DistilledSet
from .methods import default_network, sample_network

__all__ = ["evaluate_distilled", "protocol_train_config"]


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
) -> dict:
    """Train ``nets`` fresh networks (seeds 0..nets-1, init and batch order) on ``ds`` and test each on
    ``real.test``. The network defaults to the one the set was distilled with, else the input kind's
    default. Returns ``{"mean", "std", "accuracies", "sample_passes", "wall_time_s", "network"}``
    (accuracies are fractions in [0, 1])."""
    if nets < 1:
        raise ValueError(f"nets must be >= 1, got {nets}")
    train_cfg = train_cfg or protocol_train_config()
    net_cfg = _model_config(ds, model_cfg)
    bundle = ds.as_bundle(real)
    t0 = time.perf_counter()
    accuracies, passes = [], 0
    for seed in range(nets):
        model = sample_network(net_cfg, bundle, seed)
        trainer = Trainer(train_cfg, bundle, seed=seed)
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
    }
