import json
"""A real sweep through Ray Tune (local) with Optuna and MLflow parent/child runs."""
import textwrap
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.report import sweep_data

CONFIG = textwrap.dedent(
    """
    name: sweeptest
    seed: 0
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 3, batch_size: 128, lr: 0.05}
    prune: {method: imp, sparsity: 0.75}
    ray: {num_cpus: 2}
    sweep:
      grid:
        - {prune.method: [dense], prune.sparsity: [0.0]}
        - {prune.method: [random, imp], prune.sparsity: [0.75]}
      optuna:
        num_samples: 3
        sampler: random
        objectives: [{metric: val_accuracy, mode: max}, {metric: remaining_params, mode: min}]
        constraints: ["density <= 0.6"]
        fixed: {prune.method: magnitude}
        space:
          prune.sparsity: {type: float, low: 0.3, high: 0.6}
          train.lr: {type: float, low: 0.02, high: 0.1, log: true}
    """
)


def _children(client, exp_ids, parent_id):
    runs = client.search_runs(exp_ids, max_results=1000)
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


@pytest.mark.slow
def test_sweep_runs_trials_through_ray_and_tracks_them(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    shared = tmp_path / "shared" / "results.parquet"
    assert main(["run", str(cfg), "--out", str(out), "--set", f"tracking.results_uri={shared.as_uri()}"]) == 0
    assert pq.read_table(shared).num_rows == 6
    printed = capsys.readouterr().out
    assert f"MLflow UI: prunetune ui {out}" in printed

    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 6
    assert {r["phase"] for r in table} == {"grid", "optuna"}
    for row in table:
        assert row["status"] == "ok", row
        assert abs(row["achieved_sparsity"] - row["target_sparsity"]) < 1e-3
        assert 0.0 <= row["test_accuracy"] <= 1.0
        for col in ("trial_id", "method", "seed", "wall_time_s", "mlflow_run_id"):
            assert row[col] is not None, col
    optuna_rows = [r for r in table if r["phase"] == "optuna"]
    assert all(r["method"] == "magnitude" and 0.3 <= r["target_sparsity"] <= 0.6 for r in optuna_rows)
    # Every swept setting is a column (named by its path), in the table and on the screen.
    assert all(0.02 <= r["train.lr"] <= 0.1 for r in optuna_rows)
    assert all(r["train.lr"] is None and r["prune.method"] == r["method"] for r in table if r["phase"] == "grid")
    header = next(line for line in printed.splitlines() if line.split()[:2] == ["phase", "method"])
    assert "train.lr" in header.split()
    imp = next(r for r in table if r["method"] == "imp")
    assert imp["levels"] == 7  # 0.8**6 > 0.25 > 0.8**7: six trained levels, the seventh is the retrain

    # The Pareto front: COMPLETE trials that meet the constraint, none dominated by another such trial.
    front = pq.read_table(out / "pareto.parquet").to_pylist()
    feasible = [r for r in optuna_rows if r["density"] <= 0.6]
    assert feasible, optuna_rows  # the check below is not vacuous
    dominated = lambda a: any(b["val_accuracy"] >= a["val_accuracy"] and b["remaining_params"] <= a["remaining_params"]  # noqa: E731
                              and (b["val_accuracy"], b["remaining_params"]) != (a["val_accuracy"], a["remaining_params"])
                              for b in feasible)
    assert sorted(r["slot"] for r in front) == sorted(r["slot"] for r in feasible if not dominated(r))
    assert all(r["objective.val_accuracy"] == r["val_accuracy"] and "param.prune.sparsity" in r for r in front)
    study = optuna.load_study(study_name="sweeptest", storage=f"sqlite:///{out}/optuna.db")
    assert all(t.user_attrs["constraints"] == [pytest.approx(r["density"] - 0.6)]
               for t in study.trials for r in optuna_rows if r["slot"] == f"optuna-{t.number}")

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("sweeptest")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("prunetune.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = _children(client, [exp.experiment_id], parents[0].info.run_id)
    assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in table)
    assert len(runs) == 1 + len(table)
    for child in children:
        assert child.info.status == "FINISHED"
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"mask.pt", "sparsity.json", "model.pt"} <= files, files
        assert "prune.method" in child.data.params and "test_accuracy" in child.data.metrics
    imp_child = next(c for c in children if c.info.run_id == imp["mlflow_run_id"])
    levels = client.get_metric_history(imp_child.info.run_id, "level_test_accuracy")
    assert sorted(m.step for m in levels) == list(range(8))
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"config.yaml", "results.parquet", "report.html", "report.md", "figures", "pareto.parquet"} <= parent_files
    assert "best.val_accuracy" in parents[0].data.tags and "best.remaining_params" in parents[0].data.tags
    figures = {a.path for a in client.list_artifacts(parents[0].info.run_id, "figures")}
    assert {"figures/accuracy_vs_density.png", "figures/accuracy_vs_cost.png", "figures/imp_levels.png"} <= figures
    level_files = {a.path for a in client.list_artifacts(imp_child.info.run_id, "levels/level_3")}
    assert {"levels/level_3/mask.pt", "levels/level_3/sparsity.json"} <= level_files

    # The report finds what it draws through each row's stage references, not by rebuilding trial graphs
    # from the config: without config.yaml it still has every IMP level and every mask's layer densities.
    (out / "config.yaml").rename(out / "config.yaml.away")
    data = sweep_data(out, table)
    assert [rec["level"] for rec in data.level_curve(imp)] == list(range(7))
    densities = {r["slot"]: data.layer_density(r) for r in table}
    assert all(d is not None and set(d) == {"layers.0.weight", "fc.weight"} for d in densities.values()), densities


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    # Also schedules on logical GPUs (a CPU machine declaring one): trials ask for half a GPU each
    # and, finding no CUDA device, train on the CPU (or fail, where train.device insists on CUDA: what a
    # node has is known only on that node).
    text = CONFIG.split("  optuna:")[0].replace(
        "- {prune.method: [random, imp], prune.sparsity: [0.75]}",
        "- {prune.method: [random], prune.sparsity: [0.75], train.device: [auto, cuda]}\n"
        "    - {prune.method: [random], prune.sparsity: [0.75], train.lr: [1.0e+30]}",
    ).replace("ray: {num_cpus: 2}", "ray: {num_cpus: 2, num_gpus: 1}\nresources: {cpu: 1, gpu: 0.5}")
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 4
    bad = sorted((r for r in table if r["status"] != "ok"), key=lambda r: r["error"])
    assert len(bad) == 2
    assert "FloatingPointError: training diverged" in bad[0]["error"] and "train.lr" in bad[0]["error"]
    assert "train.device is 'cuda' but no CUDA device is visible" in bad[1]["error"]  # the node's, not the driver's
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    for row in bad:
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags["error"] == row["error"]
        trace = client.download_artifacts(row["mlflow_run_id"], "traceback.txt", str(tmp_path))
        assert "Traceback (most recent call last)" in Path(trace).read_text()
    assert "2 trial(s) failed" in capsys.readouterr().err
    ok = [r for r in table if r["status"] == "ok"]
    assert all(client.get_run(r["mlflow_run_id"]).data.tags["device"] == "cpu" for r in ok)

    # A correction without saying which slots is refused; then the failed slots re-run with it, under
    # their own runs (no second child), the ok ones untouched.
    assert main(["resume", str(out), "--set", "train.lr=0.05"]) == 2
    assert "--retry-failed" in capsys.readouterr().err
    assert main(["resume", str(out), "--retry", "grid-9"]) == 2
    assert "no such trial slot" in capsys.readouterr().err
    assert main(["resume", str(out), "--retry-failed", "--set", "train.lr=0.05", "--set", "train.device=auto"]) == 0
    assert "retrying grid-" in capsys.readouterr().out
    again = pq.read_table(out / "results.parquet").to_pylist()
    assert len(again) == 4 and all(r["status"] == "ok" for r in again), [r["error"] for r in again]
    assert {r["slot"]: r["mlflow_run_id"] for r in again} == {r["slot"]: r["mlflow_run_id"] for r in table}
    assert {r["slot"]: r["test_accuracy"] for r in again if r["slot"] in {o["slot"] for o in ok}} == \
        {r["slot"]: r["test_accuracy"] for r in ok}
    state = json.loads((out / "sweep.json").read_text())
    assert state["retries"][-1]["set"] == {"train.lr": 0.05, "train.device": "auto"}
    assert sorted(state["retries"][-1]["slots"]) == sorted(r["slot"] for r in bad)
    parent = client.get_run(again[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" and "error" not in c.data.tags for c in children)
    retried = client.get_run(bad[0]["mlflow_run_id"]).data
    assert retried.tags["retried.train.lr"] == "0.05" and retried.params["train.lr"] == "1e+30"


@pytest.mark.slow
def test_a_gpu_request_on_a_cluster_without_gpus_fails_before_anything_is_written(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(CONFIG.split("  optuna:")[0] + "resources: {cpu: 1, stages: {pretrain: {gpu: 1}}}\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 GPU" in err and "has 0" in err and "resources.gpu" in err
    assert not out.exists()


@pytest.mark.slow
def test_more_cpus_than_the_local_ray_has_fails_at_once_with_both_numbers(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(CONFIG.split("  optuna:")[0] + "resources: {cpu: 8}\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "8 CPUs" in err and "has 2" in err and "resources.cpu" in err
    assert not out.exists()
