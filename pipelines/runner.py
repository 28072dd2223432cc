"""Runs a sweep as Ray Tune experiments: the grid phase, then the Optuna phase, one parent MLflow run.

Ray starts locally (embedded) unless ``ray.address`` names a cluster. Every path handed to a trial
is absolute, because Tune changes each trial's working directory.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from .config import ExperimentConfig, trial_config
from .results import amortize_distillation, copy_to_uri, write_results
from .tracking import RunLogger, TrackingTarget, default_tracking_uri, finish_run, start_parent

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    results_path: Path | None = None
    tracking_uri: str = ""
    parent_run_id: str = ""

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)


def _trial_fn(config: dict, raw: dict, out_dir: str, target: TrackingTarget, phase: str, fixed: dict) -> None:
    """The Tune trainable. Errors become a row with status 'error' rather than aborting the sweep."""
    import torch
    from ray import tune

    from .trial import describe_error, run_trial

    overrides = {**fixed, **dict(config.get("overrides", config))}
    cfg = trial_config(raw, overrides)
    ctx = tune.get_context()
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    run_name = f"{cfg.prune.method}-s{cfg.prune.sparsity:g}-seed{cfg.seed}-{ctx.get_trial_id()}"
    logger = RunLogger.child(
        target, run_name, {"ray_trial_id": ctx.get_trial_id(), "phase": phase, "method": cfg.prune.method}
    )
    logger.params({**cfg.result_settings(), "phase": phase})
    report: dict[str, Any] = {
        "trial_id": ctx.get_trial_id(), "phase": phase, "overrides": json.dumps(overrides, sort_keys=True),
        "mlflow_run_id": logger.run_id, "method": cfg.prune.method, "target_sparsity": cfg.prune.sparsity,
        "seed": cfg.seed,
    }
    try:
        row = run_trial(cfg, Path(out_dir), logger, log=lambda m: print(f"[{run_name}] {m}", flush=True))
    except Exception as exc:  # the row records it; the sweep goes on
        msg = describe_error(exc)
        print(f"[{run_name}] FAILED: {msg}", flush=True)
        logger.tags({"error": msg[:5000]})
        logger.finish("FAILED")
        tune.report({**report, "status": "error", "error": msg, "val_accuracy": math.nan,
                     "test_accuracy": math.nan, "remaining_params": math.nan, "density": math.nan,
                     "flops": math.nan})
        return
    logger.finish("FINISHED")
    tune.report({**row, **report, "status": "ok", "error": None})


def _progress_callback(phase: str, total: int | None):
    """One line per finished trial instead of Tune's full metric tables."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.done += 1
            of = f"/{total}" if total else ""
            acc = result.get("test_accuracy")
            acc_text = f"{acc:.4f}" if isinstance(acc, float) and acc == acc else "-"
            print(
                f"[{phase} {self.done}{of}] {result.get('method')} sparsity {result.get('target_sparsity'):.4g} "
                f"seed {result.get('seed')}: {result.get('status')} test_acc {acc_text}",
                flush=True,
            )

    return Progress()


def _make_sampler(opt):
    import optuna

    if opt.sampler == "random":
        return optuna.samplers.RandomSampler(seed=opt.seed)
    if opt.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=opt.seed)
    return optuna.samplers.TPESampler(seed=opt.seed)


