"""One trial: mask search -> rewind -> retrain -> evaluate, for one resolved configuration.

The same function runs inside a Ray Tune trial and directly in tests. Its outputs live under a
content-hashed directory (``<out>/runs/<hash>``), so a finished trial is a cache hit when the same
settings come round again, and its artifacts are logged to the trial's MLflow child run.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from distill.store import ensure_distilled
from pruning.imp import LevelRecord
from pruning.mask import Mask, atomic_torch_save, atomic_write_text
from pruning.methods import SearchContext, apply_ablation, get_method
from training.cost import count_flops, masked_flops, param_counts
from training.data import load_dataset
from training.models import create_model
from training.trainer import Trainer, TrainResult

from .config import ExperimentConfig
from .tracking import RunLogger


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_trial(
    cfg: ExperimentConfig,
    out_dir: Path,
    logger: RunLogger | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage and return the trial's result row (metrics, not bookkeeping ids)."""
    t_start = time.perf_counter()
    trial_dir = out_dir / "runs" / cfg.trial_hash()
    if (trial_dir / "result.json").is_file():
        try:
            row = json.loads((trial_dir / "result.json").read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"cached trial result {trial_dir / 'result.json'} is corrupt ({exc}); delete {trial_dir} to rerun it"
            ) from None
        log(f"cache hit: {trial_dir} already holds this trial's result")
        if logger:
            _log_outputs(logger, row, trial_dir, cached=True)
        return {**row, "cached": True}

    seed_everything(cfg.seed)
    data = load_dataset(cfg.data)
    model = create_model(cfg.model, data.input_shape, data.num_classes)
    trainer = Trainer(cfg.train, data, seed=cfg.seed, log=log)
    if cfg.prune.rewind_step > trainer.total_steps:
        raise ValueError(
            f"prune.rewind_step={cfg.prune.rewind_step} is beyond training: {cfg.train.epochs} epochs x "
            f"{trainer.steps_per_epoch} iterations = {trainer.total_steps}; allowed 0..{trainer.total_steps}"
        )
    if logger:
        logger.tags({"device": str(trainer.device)})

    def on_level(record: LevelRecord, mask: Mask) -> None:
        log(
            f"level {record.level}: density {record.density:.4f} test acc {record.test_accuracy:.4f}"
            + (" (cached)" if record.cached else f" ({record.wall_time_s:.1f}s)")
        )
        if logger:
            logger.metrics(
                {"level_test_accuracy": record.test_accuracy, "level_density": record.density,
                 **({"level_val_accuracy": record.val_accuracy} if record.val_accuracy is not None else {})},
                step=record.level,
            )

    # Stage 1: mask search.
    ctx = SearchContext(
        model=model,
        trainer=trainer,
        data=data,
        prune=cfg.prune,
        seed=cfg.seed,
        store_root=out_dir / "cache",
        store_key={k: v for k, v in cfg.result_settings().items() if k != "prune"},
        on_level=on_level,
        log=log,
        model_factory=lambda: create_model(cfg.model, data.input_shape, data.num_classes),
        small_set=lambda dcfg: ensure_distilled(data, cfg.data, dcfg, out_dir, log=log)[0],
    )
    search = apply_ablation(ctx, get_method(cfg.prune.method)(ctx))
    mask = search.mask
    report = mask.report()
    if report.collapsed:
        log(f"WARNING: layer collapse, no weights kept in {report.collapsed}")

    # Stage 2: rewind survivors to theta_k.
    model.load_state_dict(search.start.model)
    mask.apply_(model)

    # Stage 3: retrain with the mask fixed.
    def on_epoch(rec: dict) -> None:
        if logger:
            logger.metrics({k: v for k, v in rec.items() if k not in ("epoch", "step")}, step=rec["epoch"])

    if search.trained:  # train-time pruning already trained the masked net: evaluate it as it is
        result = TrainResult(
            test=trainer.evaluate(model, data.test),
            val=trainer.evaluate(model, data.val) if len(data.val) else None,
        )
    else:
        result = trainer.fit(model, mask=mask, start=search.start, on_epoch=on_epoch)
    named = dict(model.named_parameters())
    for name, m in mask.items():
        w = named[name]
        if bool((w.detach()[~m.to(w.device)] != 0).any()):
            raise AssertionError(f"pruned weights of {name} are non-zero after retraining")

    # Stage 4: evaluate and record.
    final_level = None
    if search.levels:
        final_level = len(search.levels)
        on_level(
            LevelRecord(final_level, mask.density, mask.kept, mask.total, result.test.accuracy,
                        result.val.accuracy if result.val else None, result.wall_time_s, result.sample_passes),
            mask,
        )
    target = cfg.prune.sparsity
    params = param_counts(model, mask)
    row = {
        "method": cfg.prune.method,
        "target_sparsity": target,
        "achieved_sparsity": report.sparsity,
        "density": report.density,
        "compression": report.compression if report.kept else None,
        "kept_params": report.kept,
        "prunable_params": report.total,
        "dense_params": params["dense_params"],
        "remaining_params": params["remaining_params"],
        "dense_flops": count_flops(model, data.input_shape),
        "flops": masked_flops(model, mask, data.input_shape),
        "collapsed": bool(report.collapsed),
        "collapsed_layers": ",".join(report.collapsed),
        "test_accuracy": result.test.accuracy,
        "test_loss": result.test.loss,
        "val_accuracy": result.val.accuracy if result.val else None,
        "seed": cfg.seed,
        "levels": final_level,
        "search_wall_time_s": search.wall_time_s,
        "search_sample_passes": search.sample_passes,
        "retrain_wall_time_s": result.wall_time_s,
        "retrain_sample_passes": result.sample_passes,
        "wall_time_s": time.perf_counter() - t_start,
        "trial_hash": cfg.trial_hash(),
        **_small_set_columns(search.small_set),
        "cached": False,
    }
    trial_dir.mkdir(parents=True, exist_ok=True)
    mask.save(trial_dir / "mask.pt")
    report.to_json(trial_dir / "sparsity.json")
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, trial_dir / "model.pt")
    atomic_write_text(trial_dir / "levels.json", json.dumps([asdict(r) for r in search.levels], indent=2))
    atomic_write_text(trial_dir / "config.json", json.dumps(cfg.result_settings(), indent=2))
    if search.level_dir is not None:
        atomic_write_text(trial_dir / "level_dir.txt", str(search.level_dir))
    atomic_write_text(trial_dir / "result.json", json.dumps(row, indent=2))  # last: marks the trial done
    if logger:
        _log_outputs(logger, row, trial_dir, cached=False)
    log(
        f"{cfg.prune.method} sparsity {report.sparsity:.4f}: test acc {result.test.accuracy:.4f} "
        f"in {row['wall_time_s']:.1f}s"
    )
    return row


