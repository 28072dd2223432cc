"""The Tune trainable: one trial slot, run inside a Ray worker.

It re-attaches to the slot's MLflow run (or creates it), reports every epoch (for the live view and an
early-stopping scheduler), runs the trial's stages through the store and records the slot's row. A
trial error is a row; an outage (a full disk, a tracking server out of reach) is not: the slot stays
unfinished and the phase stops (``pipelines.outages``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from training.store import ArtifactStore

from .background import in_background
from .config import ConfigError, ExperimentConfig, trial_config
from .live import FileLog, trial_log
from .outages import FATAL, outage
from .results import error_values
from .sweep_state import TrialRecords
from .tracking import RunLogger, TrackingTarget, open_store

PROGRESS_STEP, PROGRESS_METRIC = "progress_step", "progress_val_accuracy"


def error_row(exc: BaseException | str) -> dict[str, Any]:
    from .trial import describe_error

    msg = exc if isinstance(exc, str) else describe_error(exc)
    return {"status": "error", "error": msg, **error_values()}


def trial_fn(config: dict, **kwargs: Any) -> None:
    """The Tune trainable. An outage (a full disk, a tracking server out of reach) leaves the slot
    without a row (unfinished: the resume runs it again under its own run) and stops the phase,
    instead of recording the outage as this and every later trial's error."""
    try:
        _run_slot(config, **kwargs)
    except Exception as exc:
        reason = outage(exc)
        if reason is None:
            raise
        from ray import tune

        print(f"{reason}: this trial is left unfinished, the phase stops")
        tune.report({FATAL: reason, PROGRESS_STEP: 0, PROGRESS_METRIC: 0.0})


def _run_slot(config: dict, raw: dict, out_dir: str, target: TrackingTarget, phase: str, fixed: dict,
              points: list[dict], store: ArtifactStore, verbose: bool = False, records=None) -> None:
    """Re-attaches to its slot's MLflow run, reports per epoch, then its row.

    Errors become a row with status 'error' rather than aborting the sweep. ``records`` is where the
    slot's record lives: the driver's (``pipelines.recorder``), since this node may not see ``out_dir``.
    """
    records = records if records is not None else TrialRecords(Path(out_dir))
    store_opened = in_background(open_store, target)  # while torch and the trial's modules import
    import torch
    from ray import tune

    from training.stage import StageEnv

    from .trial import format_traceback, run_trial

    if phase == "grid":
        slot, overrides = f"grid-{config['slot']}", dict(points[config["slot"]])
    else:
        slot, overrides = f"optuna-{config['optuna_number']}", {**fixed, **config["overrides"]}
    ctx = tune.get_context()
    try:  # the plugins are imported here, in this worker, before the config can be read
        cfg = trial_config(raw, overrides)
    except ConfigError as exc:  # e.g. a plugin this node cannot import: one row, one line, no retries
        _record_unreadable(exc, ctx.get_trial_id(), raw, overrides, phase, slot, records)
        return
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    store_opened.result()
    logger = _slot_run(cfg, target, records, slot, phase, overrides)
    logger.tags({"ray_trial_id": ctx.get_trial_id()})
    logger.params({**cfg.result_settings(), "phase": phase})
    report: dict[str, Any] = {
        "trial_id": ctx.get_trial_id(), "phase": phase, "slot": slot,
        "overrides": json.dumps(overrides, sort_keys=True), "mlflow_run_id": logger.run_id,
        "method": cfg.prune.method, "target_sparsity": cfg.prune.sparsity, "seed": cfg.seed,
    }
    log = FileLog(trial_log(Path(out_dir), slot), echo=verbose, prefix=f"[{slot}] ")

    progress, on_epoch = _epoch_reporter(logger, report)
    try:
        env = StageEnv.on(store, log=log, on_epoch=on_epoch, requested_by=f"{slot} {cfg.prune.method}")
        row = run_trial(cfg, env, logger, log=log)
    except Exception as exc:  # the row records it; the sweep goes on
        if outage(exc) is not None:
            raise
        failed = {**report, **error_row(exc)}
        log(f"FAILED: {failed['error']}")
        logger.tags({"error": failed["error"][:5000]})
        _log_text(logger, "traceback.txt", format_traceback(exc))
        logger.finish("FAILED")
        records.update(slot, row=failed)
        tune.report(failed | progress)
        return
    logger.finish("FINISHED")
    full = {**row, **report, "status": "ok", "error": None}
    records.update(slot, row=full)
    tune.report(full | progress)


