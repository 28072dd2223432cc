"""Stage reuse: a methods x sparsities x seeds grid run through the stage store shared by all its
trials, against the same trials each with a fresh store (nothing shared): total time, the ratio, and how
many stages each arm computed. In-process (no Ray), so the figure is the store's alone.

    .venv/bin/python benchmarks/stage_reuse.py [--quick]
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median, write  # noqa: E402
from pipelines.config import trial_config  # noqa: E402
from pipelines.trial import run_trial  # noqa: E402
from training.store import ArtifactStore  # noqa: E402

RAW = {
    "name": "reuse",
    "data": {"name": "digits", "val_fraction": 0.15},
    "model": {"name": "mlp", "options": {"widths": [300, 100]}},
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.05},
    "prune": {"method": "imp", "sparsity": 0.8},
}


def grid(quick: bool) -> list[dict]:
    methods = ["imp", "magnitude", "synflow", "snip"]
    sparsities = [0.5, 0.8, 0.9] if quick else [0.5, 0.8, 0.9, 0.95]
    seeds = [0] if quick else [0, 1]
    return [{"prune.method": m, "prune.sparsity": s, "seed": seed}
            for m, s, seed in itertools.product(methods, sparsities, seeds)]


def computed(root: Path) -> int:
    return sum(1 for r in ArtifactStore(root).index() if r["status"] == "done")


def run(points: list[dict], shared: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stages = 0
        for i, point in enumerate(points):
            root = Path(tmp) / ("store" if shared else f"store{i}")
            run_trial(trial_config(RAW, point), ArtifactStore(root), log=lambda m: None)
            if not shared:
                stages += computed(root)
        wall = time.perf_counter() - t0
        return wall, computed(Path(tmp) / "store") if shared else stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    points = grid(args.quick)
    walls: dict[str, list[float]] = {"shared": [], "fresh": []}
    counts: dict[str, int] = {}
    for r in range(1 if args.quick else 2):
        for arm in (("shared", "fresh") if r % 2 == 0 else ("fresh", "shared")):
            wall, n = run(points, arm == "shared")
            walls[arm].append(wall)
            counts[arm] = n
    shared, fresh = median(walls["shared"]), median(walls["fresh"])
    write("stage_reuse", {
        "trials": len(points), "shared_store_s": shared, "fresh_store_s": fresh, "time_ratio_fresh_over_shared": fresh / shared,
        "stage_runs_shared": counts["shared"], "stage_runs_fresh": counts["fresh"],
    }, args.quick, {"grid": points})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
