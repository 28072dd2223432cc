"""One-shot post-training pruning, no retraining: magnitude vs Wanda vs SparseGPT (its block-wide adaptive
mask, and the per-row variant, ``selection: row``) at 50% unstructured and 2:4, on a trained conv1d (MNIST-1D, generated locally) and a trained ConvNet (scikit-learn
digits). The claim checked (Wanda and SparseGPT papers): both beat magnitude pruning one-shot. Magnitude is
run per layer (the papers' baseline) and per output row (Wanda's own comparison group: a stronger
baseline that isolates Wanda's activation term).

Each seed trains one dense net; the three pruners start from copies of it, with the same 10
calibration examples per class; magnitude keeps the same count per output row as the others (the
comparison group Wanda uses) so that only the score differs. For 2:4, layers whose inputs per output
are not a multiple of 4 stay dense for every method. Test accuracy, mean +- std over seeds.

    .venv/bin/python benchmarks/posttrain_oneshot.py [--seeds 3] [--out benchmarks/results/posttrain_oneshot.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pruning.config import PostTrainConfig
from pruning.mask import Mask, prunable_parameters
from pruning.methods import scoring_batches
from pruning.posttrain import as_matrix, _module_of, prune_lowest_per_row, prune_nm, prune_post_training, row_quotas
from pruning.allocation import exact_uniform_counts
from training.data import DataConfig, load_dataset
from training.models import create_model
from training.trainer import TrainConfig, Trainer

SETUPS = {
    "conv1d/mnist1d": (DataConfig(name="mnist1d", num_samples=10000), ("conv1d", {"width": 64}),
                       TrainConfig(epochs=15, batch_size=100, optimizer="adam", lr=0.003, weight_decay=0.0)),
    "convnet/digits": (DataConfig(name="digits"), ("convnet", {"width": 32, "depth": 2}),
                       TrainConfig(epochs=15, batch_size=64, lr=0.05)),
}
ARMS = {"50%": PostTrainConfig(), "2:4": PostTrainConfig(structure="nm", n=2, m=4)}
METHODS = ("magnitude/layer", "magnitude/row", "wanda", "wanda/layer", "sparsegpt", "sparsegpt/row")


def nm_ignore(model, cfg: PostTrainConfig) -> list[str]:
    """N:M needs each layer's inputs per output to be a multiple of m: others stay dense (e.g. a first
    conv with 1 channel x kernel 5), for every method alike."""
    if cfg.structure != "nm":
        return []
    return [n for n in prunable_parameters(model) if as_matrix(_module_of(model, n)).shape[1] % cfg.m]


def magnitude_one_shot(model, density: float, cfg: PostTrainConfig, ignore: list[str], per_row: bool) -> Mask:
    """|W| one shot: per output row (Wanda's comparison group) or per layer (the papers' baseline)."""
    params = prunable_parameters(model, ignore)
    counts = exact_uniform_counts(density, {n: p.shape for n, p in params.items()})
    masks = {}
    for name, p in params.items():
        w = as_matrix(_module_of(model, name))
        if cfg.structure == "nm":
            pruned = prune_nm(w.abs(), cfg.n, cfg.m)
        elif per_row:
            pruned = prune_lowest_per_row(w.abs(), row_quotas(*w.shape, counts[name]))
        else:
            flat = w.abs().reshape(1, -1)
            pruned = prune_lowest_per_row(flat, torch.tensor([w.numel() - counts[name]])).reshape(w.shape)
        with torch.no_grad():
            w.mul_(~pruned)
        masks[name] = (~pruned).reshape(p.shape)
    return Mask(masks)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "posttrain_oneshot.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    results: dict = {}
    for setup, (data_cfg, (model_name, opts), train_cfg) in SETUPS.items():
        data = load_dataset(data_cfg)
        acc: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            dense = create_model(model_name, data.input_shape, data.num_classes, **opts)
            trainer = Trainer(train_cfg, data, seed=seed)
            trainer.fit(dense, eval_every_epoch=False)
            dense.eval()
            acc.setdefault("dense", []).append(trainer.evaluate(dense, data.test).accuracy)
            calib = scoring_batches(data, 10, seed, torch.device("cpu")).x
            for arm, cfg in ARMS.items():
                ignore = nm_ignore(dense, cfg)
                for method in METHODS:
                    if cfg.structure == "nm" and method.endswith(("/layer", "sparsegpt/row")):
                        continue  # N:M fixes the comparison group: per row, every m inputs
                    net = copy.deepcopy(dense)
                    if method.startswith("magnitude"):
                        magnitude_one_shot(net, 0.5, cfg, ignore, per_row=method == "magnitude/row")
                    elif method == "wanda/layer":
                        prune_post_training(net, "wanda", 0.5, cfg.model_copy(update={"group": "layer"}), calib,
                                            ignore=ignore)
                    elif method == "sparsegpt/row":  # the per-row quota this project used before (selection: row)
                        prune_post_training(net, "sparsegpt", 0.5, cfg.model_copy(update={"selection": "row"}),
                                            calib, ignore=ignore)
                    else:
                        prune_post_training(net, method, 0.5, cfg, calib, ignore=ignore)
                    acc.setdefault(f"{method} {arm}", []).append(trainer.evaluate(net, data.test).accuracy)
        results[setup] = {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                              "values": v} for k, v in acc.items()}
        for arm in ARMS:
            mags = [results[setup][k]["mean"] for k in (f"magnitude/row {arm}", f"magnitude/layer {arm}")
                    if k in results[setup]]
            for method in ("wanda", "wanda/layer", "sparsegpt", "sparsegpt/row"):
                if f"{method} {arm}" not in results[setup]:
                    continue
                results[setup][f"{method} {arm}"]["beats_magnitude"] = results[setup][f"{method} {arm}"]["mean"] > max(mags)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"benchmark": "posttrain_oneshot", "seeds": args.seeds, "results": results, "commit": commit,
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "torch": torch.__version__}, "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for setup, rows in results.items():
        for name, r in rows.items():
            flag = "" if "beats_magnitude" not in r else f"  beats both magnitudes: {r['beats_magnitude']}"
            print(f"{setup} {name}: {r['mean']:.4f} +- {r['std']:.4f}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