def _record_unreadable(exc: ConfigError, trial_id: str, raw: dict, overrides: dict, phase: str, slot: str,
                       records) -> None:
    """The row of a trial whose config this worker cannot read, identified from the raw config."""
    from ray import tune

    failed = {"trial_id": trial_id, "phase": phase, "slot": slot, "overrides": json.dumps(overrides, sort_keys=True),
              **unvalidated_identity(raw, overrides), **error_row(" ".join(str(exc).split()))}
    records.update(slot, row=failed)
    tune.report(failed | {PROGRESS_STEP: 0, PROGRESS_METRIC: 0.0})


def _slot_run(cfg: ExperimentConfig, target: TrackingTarget, records, slot: str, phase: str,
              overrides: dict) -> RunLogger:
    """The slot's MLflow run: the one an earlier attempt created (re-attached), else a new child run,
    recorded at once so a later attempt finds it."""
    record = records.get(slot)
    if record.get("mlflow_run_id"):
        return RunLogger.reattach(target, record["mlflow_run_id"])
    logger = RunLogger.child(target, f"{cfg.prune.method} s={cfg.prune.sparsity:g} seed={cfg.seed} ({slot})", {
        "phase": phase, "slot": slot, "method": cfg.prune.method, "sparsity": f"{cfg.prune.sparsity:.6g}",
        "density": f"{cfg.prune.density:.6g}", "seed": str(cfg.seed)})
    records.update(slot, mlflow_run_id=logger.run_id, phase=phase, overrides=overrides)
    return logger


def _epoch_reporter(logger: RunLogger, report: dict[str, Any]) -> tuple[dict[str, float], Callable]:
    """(the scheduler's progress, the stages' per-epoch callback). Every report carries the scheduler's
    time axis and metric (Tune checks each result for them); they move only with epochs of the stages
    a scheduler should compare, and 0 is below every rung."""
    from ray import tune

    progress: dict[str, float] = {PROGRESS_STEP: 0, PROGRESS_METRIC: 0.0}

    def on_epoch(stage, rec: dict) -> None:  # intermediate results, for schedulers and the live view
        values = {k: v for k, v in rec.items() if isinstance(v, (int, float))}
        if stage.final_training:  # the run's own training curve
            logger.metrics({k: v for k, v in values.items() if k not in ("epoch", "step")}, step=rec["epoch"])
        if (stage.final_training or stage.reports_progress) and "val_accuracy" in values:  # the scheduler's axis
            progress.update({PROGRESS_STEP: progress[PROGRESS_STEP] + 1, PROGRESS_METRIC: values["val_accuracy"]})
        tune.report(values | {"stage": stage.name} | report | progress)  # who it is, even if it never reports a row

    return progress, on_epoch


def unvalidated_identity(raw: dict, overrides: dict) -> dict[str, Any]:
    """Method, target and seed read straight from the config, for a row whose config could not be read."""
    from pruning.config import PruneConfig

    from .config import apply_overrides

    merged = apply_overrides({k: v for k, v in raw.items() if k != "sweep"}, overrides)
    prune = merged.get("prune") if isinstance(merged.get("prune"), dict) else {}
    default = {f: PruneConfig.model_fields[f].default for f in ("method", "sparsity")}
    return {"method": prune.get("method", default["method"]), "target_sparsity": prune.get("sparsity", default["sparsity"]),
            "seed": merged.get("seed", ExperimentConfig.model_fields["seed"].default)}


def _log_text(logger: RunLogger, name: str, text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        logger.artifact(path)

