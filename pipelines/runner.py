"""A sweep's lifecycle: Ray up (only if a phase has work), the sweep state begun or re-opened, the
phases (``pipelines.phases``) under the tracking watch and the SIGTERM handler, then the results,
summary and report; on a stop, the state marked and the cut-short runs ended.

Ray starts locally (embedded) unless ``ray.address`` names a cluster. Every path handed to a trial is
absolute, because Tune changes each trial's working directory. The sweep directory remembers what
a resume needs (``pipelines.sweep_state``): a resumed sweep reuses its MLflow parent run, re-attaches
each trial's child run, skips trial slots that ended, continues the Optuna study, and the store
returns every stage that was already computed, so nothing finished is computed or logged again.

Why a resume starts fresh Tune experiments rather than ``Tuner.restore``: Tune's experiment state is
written periodically, so after a SIGKILL it lags the store and would re-run trials whose results are
already there; the trial records and the store are written as each trial ends, so they are the truth.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from training.coordinator import coordinator_for
from training.store import ArtifactStore

from .background import in_background
from .config import ConfigError, ExperimentConfig, grid_points
from .live import (
    SweepView,
)
from .outages import SweepInterrupted, SweepOutage, TrackingLost, outage
from .phases import (
    collect_rows,
    log_search_outcome,
    optuna_phase,
    run_phase,
    shared_stages_first,
)
from .recorder import start_driver_records, stop_driver_records
from .results import amortize_shared_costs, copy_to_uri, write_results
from .retry import with_retry_overrides
from .summary import SUMMARY_FILE, summarize, write_summary
from .sweep_state import STUDY_FILE, SweepState, TrialRecords, config_hash
from .tracking import (
    ArtifactLocationError,
    RunLogger,
    TrackingTarget,
    default_tracking_uri,
    end_running_children,
    finish_run,
    rebase_artifacts,
    reopen_parent,
    share_trials_view,
    start_parent,
    trial_runs,
)
from .tracking_watch import TrackingWatch, bound_http_calls

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")  # Ray's tqdm support would replace builtins.print in the driver
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's boxed tables and banners: the live view replaces them




@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    results_path: Path | None = None
    summary_path: Path | None = None
    report_path: Path | None = None
    report: Any = None  # the report being drawn (a Future of its path) while Ray shuts down
    tracking_uri: str = ""
    parent_run_id: str = ""

    @property
    def ok(self) -> bool:
        """No trial failed (a trial stopped early by the scheduler did what it was asked)."""
        return all(r["status"] in ("ok", "pruned") for r in self.rows)


def store_for(cfg: ExperimentConfig, out_dir: Path) -> ArtifactStore:
    return ArtifactStore(cfg.store.uri or str(out_dir / "store"), lease_timeout_s=cfg.store.lease_timeout_s)


# ---------------------------------------------------------------------------------------- checks
def _nothing_to_run(cfg: ExperimentConfig, out_dir: Path) -> bool:
    """Every grid slot and as many search trials as asked have a row: the sweep only rewrites its
    results and report (seconds, not the tens of seconds a Ray start costs on a small machine)."""
    if SweepState.load(out_dir) is None:
        return False
    records = TrialRecords(out_dir).all()
    points = grid_points(cfg)
    if any("row" not in records.get(f"grid-{i}", {}) for i in range(len(points))):
        return False
    searched = sum(slot.startswith("optuna-") and "row" in r for slot, r in records.items())
    return cfg.sweep.optuna is None or searched >= cfg.sweep.optuna.num_samples


def finished_outcome(cfg: ExperimentConfig, out_dir: Path) -> SweepOutcome | None:
    """A finished sweep asked to run again, with nothing left to run: its outcome read from its own
    files, without Ray, MLflow or the report (a resume that answers in a second). None where anything
    would change: a slot without a row, a copy or move whose records must be re-pointed, a table or
    report that is missing or cannot be read (the full path rewrites them)."""
    from .results import read_rows

    state = SweepState.load(out_dir)
    if state is None or state.status != "finished" or state.moved_from(out_dir) is not None:
        return None
    paths = [out_dir / "results.parquet", out_dir / SUMMARY_FILE, out_dir / "report.html"]
    if not all(p.is_file() for p in paths) or not _nothing_to_run(cfg, out_dir):
        return None
    try:
        rows = read_rows(paths[0])
        read_rows(paths[1])
    except ValueError:
        return None
    return SweepOutcome(rows=rows, results_path=paths[0], summary_path=paths[1], report_path=paths[2],
                        tracking_uri=state.tracking_uri, parent_run_id=state.parent_run_id)


def _shortfall(cfg: ExperimentConfig, have: dict[str, float]) -> str | None:
    """What the largest trial or stage request lacks on this cluster, phrased with both numbers."""
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    if cfg.resources.max_gpu > gpus:
        return (f"resources ask for {cfg.resources.max_gpu:g} GPU per trial or stage, but the Ray cluster has {gpus:g}; "
                "set resources.gpu (and resources.stages.*.gpu) to 0, or run on a cluster with GPUs")
    need_cpu = max([cfg.resources.cpu, *(r.cpu for r in cfg.resources.stages.values())])
    if need_cpu > cpus:
        return (f"resources ask for {need_cpu:g} CPUs per trial or stage, but the Ray cluster has {cpus:g}; "
                f"lower resources.cpu or raise ray.num_cpus")
    return None


def _import_plugins_here(raw: dict) -> list[str]:
    from .config import import_plugins

    return import_plugins(raw)


def check_worker_plugins(raw: dict) -> None:
    """A Ray worker imports the config's plugins before any trial starts: a module the cluster cannot
    import fails the sweep once, with one line, instead of every trial."""
    if not raw.get("plugins"):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(_import_plugins_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for node in nodes:  # one worker per node that is up now (nodes an autoscaler adds later: their trials say)
        on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        try:
            ray.get(probe.options(num_cpus=0, max_retries=0, scheduling_strategy=on_node).remote(raw))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            where = f" on node {node.get('NodeManagerAddress', '?')}" if len(nodes) > 1 else ""
            raise ConfigError(f"a Ray worker{where} cannot import the plugins: " + " ".join(str(cause).split())) from None


def check_cluster(cfg: ExperimentConfig, have: Callable[[], dict[str, float]],
                  echo: Callable[[str], None] = print, poll_s: float = 2.0) -> None:
    """Fail before any trial is pending forever: Ray queues requests no node can meet without a word.

    An autoscaling cluster may add the nodes that can: ``ray.resource_wait_s`` waits that long for
    them, saying so once, before failing."""
    missing = _shortfall(cfg, have())
    deadline = time.monotonic() + cfg.ray.resource_wait_s
    if missing and cfg.ray.resource_wait_s > 0:
        echo(f"waiting up to {cfg.ray.resource_wait_s:g} s (ray.resource_wait_s) for the cluster to scale up: {missing}")
    while missing and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        missing = _shortfall(cfg, have())
    if missing:
        waited = f" (after waiting {cfg.ray.resource_wait_s:g} s)" if cfg.ray.resource_wait_s > 0 else ""
        raise ConfigError(missing + waited)


# ----------------------------------------------------------------------------------------- sweep
def describe_sweep(cfg: ExperimentConfig) -> str:
    """What the sweep is, in words, for its parent run's description in the MLflow UI."""
    from search.space import expand_grid

    points = expand_grid(cfg.sweep.grid)
    lines = [f"**{cfg.name}**: `{cfg.model.name}` on `{cfg.data.name}`, trained {cfg.train.epochs} epochs "
             f"({cfg.train.optimizer}, lr {cfg.train.lr:g})."]
    if points:
        axes: dict[str, list] = {}
        for p in points:
            for k, v in p.items():
                axes.setdefault(k, [])
                if v not in axes[k]:
                    axes[k].append(v)
        lines.append(f"Grid: {len(points)} trials over " + "; ".join(
            f"`{k}` {', '.join(map(str, v))}" for k, v in axes.items()) + ".")
    opt = cfg.sweep.optuna
    if opt is not None:
        goals = ", ".join(f"{o.mode} {o.metric}" for o in opt.objectives)
        fixed = f" with {', '.join(f'`{k}`={v}' for k, v in opt.fixed.items())}" if opt.fixed else ""
        lines.append(f"Optuna: {opt.num_samples} trials ({opt.sampler}){fixed}, searching "
                     f"{', '.join(f'`{k}`' for k in opt.space)} to {goals}.")
    lines.append("Child runs are the trials (tags: method, sparsity, density, seed, phase, stage keys); "
                 "the config, results table and plots are artifacts of this run.")
    return "\n\n".join(lines)


