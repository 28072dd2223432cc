"""One trial: the method's stages, then retrain and evaluate, for one resolved configuration.

The trial is a small graph of stages (``trial_graph``): the method's plan (``pruning.methods``) gives
the mask stage and the state survivors are rewound to; this module adds ``retrain`` and ``evaluate``,
whose key is the trial's key. ``run_trial`` materializes the graph through the store (every stage
computed at most once per key, across trials, sweeps and nodes) and turns the entries into the
trial's result row and its MLflow run. The same function runs inside a Ray Tune trial and in tests.
"""
from __future__ import annotations

import json
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from pruning.collapse import NEAR_COLLAPSE_FRACTION, near_collapsed_layers
from pruning.export_stage import Export
from pruning.methods import MethodPlan, TrialSettings, plan_method
from pruning.stages import Evaluate, Retrain
from training.stage import Stage, StageEnv, materialize, read_json, walk
from training.store import ArtifactStore, Entry
from training.trainer import resolve_device

from .config import ExperimentConfig
from .results import NOT_METRICS
from .tracking import RunLogger


@dataclass
class TrialGraph:
    plan: MethodPlan
    trained: Stage  # writes the final model.pt
    evaluate: Stage
    export: Stage | None = None  # export.enabled: the smaller network's size and latency

    @property
    def key(self) -> str:
        return self.evaluate.key

    def stages(self) -> list[Stage]:
        return walk(self.evaluate) + ([self.export] if self.export is not None else [])


def stage_names() -> dict[str, type[Stage]]:
    """Every stage a trial can hold (importing this module registers them all), name -> class."""
    from training.stage import STAGES

    return {n: STAGES.get(n) for n in STAGES.names()}


def trial_graph(cfg: ExperimentConfig) -> TrialGraph:
    plan = plan_method(TrialSettings(cfg.seed, cfg.data, cfg.model, cfg.train, cfg.prune))
    if plan.trained:  # train-time pruning already trained the masked net: evaluate it as it is
        trained: Stage = plan.mask
    else:
        trained = Retrain(mask=plan.mask, start=plan.start, data=cfg.data, model=cfg.model, train=cfg.train,
                          seed=cfg.seed, start_mode=plan.start_mode, reinit=cfg.prune.ablation == "reinit",
                          keep_trained=plan.keep_trained)
    evaluate = Evaluate(trained=trained, mask=plan.mask, data=cfg.data, model=cfg.model, train=cfg.train, seed=cfg.seed)
    export = (Export(trained=trained, mask=plan.mask, data=cfg.data, model=cfg.model, export=cfg.export,
                     device=cfg.train.device, seed=cfg.seed) if cfg.export.enabled else None)
    return TrialGraph(plan, trained, evaluate, export)


