"""The sweep's phases as Tune experiments: the shared stages first, the grid, the Optuna search, and
what a phase leaves (rows per slot, pareto.parquet, the best trials on the parent run)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from training.store import ArtifactStore

from .config import ExperimentConfig, trial_config
from .live import PhaseProgress, SweepView, stages_log_dir, tune_callback
from .outages import SweepInterrupted, SweepOutage, fatal_stopper
from .results import write_results
from .sweep_state import SweepState, TrialRecords
from .tracking import RunLogger, TrackingTarget
from .trainable import PROGRESS_METRIC, PROGRESS_STEP, error_row, trial_fn


def run_phase(phase: str, attempt: int, param_space: dict, tune_kwargs: dict, cfg: ExperimentConfig, raw: dict,
               out_dir: Path, target: TrackingTarget, store: ArtifactStore, fixed: dict, points: list[dict],
               total: int, view: SweepView, records=None) -> None:
    """Run one Tune experiment; raises ``SweepInterrupted`` when it was stopped before its end.
    ``records``: the driver's trial records as the trials reach them (``pipelines.recorder``)."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, raw=raw, out_dir=str(out_dir), target=target, phase=phase, fixed=fixed,
                             points=points, store=store, verbose=view.verbosity == "verbose",
                             records=records),
        {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
    )
    stopper = fatal_stopper()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cfg.sweep.max_concurrent_trials,
            trial_dirname_creator=lambda t: f"{phase}_{t.trial_id}",
            reuse_actors=True,
            **tune_kwargs,
        ),
        run_config=tune.RunConfig(
            name=f"{phase}-attempt{attempt}",
            storage_path=str(out_dir / "ray_results"),
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_retries),
            stop=stopper,
            callbacks=[tune_callback(PhaseProgress(phase, total, view.objectives(cfg, phase)), view.say)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    interrupted = _record_unreported(grid, phase, out_dir, stopper, scheduled="scheduler" in tune_kwargs)
    if stopper.reason is not None:
        raise SweepOutage(stopper.reason)
    if interrupted:
        raise SweepInterrupted(phase)


def _record_unreported(grid, phase: str, out_dir: Path, stopper, scheduled: bool) -> bool:
    """Rows for the trials that ended without reporting one: stopped early by the scheduler (``pruned``)
    or whose process died after its retries (an error). True if the experiment itself was stopped."""
    interrupted = False
    finished = grid.num_terminated + grid.num_errors == len(grid)  # else the experiment itself was stopped
    for result in grid:
        metrics = dict(result.metrics or {})
        if "status" in metrics:
            continue
        if stopper.reason is not None:  # stopped for an outage: no row, the slot stays unfinished
            continue
        if result.error is None and finished and scheduled:
            # Stopped early by the scheduler: a row of its own (the study already holds it as PRUNED).
            slot = metrics.get("slot") or _slot_of(result.config, phase)
            TrialRecords(out_dir).update(slot, row={
                **error_row(f"stopped early by the scheduler after {metrics[PROGRESS_STEP]} epochs "
                             f"(val_accuracy {metrics.get(PROGRESS_METRIC, math.nan):.4f})"),
                **{k: metrics.get(k) for k in ("method", "target_sparsity", "seed", "trial_id", "mlflow_run_id",
                                               "overrides")},
                "status": "pruned", "phase": phase, "slot": slot})
            continue
        if result.error is None:  # neither a row nor an error: the experiment was stopped
            interrupted = True
            continue
        # The trainable itself died (e.g. killed for memory) after its retries: record its slot.
        slot = metrics.get("slot") or _slot_of(result.config, phase)
        if slot:
            TrialRecords(out_dir).update(slot, row={**error_row(f"trial process failed: {result.error}"),
                                                    "phase": phase, "slot": slot})
    return interrupted


def _slot_of(config: dict | None, phase: str) -> str | None:
    if not config:
        return None
    if phase == "grid" and "slot" in config:
        return f"grid-{config['slot']}"
    if "optuna_number" in config:
        return f"optuna-{config['optuna_number']}"
    return None


def collect_rows(out_dir: Path) -> list[dict[str, Any]]:
    def order(item):
        phase, _, n = item[0].partition("-")
        return (phase != "grid", int(n))

    return [r["row"] for _, r in sorted(TrialRecords(out_dir).all().items(), key=order) if "row" in r]


def shared_stages_first(points: list[dict], raw: dict, cfg: ExperimentConfig, store: ArtifactStore,
                         echo: Callable[[str], None], out_dir: Path) -> None:
    from .scheduling import run_shared_stages, shared_stages
    from .trial import trial_graph

    stages = [s for p in points for s in trial_graph(trial_config(raw, p)).stages()]
    todo = shared_stages(stages, lambda s: store.is_done(s.name, s.key))
    plugins = (list(cfg.plugins), list(cfg.plugin_paths))
    for line in run_shared_stages(todo, store, cfg.resources.for_stage, echo, stages_log_dir(out_dir), plugins):
        echo(f"shared stage failed (the trials that need it will report it): {line}")


def optuna_phase(cfg: ExperimentConfig, raw: dict, out_dir: Path, target: TrackingTarget, store: ArtifactStore,
                  state: SweepState, view: SweepView, records=None) -> None:
    from search.space import CONSTRAINED_SAMPLERS
    from search.study import StudySearcher, open_study, remaining_trials, settle_ended

    opt = cfg.sweep.optuna
    metrics = [o.metric for o in opt.objectives]
    constraints = opt.parsed_constraints()
    study = open_study(state.study_path, state.study_name, [o.mode for o in opt.objectives], opt.sampler, opt.seed,
                       space=opt.space, constrained=bool(constraints) and opt.sampler in CONSTRAINED_SAMPLERS,
                       metrics=metrics)
    ended = {int(slot.split("-")[1]): r["row"] for slot, r in TrialRecords(out_dir).all().items()
             if slot.startswith("optuna-") and "row" in r}
    settle_ended(study, ended, metrics, constraints)
    todo = remaining_trials(study, opt.num_samples)
    if todo > 0:
        conditional = {axis: {choice: {k: d.to_optuna() for k, d in sub.items()} for choice, sub in branches.items()}
                       for axis, branches in opt.conditional.items()}
        searcher = StudySearcher(study, {k: d.to_optuna() for k, d in search_space(cfg, raw).items()}, metrics,
                                 opt.num_samples, constraints, conditional, progress=(PROGRESS_STEP, PROGRESS_METRIC))
        view.say(f"optuna phase: {todo} trials (study {state.study_name!r} in {state.study_path}), "
                 f"objectives {[(o.metric, o.mode) for o in opt.objectives]}"
                 + (f", constraints {opt.constraints}" if constraints else ""))
        tune_kwargs = {"search_alg": searcher, "num_samples": todo}
        if opt.scheduler is not None:
            tune_kwargs["scheduler"] = _scheduler(opt.scheduler)
        run_phase("optuna", state.attempts, {}, tune_kwargs, cfg, raw, out_dir, target, store, dict(opt.fixed), [],
                   todo, view, records)
    _write_pareto(study, out_dir, metrics)


def search_space(cfg: ExperimentConfig, raw: dict) -> dict:
    """``search.space.searched_space`` over the prunable layers of the model the fixed settings build
    (built only when per-layer densities or channel fractions are searched)."""
    from search.space import searched_space

    opt = cfg.sweep.optuna
    if opt.layer_densities is None and opt.channel_keep is None:
        return searched_space(opt, [])
    from pruning.mask import prunable_parameters
    from training.data import load_dataset
    from training.stage import fresh_model

    trial = trial_config(raw, dict(opt.fixed))
    model = fresh_model(load_dataset(trial.data), trial.model, trial.seed)
    return searched_space(opt, list(prunable_parameters(model, trial.prune.ignore)))


def _scheduler(sc):
    """ASHA on the validation accuracy of each training epoch (retraining, PDP, IMP levels)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=PROGRESS_STEP, metric=PROGRESS_METRIC, mode="max", grace_period=sc.grace_period,
                         reduction_factor=sc.reduction_factor, max_t=sc.max_t,
                         brackets=3 if sc.type == "hyperband" else 1, stop_last_trials=False)


def log_search_outcome(cfg: ExperimentConfig, out_dir: Path, parent: RunLogger) -> None:
    """pareto.parquet and the best trial per objective (among those meeting every constraint) on the parent run."""
    opt = cfg.sweep.optuna
    constraints = opt.parsed_constraints()
    feasible = [r for r in collect_rows(out_dir) if r.get("phase") == "optuna" and r.get("status") == "ok"
                and all(isinstance(r.get(c.metric), (int, float)) and c.violation(r[c.metric]) <= 0 for c in constraints)]
    for o in opt.objectives:
        scored = [r for r in feasible if isinstance(r.get(o.metric), (int, float)) and math.isfinite(r[o.metric])]
        if scored:
            best = (max if o.mode == "max" else min)(scored, key=lambda r: r[o.metric])
            parent.tags({f"best.{o.metric}": f"{best['slot']}: {best[o.metric]:.6g} (overrides {best.get('overrides')})"})
    if (out_dir / "pareto.parquet").is_file():
        parent.artifact(out_dir / "pareto.parquet")


def _write_pareto(study, out_dir: Path, metrics: list[str]) -> Path:
    """DIR/pareto.parquet: the study's non-dominated COMPLETE trials that meet every constraint, each with
    its objectives, its searched settings and its result row (joined by slot)."""
    from search.study import pareto_trials

    rows = {r.get("slot"): r for r in collect_rows(out_dir)}
    front = []
    for t in pareto_trials(study):
        row = dict(rows.get(f"optuna-{t.number}", {}))
        row.update({"optuna_number": t.number, **{f"objective.{m}": v for m, v in zip(metrics, t.values)},
                    **{f"param.{k}": v for k, v in t.params.items()}})
        front.append(row)
    return write_results(front, out_dir / "pareto.parquet", extra_columns=True)

