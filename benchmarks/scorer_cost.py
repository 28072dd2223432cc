"""Scorer cost: seconds per scoring round of every pruning-at-init method on ResNet-20 and VGG-16-BN
(CIFAR shape, 10 examples per class of fake data, float64 as ``prune_at_init`` scores), and seconds per
iteration of DM, DC and MTT on a CIFAR-shaped ConvNet-3.

Each scorer round is timed ``repeats`` times (methods interleaved), the median reported; a
distillation's per-iteration time is the median gap between its progress callbacks (MTT's expert
training, before the first iteration, is excluded).

    .venv/bin/python benchmarks/scorer_cost.py [--quick]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, median, write  # noqa: E402
from pruning.mask import Mask, prunable_parameters  # noqa: E402
from pruning.scorers import SCORERS, ScoringBatches  # noqa: E402
from training.models import create_model  # noqa: E402

SHAPE = (3, 32, 32)


def scorer_round(model_name: str, options: dict, methods: list[str], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(model_name, SHAPE, 10, **options).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, *SHAPE, generator=gen).double()
    y = torch.arange(100) % 10
    batches = ScoringBatches(x, y, SHAPE, 10, batch_size=100)
    params = prunable_parameters(model)
    mask = Mask.ones(model)
    total = sum(p.numel() for p in params.values())

    def arm(method: str):
        def run():
            scorer = SCORERS.get(method)(seed=0)
            if scorer.needs_budget:
                scorer.budget = round(0.05 * total)  # PHEW walks until 5% of the weights are on paths
            work = copy.deepcopy(model)
            scorer.score(work, prunable_parameters(work), mask, batches)
        return run

    times = interleaved({m: arm(m) for m in methods}, repeats)
    return {f"{model_name}.{m}_s": median(v) for m, v in times.items()}


def distill_iteration(method: str, iterations: int, width: int, syn_steps: int) -> float:
    from distill.config import DistillConfig
    from distill.methods import distill_dataset
    from training.data import DataConfig, load_dataset

    real = load_dataset(DataConfig(name="fake", num_samples=1000))
    options = {
        "mtt": {"num_experts": 1, "expert_epochs": 3, "max_start_epoch": 1, "syn_steps": syn_steps},
        "dc": {"outer_loop": 1, "inner_loop": 0},  # one matching step (the paper's iteration is 10 x (step + 50 epochs) at ipc 10)
    }.get(method, {})
    cfg = DistillConfig(method=method, ipc=10, iterations=iterations, batch_real=64, progress_every=1,
                        checkpoint_every=0, device="cpu", options=options,
                        network={"name": "convnet", "options": {"width": width, "depth": 3}})
    stamps: list[float] = []

    def progress(done: int, info: dict) -> None:
        if done >= 1:
            stamps.append(time.perf_counter())

    distill_dataset(real, cfg, progress=progress)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    methods = [m for m in SCORERS.names() if m not in ("imp",)]
    figures: dict[str, float] = {}
    quick = args.quick
    figures.update(scorer_round("resnet20", {"width": 8 if quick else 16}, [m for m in methods if m != "phew"],
                                1 if quick else 3))
    figures.update(scorer_round("vgg16_bn", {"width": 8 if quick else 64}, methods, 1))
    width, syn_steps = (32, 5) if quick else (128, 20)
    figures[f"convnet3_w{width}.dm_iteration_s"] = distill_iteration("dm", 4, width, syn_steps)
    figures[f"convnet3_w{width}.dc_matching_step_s"] = distill_iteration("dc", 3, width, syn_steps)
    figures[f"convnet3_w{width}.mtt_iteration_s"] = distill_iteration("mtt", 3, width, syn_steps)
    write("scorer_cost", figures, args.quick, {"note": (
        "float64 scoring on CPU, one round, 100 examples (resnet20 width 16 is OpenLTH's; vgg16_bn width 64 the "
        "standard one; --quick uses width 8). phew refuses residual nets, so it has no resnet20 entry. "
        f"Distillation: ipc 10 on 1000 fake CIFAR images, ConvNet-3 width {width}; dc_matching_step is one outer "
        f"step without inner epochs; mtt unrolls {syn_steps} student steps per iteration")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
