"""Scale by simulation: many logical Ray nodes on this machine running many trivial trials that share
a handful of stages, to turn "what happens past one machine" into measured numbers.

A ``ray.cluster_utils.Cluster`` of ``nodes`` logical nodes (each its own raylet with a few logical
CPUs, more than the 2 real cores: the trials sleep, they do not compute) runs ``trials``
Ray tasks. Each materializes, in one shared stage store, one of ``shared`` parent stages (each takes
``parent_s`` to compute: the shared pre-training of a real sweep) and then its own trivial child stage.
Measured: driver throughput (tasks scheduled and finished per second), how many tasks waited on a
parent another task was computing (the store's lease) and for how long, that each parent was computed
exactly once, and the MLflow write rate of ``mlflow_runs`` tasks each creating a run with three metrics
in the sweep's SQLite tracking store (concurrently, as trials do).

    .venv/bin/python benchmarks/scale_simulation.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write  # noqa: E402
from training.stage import Stage, StageEnv, materialize, register_stage  # noqa: E402
from training.store import ArtifactStore  # noqa: E402


@register_stage
@dataclass(eq=False)
class SleepStage(Stage):
    """A stand-in for real work: sleeps, then writes one file."""

    name: ClassVar[str] = "bench_sleep"
    label: str
    seconds: float
    parent: Stage | None = None

    def settings(self) -> dict[str, Any]:
        return {"label": self.label, "seconds": self.seconds}

    def inputs(self) -> dict[str, Stage]:
        return {"parent": self.parent} if self.parent is not None else {}

    def run(self, env, inputs, out: Path) -> dict[str, Any]:
        time.sleep(self.seconds)
        (out / "done.txt").write_text(self.label)
        return {"sample_passes": 0}


def trial_task(store_root: str, i: int, shared: int, parent_s: float) -> dict[str, Any]:
    env = StageEnv(ArtifactStore(store_root), log=lambda m: None)
    parent = SleepStage(label=f"parent-{i % shared}", seconds=parent_s)
    t0 = time.perf_counter()
    entry = materialize(parent, env)
    waited = time.perf_counter() - t0
    materialize(SleepStage(label=f"trial-{i}", seconds=0.0, parent=parent), env)
    return {"parent": parent.label, "computed_parent": not entry.cached, "parent_s": waited, "pid": os.getpid()}


def mlflow_task(uri: str, experiment_id: str, i: int) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    t0 = time.perf_counter()
    run = client.create_run(experiment_id, run_name=f"trial-{i}")
    for k in ("val_accuracy", "test_accuracy", "density"):
        client.log_metric(run.info.run_id, k, 0.5)
    client.set_terminated(run.info.run_id)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import ray
    from ray.cluster_utils import Cluster

    # Every concurrent task is a worker process importing torch (~0.3 GB): the logical CPUs bound memory.
    nodes, cpus, trials, shared, parent_s, runs = (2, 2, 200, 4, 1.0, 40) if args.quick else (8, 3, 1000, 6, 2.0, 200)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus)
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
             include_dashboard=False, logging_level="ERROR")
    try:
        remote_trial = ray.remote(num_cpus=1)(trial_task)
        remote_mlflow = ray.remote(num_cpus=1)(mlflow_task)
        ray.get([remote_trial.remote(tempfile.gettempdir() + "/warm", 0, 1, 0.0) for _ in range(nodes * 2)])  # start workers
        with tempfile.TemporaryDirectory() as tmp:
            store = str(Path(tmp) / "store")
            t0 = time.perf_counter()
            refs = [remote_trial.remote(store, i, shared, parent_s) for i in range(trials)]
            submit_s = time.perf_counter() - t0
            results = ray.get(refs)
            wall = time.perf_counter() - t0
            computed = {}
            for r in results:
                computed[r["parent"]] = computed.get(r["parent"], 0) + int(r["computed_parent"])
            waits = [r["parent_s"] for r in results if not r["computed_parent"] and r["parent_s"] > 0.05]

            import mlflow
            from mlflow.tracking import MlflowClient

            uri = f"sqlite:///{tmp}/mlflow.db"
            mlflow.set_tracking_uri(uri)
            exp = MlflowClient(uri).create_experiment("scale")
            t1 = time.perf_counter()
            per_run = ray.get([remote_mlflow.remote(uri, exp, i) for i in range(runs)])
            mlflow_wall = time.perf_counter() - t1
            stored = len(MlflowClient(uri).search_runs([exp], max_results=runs + 10))
    finally:
        ray.shutdown()
        cluster.shutdown()
    figures = {
        "logical_nodes": nodes, "logical_cpus": nodes * cpus, "trials": trials, "shared_stages": shared,
        "trials_per_s": trials / wall, "submit_per_s": trials / submit_s, "wall_s": wall,
        "parents_computed_once": all(v == 1 for v in computed.values()) and len(computed) == shared,
        "tasks_waiting_on_a_lease": len(waits), "lease_wait_median_s": statistics.median(waits) if waits else 0.0,
        "waits_per_shared_stage": len(waits) / shared,
        "mlflow_runs": runs, "mlflow_runs_per_s": runs / mlflow_wall, "mlflow_writes_per_s": runs * 5 / mlflow_wall,
        "mlflow_run_median_s": statistics.median(per_run), "mlflow_runs_stored": stored,
    }
    write("scale_simulation", figures, args.quick, {"note": (
        "logical nodes are raylets on one 2-core machine; the store is a local directory (leases by O_EXCL "
        "files), MLflow a SQLite file. On a real cluster the store is NFS or an object store (lease latency "
        "is the filesystem's), MLflow should be a tracking server with a database, and the driver's "
        "scheduling rate is what bounds short trials")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
