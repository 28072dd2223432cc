"""Scale through the real driver on object storage: ``prunetune run`` on a two-node Ray cluster with the
store on S3 and an MLflow server proxying artifacts to it, all on this machine.

Unlike ``scale_simulation`` (trivial Ray tasks against a local directory), every trial here is a real
Tune trial of the sweep: its stages go through the S3 store and the store's lease coordinator, its
record through the driver's records actor, its run, metrics and artifacts through the MLflow server.
The S3 server is moto (``tests/s3_server.py``) and the two nodes are raylets of one 2-core machine
(``tests/cluster_fixture.py``), so trials per second measure the orchestration's cost on this machine,
not a cluster's capacity. Reported: trials per second (first trial start to last trial end), the
coordinator's lease latency (acquire + release round trips from a worker on the other node, measured
after the sweep), what the coordinator granted, waited on and took over during the sweep, and whether
any row, trial record, MLflow run, artifact or store entry is missing or duplicated.

    .venv/bin/python benchmarks/scale_objstore.py [--quick | --trials N]

Not in ``run_all.py``'s suite: 1,000 trials take about 20 minutes here, more than the whole suite's budget.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write  # noqa: E402

CONFIG = """
name: scale
seed: 0
data: {{name: digits, val_fraction: 0.15}}
model: {{name: mlp, options: {{widths: [16]}}}}
train: {{epochs: 1, batch_size: 256}}
prune: {{method: magnitude, sparsity: 0.5}}
resources: {{cpu: 1}}
sweep:
  max_concurrent_trials: 2
  grid:
    - {{prune.sparsity: {sparsities}, seed: [0, 1]}}
"""


def lease_round_trips(store_id: str, n: int) -> list[float]:
    """Seconds per acquire + release of an uncontended lease, from this worker."""
    from training.coordinator import acquire

    out = []
    for i in range(n):
        t0 = time.perf_counter()
        lease = acquire(store_id, f"bench/{i}", 60.0, lambda: False, lambda m: None, "bench")
        lease.release()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 trials")
    ap.add_argument("--trials", type=int, default=1000)
    args = ap.parse_args(argv)
    trials = 40 if args.quick else args.trials
    per_seed = trials // 2
    sparsities = [round(0.3 + 0.6 * i / max(1, per_seed - 1), 6) for i in range(per_seed)]
    trials = 2 * len(sparsities)

    from mlflow.tracking import MlflowClient

    from tests.cluster_fixture import two_node_cluster
    from tests.mlflow_server import mlflow_server
    from tests.s3_server import s3_server
    from training.coordinator import coordinator_for
    from training.store import ArtifactStore

    # this checkout's code in every process the benchmark starts (nodes, driver), not an installed copy
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="scale_objstore_") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "cfg.yaml").write_text(CONFIG.format(sparsities=json.dumps(sparsities)))
        out = tmp / "sweep"
        with s3_server(log=tmp / "moto.log") as s3, mlflow_server(s3, tmp) as (tracking, wait_up), \
                two_node_cluster(node2_args=["--node-ip-address=127.0.0.2"]) as cluster:
            wait_up()
            store_uri = s3.uri("store")
            env = {**cluster.env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
            t0 = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "run", str(tmp / "cfg.yaml"), "--out", str(out), "--quiet",
                 "--set", f"store.uri={store_uri}", "--set", f"tracking.tracking_uri={tracking}",
                 "--set", f"ray.address={cluster.address}"],
                env=env, capture_output=True, text=True, cwd=ROOT)
            driver_s = time.perf_counter() - t0
            if run.returncode != 0:
                print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
                return 1

            import pyarrow.parquet as pq

            rows = pq.read_table(out / "results.parquet").to_pylist()
            span = max(r["ended_at"] for r in rows) - min(r["started_at"] for r in rows)
            records = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json")]

            import ray  # after the cluster exported its token variables: Ray reads them at import

            store = ArtifactStore(store_uri)
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            try:
                coordinator = ray.get(coordinator_for(store.store_id()).state.remote())
                on_node2 = ray.remote(lease_round_trips).options(resources={"node2": 0.01}, num_cpus=0)
                latency = ray.get(on_node2.remote(store.store_id(), 200))
            finally:
                ray.shutdown()

            done = [r for r in store.index() if r["status"] == "done"]
            per_key = collections.Counter((r["stage"], r["key"]) for r in done)
            client = MlflowClient(tracking_uri=tracking)
            exp = client.get_experiment_by_name("scale")
            runs = client.search_runs([exp.experiment_id], filter_string="tags.`prunetune.role` = 'trial'",
                                      max_results=trials + 100)
            artifacts = sum({"mask.pt", "model.pt"} <= {a.path for a in client.list_artifacts(r.info.run_id)}
                            for r in runs)
            in_bucket = sum(k.endswith("/artifacts/model.pt") for k in s3.keys("mlartifacts/"))

    latency.sort()
    figures = {
        "trials": trials, "logical_nodes": 2, "logical_cpus": 2,
        "trials_per_s": trials / span, "trial_span_s": span, "driver_wall_s": driver_s,
        "lease_round_trip_median_ms": 1000 * statistics.median(latency),
        "lease_round_trip_p95_ms": 1000 * latency[int(0.95 * (len(latency) - 1))],
        "leases_granted_in_sweep": coordinator["granted"],
        "lease_waits_in_sweep": coordinator["waits"], "leases_taken_over": coordinator["taken_over"],
        "rows_ok": sum(r["status"] == "ok" for r in rows), "trial_records_with_row": sum("row" in r for r in records),
        "mlflow_trial_runs_finished": sum(r.info.status == "FINISHED" for r in runs),
        "mlflow_runs_with_mask_and_model": artifacts, "models_in_bucket": in_bucket,
        "stage_entries": len(per_key), "stage_entries_computed_twice": sum(n > 1 for n in per_key.values()),
        "nothing_missing": (sum(r["status"] == "ok" for r in rows) == trials
                            and sum("row" in r for r in records) == trials and len(runs) == trials
                            and artifacts == trials and in_bucket == trials
                            and max(per_key.values()) == 1),
    }
    write("scale_objstore", figures, args.quick and trials == 40, {"note": (
        "the real driver (prunetune run) on two raylets of one 2-core machine, S3 = moto on 127.0.0.1, "
        "MLflow = one server (SQLite, --workers 1) proxying artifacts to that S3; one trial at a time per "
        "node, so trials_per_s is this machine's orchestration cost per trial, not a cluster's throughput. "
        "Lease latency: 200 uncontended acquire+release round trips from a worker on the second node to the "
        "store's coordinator actor on the head")})
    return 0 if figures["nothing_missing"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
