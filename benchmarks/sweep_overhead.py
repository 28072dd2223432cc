"""Sweep scaling and orchestration overhead: N short trials run one after another in one plain Python
process (``run_trial``, no Ray, no MLflow) vs through ``prunetune run`` with 1 and with 2 concurrent
trials on 2 CPUs. Reports the speedup of 2 concurrent trials (the limit is 2.0x) and where the
sweep's extra time goes: start-up before the first trial (imports, validation, pre-flight, Ray and
MLflow start), the gap per trial between trials (actor start, MLflow logging, result collection), and
tear-down after the last (results table, report, Ray shutdown), and how long ``prunetune resume`` of the
finished sweep takes to answer. Arms alternate order between rounds.

The floor arm is the same start and stop without prunetune: Ray started in a fresh process, one actor
that imports torch and MLflow, Ray stopped. No sweep scheduled by Ray can start or stop faster, so it
is the yardstick for the start-up and tear-down figures.

    .venv/bin/python benchmarks/sweep_overhead.py [--quick]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, write  # noqa: E402

BASE = {
    "name": "overhead",
    "data": {"name": "digits", "val_fraction": 0.15},
    "model": {"name": "mlp", "options": {"widths": [300, 100]}},
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.05},
    "prune": {"method": "magnitude", "sparsity": 0.5},
    "ray": {"num_cpus": 2},
}


def points(n: int) -> list[dict]:
    return [{"prune.sparsity": round(0.3 + 0.65 * i / max(1, n - 1), 4)} for i in range(n)]


def plain(n: int) -> dict[str, float]:
    code = (
        "import sys, time, json; t0 = time.perf_counter()\n"
        "from pipelines.config import trial_config\nfrom pipelines.trial import run_trial\n"
        "from training.store import ArtifactStore\n"
        f"raw = {BASE!r}; pts = {points(n)!r}\n"
        "store = ArtifactStore(sys.argv[1]); walls = []\n"
        "for p in pts:\n    walls.append(run_trial(trial_config(raw, p), store, log=lambda m: None)['wall_time_s'])\n"
        "print(json.dumps({'trials_s': sum(walls)}))\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "store")], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
    import json

    return {"wall_s": wall, "trials_s": json.loads(out.stdout.strip().splitlines()[-1])["trials_s"]}


FLOOR = """
import json, os, sys, time
t0 = float(sys.argv[1])
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
up = time.time()

@ray.remote(num_cpus=1)
class Trial:  # what any trial scheduled by Ray pays before its first line: a worker, torch, MLflow
    def ready(self):
        import mlflow, torch  # noqa: F401
        return time.time()

first = ray.get(Trial.remote().ready.remote())
t1 = time.time()
ray.shutdown()
print(json.dumps({"ray_init_s": up - t0, "start_s": first - t0, "shutdown_s": time.time() - t1}))
"""


def floor() -> dict[str, float]:
    """The least a Ray-scheduled sweep can cost on this machine, with no prunetune code at all: a fresh
    process starts Ray, one actor imports torch and MLflow (start), then Ray stops (shutdown)."""
    import json

    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", FLOOR, repr(t0)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep(n: int, concurrent: int) -> dict[str, float]:
    cfg = {**BASE, "sweep": {"grid": [{"prune.sparsity": [p["prune.sparsity"] for p in points(n)]}],
                             "max_concurrent_trials": concurrent}}
    exe = Path(sys.executable).with_name("prunetune")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0_epoch, t0 = time.time(), time.perf_counter()
        proc = subprocess.run([str(exe), "run", str(path), "--out", str(Path(tmp) / "out"), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        end_epoch = t0_epoch + wall
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
        rows = pq.read_table(Path(tmp) / "out" / "results.parquet").to_pylist()
        t1 = time.perf_counter()  # a resume of the finished sweep: it should only answer
        subprocess.run([str(exe), "resume", str(Path(tmp) / "out"), "--quiet"], capture_output=True, cwd=ROOT,
                       check=True)
        resume_s = time.perf_counter() - t1
    first, last = min(r["started_at"] for r in rows), max(r["ended_at"] for r in rows)
    trials = sum(r["wall_time_s"] for r in rows)
    return {"wall_s": wall, "trials_s": trials, "startup_s": first - t0_epoch, "teardown_s": end_epoch - last,
            "gap_per_trial_s": max(0.0, (last - first) * concurrent - trials) / len(rows),
            "resume_finished_s": resume_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 6 if args.quick else 12
    arms = {"plain": lambda: plain(n), "sweep1": lambda: sweep(n, 1), "sweep2": lambda: sweep(n, 2), "floor": floor}
    got: dict[str, list[dict]] = {k: [] for k in arms}
    for r in range(1 if args.quick else 2):
        for name in (list(arms) if r % 2 == 0 else list(reversed(arms))):
            got[name].append(arms[name]())

    def m(arm: str, key: str) -> float:
        return median([g[key] for g in got[arm]])

    figures = {
        "trials": n, "plain_wall_s": m("plain", "wall_s"), "sweep1_wall_s": m("sweep1", "wall_s"),
        "sweep2_wall_s": m("sweep2", "wall_s"),
        "speedup_2_concurrent_vs_plain": m("plain", "wall_s") / m("sweep2", "wall_s"),
        "speedup_2_vs_1_concurrent": m("sweep1", "wall_s") / m("sweep2", "wall_s"),
        "trial_s_mean_plain": m("plain", "trials_s") / n, "trial_s_mean_sweep1": m("sweep1", "trials_s") / n,
        "sweep_startup_s": m("sweep1", "startup_s"), "sweep_teardown_s": m("sweep1", "teardown_s"),
        "sweep_gap_per_trial_s": m("sweep1", "gap_per_trial_s"),
        "resume_finished_s": m("sweep1", "resume_finished_s"),
        "ray_floor_init_s": m("floor", "ray_init_s"), "ray_floor_startup_s": m("floor", "start_s"),
        "ray_floor_shutdown_s": m("floor", "shutdown_s"),
        "overhead_per_trial_s": (m("sweep1", "wall_s") - m("plain", "wall_s")) / n,
    }
    write("sweep_overhead", figures, args.quick, {"runs": got})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
