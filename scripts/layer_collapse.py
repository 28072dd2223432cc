"""Layer collapse at initialisation on VGG-16-BN at CIFAR-100 shape (Synaptic-Flow, Figure 1).

Claim checked (SPEC, "Published anchors"): single-shot magnitude pruning collapses a layer (prunes it
entirely) by 10^2.75-10^3 compression, while SynFlow with 100 exponential rounds collapses none up to
10^5 compression (99.999% sparsity) and beyond. No training, no data: everything happens at init.

Usage: python scripts/layer_collapse.py [--rounds 100] [--synflow-compressions 3 4 5] [--seed 0]
                                       [--bias-init default|pytorch]

``default`` is the project's init, which zeroes every conv/linear bias as Synaptic-Flow's lottery VGG does
(``nn.init.constant_(m.bias, 0)``); ``pytorch`` redraws them with PyTorch's default uniform init, to show why:
SynFlow abs()es biases too, and non-zero biases add bias-to-output paths whose flow the conservation law does
not cover, so with them SynFlow collapses layers at extreme compression.
One SynFlow run costs ``rounds`` forward/backward passes of the float64 net plus a global top-k over the
~14.7M weights each round: minutes per compression on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from pruning.at_init import prune_at_init
from pruning.mask import Mask
from pruning.scorers import SCORERS, ScoringBatches
from training.models import create_model

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 100


def _row(method: str, rounds: int, log_c: float, mask: Mask, seconds: float) -> str:
    rep = mask.report()
    smallest = min(rep.layers.items(), key=lambda item: item[1].kept)
    collapsed = ", ".join(n.removesuffix(".weight") for n in rep.collapsed) or "-"
    return (f"| {method:<9} | {rounds:>6} | {log_c:>6.2f} | {100 * rep.sparsity:>9.4f} | {rep.kept:>8} | "
            f"{smallest[1].kept:>5} ({smallest[0].removesuffix('.weight')}) | {len(rep.collapsed):>2} | "
            f"{collapsed} | {seconds:>7.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="SynFlow rounds (paper: 100)")
    parser.add_argument("--synflow-compressions", type=float, nargs="+", default=[3.0, 4.0, 5.0],
                        help="log10 compression ratios for SynFlow")
    parser.add_argument("--baseline-compressions", type=float, nargs="+",
                        default=[2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5],
                        help="log10 compression ratios for the single-shot baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bias-init", choices=["default", "pytorch"], default="default",
                        help="default: the project's zero biases; pytorch: PyTorch's default uniform biases")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = create_model("vgg16_bn", INPUT_SHAPE, NUM_CLASSES)
    if args.bias_init == "pytorch":
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                bound = 1 / m.weight[0].numel() ** 0.5  # what nn.Conv2d/nn.Linear.reset_parameters draw
                torch.nn.init.uniform_(m.bias, -bound, bound)
    batches = ScoringBatches(None, None, INPUT_SHAPE, NUM_CLASSES)
    total = Mask.ones(model).total
    print(f"vgg16_bn, input {INPUT_SHAPE}, {NUM_CLASSES} classes, seed {args.seed}: {total} prunable weights "
          f"in {len(Mask.ones(model))} layers (max compression without collapse: 10^"
          f"{torch.log10(torch.tensor(total / len(Mask.ones(model)))).item():.2f})")
    print(f"conv/linear bias init: {args.bias_init}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float64 scoring")
    print()
    print("| method    | rounds | log10c | sparsity% |     kept | smallest layer (kept)  | #c | collapsed layers | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    first_collapse: dict[str, float | None] = {}
    for method in ("magnitude", "random"):
        first_collapse[method] = None
        for log_c in args.baseline_compressions:
            t0 = time.perf_counter()
            mask = prune_at_init(model, SCORERS.get(method)(seed=args.seed), 10 ** -log_c, batches)
            print(_row(method, 1, log_c, mask, time.perf_counter() - t0), flush=True)
            if mask.report().collapsed and first_collapse[method] is None:
                first_collapse[method] = log_c
    synflow_collapsed = []
    for log_c in args.synflow_compressions:
        t0 = time.perf_counter()
        mask = prune_at_init(model, SCORERS.get("synflow")(), 10 ** -log_c, batches, rounds=args.rounds)
        print(_row("synflow", args.rounds, log_c, mask, time.perf_counter() - t0), flush=True)
        if mask.report().collapsed:
            synflow_collapsed.append(log_c)
    print()
    for method, log_c in first_collapse.items():
        where = f"10^{log_c:g}" if log_c is not None else "none in the grid"
        print(f"{method}: first collapse at compression {where} (published: "
              f"{'10^2.75' if method == 'magnitude' else '10^3.25'})")
    print(f"synflow ({args.rounds} rounds): "
          + (f"COLLAPSED at 10^{synflow_collapsed}" if synflow_collapsed else
             f"no collapse up to 10^{max(args.synflow_compressions):g}") + " (published: none up to 10^6)")
    claim = first_collapse["magnitude"] is not None and first_collapse["magnitude"] <= 3 and not synflow_collapsed
    print(f"claim holds: {claim}")
    return 0 if claim else 1


if __name__ == "__main__":
    sys.exit(main())
