"""The ``experts`` and ``distill`` stages: MTT's expert trajectories, and a distilled set (or coreset /
random subset) of a dataset, each made once per key.

Every Distilled Pruning trial of a sweep that asks for the same set reads the one stored ``set.pt``;
its cost is recorded in the set itself, so it can be reported alone and amortised over the trials
that share it. MTT sets that differ in anything but their experts (images per class, iterations,
learning rates) share one ``experts`` stage, which can run on its own resources (a GPU). Long
optimisations checkpoint into the environment's scratch folder and resume there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from training.data import DataConfig, smallest_class
from training.keys import canonical
from training.models import create_model
from training.stage import Stage, StageEnv, register_stage
from training.store import Entry

from .artifact import DistilledSet, checkpoint_path, save_checkpoint, save_picture
from .methods import DistillConfig, distill_dataset, network_for, parse_options

# The MTT options that change an expert trajectory (the rest only change how they are matched).
EXPERT_OPTIONS = ("num_experts", "expert_epochs", "expert_lr", "expert_batch", "expert_momentum",
                  "expert_weight_decay", "expert_augment")


@register_stage
@dataclass(eq=False)
class Experts(Stage):
    name: ClassVar[str] = "experts"
    shared_order: ClassVar[int] = 0
    reads: ClassVar[tuple[str, ...]] = ("data", "distill", "prune.distill")
    data: DataConfig
    cfg: DistillConfig  # an mtt config: its network, seed and expert options

    def settings(self) -> dict[str, Any]:
        from .mtt import MTTOptions

        opts = canonical(parse_options(MTTOptions, self.cfg))
        return {"data": canonical(self.data), "seed": self.cfg.seed,
                "network": canonical(self.cfg.network) if self.cfg.network is not None else "default",
                "experts": {k: opts[k] for k in EXPERT_OPTIONS if k in opts}}

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        from training.trainer import resolve_device

        from .mtt import MTTOptions, expert_buffer_hash, train_experts

        real = env.data(self.data)
        net, opts = network_for(self.cfg, real), parse_options(MTTOptions, self.cfg)
        scratch = env.scratch / "experts" if env.scratch is not None else None
        buffer = train_experts(real, net, opts, self.cfg.seed, resolve_device(self.cfg.device), scratch,
                               lambda k, m: env.log(f"expert {k + 1}/{opts.num_experts}: {m}"))
        bhash = expert_buffer_hash(real, net, opts, self.cfg.seed)
        save_checkpoint(out / "experts.pt", bhash, buffer.state())
        return {"buffer_hash": bhash, "sample_passes": sum(buffer.sample_passes[:opts.num_experts]),
                "wall_time_s": sum(buffer.wall_time_s[:opts.num_experts])}


@register_stage
@dataclass(eq=False)
class Distill(Stage):
    name: ClassVar[str] = "distill"
    shared_order: ClassVar[int] = 1  # after the expert trajectories MTT matches
    reads: ClassVar[tuple[str, ...]] = ("data", "distill", "prune.distill")
    data: DataConfig
    cfg: DistillConfig

    def settings(self) -> dict[str, Any]:
        s = {"data": canonical(self.data), "distill": canonical(self.cfg)}
        if self.cfg.method == "mtt":  # per-sample draws in the unroll became the default: sets made before differ
            from .mtt import MTTOptions
            from .methods import parse_options

            s["syn_augment_draw"] = parse_options(MTTOptions, self.cfg).syn_augment_draw
        return s

    def inputs(self) -> dict[str, Stage]:
        return {"experts": Experts(data=self.data, cfg=self.cfg)} if self.cfg.method == "mtt" else {}

    def size(self, num_classes: int) -> int:
        """Examples in the set: ``ipc`` of every class."""
        return self.cfg.ipc * num_classes

    def check(self, env: StageEnv) -> None:
        from .coresets import CORESETS

        cfg = self.cfg
        real = env.data(self.data)
        create_model(network_for(cfg, real), real.input_shape, real.num_classes)  # one that cannot take the inputs
        c, have = smallest_class(real)
        if (cfg.init == "real" or cfg.method in CORESETS) and have < cfg.ipc:
            raise ValueError(f"images per class ipc={cfg.ipc} (prune.distill.ipc for distilled_imp): class {c} of "
                             f"{self.data.name} has only {have} training examples; lower ipc, add data, or use "
                             "init 'noise' (dm, dc, dsa, mtt)")

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        cfg = self.cfg
        env.log(f"distilling {cfg.method} at {cfg.ipc} per class ({cfg.iterations} iterations)")
        if "experts" in inputs:
            return self._with_experts(env, inputs["experts"], out)
        return self._distill(env, env.scratch / "distill" if env.scratch is not None else None, out)

    def _with_experts(self, env: StageEnv, experts: Entry, out: Path) -> dict[str, Any]:
        """MTT finds the stage's trajectories where it keeps its own buffer, and trains none."""
        import os
        import shutil
        import tempfile
        import uuid

        with tempfile.TemporaryDirectory() as tmp:
            checkpoints = env.scratch / "distill" if env.scratch is not None else Path(tmp)
            buffer = checkpoint_path(checkpoints, "mtt-experts", experts.meta["buffer_hash"])
            buffer.parent.mkdir(parents=True, exist_ok=True)
            partial = buffer.with_name(f".{buffer.name}.{uuid.uuid4().hex}")  # a concurrent set may read it
            shutil.copyfile(experts.file("experts.pt"), partial)
            os.replace(partial, buffer)
            return self._distill(env, checkpoints, out)

    def _distill(self, env: StageEnv, checkpoints: Path | None, out: Path) -> dict[str, Any]:
        cfg = self.cfg

        def progress(it: int, metrics: dict) -> None:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            env.log(f"distill {cfg.method} iteration {it}/{cfg.iterations} {shown}")

        ds = distill_dataset(env.data(self.data), cfg, progress=progress, checkpoint_dir=checkpoints)
        ds.save(out / "set.pt")
        save_picture(ds, out / "set.png")
        return {"sample_passes": int(ds.cost.get("sample_passes", 0)),
                "distill_wall_time_s": float(ds.cost.get("wall_time_s", 0.0))}


def load_set(entry: Entry) -> DistilledSet:
    return DistilledSet.load(entry.file("set.pt"))