def _begin(cfg: ExperimentConfig, raw: dict, out_dir: Path, config_text: str, resume: bool) -> SweepState:
    """The sweep's state: new (a parent run is created) or the existing one, re-opened."""
    state = SweepState.load(out_dir)
    if state is not None:
        try:
            state.require_files(out_dir)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if state.config_hash != config_hash(raw):
            raise ConfigError(
                f"{out_dir} holds the sweep {state.name!r} of another config; use a new --out "
                f"(stage outputs can be shared between sweeps with store.uri)")
        driver = state.live_driver()
        if driver:
            raise ConfigError(f"{out_dir} is being run right now by {driver}; wait for it, or stop it first")
        moved_from = state.moved_from(out_dir)
        if moved_from is not None:  # a copy or a move: its own MLflow records must point at its own files
            rebase_artifacts(state.tracking_uri, moved_from, out_dir)
        state.attempts += 1
        state.claim()
        reopen_parent(state.tracking_uri, state.experiment_id, state.parent_run_id)
        _share_view(cfg, state.tracking_uri, state.experiment_id, state.parent_run_id)
        state.status = "running"
        state.save(out_dir)
        return state
    if resume:
        raise ConfigError(f"{out_dir} holds no sweep to resume (no sweep.json); start one with prunetune run")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config_text)
    tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri(out_dir)
    try:
        target = start_parent(
            tracking_uri, cfg.tracking.experiment_name or cfg.name, out_dir / "mlartifacts",
            run_name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", tags={"config": cfg.name},
            description=describe_sweep(cfg),
        )
    except ArtifactLocationError as exc:
        raise ConfigError(str(exc)) from None
    RunLogger(tracking_uri, target.parent_run_id).artifact(out_dir / "config.yaml")
    _share_view(cfg, tracking_uri, target.experiment_id, target.parent_run_id)
    state = SweepState(
        name=cfg.name, config_hash=config_hash(raw), tracking_uri=tracking_uri, experiment_id=target.experiment_id,
        parent_run_id=target.parent_run_id, store_uri=store_for(cfg, out_dir).uri,
        study_path=str(out_dir / STUDY_FILE), study_name=cfg.name,
    )
    state.claim()
    state.save(out_dir)
    return state


