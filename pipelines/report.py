"""Sweep-level plots for the parent MLflow run: accuracy against sparsity, one line per method."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any


def plot_accuracy_vs_sparsity(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean test accuracy (with min-max over seeds) per method and target sparsity, on a
    compression (1/density) log axis, the way the pruning papers plot it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    dense: list[float] = []
    for r in rows:
        acc = r.get("test_accuracy")
        if r.get("status") != "ok" or acc is None or (isinstance(acc, float) and math.isnan(acc)):
            continue
        if r.get("method") == "dense":
            dense.append(acc)
        else:
            by_method[r["method"]][float(r["target_sparsity"])].append(acc)
    if not by_method and not dense:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted(by_method):
        points = sorted(by_method[method].items())
        xs = [1 / (1 - s) for s, _ in points]
        means = [sum(a) / len(a) for _, a in points]
        lows = [min(a) for _, a in points]
        highs = [max(a) for _, a in points]
        ax.plot(xs, means, marker="o", label=method)
        ax.fill_between(xs, lows, highs, alpha=0.15)
    if dense:
        ax.axhline(sum(dense) / len(dense), color="black", linestyle="--", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio 1/density (log)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