def run_trial(
    cfg: ExperimentConfig,
    store: ArtifactStore | StageEnv,
    logger: RunLogger | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Materialize the trial's stages and return its result row (metrics, not bookkeeping ids)."""
    t_start, started_at = time.perf_counter(), time.time()
    env = store if isinstance(store, StageEnv) else StageEnv.on(store, log=log)
    graph = trial_graph(cfg)
    if logger:  # the stage keys as one JSON tag, out of the way of the runs table's columns
        logger.tags({"trial_key": graph.key, "device": str(resolve_device(cfg.train.device)),
                     "stage_keys": json.dumps({_tag(s): s.key for s in graph.stages()})})
    evaluate = materialize(graph.evaluate, env)
    entries = _materialize_read(graph, env, evaluate)
    result = _result_columns(graph, entries)
    levels = _level_records(graph, entries)
    search = [entries.get(s.key) for s in graph.plan.search]
    retrain = entries.get(graph.trained.key) if not graph.plan.trained else None
    row = {
        "method": cfg.prune.method,
        "target_sparsity": cfg.prune.sparsity,
        **result,
        "seed": cfg.seed,
        "levels": len(graph.plan.levels) or None,
        "search_wall_time_s": _cost(search, "wall_time_s"),
        "search_sample_passes": _cost(search, "sample_passes"),
        "search_stage_costs": json.dumps({f"{e.stage}/{e.key}": [e.meta.get("wall_time_s") or 0.0, e.meta.get("sample_passes") or 0]
                                          for e in search if e is not None}, sort_keys=True),
        "retrain_wall_time_s": _cost([retrain], "wall_time_s") if retrain else 0.0,
        "retrain_sample_passes": _cost([retrain], "sample_passes") if retrain else 0,
        "wall_time_s": time.perf_counter() - t_start,
        "started_at": started_at,
        "ended_at": time.time(),
        "trial_key": graph.key,
        "stage_refs": stage_refs(graph),
        **_small_set_columns(entries.get(graph.plan.small_set.key) if graph.plan.small_set else None),
        "cached": evaluate.cached,
    }
    if result["collapsed"]:
        log(f"WARNING: layer collapse, no weights kept in {result['collapsed_layers']}")
    elif result["near_collapsed_layers"]:
        log(f"WARNING: near layer collapse, under {NEAR_COLLAPSE_FRACTION:g} of the overall density kept in "
            f"{result['near_collapsed_layers']}")
    if logger:
        _log_outputs(logger, cfg, row, graph, entries, levels)
    log(f"{cfg.prune.method} sparsity {row['achieved_sparsity']:.4f}: test acc {row['test_accuracy']:.4f} "
        f"in {row['wall_time_s']:.1f}s" + (" (cached)" if row["cached"] else ""))
    return row


def _materialize_read(graph: TrialGraph, env: StageEnv, evaluate: Entry) -> dict[str, Entry]:
    """Every stage the row and the run read, by key. Stored entries are returned as they are; one lost or
    damaged since (a killed run, a truncated file) is recomputed rather than failing a finished trial."""
    needed = [graph.plan.mask, graph.trained, *graph.plan.levels, *graph.plan.search]
    if graph.plan.small_set is not None:
        needed.append(graph.plan.small_set)
    if graph.export is not None:
        needed.append(graph.export)
    entries = {s.key: materialize(s, env) for s in needed}
    entries[graph.evaluate.key] = evaluate
    return entries


def _result_columns(graph: TrialGraph, entries: dict[str, Entry]) -> dict[str, Any]:
    """The evaluation's columns (and the export's), with the layers that nearly collapsed."""
    evaluate = entries[graph.evaluate.key]
    result = read_json(evaluate, "result.json")
    sparsity = read_json(evaluate, "sparsity.json")
    result["near_collapsed_layers"] = ",".join(near_collapsed_layers(sparsity["layers"], sparsity["density"]))
    if graph.export is not None:
        result |= read_json(entries[graph.export.key], "export.json")
    return result


def _level_records(graph: TrialGraph, entries: dict[str, Entry]) -> list[dict]:
    """Each IMP level's record, then the final training as the last level."""
    levels = [read_json(entries[s.key], "record.json") for s in graph.plan.levels if entries.get(s.key)]
    if graph.plan.levels and not graph.plan.trained:
        final = read_json(entries[graph.trained.key], "record.json")
        levels.append({**final, "level": len(graph.plan.levels)})
    return levels


def stage_refs(graph: TrialGraph) -> str:
    """Where the report finds what it draws, by role (``stage/key`` in the store): the evaluated network's
    per-layer densities, each IMP level's record and the small set's picture. Carried on the row, so a
    report reads the store without rebuilding the trial's graph from its config."""
    def ref(stage: Stage | None) -> str | None:
        return stage.describe() if stage is not None else None

    return json.dumps({"evaluated": ref(graph.evaluate), "levels": [ref(s) for s in graph.plan.levels],
                       "small_set": ref(graph.plan.small_set)}, sort_keys=True)


def _tag(stage: Stage) -> str:
    level = getattr(stage, "level", None)
    return stage.name + (f".{level}" if level is not None else "")


def _cost(entries: list[Entry | None], field: str) -> float | int | None:
    """What the stages cost when they were computed: cached stages count at their recorded cost, so a
    trial's cost does not depend on which other trials ran first."""
    if any(e is None for e in entries):
        return None
    return sum(e.meta.get(field) or 0 for e in entries)


def _small_set_columns(entry: Entry | None) -> dict[str, Any]:
    """The small set's own cost (alone); the driver adds the cost amortised over the sweep."""
    if entry is None:
        return {"small_set_hash": None, "small_set_method": None, "small_set_size": None,
                "distill_wall_time_s": None, "distill_sample_passes": None}
    from distill.stage import load_set

    small = load_set(entry)
    return {
        "small_set_hash": small.content_hash,
        "small_set_method": small.recipe.get("method"),
        "small_set_size": len(small),
        "distill_wall_time_s": float(small.cost.get("wall_time_s", 0.0)),
        "distill_sample_passes": int(small.cost.get("sample_passes", 0)),
    }


def _log_outputs(logger: RunLogger, cfg: ExperimentConfig, row: dict, graph: TrialGraph,
                 entries: dict[str, Entry | None], levels: list[dict]) -> None:
    logger.metrics({k: v for k, v in row.items() if k not in NOT_METRICS})
    for record in levels:
        logger.metrics({"level_test_accuracy": record["test_accuracy"], "level_density": record["density"],
                        **({"level_val_accuracy": record["val_accuracy"]} if record.get("val_accuracy") is not None else {})},
                       step=record["level"])
    logger.tags({"cached": row["cached"], "collapsed": row["collapsed"],
                 **{k: _iso(row[k]) for k in ("started_at", "ended_at")}})
    mask, trained, evaluate = (entries[s.key] for s in (graph.plan.mask, graph.trained, graph.evaluate))
    logger.artifact(mask.file("mask.pt"))
    logger.artifact(evaluate.file("sparsity.json"))
    logger.artifact(trained.file("model.pt"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, obj in (("levels.json", levels), ("config.json", cfg.result_settings())):
            (Path(tmp) / name).write_text(json.dumps(obj, indent=2))
            logger.artifact(Path(tmp) / name)
    # Every IMP level's mask and sparsity report (the levels this trial used).
    for level, stage in enumerate(graph.plan.levels[1:], start=1):
        entry = entries.get(stage.key)
        if entry is not None:
            for name in ("mask.pt", "sparsity.json"):
                logger.artifact(entry.file(name), f"levels/level_{level}")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def describe_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