def adopt_unrecorded_runs(target: TrackingTarget, records: TrialRecords) -> int:
    """Record the MLflow run of each slot whose record lacks one, so the resumed trial re-attaches to it
    instead of creating a second run. A driver stopped or killed after a trial created its run but
    before the run id reached the driver's record leaves such a run (seen under load in the SIGKILL
    resume test). Returns how many were adopted."""
    known = records.all()
    recorded = {r.get("mlflow_run_id") for r in known.values()}
    adopted = 0
    for slot, run_ids in trial_runs(target).items():
        unrecorded = [run_id for run_id in run_ids if run_id not in recorded]
        if unrecorded and not known.get(slot, {}).get("mlflow_run_id"):
            records.update(slot, mlflow_run_id=unrecorded[-1])
            adopted += 1
    return adopted


def _share_view(cfg: ExperimentConfig, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
    """The runs-table view ``prunetune ui`` opens: this sweep's trials with their columns."""
    from search.space import expand_grid

    swept = sorted({axis for point in expand_grid(cfg.sweep.grid) for axis in point}
                   | (set(cfg.sweep.optuna.space) | set(cfg.sweep.optuna.fixed) if cfg.sweep.optuna else set()))
    share_trials_view(tracking_uri, experiment_id, parent_run_id, f"prunetune sweep {cfg.name}: trials", swept)


def run_sweep(cfg: ExperimentConfig, raw: dict, out_dir: Path, config_text: str,
              view: SweepView | None = None, resume: bool = False) -> SweepOutcome:
    import ray

    out_dir = out_dir.resolve()
    view = view or SweepView()
    echo = view.say
    _quiet_loggers(view)
    state, started_ray, previous_sigterm = _open(cfg, raw, out_dir, config_text, resume, view)
    target = TrackingTarget(state.tracking_uri, state.experiment_id, state.parent_run_id)
    parent = RunLogger(state.tracking_uri, state.parent_run_id)
    store = store_for(cfg, out_dir)
    outcome = SweepOutcome(tracking_uri=state.tracking_uri, parent_run_id=state.parent_run_id)
    if state.attempts > 1:
        echo(f"resuming {out_dir} (attempt {state.attempts}): finished trials and stages are reused")
        adopt_unrecorded_runs(target, TrialRecords(out_dir))

    status = "FAILED"
    watch = TrackingWatch(state.tracking_uri).start()
    driver_records = start_driver_records(out_dir) if ray.is_initialized() else None
    if ray.is_initialized() and store.local_root() is None:
        coordinator_for(store.store_id())  # created here, on the driver's node, before any trial asks
    try:
        in_background(_warm_report_imports)
        _run_phases(cfg, raw, out_dir, target, store, state, view, driver_records)
        _finish_outputs(cfg, out_dir, outcome, parent, echo)
        status = "FINISHED" if outcome.ok else "FAILED"
        state.status = "finished"
    except (SweepInterrupted, KeyboardInterrupt) as exc:
        status, state.status = "KILLED", "interrupted"
        if not watch.usable():  # the watch stopped it, or the trials found the server gone first
            raise TrackingLost(state.tracking_uri) from None
        if isinstance(exc, SweepOutage):
            raise
        _write_tables(outcome, out_dir, empty_too=False)  # what finished before the stop
        raise SweepInterrupted(str(out_dir)) from None
    except BaseException as exc:
        # A full disk met by the driver itself (a results file, its MLflow records) is resumable too.
        state.status = "interrupted" if outage(exc) else "failed"
        raise
    finally:
        watch.stop()
        stop_driver_records(driver_records)
        signal.signal(signal.SIGTERM, previous_sigterm)
        if started_ray:
            ray.shutdown()  # while the report draws
        if outcome.report is not None:
            outcome.report_path = outcome.report.result()
        _end_runs(target, state, status, watch)
        state.save(out_dir)
    return outcome


def _open(cfg: ExperimentConfig, raw: dict, out_dir: Path, config_text: str, resume: bool,
          view: SweepView) -> tuple[SweepState, bool, Any]:
    """Ray up (only if a phase has work), SIGTERM turned into Ctrl-C, the cluster checked and the sweep
    state begun: (state, whether Ray was started here, the previous SIGTERM handler). On any failure
    nothing is left started."""
    import ray

    bounded = bound_http_calls()  # before MLflow is used; the workers get the same bounds
    needs_ray = not _nothing_to_run(cfg, out_dir)  # a finished sweep re-run or resumed: no cluster to start
    started_ray = needs_ray and not ray.is_initialized()
    if started_ray:
        warm = in_background(_warm_driver_imports)  # while Ray's processes start
        _start_ray(cfg, bounded, view)
        warm.result()
    # SIGTERM (a scheduler, `kill`) stops the sweep the way Ctrl-C does, through Tune's SIGINT handling.
    # Set after ray.init, whose own handler would abort the driver and leave the sweep marked failed.
    previous_sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:  # before anything is written: a request the cluster cannot meet would wait forever
        if needs_ray:
            check_cluster(cfg, ray.cluster_resources, view.say)
            check_worker_plugins(raw)
        state = _begin(cfg, raw, out_dir, config_text, resume)
    except BaseException:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if started_ray:
            ray.shutdown()
        raise
    return state, started_ray, previous_sigterm


def _quiet_loggers(view: SweepView) -> None:
    if view.verbosity != "verbose":  # start-up notices of Ray and MLflow: in the logs, not on the console
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow logs each database error with its traceback before raising it; the sweep reports what
    # it raises (a full disk) in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # Tune's own experiment state is not what a resume reads (each attempt is a fresh experiment), so
    # failing to save it (a full disk) is not worth a traceback on the console.
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)