def _small_set_columns(small) -> dict[str, Any]:
    """The small set's own cost (alone); the driver adds the cost amortised over the sweep."""
    if small is None:
        return {"small_set_hash": None, "small_set_method": None, "small_set_size": None,
                "distill_wall_time_s": None, "distill_sample_passes": None}
    return {
        "small_set_hash": small.content_hash,
        "small_set_method": small.recipe.get("method"),
        "small_set_size": len(small),
        "distill_wall_time_s": float(small.cost.get("wall_time_s", 0.0)),
        "distill_sample_passes": int(small.cost.get("sample_passes", 0)),
    }


def _log_outputs(logger: RunLogger, row: dict, trial_dir: Path, cached: bool) -> None:
    logger.metrics({k: v for k, v in row.items() if k not in ("seed",)})
    logger.tags({"trial_hash": row["trial_hash"], "cached": cached, "collapsed": row["collapsed"]})
    for name in ("mask.pt", "sparsity.json", "model.pt", "levels.json", "config.json"):
        if (trial_dir / name).is_file():
            logger.artifact(trial_dir / name)
    # Every IMP level's mask and sparsity report (the levels this trial used, not deeper ones).
    if (trial_dir / "level_dir.txt").is_file():
        level_dir = Path((trial_dir / "level_dir.txt").read_text())
        for level in range(1, (row.get("levels") or 0)):
            for name in ("mask.pt", "sparsity.json"):
                path = level_dir / f"level_{level}" / name
                if path.is_file():
                    logger.artifact(path, f"levels/level_{level}")


def describe_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
