"""Distilled sets shared by the trials of a sweep: made once, stored under a key, loaded by each trial.

The key is a hash of the data settings and the distillation config, so every trial that asks for the
same set finds the one artifact (the driver makes it before trials start; a trial run on its own
makes it on first use). Its cost is recorded in the artifact, so it can be reported alone and
amortised over the trials that share it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from training.data import DataBundle, DataConfig
from training.identity import content_hash

from .artifact import DistilledSet, save_picture
from .methods import DistillConfig, distill_dataset


def distilled_key(data: DataConfig, cfg: DistillConfig) -> str:
    return content_hash(
        {"data": data.model_dump(mode="json"),
         "distill": cfg.model_dump(mode="json", exclude={"device", "checkpoint_every", "progress_every"})}
    )


def distilled_path(root: Path, data: DataConfig, cfg: DistillConfig) -> Path:
    return root / "distilled" / f"{cfg.method}-{distilled_key(data, cfg)}.pt"


def ensure_distilled(
    real: DataBundle,
    data_cfg: DataConfig,
    cfg: DistillConfig,
    root: Path,
    log: Callable[[str], None] = print,
) -> tuple[DistilledSet, Path, bool]:
    """Load the set if it exists, else distil it (resumable via checkpoints) and save it with a picture.

    Returns (set, path, made_now).
    """
    path = distilled_path(root, data_cfg, cfg)
    if path.is_file():
        return DistilledSet.load(path), path, False
    log(f"distilling {cfg.method} at {cfg.ipc} per class ({cfg.iterations} iterations) -> {path}")

    def progress(it: int, metrics: dict) -> None:
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        log(f"distill {cfg.method} iteration {it}/{cfg.iterations} {shown}")

    ds = distill_dataset(real, cfg, progress=progress, checkpoint_dir=path.parent / "checkpoints")
    ds.save(path)
    save_picture(ds, path.with_suffix(".png"))
    return ds, path, True
