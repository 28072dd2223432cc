"""Sweeps share stages: each shared stage of a grid is computed once per key, also when trials that
need it run at the same time."""
import collections
import textwrap

import pyarrow.parquet as pq
import pytest
import ray

from pipelines.cli import main
from training.store import ArtifactStore

GRID = textwrap.dedent(
    """
    name: shared
    seed: 0
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 2, batch_size: 128, lr: 0.05}
    prune:
      method: snip
      sparsity: 0.5
      rewind_step: 5
      distill: {method: dm, ipc: 2, iterations: 3, batch_real: 16,
                network: {name: convnet, options: {width: 8, depth: 2}}}
      small_train: {epochs: 5, batch_size: 64, lr: 0.01}
    sweep:
      max_concurrent_trials: 2
      grid:
        - {prune.method: [distilled_imp, snip, magnitude], prune.sparsity: [0.5, 0.7, 0.8], seed: [0, 1]}
    """
)

IMP = textwrap.dedent(
    """
    name: imp4
    data: {name: digits, val_fraction: 0.15}
    # Levels long enough that the first target cannot finish before the fourth trial's actor has
    # started (with 2 epochs of a width-32 net a level took ~0.2 s, and on 2 loaded cores the fourth
    # start once came 0.1 s after the first end).
    model: {name: mlp, options: {widths: [512]}}
    train: {epochs: 10, batch_size: 32, lr: 0.05}
    prune: {method: imp, sparsity: 0.5}
    resources: {cpu: 1}
    sweep:
      max_concurrent_trials: 4
      grid:
        - {prune.sparsity: [0.5, 0.6, 0.7, 0.8]}
    """
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _done_per_key(out):
    rows = [r for r in ArtifactStore(out / "store").index() if r["status"] == "done"]
    return rows, collections.Counter((r["stage"], r["key"]) for r in rows)


@pytest.mark.slow
def test_a_grid_computes_each_shared_stage_once(tmp_path, local_ray):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(GRID)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 18 and all(r["status"] == "ok" for r in table)
    rows, per_key = _done_per_key(out)
    assert max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1]
    by_stage = collections.Counter(stage for stage, _ in per_key)
    assert by_stage["distill"] == 1  # one DM set for every distilled_imp trial of both seeds
    # Per seed: theta_k for snip and magnitude (shared by 6 trials), and distilled IMP's level 0.
    trained_pretrains = [r for r in rows if r["stage"] == "pretrain" and '"rewind_step":5' in r["settings"].replace(" ", "")]
    assert len(trained_pretrains) == 4
    assert by_stage["evaluate"] == 18
    # The driver ran the shared stages as Ray tasks before the trials.
    assert {r["ray_node_id"] for r in rows if r["stage"] in ("distill", "pretrain")} != {None}
    # Distilled trials share the one set and report its cost amortised over all six of them.
    distilled = [r for r in table if r["method"] == "distilled_imp"]
    assert len({r["small_set_hash"] for r in distilled}) == 1
    assert all(r["distill_shared_by"] == 6 for r in distilled)


@pytest.mark.slow
def test_concurrent_imp_targets_compute_each_level_once(tmp_path, local_ray):
    cfg = tmp_path / "imp.yaml"
    cfg.write_text(IMP)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["target_sparsity"] for r in table) == [0.5, 0.6, 0.7, 0.8]
    rows, per_key = _done_per_key(out)
    assert max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1]
    levels = sorted(int(r["settings"].split('"level":')[1].split(",")[0].split("}")[0].strip())
                    for r in rows if r["stage"] == "imp_level")
    assert levels == list(range(1, 8))  # 0.8 needs levels 1..7; the shallower targets reuse them
    # The four trials ran at the same time (all started before the first finished).
    assert max(r["started_at"] for r in table) < min(r["ended_at"] for r in table)
    assert len([r for r in rows if r["stage"] == "evaluate"]) == 4
