"""DM distillation vs real-sample coresets at 10 samples per class on MNIST-1D.

Arms, all in the data's normalised space and all judged by the same quality protocol (fresh ``conv1d``
nets trained on the 100-sample set, SGD lr 0.01, momentum 0.9, wd 5e-4, lr x0.1 at half, no augmentation,
tested on the real test split):

* ``random``: a random real subset per class, for several subset seeds (the control the target refers to);
* ``herding`` / ``kmeans``: real-sample coresets on random-net embeddings (further controls);
* ``dm``: distribution matching (fresh random conv1d per iteration, signal DSA, SGD on the signals),
  for one or more distillation seeds;
* ``full``: the same nets trained on the whole real training split (a ceiling, fewer epochs).

Prints per-arm mean +- std over all nets (and over subset/distillation seeds), the DM - random gap, and
the costs (wall clock, sample passes). With ``--out`` the same text is written to a file.

    .venv/bin/python benchmarks/distill_dm_mnist1d.py --out benchmarks/distill_dm_mnist1d_output.txt
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from distill.evaluate import evaluate_distilled, protocol_train_config
from distill.methods import DistillConfig, distill_dataset, sample_network
from training.data import DataConfig, load_dataset
from training.models import ModelConfig
from training.trainer import TrainConfig, Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--width", type=int, default=32, help="conv1d width, for distillation and evaluation")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--lr-images", type=float, default=0.5)
    ap.add_argument("--batch-real", type=int, default=128)
    ap.add_argument("--augment", default="default", help="signal DSA strategy, 'default' or 'none'")
    ap.add_argument("--dm-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--subset-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nets", type=int, default=5, help="evaluation nets per distilled set")
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--full-epochs", type=int, default=40, help="0 skips the full-data ceiling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_start = time.perf_counter()
    data = load_dataset(DataConfig(name="mnist1d", num_samples=args.num_samples))
    net = {"name": "conv1d", "options": {"width": args.width}}
    eval_cfg = protocol_train_config(args.eval_epochs, device="cpu")
    say(f"MNIST-1D num_samples={args.num_samples}: train {len(data.train)}, val {len(data.val)}, "
        f"test {len(data.test)}; {args.ipc} per class ({args.ipc * data.num_classes} samples)")
    say(f"evaluation: conv1d width {args.width}, {args.nets} nets per set, SGD lr {eval_cfg.lr} mom "
        f"{eval_cfg.momentum} wd {eval_cfg.weight_decay}, {args.eval_epochs} epochs, lr x0.1 at half, batch "
        f"{eval_cfg.batch_size}, no augmentation")
    say(f"DM: {args.iterations} iterations, lr_images {args.lr_images}, momentum 0.5, batch_real "
        f"{args.batch_real}/class, augment {args.augment!r}, fresh random conv1d width {args.width} per iteration, "
        f"init from real samples")
    say("")

    results: dict[str, list[float]] = {}
    costs: dict[str, list[dict]] = {}

    def arm(name: str, cfg: DistillConfig) -> None:
        ds = distill_dataset(data, cfg)
        ev = evaluate_distilled(ds, data, eval_cfg, nets=args.nets, model_cfg=net)
        results.setdefault(name, []).extend(ev["accuracies"])
        costs.setdefault(name, []).append(ds.cost)
        accs = ", ".join(f"{100 * a:.1f}" for a in ev["accuracies"])
        say(f"  {name:8s} seed {cfg.seed}: {100 * ev['mean']:.2f} +- {100 * ev['std']:.2f}  [{accs}]  "
            f"distill {ds.cost['wall_time_s']:.1f} s, {ds.cost['sample_passes']} sample passes; "
            f"eval {ev['wall_time_s']:.1f} s")

    common = dict(ipc=args.ipc, network=net, device="cpu")
    for seed in args.subset_seeds:
        arm("random", DistillConfig(method="random", seed=seed, **common))
    arm("herding", DistillConfig(method="herding", seed=0, **common))
    arm("kmeans", DistillConfig(method="kmeans", seed=0, **common))
    for seed in args.dm_seeds:
        arm("dm", DistillConfig(
            method="dm", seed=seed, iterations=args.iterations, lr_images=args.lr_images,
            batch_real=args.batch_real, augment=args.augment, checkpoint_every=0, progress_every=10**9, **common,
        ))

    if args.full_epochs:
        full_cfg = TrainConfig(epochs=args.full_epochs, batch_size=100, optimizer="sgd", lr=0.05, momentum=0.9,
                               weight_decay=5e-4, schedule="cosine", device="cpu")
        for seed in range(args.nets):
            model = sample_network(ModelConfig(**net), data, seed)
            res = Trainer(full_cfg, data, seed=seed).fit(model, eval_every_epoch=False)
            results.setdefault("full", []).append(res.test.accuracy)
        say(f"  {'full':8s} ({len(data.train)} real samples, {args.full_epochs} epochs SGD lr 0.05 cosine, batch 100): "
            + ", ".join(f"{100 * a:.1f}" for a in results["full"]))

    say("")
    say("test accuracy, mean +- std over all evaluation nets (and seeds):")
    for name, accs in results.items():
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        say(f"  {name:8s} {100 * statistics.fmean(accs):6.2f} +- {100 * std:5.2f}   (n={len(accs)})")
    gap = 100 * (statistics.fmean(results["dm"]) - statistics.fmean(results["random"]))
    say("")
    say(f"DM - random: {gap:+.2f} points (target >= +5): {'MET' if gap >= 5 else 'NOT MET'}")
    dm_cost = costs["dm"][0]
    say(f"DM cost per distilled set: {dm_cost['wall_time_s']:.1f} s wall (1 CPU thread), "
        f"{dm_cost['sample_passes']} sample passes = {dm_cost['sample_passes'] / len(data.train):.0f} real-epoch "
        f"equivalents ({dm_cost['real_forward']} real forwards + {dm_cost['synthetic_forward_backward']} synthetic "
        f"forward+backward)")
    say(f"total benchmark time {time.perf_counter() - t_start:.0f} s")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
