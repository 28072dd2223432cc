"""The ``distill`` stage: a distilled set (or coreset / random subset) of a dataset, made once per key.

Every Distilled Pruning trial of a sweep that asks for the same set reads the one stored ``set.pt``;
its cost is recorded in the set itself, so it can be reported alone and amortised over the trials
that share it. Long optimisations checkpoint into the environment's scratch folder and resume there
(MTT's expert trajectories are kept there too, keyed by their own hash, and shared between sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from training.data import DataConfig
from training.keys import canonical
from training.stage import Stage, StageEnv, register_stage
from training.store import Entry

from .artifact import DistilledSet, save_picture
from .methods import DistillConfig, distill_dataset


@register_stage
@dataclass(eq=False)
class Distill(Stage):
    name: ClassVar[str] = "distill"
    data: DataConfig
    cfg: DistillConfig

    def settings(self) -> dict[str, Any]:
        return {"data": canonical(self.data), "distill": canonical(self.cfg)}

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        cfg = self.cfg
        env.log(f"distilling {cfg.method} at {cfg.ipc} per class ({cfg.iterations} iterations)")

        def progress(it: int, metrics: dict) -> None:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            env.log(f"distill {cfg.method} iteration {it}/{cfg.iterations} {shown}")

        checkpoints = env.scratch / "distill" if env.scratch is not None else None
        ds = distill_dataset(env.data(self.data), cfg, progress=progress, checkpoint_dir=checkpoints)
        ds.save(out / "set.pt")
        save_picture(ds, out / "set.png")
        return {"sample_passes": int(ds.cost.get("sample_passes", 0)),
                "distill_wall_time_s": float(ds.cost.get("wall_time_s", 0.0))}


def load_set(entry: Entry) -> DistilledSet:
    return DistilledSet.load(entry.file("set.pt"))
