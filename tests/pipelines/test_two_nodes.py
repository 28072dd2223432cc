"""A real two-node Ray cluster on this machine (head + second node, token auth, loopback): one sweep's
stages and trials run on both nodes against one shared store, and nothing runs twice; one of its methods
comes from a ``plugins:`` module next to the config that no node has installed (Ray's runtime_env ships
it)."""
import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipelines.config import trial_config
from pipelines.trial import trial_graph
from tests.cluster_fixture import two_node_ray  # noqa: F401  (the fixture)
from training.store import ArtifactStore

CONFIG = textwrap.dedent(
    """
    name: twonodes
    plugins: [shipped_plugin]
    seed: 0
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 2, batch_size: 128, lr: 0.05}
    prune: {method: snip, sparsity: 0.5, rewind_step: 4}
    resources: {cpu: 1}
    sweep:
      max_concurrent_trials: 2
      grid:
        - {prune.method: [random, shipped_magnitude, snip], prune.sparsity: [0.5, 0.8], seed: [0, 1]}
    """
)


@pytest.mark.slow
def test_a_sweep_spreads_over_two_nodes_with_one_shared_store(tmp_path, two_node_ray):
    markers = tmp_path / "markers"
    markers.mkdir()
    cfg = tmp_path / "cfgdir" / "sweep.yaml"
    cfg.parent.mkdir()
    cfg.write_text(CONFIG)
    (cfg.parent / "shipped_plugin.py").write_text(f"MARKERS = {str(markers)!r}\n" + PLUGIN)
    out = tmp_path / "out"
    store_dir = tmp_path / "shared-store"  # what an NFS mount is to the nodes of a real cluster
    # The driver is its own process, as a user's would be: it reads the cluster's token from the
    # environment the fixture exported (a process that already joined another Ray keeps that token).
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(cfg), "--out", str(out),
         "--set", f"ray.address={two_node_ray}", "--set", f"store.uri={store_dir.as_uri()}"],
        capture_output=True, text=True, timeout=400, env=dict(os.environ), cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 12 and all(r["status"] == "ok" for r in table)
    assert sum(r["method"] == "shipped_magnitude" for r in table) == 4
    imported_from = {Path(f).read_text() for f in markers.iterdir()}
    assert imported_from, "no worker imported the plugin"
    # every worker got the module Ray shipped (its runtime_env copy), not the file next to the config
    assert all(str(cfg.parent) not in f and "runtime_resources" in f for f in imported_from), imported_from

    store = ArtifactStore(store_dir.as_uri())
    rows = [r for r in store.index() if r["status"] == "done"]
    done = collections.Counter((r["stage"], r["key"]) for r in rows)
    assert max(done.values()) == 1, [k for k, n in done.items() if n > 1]
    nodes = {r["ray_node_id"] for r in rows}
    assert None not in nodes and len(nodes) == 2, nodes  # stages ran on both nodes
    evaluate_nodes = {r["ray_node_id"] for r in rows if r["stage"] == "evaluate"}
    assert len(evaluate_nodes) == 2  # and so did trials
    import yaml

    raw = yaml.safe_load((out / "config.yaml").read_text())
    for row in table:  # every stage output of every trial is in the shared store
        graph = trial_graph(trial_config(raw, yaml.safe_load(row["overrides"])))
        assert graph.key == row["trial_key"]
        assert all(store.is_done(s.name, s.key) for s in graph.stages())

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("twonodes")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in table)
    assert all(c.info.status == "FINISHED" for c in children)


PLUGIN = '''
import os
import ray._private.worker as _w

if _w.global_worker.mode == _w.WORKER_MODE:  # where each worker imported this module from
    with open(os.path.join(MARKERS, f"{os.getpid()}.txt"), "w") as f:
        f.write(__file__)

from pydantic import Field
from pruning.registry import MethodOptions, Scorer, register_method


class Opts(MethodOptions):
    power: float = Field(1.0, gt=0)


@register_method("shipped_magnitude", options=Opts)
class ShippedMagnitude(Scorer):
    """|w|^power: a method that exists only in a module next to the config."""

    def score(self, model, params, mask, batches):
        import torch

        return {n: p.detach().abs().to(torch.float64) ** self.power for n, p in params.items()}
'''