def _start_ray(cfg: ExperimentConfig, bounded: dict[str, str], view: SweepView) -> None:
    """Embedded Ray, or the cluster at ``ray.address``; the workers get the driver's HTTP bounds and the
    plugins that are not installed (``py_modules``)."""
    import ray

    from training.plugins import shippable_paths

    shipped = shippable_paths(cfg.plugins)
    # An embedded Ray's workers inherit this process's environment, bounds included; a job runtime_env
    # would only put a setup process before each worker the job starts itself (the driver's records
    # actor, the plugin probe). Tune gives its trial actors a runtime_env of their own either way.
    runtime_env = {"env_vars": bounded} if cfg.ray.address is not None else {}
    if shipped:
        runtime_env["py_modules"] = shipped
    try:
        ray.init(
            runtime_env=runtime_env or None,
            address=cfg.ray.address,
            num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
            num_gpus=cfg.ray.num_gpus if cfg.ray.address is None else None,
            include_dashboard=False,
            log_to_driver=view.verbosity == "verbose",  # otherwise each trial's log is a file in DIR/logs
            logging_level=logging.INFO if view.verbosity == "verbose" else logging.ERROR,
        )
    except (ConnectionError, RuntimeError) as exc:  # RuntimeError: refused token, GCS unreachable
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to the Ray cluster at ray.address={cfg.ray.address!r}: {reason}") from None