def _run_phase(
    phase: str,
    param_space: dict,
    tune_config_kwargs: dict,
    cfg: ExperimentConfig,
    raw: dict,
    out_dir: Path,
    target: TrackingTarget,
    fixed: dict,
    total: int | None,
) -> list[dict[str, Any]]:
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(_trial_fn, raw=raw, out_dir=str(out_dir), target=target, phase=phase, fixed=fixed),
        {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cfg.sweep.max_concurrent_trials,
            trial_dirname_creator=lambda t: f"{phase}_{t.trial_id}",
            reuse_actors=True,
            **tune_config_kwargs,
        ),
        run_config=tune.RunConfig(
            name=phase,
            storage_path=str(out_dir / "ray_results"),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[_progress_callback(phase, total)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        if result.error is not None or "status" not in metrics:
            # The trainable itself crashed (e.g. a worker died): no row was reported.
            metrics.update(
                trial_id=metrics.get("trial_id") or getattr(result, "path", "").rsplit("_", 1)[-1],
                phase=phase, status="error", error=str(result.error)[:5000],
            )
        rows.append(metrics)
    return rows


def _distill_stage(raw: dict, points: list[dict], cfg: ExperimentConfig, out_dir: Path,
                   parent: RunLogger, echo: Callable[[str], None]) -> None:
    """Make every small set the grid's trials need once, on the driver, before trials start.

    Trials then load the artifact instead of racing to make it; Optuna trials whose settings change
    the set make their own on first use.
    """
    from distill.store import distilled_path, ensure_distilled
    from pruning.methods import small_set_config
    from training.data import load_dataset

    fixed = dict(cfg.sweep.optuna.fixed) if cfg.sweep.optuna else None
    seen: set[Path] = set()
    for point in points + ([fixed] if fixed is not None else []):
        tcfg = trial_config(raw, point)
        dcfg = small_set_config(tcfg.prune)
        if dcfg is None:
            continue
        if distilled_path(out_dir, tcfg.data, dcfg) in seen:
            continue
        ds, path, made = ensure_distilled(load_dataset(tcfg.data), tcfg.data, dcfg, out_dir, log=echo)
        seen.add(path)
        echo(f"small set {dcfg.method} ({len(ds)} samples): {'made' if made else 'reused'} {path} "
             f"cost {ds.cost.get('wall_time_s', 0):.1f}s, {ds.cost.get('sample_passes', 0)} sample passes")
        parent.artifact(path, "distilled")
        if path.with_suffix(".png").is_file():
            parent.artifact(path.with_suffix(".png"), "distilled")


def run_sweep(
    cfg: ExperimentConfig,
    raw: dict,
    out_dir: Path,
    config_text: str,
    echo: Callable[[str], None] = print,
) -> SweepOutcome:
    import ray
    from ray.tune.search.optuna import OptunaSearch
    from ray import tune

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config_text)
    tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri(out_dir)
    target = start_parent(
        tracking_uri,
        cfg.tracking.experiment_name or cfg.name,
        out_dir / "mlartifacts",
        run_name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"config": cfg.name},
    )
    parent = RunLogger(tracking_uri, target.parent_run_id)
    parent.artifact(out_dir / "config.yaml")
    outcome = SweepOutcome(tracking_uri=tracking_uri, parent_run_id=target.parent_run_id)

    started_ray = False
    status = "FAILED"
    try:
        if not ray.is_initialized():
            ray.init(
                address=cfg.ray.address,
                num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
                num_gpus=cfg.ray.num_gpus if cfg.ray.address is None else None,
                include_dashboard=False,
                log_to_driver=True,
            )
            started_ray = True
        from search.space import expand_grid

        points = expand_grid(cfg.sweep.grid)
        if not points and cfg.sweep.optuna is None:
            points = [{}]  # no sweep section: the config itself is the one trial
        _distill_stage(raw, points, cfg, out_dir, parent, echo)
        if points:
            echo(f"grid phase: {len(points)} trials")
            outcome.rows += _run_phase(
                "grid", {"overrides": tune.grid_search(points)}, {}, cfg, raw, out_dir, target, {},
                len(points),
            )
        if cfg.sweep.optuna is not None:
            opt = cfg.sweep.optuna
            metrics = [o.metric for o in opt.objectives]
            modes = [o.mode for o in opt.objectives]
            searcher = OptunaSearch(
                space={k: d.to_optuna() for k, d in opt.space.items()},
                metric=metrics if len(metrics) > 1 else metrics[0],
                mode=modes if len(modes) > 1 else modes[0],
                sampler=_make_sampler(opt),
            )
            echo(f"optuna phase: {opt.num_samples} trials, objectives {list(zip(metrics, modes))}")
            outcome.rows += _run_phase(
                "optuna", {}, {"search_alg": searcher, "num_samples": opt.num_samples},
                cfg, raw, out_dir, target, dict(opt.fixed), opt.num_samples,
            )
        amortize_distillation(outcome.rows)
        outcome.results_path = write_results(outcome.rows, out_dir / "results.parquet")
        parent.artifact(outcome.results_path)
        if cfg.tracking.results_uri:
            echo(f"results copied to {copy_to_uri(outcome.results_path, cfg.tracking.results_uri)}")
        from .report import plot_accuracy_vs_sparsity

        plot = plot_accuracy_vs_sparsity(outcome.rows, out_dir / "accuracy_vs_sparsity.png")
        if plot is not None:
            parent.artifact(plot)
        parent.metrics({"trials": len(outcome.rows), "trials_ok": sum(r["status"] == "ok" for r in outcome.rows)})
        status = "FINISHED" if outcome.ok else "FAILED"
    finally:
        finish_run(tracking_uri, target.parent_run_id, status)
        if started_ray:
            ray.shutdown()
    return outcome
