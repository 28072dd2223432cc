"""Per-layer density search vs global allocation at the same densities: hypervolume of both fronts.

Arm A is a multi-objective Optuna search (TPE; maximise validation accuracy, minimise remaining
parameters) over the target sparsity and one relative density per prunable layer (allocation
'scaled', exact total). Arm B runs the same number of trials with global allocation, at exactly the
target sparsities arm A's trials used. Both prune conv1d at init with SNIP on MNIST-1D (generated
locally) and retrain the mask the same way; each arm is one `prunetune run`.

Hypervolume: the area dominated by an arm's completed trials in (remaining parameters / dense
parameters, validation accuracy) space, with the reference point (1, 0) (a dense net of chance
accuracy); larger is better. Also reported: each arm's front and test accuracy at its best point.

    .venv/bin/python benchmarks/layer_density_search.py [--trials 16] [--out benchmarks/results/layer_density_search.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

BASE = {
    "data": {"name": "mnist1d", "num_samples": 10000, "val_fraction": 0.15},
    "model": {"name": "conv1d", "options": {"width": 32}},
    "train": {"epochs": 12, "batch_size": 100, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0},
    "prune": {"method": "snip", "sparsity": 0.9},
    "ray": {"num_cpus": 2},
}


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = (1.0, 0.0)) -> float:
    """Area dominated by (cost, accuracy) points (cost lower, accuracy higher is better) up to ``ref``."""
    best, area = ref[1], 0.0
    front = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    for i, (cost, acc) in enumerate(front):
        right = front[i + 1][0] if i + 1 < len(front) else ref[0]
        area += (right - cost) * (acc - ref[1])
    return area


def _run(cfg: dict, out: Path) -> list[dict]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("prunetune")
    proc = subprocess.run([str(exe), "run", str(path), "--out", str(out), "--quiet"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cfg['name']} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [r for r in pq.read_table(out / "results.parquet").to_pylist() if r["status"] == "ok"]


def _points(rows: list[dict]) -> list[tuple[float, float]]:
    return [(r["remaining_params"] / r["dense_params"], r["val_accuracy"]) for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "layer_density_search.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_layer = _run({**BASE, "name": "per_layer", "sweep": {"optuna": {
            "num_samples": args.trials, "sampler": "tpe", "seed": 0,
            "objectives": [{"metric": "val_accuracy", "mode": "max"}, {"metric": "remaining_params", "mode": "min"}],
            "layer_densities": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
            "space": {"prune.sparsity": {"type": "float", "low": 0.5, "high": 0.98}}}}}, Path(tmp) / "per_layer")
        sparsities = sorted(r["target_sparsity"] for r in per_layer)
        global_ = _run({**BASE, "name": "global", "prune": {**BASE["prune"], "allocation": "global"},
                        "sweep": {"grid": [{"prune.sparsity": sparsities}]}}, Path(tmp) / "global")
    arms = {"per_layer": per_layer, "global": global_}
    result = {"benchmark": "layer_density_search", "trials": args.trials, "arms": {}}
    for name, rows in arms.items():
        best = max(rows, key=lambda r: r["val_accuracy"])
        result["arms"][name] = {
            "completed": len(rows), "hypervolume": hypervolume(_points(rows)),
            "points": sorted(_points(rows)),
            "best_val": {"val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"],
                         "density": best["density"]},
        }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result.update({"commit": commit, "date": time.strftime("%Y-%m-%d"),
                   "machine": {"python": platform.python_version(), "platform": platform.platform()}})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, arm in result["arms"].items():
        print(f"{name}_hypervolume: {arm['hypervolume']:.4f}")
        print(f"{name}_completed: {arm['completed']}")
        print(f"{name}_best_val_accuracy: {arm['best_val']['val_accuracy']:.4f} (density {arm['best_val']['density']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