def _run_phases(cfg: ExperimentConfig, raw: dict, out_dir: Path, target: TrackingTarget, store: ArtifactStore,
                state: SweepState, view: SweepView, driver_records) -> None:
    """The grid's unfinished slots (their shared stages first), then the Optuna phase."""
    records = TrialRecords(out_dir)
    points = with_retry_overrides(grid_points(cfg), records)
    todo = [i for i in range(len(points)) if "row" not in records.get(f"grid-{i}")]
    if todo:
        shared_stages_first([points[i] for i in todo], raw, cfg, store, view.say, out_dir)
        view.say(f"grid phase: {len(todo)} trials" + (f" ({len(points) - len(todo)} already done)"
                                                      if len(todo) < len(points) else ""))
        from ray import tune

        run_phase("grid", state.attempts, {"slot": tune.grid_search(todo)}, {}, cfg, raw, out_dir, target,
                  store, {}, points, len(todo), view, driver_records)
    if cfg.sweep.optuna is not None:
        optuna_phase(cfg, raw, out_dir, target, store, state, view, driver_records)


def _finish_outputs(cfg: ExperimentConfig, out_dir: Path, outcome: SweepOutcome, parent: RunLogger,
                    echo: Callable[[str], None]) -> None:
    """The finished sweep's tables, report and counts, on disk and on the parent run."""
    if cfg.sweep.optuna is not None:
        log_search_outcome(cfg, out_dir, parent)
    _write_tables(outcome, out_dir)
    parent.artifact(outcome.results_path)
    parent.artifact(outcome.summary_path)
    if cfg.tracking.results_uri:
        echo(f"results copied to {copy_to_uri(outcome.results_path, cfg.tracking.results_uri)}")
    outcome.report = in_background(_report, cfg, out_dir, outcome.rows, parent, echo)
    parent.metrics({"trials": len(outcome.rows), "trials_ok": sum(r["status"] == "ok" for r in outcome.rows)})


def _write_tables(outcome: SweepOutcome, out_dir: Path, empty_too: bool = True) -> None:
    """results.parquet and summary.parquet from every slot's row (after a stop, only if some slot has one)."""
    outcome.rows = collect_rows(out_dir)
    amortize_shared_costs(outcome.rows)
    if outcome.rows or empty_too:
        outcome.results_path = write_results(outcome.rows, out_dir / "results.parquet")
        outcome.summary_path = write_summary(summarize(outcome.rows), out_dir / SUMMARY_FILE)


def _warm_driver_imports() -> None:
    """Import what the driver needs next (MLflow and its SQLite store for the parent run, Tune) and make
    sure the SQLite template exists, while ``ray.init`` waits on the processes it starts."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 (with SQLAlchemy and alembic)
    from ray import tune  # noqa: F401

    from .mlflow_template import template

    template()


def _warm_report_imports() -> None:
    """Import what the report draws with while the trials run (a second of the driver's idle time there,
    instead of after the last trial)."""
    from .report import _plt

    _plt()


def _end_runs(target: TrackingTarget, state: SweepState, status: str, watch: TrackingWatch) -> None:
    """End the runs a stop cut short, unless the outage that stopped the sweep makes that impossible
    (the resume ends them): a dead server would make each call wait out its retries."""
    if not watch.usable():
        return
    try:
        end_running_children(target)
        finish_run(state.tracking_uri, state.parent_run_id, status)
    except Exception as exc:
        if outage(exc) is None:
            raise


def _report(cfg: ExperimentConfig, out_dir: Path, rows: list[dict], parent: RunLogger,
            echo: Callable[[str], None]) -> Path | None:
    """DIR/report.html and report.md, the figures also on the parent run; a sweep is not failed by its report."""
    from .report import build_report

    try:
        html_path, md_path, figures = build_report(out_dir, rows, title=f"Sweep {cfg.name}",
                                                   description=describe_sweep(cfg).replace("**", "").replace("`", ""))
    except Exception as exc:
        echo(f"report not written: {type(exc).__name__}: {exc}")
        return None
    for f in figures:
        parent.artifact(f.path, "figures")
    parent.artifact(html_path)
    parent.artifact(md_path)
    return html_path


