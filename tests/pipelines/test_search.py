"""A multi-objective Optuna search with ASHA: early-stopped trials are PRUNED, never on the front."""
import textwrap

import optuna
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

CONFIG = textwrap.dedent(
    """
    name: searchtest
    data: {name: digits, val_fraction: 0.2}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 6, batch_size: 128, lr: 0.05}
    prune: {method: magnitude, sparsity: 0.5}
    ray: {num_cpus: 2}
    sweep:
      max_concurrent_trials: 1
      optuna:
        num_samples: 6
        sampler: random
        seed: 3
        objectives: [{metric: val_accuracy, mode: max}, {metric: remaining_params, mode: min}]
        scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
        layer_densities: {type: float, low: 0.05, high: 1.0, log: true}
        space:
          train.lr: {type: float, low: 0.0001, high: 0.5, log: true}
          prune.sparsity: {type: float, low: 0.3, high: 0.9}
    """
)


@pytest.mark.slow
def test_asha_stops_trials_as_pruned_and_the_front_holds_only_completed_non_dominated_ones(tmp_path, capsys):
    cfg = tmp_path / "search.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0, capsys.readouterr().err[-3000:]
    printed = capsys.readouterr().out
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 6
    pruned = [r for r in rows if r["status"] == "pruned"]
    done = [r for r in rows if r["status"] == "ok"]
    assert pruned and done, [(r["slot"], r["status"]) for r in rows]  # the scheduler did stop some
    assert all("stopped early by the scheduler" in r["error"] for r in pruned) and "stopped early" in printed
    # Per-layer densities: every trial its own allocation, each at exactly its target density.
    allocations = {r["prune.layer_densities"] for r in rows}
    assert len(allocations) == 6 and all(r["prune.allocation"] == "scaled" for r in rows)
    for r in done:
        assert r["kept_params"] == round((1 - r["target_sparsity"]) * r["prunable_params"]), r["slot"]

    study = optuna.load_study(study_name="searchtest", storage=f"sqlite:///{out}/optuna.db")
    state = {t.number: t.state for t in study.trials}
    for r in pruned:
        assert state[int(r["slot"].split("-")[1])] == optuna.trial.TrialState.PRUNED, r["slot"]
    for r in done:
        assert state[int(r["slot"].split("-")[1])] == optuna.trial.TrialState.COMPLETE, r["slot"]
    # what optuna-dashboard shows: metric names, each trial's row identity, its learning curve
    from search.study import CURVE_ATTR

    assert study.metric_names == ["val_accuracy", "remaining_params"]
    by_number = {t.number: t for t in study.trials}
    for r in rows:
        t = by_number[int(r["slot"].split("-")[1])]
        assert t.user_attrs["slot"] == r["slot"] and t.user_attrs["mlflow_run_id"] == r["mlflow_run_id"]
        assert t.user_attrs.get(CURVE_ATTR), r["slot"]  # per-epoch validation accuracy (multi-objective: an attr)
    for r in done:
        t = by_number[int(r["slot"].split("-")[1])]
        assert t.user_attrs["test_accuracy"] == r["test_accuracy"]
        assert t.user_attrs["achieved_sparsity"] == r["achieved_sparsity"]

    front = pq.read_table(out / "pareto.parquet").to_pylist()
    assert front and {r["slot"] for r in front} <= {r["slot"] for r in done}

    def dominated(a):
        return any(b["val_accuracy"] >= a["val_accuracy"] and b["remaining_params"] <= a["remaining_params"]
                   and (b["val_accuracy"], b["remaining_params"]) != (a["val_accuracy"], a["remaining_params"])
                   for b in done)

    assert sorted(r["slot"] for r in front) == sorted(r["slot"] for r in done if not dominated(r))
